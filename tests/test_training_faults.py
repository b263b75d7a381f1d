"""Training faults: divergence, a full disk, hostile weights; bit-for-bit
reproducibility on CPU."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ffrep import ffstep, train
from ffrep.config import RunConfig
from ffrep.io import atomic_path

from fakedata import shrink, tiny_tmpfs, write_prepared


def tiny_run(algorithm="ff", seed=0, **changes) -> RunConfig:
    settings = dict(
        dataset="fashion_mnist",
        algorithm=algorithm,
        architecture="tiny",
        seed=seed,
        hidden_units=[16, 16, 16],
        learning_rate=1e-2,
        epochs=2,
        batch_size=32,
        device="cpu",
        num_threads=1,
        checkpoint_every_epochs=1,
    )
    return RunConfig(**{**settings, **changes})


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    shrink(monkeypatch)
    return write_prepared(tmp_path / "prepared.pt")


def outputs(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "run"
    return {
        "model_out": out / "model.pt",
        "metrics_out": out / "metrics.json",
        "checkpoint": tmp_path / "checkpoints" / "run.pt",
    }


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def train_tiny(tmp_path, prepared, run) -> dict:
    return train.train_run(run, prepared, **outputs(tmp_path))


# --- divergence --------------------------------------------------------------


def _nan_after(monkeypatch, target, name, calls):
    real = getattr(target, name)
    count = {"n": 0}

    def poisoned(*args, **kwargs):
        count["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if count["n"] > calls else loss

    monkeypatch.setattr(target, name, poisoned)


# 120 samples in batches of 32: 4 steps per epoch, 2 epochs per FF layer
@pytest.mark.parametrize(
    "algorithm, target, name, calls, where",
    [
        # the FF step computes its loss by hand: softplus once a step
        ("ff", ffstep.F, "softplus", 9, "layer 2, epoch 1"),
        ("ff", ffstep.F, "softplus", 22, "layer 3, epoch 2"),
        ("bp_ff", train, "ff_loss", 5, "epoch 2 (all layers)"),
        ("bp", train.F, "cross_entropy", 1, "epoch 1"),
    ],
)
def test_nan_loss_stops_with_epoch_and_layer(
    tmp_path, prepared, monkeypatch, algorithm, target, name, calls, where
):
    _nan_after(monkeypatch, target, name, calls)
    with pytest.raises(
        train.TrainingDiverged, match=re.escape(f"became nan at {where}")
    ):
        train_tiny(tmp_path, prepared, tiny_run(algorithm))
    paths = outputs(tmp_path)
    assert not paths["model_out"].exists() and not paths["metrics_out"].exists()
    assert leftovers(tmp_path) == []
    # what the checkpoint kept is from before the divergence
    if paths["checkpoint"].exists():
        state = torch.load(paths["checkpoint"], weights_only=True)["model"]
        assert all(torch.isfinite(t).all() for t in state.values())


def test_a_network_whose_units_all_died_is_named(
    tmp_path, prepared, caplog, monkeypatch
):
    real = train.train_ff

    def train_then_kill_layer_2(net, *args):
        history = real(net, *args)
        with torch.no_grad():
            net.layers[1].bias.fill_(-1e6)  # as a diverged training can leave it
        return history

    monkeypatch.setattr(train, "train_ff", train_then_kill_layer_2)
    metrics = train_tiny(tmp_path, prepared, tiny_run("ff"))
    assert metrics["silent_layers"] == [2]
    assert "hidden layer(s) 2 have no active unit on any test image" in caplog.text
    monkeypatch.undo()
    fine = train_tiny(tmp_path / "fine", prepared, tiny_run("ff"))
    assert fine["silent_layers"] == []


def test_huge_learning_rate_diverges_cleanly(tmp_path, prepared):
    run = tiny_run("bp", learning_rate=1e30, epochs=5)
    with pytest.raises(train.TrainingDiverged, match=r"became (nan|inf) at epoch"):
        train_tiny(tmp_path, prepared, run)
    assert not outputs(tmp_path)["model_out"].exists()


# --- a full disk -------------------------------------------------------------


def _enospc_when(monkeypatch, owner, name, marker):
    """Let ``owner.name`` write half of what it would, then fail with ENOSPC,
    whenever the path it writes contains ``marker``."""
    real = getattr(owner, name)

    def full(*args, **kwargs):
        path = Path(args[1] if owner is torch else args[0])
        if marker not in path.name:
            return real(*args, **kwargs)
        real(*args, **kwargs)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(owner, name, full)


def test_disk_full_while_saving_weights(tmp_path, prepared, monkeypatch):
    _enospc_when(monkeypatch, torch, "save", ".model.pt.")
    with pytest.raises(OSError) as err:
        train_tiny(tmp_path, prepared, tiny_run("bp"))
    assert err.value.errno == errno.ENOSPC
    assert not any(
        p.exists() for k, p in outputs(tmp_path).items() if k != "checkpoint"
    )
    assert leftovers(tmp_path) == []


def test_disk_full_while_saving_metrics(tmp_path, prepared, monkeypatch):
    _enospc_when(monkeypatch, Path, "write_text", ".metrics.json.")
    with pytest.raises(OSError):
        train_tiny(tmp_path, prepared, tiny_run("bp"))
    assert not outputs(tmp_path)["metrics_out"].exists()
    assert leftovers(tmp_path) == []
    # the weights, written before, are whole
    train.load_model(outputs(tmp_path)["model_out"])


@pytest.fixture
def tiny_disk(tmp_path):
    with tiny_tmpfs(tmp_path / "disk") as mount:
        yield mount


def test_real_full_disk_leaves_nothing(tmp_path, prepared, tiny_disk):
    run = tiny_run("bp", hidden_units=[64, 64, 64])  # ~250 KB of weights
    with pytest.raises(OSError, match="No space left on device while writing") as e:
        train.train_run(
            run,
            prepared,
            model_out=tiny_disk / "model.pt",
            metrics_out=tiny_disk / "metrics.json",
        )
    assert e.value.errno == errno.ENOSPC
    del e
    assert list(tiny_disk.iterdir()) == []


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_atomic_path_files_are_readable_by_others(tmp_path):
    target = tmp_path / "shared.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# --- weights files -----------------------------------------------------------


class Evil:
    """Unpickling this creates ``marker``: what arbitrary code could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_weights_with_code_are_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save({"state_dict": Evil(marker), "run": tiny_run().to_json()}, path)
    with pytest.raises(train.ModelFileError, match="cannot read the model weights"):
        train.load_model(path)
    assert not marker.exists()
    # the payload is live: a full unpickler would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_prepared_data_with_code_is_refused(tmp_path):
    from ffrep.data import DataError, load

    marker, path = tmp_path / "pwned", tmp_path / "prepared.pt"
    torch.save({"dataset": "fashion_mnist", "x_train": Evil(marker)}, path)
    with pytest.raises(DataError, match="cannot be read"):
        load(path)
    assert not marker.exists()


