"""Test-set activations of a trained run as a labeled xarray Dataset in NetCDF."""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ffrep import data as data_mod
from ffrep.config import RunConfig
from ffrep.datasets import DATASETS
from ffrep.errors import FFrepError
from ffrep.integrity import FORMAT_VERSION, REBUILD, activation_problems
from ffrep.io import atomic_path, git_commit, package_versions
from ffrep.models import LabelOverlay
from ffrep.train import (
    CHUNK,
    configure_torch,
    label_value,
    load_model,
    predict,
)

log = logging.getLogger(__name__)


class ActivationFileError(FFrepError, RuntimeError):
    """An activation file that is missing, unreadable or incomplete."""


@torch.no_grad()
def hidden_activations(net, run: RunConfig, x: torch.Tensor, labels) -> list:
    """Every hidden layer's post-ReLU activation, as float32 NumPy arrays.

    FF and BP/FF see the test image with ``labels`` written in (or the neutral
    label); BP sees the raw image.
    """
    net.eval()
    layers: list[list[np.ndarray]] = [[] for _ in net.layers]
    if run.algorithm != "bp":
        overlay = LabelOverlay(DATASETS[run.dataset], label_value(run, x), x.device)
    for start in range(0, x.shape[0], CHUNK):
        xb = x[start : start + CHUNK]
        if run.algorithm == "bp":
            hidden = net.hidden(xb)
        else:
            xb = xb.clone()
            if labels is None:
                overlay.neutral_(xb)
            else:
                overlay.apply_(xb, labels[start : start + CHUNK])
            hidden = net(xb)
        for store, h in zip(layers, hidden, strict=True):
            store.append(h.float().cpu().numpy())
    return [np.concatenate(parts) for parts in layers]


