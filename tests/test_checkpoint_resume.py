"""A training killed at any point and started again ends with the weights and
activations of an uninterrupted run, bit for bit (CPU, same seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import xarray as xr

from ffrep import train as train_mod
from ffrep.config import load_config, resolve_run

REPO = Path(__file__).resolve().parents[1]
RAW = Path("/usr/share/datasets/fashion-mnist")
EPOCHS = 5
EVERY = 2

pytestmark = pytest.mark.skipif(
    not RAW.exists(), reason=f"needs the Fashion-MNIST raw files in {RAW}"
)


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the trainer catches it."""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from ffrep.data import prepare
    from ffrep.datasets import DATASETS

    root = tmp_path_factory.mktemp("data")
    info = DATASETS["fashion_mnist"]
    return prepare(
        "fashion_mnist",
        root,
        root / "prepared.pt",
        info.mean,
        info.std,
        download=False,
        local_raw=RAW,
    )


def run_config(variant: str):
    """The tiny run of ``variant``: an algorithm, or ``ff/<deeper inputs>``."""
    algorithm, _, deeper = variant.partition("/")
    training = {
        "checkpoint_every_epochs": EVERY,
        "hyperparameters": {
            algorithm: {"default": {"epochs": EPOCHS, "batch_size": 128}}
        },
    }
    if deeper:
        training["ff_deeper_inputs"] = deeper
    config = load_config(
        REPO / "config" / "test.yaml",
        {
            "data": {"max_train_samples": 600, "max_test_samples": 200},
            "training": training,
        },
    )
    return resolve_run(config, "fashion_mnist", algorithm, "tiny", 0)


def train(run, data, folder: Path, checkpoint=None) -> Path:
    train_mod.train_run(
        run, data, folder / "model.pt", folder / "metrics.json", checkpoint
    )
    return folder / "model.pt"


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory):
    models = {}

    def get(variant):
        if variant not in models:
            folder = tmp_path_factory.mktemp(
                f"uninterrupted_{variant}".replace("/", "_")
            )
            models[variant] = train(run_config(variant), prepared, folder)
        return models[variant]

    return get


def kill_at_epoch(monkeypatch, n: int) -> None:
    """Kill the run as it finishes its ``n``-th epoch (counted over all
    layers), before that epoch's checkpoint is written."""
    done = []
    step = train_mod.Progress.step

    def step_then_kill(self, **values):
        step(self, **values)
        done.append(1)
        if len(done) == n:
            raise Killed

    monkeypatch.setattr(train_mod.Progress, "step", step_then_kill)


def kill_between_layers(monkeypatch) -> None:
    """Kill the run after its first layer's last checkpoint, before the
    next layer's inputs are built and saved."""

    def advance(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(train_mod.FFInputs, "advance", advance)


KILLS = [
    ("ff", "mid_layer", lambda mp: kill_at_epoch(mp, EVERY + 1)),
    ("ff", "mid_second_layer", lambda mp: kill_at_epoch(mp, EPOCHS + EVERY + 1)),
    ("ff", "layer_boundary", kill_between_layers),
    # the first epoch of layer 2: only the boundary checkpoint exists for it
    ("ff", "after_boundary", lambda mp: kill_at_epoch(mp, EPOCHS + 1)),
    # nothing but the first layer's product is kept for the deeper layers
    ("ff/recomputed", "mid_third_layer", lambda mp: kill_at_epoch(mp, 2 * EPOCHS + 3)),
    ("ff/recomputed", "layer_boundary", kill_between_layers),
    ("bp_ff", "mid_run", lambda mp: kill_at_epoch(mp, EVERY + 1)),
    ("bp_ff", "before_first_checkpoint", lambda mp: kill_at_epoch(mp, 1)),
    ("bp", "mid_run", lambda mp: kill_at_epoch(mp, EVERY + 1)),
    ("bp", "after_last_epoch", lambda mp: kill_at_epoch(mp, EPOCHS)),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant, where, kill", KILLS, ids=[f"{v}-{w}" for v, w, _ in KILLS]
)
def test_resumed_run_is_bit_identical(
    variant, where, kill, prepared, uninterrupted, tmp_path
):
    from ffrep.activations import extract

    run = run_config(variant)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.MonkeyPatch.context() as mp:
        kill(mp)
        with pytest.raises(Killed):
            train(run, prepared, tmp_path, checkpoint)
    assert not (tmp_path / "model.pt").exists()
    resumed = train(run, prepared, tmp_path, checkpoint)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resumed"] is (where != "before_first_checkpoint")

    reference = torch.load(uninterrupted(variant), weights_only=True)
    got = torch.load(resumed, weights_only=True)
    assert got["state_dict"].keys() == reference["state_dict"].keys()
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(got["state_dict"][name], tensor), name

    ref_acts = extract(uninterrupted(variant), prepared, tmp_path / "ref.nc")
    got_acts = extract(resumed, prepared, tmp_path / "resumed.nc")
    for name in ref_acts.data_vars:
        xr.testing.assert_identical(got_acts[name], ref_acts[name])
    assert not checkpoint.exists()
