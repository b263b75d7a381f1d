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
from ffrep.ensembles import layer_ensembles, sample_mask  # noqa: E402
from ffrep.io import atomic_path  # noqa: E402
from ffrep.stats import measure_range, t_interval  # noqa: E402

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
    # keeps colour bars and tick labels of neighbouring panels apart
    "figure.constrained_layout.use": True,
}


CI_NOTE = "mean over seeds, 95 % t-interval"


@contextlib.contextmanager
def style():
    with plt.rc_context(STYLE):
        yield


def save(fig, outputs: list[str | Path]) -> None:
    """Save ``fig`` to every path (PNG, PDF) through temporary names."""
    for out in outputs:
        out = Path(out)
        # the style's savefig settings apply wherever the figure was drawn
        with style(), atomic_path(out) as tmp:
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
                im = ax.imshow(
                    wall,
                    aspect="auto",
                    interpolation="nearest",
                    cmap="viridis",
                    vmin=0,
                    vmax=max(vmax, 1e-6),
                )
                # each layer's scale ends at its 99th percentile
                fig.colorbar(im, ax=ax, fraction=0.05, label="activation")
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


def seed_stats(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean and 95 % t-interval half-width of ``value`` over seeds per group."""
    rows = []
    for key, group in frame.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        mean, half, n = t_interval(group[value])
        rows.append({**dict(zip(by, key, strict=True)), "mean": mean, "ci": half})
    out = pd.DataFrame(rows, columns=[*by, "mean", "ci"])
    return out.set_index(by) if len(by) > 1 else out.set_index(by[0])


def _select(frame: pd.DataFrame, dataset: str, architecture: str) -> pd.DataFrame:
    return frame[(frame.dataset == dataset) & (frame.architecture == architecture)]


def _algorithms(frame: pd.DataFrame) -> list[str]:
    return [a for a in ALGORITHM_LABELS if a in set(frame.algorithm)]


def _panels(n: int, width: float = 4.2, height: float = 3.4, **kw):
    fig, axes = plt.subplots(
        1, max(n, 1), figsize=(width * max(n, 1), height), squeeze=False, **kw
    )
    return fig, axes[0]


def grouped_bars(
    ax, frame, value: str, groups: list, group_labels, by: str, bounds=None
):
    """Bars of ``value`` per group (x) and algorithm (colour), mean ± 95 % CI;
    the interval is cut at ``bounds`` (low, high), by default the measure's
    range (:func:`stats.measure_range`)."""
    bounds = bounds if bounds is not None else measure_range(value)
    algorithms = _algorithms(frame)
    width = 0.8 / max(len(algorithms), 1)
    for i, algorithm in enumerate(algorithms):
        stats = seed_stats(frame[frame.algorithm == algorithm], [by], value)
        stats = stats.reindex(groups)
        ci = stats["ci"].fillna(0).to_numpy()
        yerr = np.vstack([ci, ci])
        if bounds is not None:
            mean = stats["mean"].to_numpy()
            yerr = np.vstack(
                [np.minimum(ci, mean - bounds[0]), np.minimum(ci, bounds[1] - mean)]
            )
            yerr = np.nan_to_num(np.maximum(yerr, 0))
        ax.bar(
            np.arange(len(groups)) + (i - (len(algorithms) - 1) / 2) * width,
            stats["mean"],
            width,
            yerr=yerr,
            label=ALGORITHM_LABELS[algorithm],
            color=ALGORITHM_COLORS[algorithm],
            capsize=1.5,
            error_kw={"lw": 0.7},
        )
    ax.set_xticks(np.arange(len(groups)), group_labels, rotation=60, ha="right")


def cut_note(bounds: tuple[float, float]) -> str:
    """Where the intervals of a measure of range ``bounds`` are cut."""
    low, high = bounds
    return f"cut at {low:g}" if np.isinf(high) else f"cut at [{low:g}, {high:g}]"


def per_class_bars(table, dataset, architecture, value, ylabel, title, bounds=None):
    """One panel per layer: ``value`` per class and algorithm, mean ± 95 % CI
    (cut at ``bounds``, the measure's range, if given)."""
    frame = _select(pd.read_csv(table), dataset, architecture)
    classes = list(DATASETS[dataset].classes)
    layers = sorted(frame.layer.unique())
    bounds = bounds if bounds is not None else measure_range(value)
    with style():
        fig, axes = _panels(len(layers), sharey=True)
        for ax, layer in zip(axes, layers, strict=False):
            sub = frame[frame.layer == layer]
            grouped_bars(
                ax, sub, value, list(range(len(classes))), classes, "label", bounds
            )
            ax.set_title(f"layer {layer}")
        note = CI_NOTE if bounds is None else f"{CI_NOTE}, {cut_note(bounds)}"
        axes[0].set_ylabel(f"{ylabel}\n({note})")
        # beside the last panel, where it covers no bar
        axes[-1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(f"{dataset} · {architecture}: {title}")
        return fig


def hoyer_by_class(table, dataset: str, architecture: str, outputs) -> None:
    """Per-class Hoyer sparseness, FF / BP/FF / BP side by side, one panel per
    layer, mean over seeds with its 95 % t-interval as error bar."""
    fig = per_class_bars(
        table,
        dataset,
        architecture,
        "hoyer",
        "Hoyer sparseness",
        "sparseness per class",
        bounds=(0, 1),
    )
    for ax in fig.axes:
        ax.set_ylim(0, 1)
    save(fig, outputs)


def ensemble_sizes(table, dataset: str, architecture: str, outputs) -> None:
    """Ensemble size per class, algorithm and layer, mean ± 95 % CI over seeds."""
    fig = per_class_bars(
        table,
        dataset,
        architecture,
        "ensemble_size",
        "ensemble size (units)",
        "category ensembles",
    )
    save(fig, outputs)


def class_mean_units(path, outputs, factor: float = 2.0, samples="correct") -> None:
    """Per layer: mean activation of every unit (columns) for each class (rows),
    units ordered by preferred class, ensemble members marked with a dot."""
    ds = open_activations(path)
    try:
        mask = sample_mask(ds, samples)
        labels = ds["label"].values[mask].astype(np.int64)
        classes = json.loads(ds.attrs["class_names"])
        title = (
            f"{ds.attrs['dataset']} · {ALGORITHM_LABELS[ds.attrs['algorithm']]} · "
            f"{ds.attrs['architecture']} · seed {ds.attrs['seed']}"
        )
        layers = [(layer, da.values[mask]) for layer, da in layer_arrays(ds)]
    finally:
        ds.close()
    with style():
        fig, axes = _panels(len(layers), width=4.6, height=3.6)
        for ax, (layer, x) in zip(axes, layers, strict=True):
            means, members = layer_ensembles(x, labels, factor)
            filled = np.nan_to_num(means)
            # members first, grouped by preferred class; the rest after
            preferred = filled.argmax(0)
            order = np.lexsort((-filled.max(0), preferred, ~members.any(0)))
            im = ax.imshow(
                filled[:, order],
                aspect="auto",
                interpolation="nearest",
                cmap="magma",
            )
            k, j = np.nonzero(members[:, order])
            ax.scatter(j, k, s=3, c="#00e5ff", marker="o", linewidths=0)
            ax.set_yticks(np.arange(len(classes)), classes)
            ax.set_xlabel("unit (ordered by preferred class)")
            ax.set_title(f"layer {layer}: {int(members.any(0).sum())} members")
            fig.colorbar(im, ax=ax, fraction=0.04, label="mean activation")
        fig.suptitle(
            f"{title}: class means, ensemble members (dots, factor {factor:g})"
        )
        save(fig, outputs)


def overlap_heatmap(table, dataset: str, architecture: str, outputs) -> None:
    """|E_i ∩ E_j| per algorithm (rows) and layer (columns), mean over seeds."""
    frame = _select(pd.read_csv(table), dataset, architecture)
    classes = list(DATASETS[dataset].classes)
    algorithms = _algorithms(frame)
    layers = sorted(frame.layer.unique())
    k = len(classes)
    with style():
        fig, axes = plt.subplots(
            max(len(algorithms), 1),
            max(len(layers), 1),
            figsize=(3.6 * max(len(layers), 1), 3.4 * max(len(algorithms), 1)),
            squeeze=False,
        )
        for r, algorithm in enumerate(algorithms):
            for c, layer in enumerate(layers):
                ax = axes[r][c]
                sub = frame[(frame.algorithm == algorithm) & (frame.layer == layer)]
                mat = (
                    sub.groupby(["label_a", "label_b"])["overlap"]
                    .mean()
                    .unstack()
                    .reindex(index=range(k), columns=range(k))
                    .values
                )
                # an all-zero panel still maps 0 to the palette's white end
                top = np.nanmax(mat) if np.isfinite(mat).any() else 0.0
                im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=max(top, 1.0))
                for i in range(k):
                    for j in range(k):
                        if np.isfinite(mat[i, j]):
                            ax.text(
                                j,
                                i,
                                f"{mat[i, j]:.0f}",
                                ha="center",
                                va="center",
                                fontsize=5,
                            )
                ax.set_xticks(range(k), classes, rotation=70, ha="right", fontsize=6)
                ax.set_yticks(range(k), classes, fontsize=6)
                title = f"{ALGORITHM_LABELS[algorithm]} · layer {layer}"
                if top == 0:
                    # the diagonal holds the ensemble sizes: all of them empty
                    title += "\n(every ensemble empty)"
                ax.set_title(title)
                fig.colorbar(im, ax=ax, fraction=0.04)
        fig.suptitle(
            f"{dataset} · {architecture}: shared ensemble units |E_i ∩ E_j|"
            " (diagonal: ensemble size; mean over seeds)"
        )
        save(fig, outputs)


def sparseness_accuracy(table, dataset: str, architecture: str, outputs) -> None:
    """Layer sparseness against test accuracy, one point per run, with the
    mean ± 95 % CI over seeds of each algorithm as a cross."""
    frame = _select(pd.read_csv(table), dataset, architecture)
    layers = sorted(frame.layer.unique())
    with style():
        fig, axes = _panels(len(layers), width=3.6, height=3.2, sharey=True)
        for ax, layer in zip(axes, layers, strict=False):
            sub = frame[frame.layer == layer]
            for algorithm in _algorithms(sub):
                run = sub[sub.algorithm == algorithm]
                color = ALGORITHM_COLORS[algorithm]
                ax.scatter(
                    run.hoyer,
                    run.accuracy,
                    s=12,
                    color=color,
                    alpha=0.6,
                    label=ALGORITHM_LABELS[algorithm],
                )
                (mx, hx, _), (my, hy, _) = (
                    t_interval(run.hoyer),
                    t_interval(run.accuracy),
                )
                ax.errorbar(
                    mx,
                    my,
                    xerr=np.nan_to_num(hx),
                    yerr=np.nan_to_num(hy),
                    color=color,
                    lw=1.2,
                    capsize=2,
                )
            ax.set_xlabel("Hoyer sparseness")
            ax.set_title(f"layer {layer}")
        axes[0].set_ylabel("test accuracy")
        axes[-1].legend(frameon=False)
        fig.suptitle(f"{dataset} · {architecture}: sparseness vs accuracy ({CI_NOTE})")
        save(fig, outputs)


def unit_measures(table, dataset: str, architecture: str, outputs) -> None:
    """Per layer and algorithm: mean class selectivity and lifetime sparseness
    of the units beside the population (Hoyer) sparseness, mean ± 95 % CI."""
    frame = _select(pd.read_csv(table), dataset, architecture)
    layers = sorted(frame.layer.unique())
    measures = {
        "hoyer": "population sparseness (Hoyer)",
        "lifetime_sparseness": "lifetime sparseness",
        "selectivity": "class selectivity index",
    }
    with style():
        fig, axes = _panels(len(measures), width=3.6, sharey=True)
        for ax, (value, label) in zip(axes, measures.items(), strict=True):
            grouped_bars(
                ax, frame, value, layers, [f"layer {i}" for i in layers], "layer"
            )
            ax.set_title(label)
            ax.set_ylim(0, 1)
        axes[0].set_ylabel(CI_NOTE)
        axes[-1].legend(frameon=False)
        fig.suptitle(f"{dataset} · {architecture}: unit and population sparseness")
        save(fig, outputs)


def mixed_selectivity(
    layers_table, overlap_table, similarity_table, dataset, architecture, outputs
) -> None:
    """Left: units in two or more ensembles per layer. Right: shared units of
    each class pair against the correlation of the pair's mean images."""
    layers_frame = _select(pd.read_csv(layers_table), dataset, architecture)
    overlap = _select(pd.read_csv(overlap_table), dataset, architecture)
    sim = pd.read_csv(similarity_table)
    sim = sim[sim.dataset == dataset]
    layers = sorted(layers_frame.layer.unique())
    pairs = overlap[overlap.label_a < overlap.label_b]
    pairs = (
        pairs.groupby(["algorithm", "layer", "label_a", "label_b"])["overlap"]
        .mean()
        .reset_index()
        .merge(sim, on=["label_a", "label_b"], how="left")
    )
    classes = DATASETS[dataset].classes
    with style():
        fig, axes = _panels(1 + len(layers), width=3.6, height=3.3)
        grouped_bars(
            axes[0],
            layers_frame,
            "units_in_two_or_more",
            layers,
            [f"layer {i}" for i in layers],
            "layer",
        )
        axes[0].set_ylabel(f"units in ≥ 2 ensembles\n({CI_NOTE})")
        axes[0].set_title("mixed selectivity")
        axes[0].legend(frameon=False)
        for ax, layer in zip(axes[1:], layers, strict=True):
            sub = pairs[pairs.layer == layer]
            for algorithm in _algorithms(sub):
                run = sub[sub.algorithm == algorithm]
                ax.scatter(
                    run.image_correlation,
                    run.overlap,
                    s=10,
                    alpha=0.7,
                    color=ALGORITHM_COLORS[algorithm],
                    label=ALGORITHM_LABELS[algorithm],
                )
            top = sub[sub.algorithm == sub.algorithm.iloc[0]] if len(sub) else sub
            # the three most shared pairs, their names stacked apart and
            # joined to their points, so that close points keep legible names
            for k, (_, r) in enumerate(top.nlargest(3, "overlap").iterrows()):
                ax.annotate(
                    f"{classes[r.label_a]}/{classes[r.label_b]}",
                    (r.image_correlation, r.overlap),
                    xytext=(-60, -12 - 11 * k),
                    textcoords="offset points",
                    fontsize=6,
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4"},
                )
            ax.set_xlabel("correlation of the class-mean images")
            ax.set_ylabel("shared units (mean over seeds)")
            ax.set_title(f"layer {layer}")
        fig.suptitle(f"{dataset} · {architecture}: mixed selectivity and similarity")
        save(fig, outputs)


def inhibition(layers_table, unit_tables, dataset, architecture, outputs) -> None:
    """Left: per algorithm and layer, the fraction of unit-sample pairs active,
    silent by net inhibition and silent for lack of excitation (mean over
    seeds). Right: each unit's mean excitatory against inhibitory drive."""
    frame = _select(pd.read_csv(layers_table), dataset, architecture)
    units = pd.concat([pd.read_csv(p) for p in unit_tables], ignore_index=True)
    units = _select(units, dataset, architecture)
    algorithms = _algorithms(frame)
    layers = sorted(frame.layer.unique())
    parts = {
        "active_fraction": ("active", "#4daf4a"),
        "silent_inhibited_fraction": ("silent: inhibited", "#e41a1c"),
        "silent_underdriven_fraction": ("silent: under-driven", "#999999"),
    }
    with style():
        fig, axes = _panels(1 + len(algorithms), width=3.8, height=3.4)
        ax = axes[0]
        ticks, names = [], []
        for i, algorithm in enumerate(algorithms):
            for j, layer in enumerate(layers):
                pos = i * (len(layers) + 1) + j
                sub = frame[(frame.algorithm == algorithm) & (frame.layer == layer)]
                bottom = 0.0
                for value, (label, color) in parts.items():
                    mean, half, _ = t_interval(sub[value])
                    ax.bar(
                        pos,
                        mean,
                        bottom=bottom,
                        color=color,
                        label=label if pos == 0 else None,
                        yerr=np.nan_to_num(half),
                        capsize=1.5,
                        error_kw={"lw": 0.6},
                    )
                    bottom += mean
                ticks.append(pos)
                names.append(f"{ALGORITHM_LABELS[algorithm]} L{layer}")
        ax.set_xticks(ticks, names, rotation=70, ha="right")
        ax.set_ylabel(f"fraction of unit × sample\n({CI_NOTE})")
        ax.legend(frameon=False, fontsize=6)
        for ax, algorithm in zip(axes[1:], algorithms, strict=True):
            sub = units[units.algorithm == algorithm]
            first = sub[sub.seed == sub.seed.min()]
            for layer in layers:
                u = first[first.layer == layer]
                ax.scatter(
                    u.excitatory_drive,
                    -u.inhibitory_drive,
                    s=4,
                    alpha=0.6,
                    label=f"layer {layer}",
                )
            lim = max(
                float(np.nanmax(first.excitatory_drive, initial=0)),
                float(np.nanmax(-first.inhibitory_drive, initial=0)),
                1e-6,
            )
            ax.plot([0, lim], [0, lim], color="k", lw=0.5, ls="--")
            ax.set_xlabel("mean excitatory drive E")
            ax.set_ylabel("mean inhibitory drive −I")
            ax.set_title(f"{ALGORITHM_LABELS[algorithm]} (seed {first.seed.min()})")
            ax.legend(frameon=False, fontsize=6)
        fig.suptitle(f"{dataset} · {architecture}: excitation and inhibition")
        save(fig, outputs)


def unseen_categories(classes_table, layers_table, dataset, architecture, outputs):
    """Held-out classes: ensemble size beside the seen classes', and the
    nearest-ensemble accuracy among held-out classes against chance."""
    classes = _select(pd.read_csv(classes_table), dataset, architecture)
    layers_frame = _select(pd.read_csv(layers_table), dataset, architecture)
    layers = sorted(classes.layer.unique())
    ticks = [f"layer {i}" for i in layers]
    with style():
        fig, axes = _panels(3, width=3.8, height=3.3)
        for ax, held, name in ((axes[0], True, "held-out"), (axes[1], False, "seen")):
            sub = classes[classes.held_out == held]
            # mean over the classes of a run first, then over seeds
            per_run = sub.groupby(["algorithm", "seed", "layer"], as_index=False)[
                "ensemble_size"
            ].mean()
            grouped_bars(ax, per_run, "ensemble_size", layers, ticks, "layer")
            ax.set_title(f"ensemble size, {name} classes")
        axes[0].set_ylabel(f"units ({CI_NOTE})")
        axes[1].sharey(axes[0])
        grouped_bars(
            axes[2],
            layers_frame,
            "nearest_ensemble_accuracy_held_out",
            layers,
            ticks,
            "layer",
        )
        chance = layers_frame.chance_held_out.dropna()
        if len(chance):
            axes[2].axhline(chance.iloc[0], color="k", lw=0.7, ls="--", label="chance")
        axes[2].set_ylim(0, 1)
        axes[2].set_title("nearest-ensemble accuracy, held-out")
        axes[2].legend(frameon=False, fontsize=6)
        # BP sees the raw image: no label input to report
        ff_like = classes[classes.algorithm != "bp"]
        label_input = ", ".join(sorted(set(ff_like.label_input.astype(str)))) or "none"
        held_names = ", ".join(
            classes[classes.held_out].class_name.drop_duplicates().astype(str)
        )
        fig.suptitle(
            f"{dataset} · {architecture}: unseen categories ({held_names};"
            f" label input {label_input})"
        )
        save(fig, outputs)
