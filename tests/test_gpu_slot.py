"""GPU slots of a workstation: each holder sees a GPU no other holder has."""

from __future__ import annotations

import fcntl
import os

import pytest

from ffrep import gpu_slot as mod


@pytest.fixture(autouse=True)
def no_scheduler(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def hold(path):
    """The lock another training process would hold."""
    lock = open(path, "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lock


def test_holders_get_distinct_gpus(tmp_path):
    other = hold(tmp_path / "gpu0.lock")
    with mod.gpu_slot(3, tmp_path) as slot:
        assert slot == 1
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        with pytest.raises(BlockingIOError):
            hold(tmp_path / "gpu1.lock")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    other.close()
    with mod.gpu_slot(3, tmp_path) as slot:
        assert slot == 0


def test_waits_while_all_are_taken(tmp_path, monkeypatch):
    others = [hold(tmp_path / f"gpu{i}.lock") for i in range(2)]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        others[1].close()  # the holder of GPU 1 exits

    monkeypatch.setattr(mod.time, "sleep", sleep)
    with mod.gpu_slot(2, tmp_path) as slot:
        assert slot == 1
    assert waits == [mod.RETRY_S]
    others[0].close()


def test_single_gpu_or_scheduler_left_alone(tmp_path, monkeypatch):
    with mod.gpu_slot(1, tmp_path) as slot:
        assert slot is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with mod.gpu_slot(4, tmp_path) as slot:
        assert slot is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
