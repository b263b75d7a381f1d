"""Small synthetic datasets in the original formats, for tests that must not
depend on the network or on the real data being installed."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import gzip
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from ffrep.datasets import DATASETS

N_TRAIN, N_TEST = 120, 40
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def shrink(monkeypatch, name="fashion_mnist", n_train=N_TRAIN, n_test=N_TEST):
    """Make ffrep expect ``n_train``/``n_test`` images of ``name``."""
    small = dataclasses.replace(DATASETS[name], n_train=n_train, n_test=n_test)
    monkeypatch.setitem(DATASETS, name, small)
    return small


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic 2049 for labels (1-d), 2051 for images (3-d)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {1: 2049, 3: 2051}[array.ndim]
    return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()


def images_and_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images whose bright column depends on the class: learnable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 4:24, 2 + 2 * label : 4 + 2 * label] = 250
    return images, labels.astype(np.uint8)


def write_idx_folder(
    folder: Path, n_train=N_TRAIN, n_test=N_TEST, gz=True, seed=0
) -> Path:
    """The four original IDX files of an MNIST-like dataset in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = images_and_labels(n, seed + (split == "test"))
        for kind, array in (("images", images), ("labels", labels)):
            name = IDX_NAMES[f"{split}_{kind}"]
            data = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (folder / name).write_bytes(data)
    return folder


def write_prepared(path: Path, name="fashion_mnist", n_train=N_TRAIN, n_test=N_TEST):
    """A prepared file as :func:`ffrep.data.prepare` writes it (call
    :func:`shrink` first so that ffrep expects these sizes)."""
    payload = {"dataset": name, "mean": [0.1307], "std": [0.3081]}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = images_and_labels(n, 7 + (split == "test"))
        x = torch.from_numpy(images.reshape(n, -1).astype(np.float32) / 255)
        payload[f"x_{split}"] = (x - 0.1307) / 0.3081
        payload[f"y_{split}"] = torch.from_numpy(labels.astype(np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder``, relative, sorted: to compare before/after."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def tiny_tmpfs(mount: Path, size: str = "96k", strict: bool = True):
    """A tmpfs of ``size`` at ``mount``, for real full-disk tests; skips the
    test where mounting is not allowed and, if ``strict``, fails it when a file
    stays open on the disk."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        # a traceback kept alive can hold a writer's file open: let it go first
        gc.collect()
        done = subprocess.run(["umount", str(mount)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)
            if strict:
                pytest.fail(f"a file was left open on the full disk: {done.stderr}")
