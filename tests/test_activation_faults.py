"""Activation files: written whole, checked before use, rebuilt when damaged,
identical to the bit for the same seed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_training_faults import tiny_run

from ffrep import activations, train
from ffrep.activations import ActivationFileError, extract, open_activations
from ffrep.analysis import run_sparsity
from ffrep.integrity import check_activation_file

from fakedata import shrink, tiny_tmpfs, write_prepared

REPO = Path(__file__).resolve().parents[1]
NUMERICS = (
    "deterministic_algorithms",
    "tf32_matmul",
    "tf32_cudnn",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "float32_matmul_precision",
    "torch_threads",
    "torch_interop_threads",
    "cublas_workspace_config",
    "cuda_version",
    "cudnn_version",
    "cpu_capability",
    "platform",
    "device",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Prepared data and the weights of seeds 0, 0 (again) and 1 of a tiny FF run."""
    folder = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        shrink(mp)
        prepared = write_prepared(folder / "prepared.pt")
        models = []
        for i, seed in enumerate([0, 0, 1]):
            model = folder / f"model{i}.pt"
            train.train_run(
                tiny_run("ff", seed=seed, epochs=1),
                prepared,
                model_out=model,
                metrics_out=folder / f"metrics{i}.json",
            )
            models.append(model)
        yield prepared, models, mp


@pytest.fixture(scope="module")
def good(runs, tmp_path_factory):
    prepared, models, _ = runs
    path = tmp_path_factory.mktemp("act") / "seed0.nc"
    extract(models[0], prepared, path)
    return path


