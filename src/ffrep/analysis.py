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
from ffrep.stats import compare_algorithms, summarise

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
    """Mean, std, t-based 95 % CI and count over seeds of every numeric column
    but the keys (see :func:`ffrep.stats.summarise`)."""
    return summarise(frame, by)


def combine(paths: Iterable[str | Path], sort: list[str] | None = None):
    frames = [pd.read_csv(p) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(sort or [*RUN_KEYS, "layer"], kind="stable")


def algorithm_tests(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Welch tests per dataset, architecture and layer: FF against BP and BP/FF."""
    keys = ["dataset", "architecture", "layer"]
    tests = [compare_algorithms(frame, m, keys) for m in metrics if m in frame]
    tests = [t for t in tests if not t.empty]
    return pd.concat(tests, ignore_index=True) if tests else pd.DataFrame()


def write_tables(
    layer_tables: Iterable[str | Path],
    class_tables: Iterable[str | Path],
    out_layers: str | Path,
    out_classes: str | Path,
    out_summary: str | Path,
    out_class_summary: str | Path,
    out_tests: str | Path | None = None,
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
    if out_tests:
        write_csv(out_tests, algorithm_tests(layers, ["hoyer", "active_fraction"]))
    log.info("tables written: %s, %s", out_layers, out_classes)


ENSEMBLE_TABLES = ("sizes", "overlap", "units", "layers")


def write_ensemble_tables(
    per_run: dict[str, list[str | Path]],
    outputs: dict[str, str | Path],
    similarity: Iterable[str | Path] = (),
) -> None:
    """Combine per-run ensemble tables over the grid, with summaries over seeds
    (mean and 95 % CI), FF-vs-BP tests and the overlap-similarity relation.

    ``per_run`` maps each of :data:`ENSEMBLE_TABLES` to its per-run files;
    ``outputs`` maps those names, and ``{name}_summary``, ``tests`` and
    ``similarity``, to output paths.
    """
    from ffrep.ensembles import overlap_vs_similarity

    keys = ["dataset", "algorithm", "architecture", "layer"]
    group = {
        "sizes": [*keys, "label"],
        "overlap": [*keys, "label_a", "label_b"],
        "units": None,
        "layers": keys,
    }
    frames = {}
    for name in ENSEMBLE_TABLES:
        frames[name] = combine(per_run[name])
        write_csv(outputs[name], frames[name])
        if group[name] is not None and f"{name}_summary" in outputs:
            write_csv(
                outputs[f"{name}_summary"],
                summarise_over_seeds(frames[name], group[name]),
            )
    metrics = [
        "hoyer",
        "selectivity",
        "lifetime_sparseness",
        "mean_ensemble_size",
        "units_in_two_or_more",
        "mean_pair_jaccard",
    ]
    write_csv(outputs["tests"], algorithm_tests(frames["layers"], metrics))
    sims = [pd.read_csv(p) for p in similarity]
    if "similarity" in outputs:
        sim = (
            pd.concat(sims, ignore_index=True)
            if sims
            else pd.DataFrame(
                columns=[
                    "dataset",
                    "label_a",
                    "label_b",
                    "image_correlation",
                    "bp_confusion",
                ]
            )
        )
        write_csv(outputs["similarity"], overlap_vs_similarity(frames["overlap"], sim))
    log.info("ensemble tables written")