def test_checkpoint_with_code_is_ignored(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "ckpt.pt"
    torch.save({"fingerprint": Evil(marker)}, path)
    assert train.Checkpointer(path, tiny_run()).load() is None
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (None, "not found"),
        (b"garbage", "cannot read the model weights"),
        ({"state_dict": {}}, "not an ffrep weights file"),
        ({"state_dict": {}, "run": "{}"}, "do not fit the run"),
        ({"state_dict": {"x": torch.zeros(1)}, "run": None}, "do not fit the run"),
    ],
    ids=["missing", "garbage", "no_run", "empty_run", "wrong_weights"],
)
def test_damaged_weights_are_named(tmp_path, payload, fragment):
    path = tmp_path / "model.pt"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    elif payload is not None:
        if payload.get("run") is None and "run" in payload:
            payload["run"] = tiny_run().to_json()
        torch.save(payload, path)
    with pytest.raises(train.ModelFileError, match=fragment) as err:
        train.load_model(path)
    assert str(path) in str(err.value)


# --- reproducibility ---------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ff", "bp_ff", "bp"])
def test_same_seed_same_bits_other_seed_other_bits(tmp_path, prepared, algorithm):
    weights = []
    for i, seed in enumerate([3, 3, 4]):
        folder = tmp_path / f"try{i}"
        train_tiny(folder, prepared, tiny_run(algorithm, seed=seed))
        net, _ = train.load_model(outputs(folder)["model_out"])
        weights.append(net.state_dict())
    same, other = weights[1], weights[2]
    assert all(torch.equal(weights[0][k], same[k]) for k in same)
    assert not all(torch.equal(weights[0][k], other[k]) for k in other)