def fds_to(suffix: str) -> list[str]:
    """This process's open files whose names end with ``suffix``."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [n for n in names if n.endswith(suffix)]


def copy(good: Path, tmp_path: Path) -> Path:
    path = tmp_path / "act.nc"
    shutil.copy(good, path)
    return path


# --- complete files ---------------------------------------------------------


def test_good_file_opens_and_checks(good):
    assert check_activation_file(good) is None
    ds = open_activations(good)
    try:
        assert ds["activation"].dims == ("sample", "layer", "unit")
        for key in NUMERICS:
            assert key in ds.attrs, key
        assert {"torch", "numpy", "python"} <= set(json.loads(ds.attrs["versions"]))
        assert ds.attrs["deterministic_algorithms"] == 1
        assert ds.attrs["tf32_matmul"] == 0 and ds.attrs["tf32_cudnn"] == 0
    finally:
        ds.close()


def test_same_seed_same_bits_other_seed_other_bits(runs, tmp_path):
    prepared, models, _ = runs
    arrays, attrs = [], []
    for i, model in enumerate(models):
        ds = extract(model, prepared, tmp_path / f"a{i}.nc")
        with xr.open_dataset(tmp_path / f"a{i}.nc") as on_disk:
            arrays.append(on_disk["activation"].values)
            attrs.append({k: v for k, v in on_disk.attrs.items() if k != "created"})
        assert np.array_equal(on_disk["activation"].values, ds["activation"].values)
    assert arrays[0].tobytes() == arrays[1].tobytes()
    assert attrs[0] == attrs[1]
    assert arrays[0].tobytes() != arrays[2].tobytes()


def test_missing_file_is_not_damaged(tmp_path):
    assert check_activation_file(tmp_path / "absent.nc") is None
    with pytest.raises(ActivationFileError, match="not found"):
        open_activations(tmp_path / "absent.nc")


# --- damaged files ----------------------------------------------------------


def _truncate(path: Path, keep: float):
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: _truncate(p, 0.5),
        lambda p: _truncate(p, 0.0),
        lambda p: p.write_bytes(os.urandom(20000)),
    ],
    ids=["truncated", "empty", "garbage"],
)
def test_unreadable_file_detected(good, tmp_path, damage):
    path = copy(good, tmp_path)
    damage(path)
    assert check_activation_file(path).startswith("unreadable")
    with pytest.raises(ActivationFileError, match="delete it and rerun") as err:
        open_activations(path)
    assert str(path) in str(err.value)
    assert fds_to(".nc") == []


def _rewrite(good: Path, path: Path, change) -> Path:
    with xr.open_dataset(good) as ds:
        ds = change(ds.load())
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda ds: ds.drop_attrs(), "attribute 'dataset'"),
        (lambda ds: ds.drop_vars("activation"), "variable layer1 of 16 units"),
        (lambda ds: ds.drop_vars("correct"), "the label and correct coordinates"),
        (lambda ds: ds.isel(layer=slice(0, 2)), "an activation of 3 layers"),
        (lambda ds: ds.assign_attrs(format_version=0), "format_version 1"),
    ],
    ids=["no_attrs", "no_data", "no_correct", "missing_layer", "old_format"],
)
def test_incomplete_file_detected(good, tmp_path, change, fragment):
    path = _rewrite(good, tmp_path / "act.nc", change)
    assert fragment in check_activation_file(path)
    with pytest.raises(ActivationFileError, match="incomplete") as err:
        open_activations(path)
    assert fragment in str(err.value)
    assert fds_to(".nc") == []


def test_corrupted_data_chunk_fails_to_read(runs, tmp_path, monkeypatch):
    prepared, models, _ = runs
    path = tmp_path / "raw.nc"
    monkeypatch.setattr(activations, "write", _uncompressed(activations.write))
    extract(models[0], prepared, path)
    with xr.open_dataset(path) as ds:
        values = ds["activation"].values
    blob = bytearray(path.read_bytes())
    start = blob.find(values.astype("<f4").tobytes()[:256])
    assert start > 0, "the data is stored as is, so it can be found"
    blob[start + 100] ^= 0xFF
    path.write_bytes(bytes(blob))
    ds = open_activations(path)  # the header is intact
    with pytest.raises((RuntimeError, OSError)):
        ds["activation"].values  # noqa: B018
    ds.close()


def _uncompressed(write):
    return lambda ds, path, compression_level=4: write(ds, path, 0)


# --- writing ----------------------------------------------------------------


def test_write_interrupted_leaves_nothing(good, tmp_path, monkeypatch):
    with xr.open_dataset(good) as ds:
        ds = ds.load()
    real = xr.Dataset.to_netcdf

    def half_then_fail(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        _truncate(Path(path), 0.5)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_then_fail)
    target = tmp_path / "out.nc"
    with pytest.raises(OSError):
        activations.write(ds, target)
    assert list(tmp_path.iterdir()) == []


def test_real_full_disk_leaves_nothing(runs, tmp_path):
    prepared, models, _ = runs
    with tiny_tmpfs(tmp_path / "disk", "4k", strict=False) as disk:
        with pytest.raises(OSError, match="No space left on device while") as err:
            extract(models[0], prepared, disk / "act.nc")
        assert err.value.errno == errno.ENOSPC
        del err
        assert list(disk.iterdir()) == []


@pytest.mark.xfail(
    strict=True, reason="netCDF-C keeps the file of a failed write open until exit"
)
def test_full_disk_frees_its_space_at_once(runs, tmp_path):
    prepared, models, _ = runs
    with tiny_tmpfs(tmp_path / "disk", "4k", strict=False) as disk:
        with pytest.raises(OSError):
            extract(models[0], prepared, disk / "act.nc")
        assert fds_to(".tmp (deleted)") == []


# --- analysis of many runs --------------------------------------------------


def test_analysis_holds_one_file_at_a_time(good, tmp_path, monkeypatch):
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"run{i}.nc")
        shutil.copy(good, paths[-1])
    most = 0
    real_open = activations.open_activations

    def watched(path):
        nonlocal most
        ds = real_open(path)
        most = max(most, len(fds_to(".nc")))
        return ds

    monkeypatch.setattr("ffrep.analysis.open_activations", watched)
    for path in paths:
        layers, classes = run_sparsity(path)
        assert len(layers) == 3
    assert most == 1
    assert fds_to(".nc") == []


# --- the workflow rebuilds damaged files ------------------------------------

RUN = "fashion_mnist/ff/tiny/seed0"
CHAIN = [
    "resources/data/prepared/fashion_mnist.pt",
    f"results/runs/{RUN}/model.pt",
    f"results/runs/{RUN}/metrics.json",
    f"results/activations/{RUN}.nc",
    f"results/tables/runs/{RUN}/sparsity.csv",
    f"results/tables/runs/{RUN}/sparsity_by_class.csv",
    "results/tables/sparsity.csv",
    "results/tables/sparsity_by_class.csv",
    "results/tables/sparsity_summary.csv",
    "results/tables/sparsity_by_class_summary.csv",
    f"results/figures/walls/{RUN}.png",
    f"results/figures/walls/{RUN}.pdf",
    "results/figures/hoyer_by_class/fashion_mnist/tiny.png",
    "results/figures/hoyer_by_class/fashion_mnist/tiny.pdf",
]


# the outputs of CHAIN that nothing else in CHAIN is made from
SPARSITY_TARGETS = [n for n in CHAIN[6:] if "runs/" not in n]


def _plan(work: Path, *targets: str) -> str:
    targets = targets or tuple(SPARSITY_TARGETS)
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", *targets]
        + ["--configfile", "config/one.yaml"],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_workflow_rebuilds_damaged_activation_file(good, tmp_path):
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    shutil.copytree(REPO / "workflow", work / "workflow")
    shutil.copytree(REPO / "config", work / "config")
    (work / "config" / "one.yaml").write_text(
        (REPO / "config" / "test.yaml")
        .read_text()
        .replace("algorithms: [ff, bp_ff, bp]", "algorithms: [ff]")
        .replace("seeds: [0, 1]", "seeds: [0]")
    )
    # a finished workflow: every file newer than what it is made from
    now = time.time() - 1000
    for i, name in enumerate(CHAIN):
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".nc"):
            shutil.copy(good, path)
        else:
            path.write_text("made\n")
        os.utime(path, (now + i, now + i))
    assert "Nothing to be done" in _plan(work)

    # damaged after its analysis: set aside, and rebuilt only when needed
    _truncate(work / CHAIN[3], 0.5)
    output = _plan(work)
    assert "to be rebuilt" in output and "Nothing to be done" in output
    assert "rule activations:" in _plan(work, f"results/activations/{RUN}.nc")

    # damaged before its analysis: rebuilt first, never analysed
    shutil.copy(good, work / CHAIN[3])
    _truncate(work / CHAIN[3], 0.3)
    for name in CHAIN[4:]:
        (work / name).unlink()
    output = _plan(work)
    assert f"results/activations/{RUN}.nc is unreadable" in output
    assert "to be rebuilt" in output
    assert not (work / CHAIN[3]).exists()
    assert (work / "results" / "damaged" / "activations" / f"{RUN}.nc").exists()
    for rule in ("activations", "sparsity", "sparsity_tables", "activation_wall"):
        assert f"rule {rule}:" in output
    assert "rule train:" not in output
