"""The status command's decisions, on scheduler answers given by the test."""

from __future__ import annotations

import pytest

from ffrep.slurm import status as status_mod
from ffrep.slurm.state import JobRecord, StateDir


def answers(monkeypatch, squeue=None, scontrol=None):
    """Make squeue and scontrol answer ``squeue`` and ``scontrol`` (None: fail)."""

    def query(command):
        return squeue if command[0] == "squeue" else scontrol

    monkeypatch.setattr(status_mod, "_query", query)


def record(tmp_path, outputs=()):
    return JobRecord(
        job_id="42",
        rule="train",
        wildcards={},
        folder=str(tmp_path / "logs"),
        log=str(tmp_path / "logs" / "42_0_log.out"),
        outputs=list(outputs),
        submitted_at=0.0,
    )


@pytest.mark.parametrize(
    "slurm_state, expected",
    [
        ("PENDING", "running"),
        ("RUNNING", "running"),
        ("COMPLETING", "running"),
        ("REQUEUED", "running"),
        ("COMPLETED", "success"),
        ("FAILED", "failed"),
        ("TIMEOUT", "failed"),
        ("OUT_OF_MEMORY", "failed"),
        ("NODE_FAIL", "failed"),
        ("CANCELLED", "failed"),
        ("PREEMPTED", "failed"),
        ("BOOT_FAIL", "failed"),
        ("DEADLINE", "failed"),
    ],
)
def test_scontrol_states(tmp_path, monkeypatch, slurm_state, expected):
    answers(monkeypatch, squeue="", scontrol=f"JobId=42 JobState={slurm_state} X=1")
    got = status_mod.job_status("42", StateDir(tmp_path), grace_s=60, latency_s=0)
    assert got == expected


def test_squeue_answer_preferred(tmp_path, monkeypatch):
    answers(monkeypatch, squeue="TIMEOUT\n", scontrol="JobState=RUNNING")
    assert status_mod.job_status("42", StateDir(tmp_path), 60, 0) == "failed"


def test_silent_scheduler_is_running_then_failed(tmp_path, monkeypatch):
    answers(monkeypatch)
    state = StateDir(tmp_path)
    assert status_mod.job_status("42", state, 60, 0, now=1000.0) == "running"
    assert status_mod.job_status("42", state, 60, 0, now=1059.0) == "running"
    assert status_mod.job_status("42", state, 60, 0, now=1061.0) == "failed"


def test_scheduler_back_resets_grace(tmp_path, monkeypatch):
    state = StateDir(tmp_path)
    answers(monkeypatch)
    status_mod.job_status("42", state, 60, 0, now=1000.0)
    answers(monkeypatch, squeue="RUNNING")
    assert status_mod.job_status("42", state, 60, 0, now=1030.0) == "running"
    answers(monkeypatch)
    assert status_mod.job_status("42", state, 60, 0, now=1080.0) == "running"


@pytest.mark.parametrize(
    "outcome, expected", [("success", "success"), ("error", "failed")]
)
def test_purged_job_read_from_submitit_result(tmp_path, monkeypatch, outcome, expected):
    import pickle

    answers(monkeypatch, squeue="", scontrol=None)
    state = StateDir(tmp_path / "state")
    rec = record(tmp_path)
    state.save(rec)
    rec.result_pickle.parent.mkdir(parents=True)
    rec.result_pickle.write_bytes(pickle.dumps((outcome, 0)))
    assert status_mod.job_status("42", state, 60, 0, now=0.0) == expected


def test_completed_without_outputs_fails_after_latency(tmp_path, monkeypatch):
    answers(monkeypatch, squeue="COMPLETED")
    state = StateDir(tmp_path / "state")
    state.save(record(tmp_path, outputs=[str(tmp_path / "model.pt")]))
    assert status_mod.job_status("42", state, 60, 30, now=0.0) == "running"
    assert status_mod.job_status("42", state, 60, 30, now=31.0) == "failed"
    (tmp_path / "model.pt").write_text("")
    assert status_mod.job_status("42", state, 60, 30, now=32.0) == "success"
