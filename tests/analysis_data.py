"""Constructed activations with known ensembles, for the analysis tests."""

from __future__ import annotations

import numpy as np

from ffrep.activations import build_dataset, write
from ffrep.config import RunConfig

N_PER_CLASS = 40
SIZE = 5  # units each class drives alone
SHARED = {(0, 6): [50, 51], (2, 4): [52]}  # units two classes drive together
N_UNITS = 60


def run_config(algorithm="ff", **kw) -> RunConfig:
    fields = {
        "dataset": "fashion_mnist",
        "algorithm": algorithm,
        "architecture": "tiny",
        "seed": 0,
        "hidden_units": [N_UNITS, N_UNITS],
        "learning_rate": 1e-3,
        "epochs": 1,
        "batch_size": 10,
        **kw,
    }
    return RunConfig(**fields)


def driven_units(k: int) -> list[int]:
    own = list(range(SIZE * k, SIZE * (k + 1)))
    return own + [u for pair, us in SHARED.items() if k in pair for u in us]


def activations(seed=0, noise=0.05, n_per_class=N_PER_CLASS):
    """(samples, units) activations: class k drives :func:`driven_units` at
    about 1, every other unit sits at about ``noise`` or 0."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    x = rng.uniform(0, noise, (labels.size, N_UNITS)) * (
        rng.random((labels.size, N_UNITS)) < 0.5
    )
    for k in range(10):
        rows = labels == k
        x[np.ix_(rows, driven_units(k))] = rng.uniform(
            0.8, 1.2, (rows.sum(), len(driven_units(k)))
        )
    return x.astype(np.float32), labels


def write_file(path, algorithm="ff", seed=0, wrong=0, **kw):
    """An activation file of two identical layers of :func:`activations`; the
    first ``wrong`` samples are marked misclassified."""
    x, labels = activations(seed)
    prediction = labels.copy()
    prediction[:wrong] = (labels[:wrong] + 1) % 10
    ds = build_dataset(
        [x, x], labels, prediction, run_config(algorithm, seed=seed, **kw), "cpu"
    )
    write(ds, path)
    return path