def build_dataset(
    hidden: list[np.ndarray],
    labels: np.ndarray,
    prediction: np.ndarray,
    run: RunConfig,
    device: str,
    sample_index: np.ndarray | None = None,
) -> xr.Dataset:
    """Assemble the labeled Dataset: ``activation(sample, layer, unit)`` when all
    layers have the same width, else one ``layer{l}(sample, unit_l)`` per layer."""
    n = labels.shape[0]
    sample = np.arange(n) if sample_index is None else sample_index
    coords = {
        "sample": ("sample", sample, {"long_name": "index in the test split"}),
        "label": ("sample", labels.astype(np.int8), {"long_name": "true class"}),
        "prediction": ("sample", prediction.astype(np.int8)),
        "correct": ("sample", (labels == prediction).astype(np.int8)),
    }
    widths = {h.shape[1] for h in hidden}
    if len(widths) == 1:
        data_vars = {
            "activation": (
                ("sample", "layer", "unit"),
                np.stack(hidden, axis=1).astype(np.float32, copy=False),
                {"long_name": "post-ReLU activation"},
            )
        }
        coords["layer"] = ("layer", np.arange(1, len(hidden) + 1, dtype=np.int32))
        coords["unit"] = ("unit", np.arange(widths.pop(), dtype=np.int32))
    else:
        data_vars = {
            f"layer{i + 1}": (
                ("sample", f"unit{i + 1}"),
                h.astype(np.float32, copy=False),
                {"long_name": f"post-ReLU activation of hidden layer {i + 1}"},
            )
            for i, h in enumerate(hidden)
        }
    info = DATASETS[run.dataset]
    attrs = {
        "format_version": FORMAT_VERSION,
        "dataset": run.dataset,
        "algorithm": run.algorithm,
        "architecture": run.architecture,
        "seed": run.seed,
        "n_layers": len(hidden),
        "hidden_units": json.dumps([h.shape[1] for h in hidden]),
        "class_names": json.dumps(list(info.classes)),
        "label_input": run.label_input if run.algorithm != "bp" else "none",
        "accuracy": float((labels == prediction).mean()),
        "config": run.to_json(),
        "versions": json.dumps(package_versions(), sort_keys=True),
        "git_commit": git_commit(),
        "device": device,
        # TODO(training threads): the thread count training ran with is in
        # metrics.json (torch_threads), not in the weights file this reads
        "torch_threads": torch.get_num_threads(),
        **numerics_settings(),
        # the training's arithmetic; activations are always recorded in fp32
        "precision": run.precision,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def numerics_settings() -> dict:
    """Every torch setting that can change the bits of the activations."""
    return {
        "deterministic_algorithms": int(torch.are_deterministic_algorithms_enabled()),
        "tf32_matmul": int(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": int(torch.backends.cudnn.allow_tf32),
        "cudnn_deterministic": int(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": int(torch.backends.cudnn.benchmark),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
        "cuda_version": torch.version.cuda or "none",
        "cudnn_version": str(torch.backends.cudnn.version() or "none"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
    }


def write(ds: xr.Dataset, path: str | Path, compression_level: int = 4) -> None:
    """Write ``ds`` to NetCDF-4 with lossless zlib, through a temporary name."""
    # fletcher32: a damaged chunk fails to read instead of giving wrong numbers
    encoding = {
        name: {
            "zlib": compression_level > 0,
            "complevel": compression_level,
            "fletcher32": True,
        }
        for name in ds.data_vars
    }
    with atomic_path(path) as tmp:
        # TODO(netCDF-C leak): when the write fails (a full disk), the library
        # keeps the removed temporary file open, so its space comes back only
        # when the process exits; the workflow's jobs exit at once.
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)


def open_activations(path: str | Path) -> xr.Dataset:
    """Open an activation file lazily, checking that it is complete.

    Raises
    ------
    ActivationFileError
        When the file is missing, unreadable, or lacks the variables and
        attributes that a complete file has.
    """
    path = Path(path)
    if not path.exists():
        raise ActivationFileError(f"{path}: activation file not found")
    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except Exception as err:
        raise ActivationFileError(
            f"{path}: unreadable activation file ({err}); {REBUILD}"
        ) from err
    variables = {k: v.shape for k, v in ds.variables.items()}
    problems = activation_problems(variables, ds.attrs, dict(ds.sizes))
    if problems:
        ds.close()
        raise ActivationFileError(
            f"{path}: incomplete activation file (lacks {', '.join(problems)});"
            f" {REBUILD}"
        )
    return ds


def layer_arrays(ds: xr.Dataset) -> Iterator[tuple[int, xr.DataArray]]:
    """(layer number, activation (sample, unit)) for each hidden layer."""
    if "activation" in ds.data_vars:
        for layer in ds["layer"].values:
            yield int(layer), ds["activation"].sel(layer=layer).rename(unit="unit")
    else:
        for i in range(1, int(ds.attrs.get("n_layers", 0)) + 1):
            name = f"layer{i}"
            if name in ds.data_vars:
                yield i, ds[name].rename({f"unit{i}": "unit"})


def extract(
    model_path: str | Path,
    data_path: str | Path,
    out: str | Path,
    label_input: str | None = None,
    compression_level: int | None = None,
) -> xr.Dataset:
    """Record the test-set activations of the run in ``model_path``, with the
    label input and compression given (else the defaults of
    :class:`config.RunConfig`)."""
    net, run = load_model(model_path)
    if label_input is not None:
        run.label_input = label_input
    if compression_level is not None:
        run.compression_level = compression_level
    device = configure_torch(run)
    net = net.to(device)
    splits = data_mod.load(
        data_path, run.max_train_samples, run.max_test_samples, run.dataset
    )
    x = splits.x_test.to(device)
    y = splits.y_test.to(device)
    prediction = predict(net, run, x)
    labels = {"true_label": y, "predicted_label": prediction, "neutral": None}
    hidden = hidden_activations(net, run, x, labels[run.label_input])
    ds = build_dataset(
        hidden, y.cpu().numpy(), prediction.cpu().numpy(), run, str(device)
    )
    write(ds, out, run.compression_level)
    log.info("wrote %s (%d samples, accuracy %.4f)", out, len(y), ds.attrs["accuracy"])
    return ds
