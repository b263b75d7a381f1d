"""Ensembles for categories held out of training.

A held-out variant of every run of the grid is trained without the classes of
``analysis.unseen.held_out_classes`` (neither as positives nor as negatives,
nor for BP's cross-entropy); its test-set activations are recorded with the
label input of ``analysis.unseen.label_input``. On those activations this
module measures whether the held-out classes still get ensembles: their size
and sparsity, their overlap with the seen classes' ensembles, and how well a
nearest-ensemble rule tells the held-out classes apart.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ffrep.activations import layer_arrays, open_activations
from ffrep.config import resolve_run
from ffrep.datasets import N_CLASSES
from ffrep.ensembles import layer_ensembles, run_keys
from ffrep.io import write_csv
from ffrep.metrics import active_fraction, hoyer, jaccard_matrix, overlap_matrix

log = logging.getLogger(__name__)

VARIANT = "unseen"


def unseen_problems(config: dict) -> list[str]:
    """What the schema cannot check about ``analysis.unseen``."""
    unseen = config["analysis"]["unseen"]
    held = unseen["held_out_classes"]
    problems = []
    if len(held) > N_CLASSES - 2:
        problems.append(
            "analysis.unseen.held_out_classes: at least two classes must stay in"
            f" training; {len(held)} of {N_CLASSES} are held out"
        )
    if config["forward_forward"]["held_out_classes"] and held:
        problems.append(
            "analysis.unseen.held_out_classes and forward_forward.held_out_classes"
            " are both set; the held-out variant needs main runs trained on every"
            " class: empty one of them"
        )
    return problems


def unseen_algorithms(config: dict) -> tuple[list[str], list[str]]:
    """The algorithms the held-out variant trains (those of
    ``analysis.unseen.algorithms``, default all, that the grid has), and those
    it names that the grid leaves out."""
    grid = config["grid"]["algorithms"]
    chosen = config["analysis"]["unseen"]["algorithms"] or grid
    return [a for a in grid if a in chosen], [a for a in chosen if a not in grid]


def unseen_run(config: dict, dataset, algorithm, architecture, seed):
    """The held-out variant of one run of the grid."""
    run = resolve_run(config, dataset, algorithm, architecture, seed)
    unseen = config["analysis"]["unseen"]
    run.held_out_classes = sorted(unseen["held_out_classes"])
    # its activations are recorded with analysis.unseen.label_input, which the
    # unseen_activations rule passes
    # TODO(needs nine passes per image): an "each seen label" input, the mean
    # representation over the image written with every seen label
    return run


def _halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alternate the samples of each class between a reference and an
    evaluation half (by their order in the test split)."""
    ref = np.zeros(labels.shape[0], dtype=bool)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        ref[idx[::2]] = True
    return ref, ~ref


def nearest_ensemble_accuracy(
    x: np.ndarray, labels: np.ndarray, classes: list[int], factor: float
) -> float:
    """Accuracy of the nearest-ensemble rule among ``classes``.

    Ensembles are found on one half of each class's samples; each sample of
    the other half is assigned to the class ``argmax_k mean_{j in E_k} x_j``
    (its mean activation over the class's ensemble). NaN with fewer than two
    classes. Chance is ``1 / len(classes)``.
    """
    keep = np.isin(labels, classes)
    x, labels = x[keep], labels[keep]
    if len(classes) < 2 or x.shape[0] == 0:
        return np.nan
    ref, ev = _halves(labels)
    _, members = layer_ensembles(x[ref], labels[ref], factor)
    m = members[classes].astype(np.float64)  # (K, units)
    size = m.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (x[ev] @ m.T) / size  # (samples, K)
    score = np.where(np.isfinite(score), score, -np.inf)
    guess = np.asarray(classes)[score.argmax(1)]
    return float((guess == labels[ev]).mean()) if ev.any() else np.nan


def run_unseen(
    path: str | Path, held_out: list[int], factor: float = 2.0, samples="correct"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables of one held-out run: one row per layer and class, one per layer.

    Seen classes use the samples of ``samples`` (correct ones by default); the
    held-out classes use all their test samples, as no training defined what a
    correct answer for them would be.
    """
    ds = open_activations(path)
    try:
        keys = {**run_keys(ds), "variant": VARIANT}
        names = json.loads(ds.attrs["class_names"])
        label_input = ds.attrs.get("label_input", "")
        labels_all = ds["label"].values.astype(np.int64)
        held = np.isin(labels_all, held_out)
        use = held | (ds["correct"].values.astype(bool) | (samples == "all"))
        labels = labels_all[use]
        seen = [k for k in range(N_CLASSES) if k not in held_out]
        class_rows, layer_rows = [], []
        for layer, da in layer_arrays(ds):
            x = da.values[use]
            _, members = layer_ensembles(x, labels, factor)
            inter, jac = overlap_matrix(members), jaccard_matrix(members)
            seen_union = members[seen].any(0)
            h, act = hoyer(x), active_fraction(x)
            base = {**keys, "label_input": label_input, "layer": layer}
            for k in range(N_CLASSES):
                sel = labels == k
                others = [j for j in seen if j != k]
                best = others[int(np.nanargmax(np.nan_to_num(jac[k, others], nan=-1)))]
                class_rows.append(
                    {
                        **base,
                        "label": k,
                        "class_name": names[k],
                        "held_out": k in held_out,
                        "n_samples": int(sel.sum()),
                        "ensemble_size": int(members[k].sum()),
                        "hoyer": float(np.nanmean(h[sel])) if sel.any() else np.nan,
                        "active_fraction": float(act[sel].mean())
                        if sel.any()
                        else np.nan,
                        "mean_overlap_with_seen": float(inter[k, others].mean()),
                        "max_jaccard_with_seen": float(np.nanmax(jac[k, others]))
                        if np.isfinite(jac[k, others]).any()
                        else np.nan,
                        "closest_seen_label": best,
                        "units_in_no_seen_ensemble": int(
                            (members[k] & ~members[others].any(0)).sum()
                        ),
                    }
                )
            layer_rows.append(
                {
                    **base,
                    "n_held_out": len(held_out),
                    "nearest_ensemble_accuracy_held_out": nearest_ensemble_accuracy(
                        x, labels, sorted(held_out), factor
                    ),
                    "chance_held_out": 1 / len(held_out) if held_out else np.nan,
                    "nearest_ensemble_accuracy_seen": nearest_ensemble_accuracy(
                        x, labels, seen, factor
                    ),
                    "chance_seen": 1 / len(seen),
                    "seen_ensemble_units": int(seen_union.sum()),
                }
            )
    finally:
        ds.close()
    return pd.DataFrame(class_rows), pd.DataFrame(layer_rows)


def write_run_unseen(path, held_out, out_classes, out_layers, factor, samples):
    classes, layers = run_unseen(path, held_out, factor, samples)
    write_csv(out_classes, classes)
    write_csv(out_layers, layers)
    log.info("unseen-category tables of %s written", path)
