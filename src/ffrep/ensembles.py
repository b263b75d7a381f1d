"""Category ensembles of one run, their overlaps and mixed selectivity, and how
the overlap of two classes follows their similarity."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from ffrep.activations import layer_arrays, open_activations
from ffrep.datasets import N_CLASSES
from ffrep.io import write_csv
from ffrep.metrics import (
    class_means,
    ensembles,
    hoyer,
    jaccard_matrix,
    lifetime_sparseness,
    memberships,
    overlap_matrix,
    selectivity,
)

log = logging.getLogger(__name__)

RUN_KEYS = ["dataset", "algorithm", "architecture", "seed"]


def run_keys(ds) -> dict:
    keys = {k: ds.attrs[k] for k in RUN_KEYS}
    keys["seed"] = int(keys["seed"])
    return keys


def sample_mask(ds, samples: str) -> np.ndarray:
    """The samples the statistics use: the correctly classified ones, or all."""
    correct = ds["correct"].values.astype(bool)
    return correct if samples == "correct" else np.ones_like(correct)


def layer_ensembles(x: np.ndarray, labels: np.ndarray, factor: float):
    """Class means (classes, units) and ensemble membership of one layer."""
    means = class_means(x, labels, N_CLASSES)
    return means, ensembles(np.nan_to_num(means), factor) & ~np.isnan(means)


def run_ensembles(
    path: str | Path, factor: float = 2.0, samples: str = "correct"
) -> dict[str, pd.DataFrame]:
    """Ensemble tables of one activation file.

    Returns
    -------
    dict of DataFrames
        ``sizes``: one row per layer and class (ensemble size, samples, Hoyer);
        ``overlap``: one row per layer and ordered class pair (shared units,
        Jaccard index); ``units``: one row per layer and unit (class
        selectivity, lifetime sparseness, number of ensembles, preferred class);
        ``layers``: one row per layer (mixed-selectivity counts and the means of
        the unit measures beside the population Hoyer sparseness).
    """
    ds = open_activations(path)
    try:
        keys = run_keys(ds)
        classes = json.loads(ds.attrs["class_names"])
        mask = sample_mask(ds, samples)
        labels = ds["label"].values[mask].astype(np.int64)
        sizes, overlap, units, layers = [], [], [], []
        for layer, da in layer_arrays(ds):
            x = da.values[mask]  # (samples, units), one layer in memory at a time
            means, members = layer_ensembles(x, labels, factor)
            counts = np.bincount(labels, minlength=N_CLASSES)
            h = hoyer(x)
            base = {**keys, "layer": layer, "n_units": x.shape[1]}
            for k in range(N_CLASSES):
                hk = h[labels == k]
                sizes.append(
                    {
                        **base,
                        "label": k,
                        "class_name": classes[k],
                        "n_samples": int(counts[k]),
                        "ensemble_size": int(members[k].sum()),
                        "ensemble_fraction": float(members[k].mean()),
                        "hoyer": float(np.nanmean(hk)) if hk.size else np.nan,
                    }
                )
            inter, jac = overlap_matrix(members), jaccard_matrix(members)
            for i in range(N_CLASSES):
                for j in range(N_CLASSES):
                    overlap.append(
                        {
                            **base,
                            "label_a": i,
                            "label_b": j,
                            "overlap": int(inter[i, j]),
                            "jaccard": float(jac[i, j]),
                        }
                    )
            sel, life = selectivity(means), lifetime_sparseness(x)
            member = memberships(members)
            preferred = np.where(
                np.isnan(means).all(0),
                -1,
                np.nanargmax(np.nan_to_num(means, nan=-1), 0),
            )
            units.append(
                pd.DataFrame(
                    {
                        **base,
                        "unit": np.arange(x.shape[1]),
                        "selectivity": sel,
                        "lifetime_sparseness": life,
                        "n_ensembles": member,
                        "preferred_label": preferred,
                        "mean_activation": x.mean(0) if len(x) else np.nan,
                    }
                )
            )
            off = ~np.eye(N_CLASSES, dtype=bool)
            layers.append(
                {
                    **base,
                    "accuracy": float(ds.attrs.get("accuracy", np.nan)),
                    "hoyer": float(np.nanmean(h)) if h.size else np.nan,
                    "selectivity": float(np.nanmean(sel))
                    if np.isfinite(sel).any()
                    else np.nan,
                    "lifetime_sparseness": float(np.nanmean(life))
                    if np.isfinite(life).any()
                    else np.nan,
                    "mean_ensemble_size": float(members.sum(1).mean()),
                    "units_in_no_ensemble": int((member == 0).sum()),
                    "units_in_one_ensemble": int((member == 1).sum()),
                    "units_in_two_or_more": int((member >= 2).sum()),
                    "mixed_fraction_of_members": float(
                        (member >= 2).sum() / max((member >= 1).sum(), 1)
                    ),
                    "mean_pair_overlap": float(inter[off].mean()),
                    "mean_pair_jaccard": float(np.nanmean(jac[off]))
                    if np.isfinite(jac[off]).any()
                    else np.nan,
                }
            )
    finally:
        ds.close()
    return {
        "sizes": pd.DataFrame(sizes),
        "overlap": pd.DataFrame(overlap),
        "units": pd.concat(units, ignore_index=True),
        "layers": pd.DataFrame(layers),
    }


def write_run_ensembles(path, outputs: dict, factor=2.0, samples="correct") -> None:
    """Write the tables of :func:`run_ensembles` to ``outputs[name]``."""
    tables = run_ensembles(path, factor, samples)
    for name, out in outputs.items():
        write_csv(out, tables[name])
    log.info("ensembles of %s written", path)


# --- class similarity --------------------------------------------------------


def image_similarity(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pearson correlation of the class-mean images: (classes, classes).

    ``r_kl = corr(mean image of class k, mean image of class l)`` over pixels,
    on the normalised inputs; the label region is blank in the prepared data.
    """
    means = class_means(x, labels, N_CLASSES)
    return np.corrcoef(means)