def test_killed_writer_keeps_the_old_file(tmp_path):
    """SIGKILL in the middle of a write: the old file stays whole."""
    target = tmp_path / "model.pt"
    target.write_bytes(b"old weights")
    script = (
        "import sys, time\n"
        "from ffrep.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half of the new')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(train.__file__).parents[1])}
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(target)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()
    writer.wait(timeout=30)
    assert target.read_bytes() == b"old weights"
    # the temporary file stays, hidden, beside it: Snakemake never reads it
    assert [p.name.startswith(".model.pt.") for p in leftovers(tmp_path)] == [True]


# --- checkpoints that must not be resumed ------------------------------------


def _flip_a_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def _killed_after_first_epoch(tmp_path, prepared, run, monkeypatch) -> Path:
    """Train ``run`` until its first checkpoint is written, then stop it."""
    real = train.Checkpointer.save

    def save_then_stop(self, ckpt):
        real(self, ckpt)
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(train.Checkpointer, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train_tiny(tmp_path, prepared, run)
    checkpoint = outputs(tmp_path)["checkpoint"]
    assert checkpoint.exists()
    return checkpoint


def test_checkpoint_of_other_data_is_not_resumed(tmp_path, prepared, monkeypatch):
    run = tiny_run("bp")
    _killed_after_first_epoch(tmp_path, prepared, run, monkeypatch)
    # the same run on data prepared with another normalisation
    payload = torch.load(prepared, weights_only=True)
    payload["x_train"] = payload["x_train"] * 0.5 + 0.1
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    metrics = train_tiny(tmp_path, other, run)
    assert metrics["resumed"] is False
    fresh = train_tiny(tmp_path / "fresh", other, run)
    assert metrics["test_accuracy"] == fresh["test_accuracy"]


def test_damaged_checkpoint_is_ignored(tmp_path, prepared, monkeypatch, caplog):
    run = tiny_run("bp")
    checkpoint = _killed_after_first_epoch(tmp_path, prepared, run, monkeypatch)
    _flip_a_byte(checkpoint)
    metrics = train_tiny(tmp_path, prepared, run)
    assert metrics["resumed"] is False
    assert "ignoring unreadable checkpoint" in caplog.text
    assert "fails its checksum" in caplog.text


def _saved_checkpoint(tmp_path, prepared, run, monkeypatch) -> tuple[Path, dict]:
    path = _killed_after_first_epoch(tmp_path, prepared, run, monkeypatch)
    return path, torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    "damage",
    ["a_list", "no_history", "extra_part", "stage_7", "epoch_99", "wrong_shapes"],
)
def test_checkpoint_that_does_not_fit_is_ignored(
    tmp_path, prepared, monkeypatch, caplog, damage
):
    run = tiny_run("ff")
    path, payload = _saved_checkpoint(tmp_path, prepared, run, monkeypatch)
    if damage == "a_list":
        payload = [1, 2, 3]
    elif damage == "no_history":
        del payload["history"]
    elif damage == "extra_part":
        payload["extra"] = 1
    elif damage == "stage_7":
        payload["stage"] = 7
    elif damage == "epoch_99":
        payload["epoch"] = 99
    else:
        payload["model"] = {k: v[:1] for k, v in payload["model"].items()}
    torch.save(payload, path)
    metrics = train_tiny(tmp_path, prepared, run)
    assert metrics["resumed"] is False
    assert f"{path}" in caplog.text and "ignoring" in caplog.text


def test_checkpoints_resume_across_settings_that_leave_the_weights(tmp_path):
    run = tiny_run()
    same = train.Checkpointer(None, run).fingerprint
    for change in (
        {"compression_level": 9},
        {"label_input": "neutral"},
        {"num_threads": 2},
        {"checkpoint_every_epochs": 5},
        {"max_test_samples": 10},
        {"prediction": "goodness_sum_skip_first"},
    ):
        assert train.Checkpointer(None, tiny_run(**change)).fingerprint == same
    for change in ({"learning_rate": 0.5}, {"max_train_samples": 100}):
        assert train.Checkpointer(None, tiny_run(**change)).fingerprint != same


def test_run_and_batched_checkpoints_are_not_interchangeable(tmp_path):
    run = tiny_run()
    single = train.Checkpointer(tmp_path / "c.pt", run)
    seeds = train.Checkpointer(tmp_path / "c.pt", run, kind="seeds")
    assert single.fingerprint != seeds.fingerprint
    assert train.Checkpointer(None, run, data="a").fingerprint != (
        train.Checkpointer(None, run, data="b").fingerprint
    )


def test_damaged_weights_file_is_named(tmp_path, prepared):
    train_tiny(tmp_path, prepared, tiny_run("bp"))
    model = outputs(tmp_path)["model_out"]
    _flip_a_byte(model, 0.3)
    with pytest.raises(train.ModelFileError, match="damaged: its part"):
        train.load_model(model)


def test_damaged_prepared_data_is_named(tmp_path, prepared):
    from ffrep.data import DataError, load

    _flip_a_byte(prepared, 0.4)
    with pytest.raises(
        DataError,
        match=r"cannot be read \(the file is damaged: its part .* fails its checksum",
    ):
        load(prepared)


def test_prepared_file_of_another_dataset_is_refused(tmp_path, monkeypatch):
    from ffrep.data import DataError

    shrink(monkeypatch)
    mnist = write_prepared(tmp_path / "mnist.pt", name="mnist")
    with pytest.raises(DataError, match="holds mnist, but the run is on fashion_mnist"):
        train_tiny(tmp_path, mnist, tiny_run())
    assert not outputs(tmp_path)["model_out"].exists()


def test_too_few_training_images_for_two_classes_is_named(tmp_path, prepared):
    from ffrep.data import DataError

    with pytest.raises(DataError, match="raise data.max_train_samples"):
        train_tiny(tmp_path, prepared, tiny_run(max_train_samples=1))


def test_resumed_run_reports_no_training_rate(tmp_path, prepared, monkeypatch):
    run = tiny_run("bp")
    _killed_after_first_epoch(tmp_path, prepared, run, monkeypatch)
    metrics = train_tiny(tmp_path, prepared, run)
    assert metrics["resumed"] is True and metrics["train_flops"] > 0
    # its time covers the last part only
    assert "train_tflops_per_s" not in metrics
    fresh = train_tiny(tmp_path / "fresh", prepared, run)
    assert fresh["train_tflops_per_s"] > 0
