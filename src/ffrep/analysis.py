"""Reduce activation files into tidy sparsity tables."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ffrep.activations import layer_arrays, open_activations
from ffrep.io import write_csv
from ffrep.metrics import active_fraction, hoyer

log = logging.getLogger(__name__)

RUN_KEYS = ["dataset", "algorithm", "architecture", "seed"]


def _selected(ds, samples: str) -> np.ndarray:
    correct = ds["correct"].values.astype(bool)
    return correct if samples == "correct" else np.ones_like(correct)


def _summarise(h: np.ndarray, active: np.ndarray) -> dict:
    defined = ~np.isnan(h)
    return {
        "hoyer": float(h[defined].mean()) if defined.any() else np.nan,
        "active_fraction": float(active.mean()) if active.size else np.nan,
        "n_samples": int(h.size),
        "n_all_zero": int((~defined).sum()),
    }


def run_sparsity(path: str | Path, samples: str = "correct"):
    """Sparsity of one run: a table per layer and one per layer and class."""
    ds = open_activations(path)
    try:
        keys = {k: ds.attrs[k] for k in RUN_KEYS}
        keys["seed"] = int(keys["seed"])
        accuracy = float(ds.attrs.get("accuracy", np.nan))
        mask = _selected(ds, samples)
        labels = ds["label"].values[mask]
        rows, by_class = [], []
        for layer, da in layer_arrays(ds):
            x = da.values[mask]  # (samples, units): one layer in memory at a time
            h, active = hoyer(x), active_fraction(x)
            base = {**keys, "layer": layer, "n_units": x.shape[1]}
            rows.append({**base, "accuracy": accuracy, **_summarise(h, active)})
            for label in np.unique(labels):
                sel = labels == label
                by_class.append(
                    {**base, "label": int(label), **_summarise(h[sel], active[sel])}
                )
    finally:
        ds.close()
    return pd.DataFrame(rows), pd.DataFrame(by_class)


def write_run_sparsity(path, out_layers, out_classes, samples="correct") -> None:
    layers, classes = run_sparsity(path, samples)
    write_csv(out_layers, layers)
    write_csv(out_classes, classes)
    log.info("sparsity of %s written", path)


def summarise_over_seeds(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, std and count over seeds of every numeric column but the keys."""
    values = [
        c
        for c in frame.columns
        if c not in by + ["seed"] and pd.api.types.is_numeric_dtype(frame[c])
    ]
    grouped = frame.groupby(by, sort=True)[values]
    out = grouped.agg(["mean", "std", "count"])
    out.columns = [f"{col}_{stat}" for col, stat in out.columns]
    n = grouped.size().rename("n_seeds")
    return out.join(n).reset_index()


def combine(paths: Iterable[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values([*RUN_KEYS, "layer"], kind="stable")


def write_tables(
    layer_tables: Iterable[str | Path],
    class_tables: Iterable[str | Path],
    out_layers: str | Path,
    out_classes: str | Path,
    out_summary: str | Path,
    out_class_summary: str | Path,
) -> None:
    """Combine per-run tables into the workflow's tidy tables and summaries."""
    layers = combine(layer_tables)
    classes = combine(class_tables).sort_values(
        [*RUN_KEYS, "layer", "label"], kind="stable"
    )
    write_csv(out_layers, layers)
    write_csv(out_classes, classes)
    keys = ["dataset", "algorithm", "architecture", "layer"]
    write_csv(out_summary, summarise_over_seeds(layers, keys))
    write_csv(out_class_summary, summarise_over_seeds(classes, keys + ["label"]))
    log.info("tables written: %s, %s", out_layers, out_classes)