def bp_confusion(labels: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Symmetric confusion rate of every class pair: (classes, classes).

    ``c_kl = (n(k→l) + n(l→k)) / (n_k + n_l)`` with ``n(k→l)`` the test images
    of class k predicted as l; the diagonal is the accuracy of the class.
    """
    counts = np.zeros((N_CLASSES, N_CLASSES))
    np.add.at(counts, (labels, prediction), 1)
    n = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sym = (counts + counts.T) / (n[:, None] + n[None, :])
        np.fill_diagonal(sym, np.diag(counts) / n)
    return sym


def class_similarity(
    data_path: str | Path, bp_activations: Iterable[str | Path], dataset: str
) -> pd.DataFrame:
    """One row per class pair: the correlation of their mean test images and
    BP's symmetric confusion between them (mean over the BP runs given)."""
    from ffrep.data import load

    splits = load(data_path)
    x = splits.x_test.numpy()
    y = splits.y_test.numpy().astype(np.int64)
    sim = image_similarity(x, y)
    confusions = []
    for p in bp_activations:
        ds = open_activations(p)
        try:
            confusions.append(
                bp_confusion(
                    ds["label"].values.astype(np.int64),
                    ds["prediction"].values.astype(np.int64),
                )
            )
        finally:
            ds.close()
    conf = np.mean(confusions, 0) if confusions else np.full_like(sim, np.nan)
    rows = [
        {
            "dataset": dataset,
            "label_a": i,
            "label_b": j,
            "image_correlation": float(sim[i, j]),
            "bp_confusion": float(conf[i, j]),
            "n_bp_runs": len(confusions),
        }
        for i in range(N_CLASSES)
        for j in range(N_CLASSES)
    ]
    return pd.DataFrame(rows)


def overlap_vs_similarity(overlap: pd.DataFrame, similarity: pd.DataFrame):
    """Per run and layer, Spearman's rank correlation over the 45 class pairs
    between the ensemble overlap and each similarity measure."""
    pairs = overlap[overlap.label_a < overlap.label_b].merge(
        similarity, on=["dataset", "label_a", "label_b"], how="left"
    )
    rows = []
    for key, g in pairs.groupby([*RUN_KEYS, "layer"], sort=True):
        row = dict(zip([*RUN_KEYS, "layer"], key, strict=True))
        for measure in ("image_correlation", "bp_confusion"):
            ok = g[measure].notna()
            if ok.sum() > 2 and g.loc[ok, "overlap"].nunique() > 1:
                res = sps.spearmanr(g.loc[ok, "overlap"], g.loc[ok, measure])
                rho, p = float(res.statistic), float(res.pvalue)
            else:
                rho, p = np.nan, np.nan
            row[f"spearman_{measure}"] = rho
            row[f"p_{measure}"] = p
        rows.append(row)
    return pd.DataFrame(rows)
