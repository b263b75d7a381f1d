"""Small learnable data in the formats the workflow reads, and a way to run
the real Snakemake command line on a scratch copy of the workflow."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ffrep.config import RunConfig
from ffrep.datasets import DATASETS

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


def prototype_images(n: int, shape, seed: int = 0, noise: float = 0.35):
    """uint8 images of ten classes, each a fixed random pattern plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, *shape)) < 0.3
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    pixels = prototypes[labels] * 200.0 + rng.normal(0, 255 * noise, (n, *shape))
    return np.clip(pixels, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_idx(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Gzipped IDX files in the layout of the original (Fashion-)MNIST."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = prototype_images(n_train + n_test, (28, 28), seed)
    splits = {
        "train": (images[:n_train], labels[:n_train]),
        "t10k": (images[n_train:], labels[n_train:]),
    }
    for prefix, (x, y) in splits.items():
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">4I", 2051, len(x), 28, 28) + x.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">2I", 2049, len(y)) + y.tobytes())
    return folder


def write_prepared(
    path: Path, dataset="fashion_mnist", n_train=600, n_test=200, seed=0
) -> Path:
    """A small prepared data file, normalised as the real one would be."""
    info = DATASETS[dataset]
    c, h, w = info.shape
    images, labels = prototype_images(n_train + n_test, (c, h, w), seed)
    x = torch.from_numpy(images).float().div(255)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    x = ((x - mean) / std).reshape(len(x), -1)
    y = torch.from_numpy(labels.astype(np.int64))
    payload = {
        "x_train": x[:n_train].contiguous(),
        "y_train": y[:n_train].contiguous(),
        "x_test": x[n_train:].contiguous(),
        "y_test": y[n_train:].contiguous(),
        "dataset": dataset,
        "mean": list(info.mean),
        "std": list(info.std),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def small_run(algorithm: str, **overrides) -> RunConfig:
    """A run that learns the prototype data in a second or two."""
    settings = {
        "ff": {"learning_rate": 3e-2, "epochs": 20, "batch_size": 50},
        "bp_ff": {"learning_rate": 3e-3, "epochs": 20, "batch_size": 50},
        "bp": {"learning_rate": 1e-3, "epochs": 5, "batch_size": 100},
    }[algorithm]
    fields = {
        "dataset": "fashion_mnist",
        "algorithm": algorithm,
        "architecture": "tiny",
        "seed": 0,
        "hidden_units": [32, 32, 32],
        "device": "cpu",
        "num_threads": 1,
        "checkpoint_every_epochs": 1,
        **settings,
        **overrides,
    }
    return RunConfig(**fields)


# --- the whole workflow ------------------------------------------------------


def copy_workflow(dest: Path) -> Path:
    """A scratch copy of the workflow, to run Snakemake in."""
    for name in ("Snakefile", "workflow", "config", "environment.yml"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy(src, dest / name)
    return dest


def snakemake(workdir: Path, *args, check=True) -> subprocess.CompletedProcess:
    """Run the real Snakemake command line in ``workdir``."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-4000:] + result.stderr[-4000:])
    return result
