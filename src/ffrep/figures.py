"""The paper's figures, drawn from activation files and tables only."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ffrep.activations import layer_arrays, open_activations  # noqa: E402
from ffrep.datasets import DATASETS  # noqa: E402
from ffrep.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

ALGORITHM_LABELS = {"ff": "FF", "bp_ff": "BP/FF", "bp": "BP"}
ALGORITHM_COLORS = {"ff": "#1b9e77", "bp_ff": "#7570b3", "bp": "#d95f02"}
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.bbox": "tight",
}


@contextlib.contextmanager
def style():
    with plt.rc_context(STYLE):
        yield


def save(fig, outputs: list[str | Path]) -> None:
    """Save ``fig`` to every path (PNG, PDF) through temporary names."""
    for out in outputs:
        out = Path(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=out.suffix.lstrip("."))
    plt.close(fig)


def activation_wall(path, outputs, max_per_class: int = 200, samples="correct"):
    """Per layer: test samples sorted by class (rows) × units (columns)."""
    ds = open_activations(path)
    try:
        labels = ds["label"].values
        keep = ds["correct"].values.astype(bool) if samples == "correct" else None
        rows = []
        for k in np.unique(labels):
            idx = np.flatnonzero((labels == k) & (keep if keep is not None else True))
            rows.append(idx[:max_per_class])
        order = np.concatenate(rows) if rows else np.array([], dtype=int)
        layers = list(layer_arrays(ds))
        classes = json.loads(ds.attrs["class_names"])
        title = (
            f"{ds.attrs['dataset']} · {ALGORITHM_LABELS[ds.attrs['algorithm']]} · "
            f"{ds.attrs['architecture']} · seed {ds.attrs['seed']}"
        )
        with style():
            fig, axes = plt.subplots(
                1, len(layers), figsize=(3.2 * len(layers), 4), squeeze=False
            )
            for ax, (layer, da) in zip(axes[0], layers, strict=True):
                wall = da.values[order]
                vmax = np.percentile(wall, 99) if wall.size else 1.0
                ax.imshow(
                    wall,
                    aspect="auto",
                    interpolation="nearest",
                    cmap="viridis",
                    vmin=0,
                    vmax=max(vmax, 1e-6),
                )
                ax.set_title(f"layer {layer}")
                ax.set_xlabel("unit")
                bounds = np.cumsum([len(r) for r in rows])
                ticks = bounds - np.array([len(r) for r in rows]) / 2
                ax.set_yticks(ticks, [classes[int(k)] for k in np.unique(labels)])
                for b in bounds[:-1]:
                    ax.axhline(b - 0.5, color="white", lw=0.4)
            fig.suptitle(title)
            save(fig, outputs)
    finally:
        ds.close()


def hoyer_by_class(table, dataset: str, architecture: str, outputs) -> None:
    """Per-class Hoyer sparseness, FF / BP/FF / BP side by side, one panel per
    layer, mean over seeds with the standard deviation as error bar."""
    frame = pd.read_csv(table)
    frame = frame[(frame.dataset == dataset) & (frame.architecture == architecture)]
    classes = DATASETS[dataset].classes
    algorithms = [a for a in ALGORITHM_LABELS if a in set(frame.algorithm)]
    layers = sorted(frame.layer.unique())
    with style():
        fig, axes = plt.subplots(
            1,
            max(len(layers), 1),
            figsize=(4.2 * max(len(layers), 1), 3.4),
            squeeze=False,
            sharey=True,
        )
        width = 0.8 / max(len(algorithms), 1)
        for ax, layer in zip(axes[0], layers, strict=False):
            sub = frame[frame.layer == layer]
            for i, algorithm in enumerate(algorithms):
                stats = (
                    sub[sub.algorithm == algorithm]
                    .groupby("label")["hoyer"]
                    .agg(["mean", "std"])
                    .reindex(range(len(classes)))
                )
                ax.bar(
                    np.arange(len(classes)) + (i - (len(algorithms) - 1) / 2) * width,
                    stats["mean"],
                    width,
                    yerr=stats["std"].fillna(0),
                    label=ALGORITHM_LABELS[algorithm],
                    color=ALGORITHM_COLORS[algorithm],
                    capsize=1.5,
                )
            ax.set_title(f"layer {layer}")
            ax.set_xticks(np.arange(len(classes)), classes, rotation=60, ha="right")
            ax.set_ylim(0, 1)
        axes[0][0].set_ylabel("Hoyer sparseness")
        axes[0][-1].legend(frameon=False)
        fig.suptitle(f"{dataset} · {architecture}: sparseness per class")
        save(fig, outputs)
