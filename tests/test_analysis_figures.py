"""Every analysis figure draws from constructed tables and activation files."""

import pandas as pd
import pytest

from ffrep import figures
from ffrep.analysis import write_ensemble_tables
from ffrep.ensembles import run_ensembles

from analysis_data import write_file


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figures")
    per_run = {name: [] for name in ("sizes", "overlap", "units", "layers")}
    files = []
    for algorithm in ("ff", "bp_ff", "bp"):
        for seed in (0, 1):
            nc = write_file(tmp / f"{algorithm}{seed}.nc", algorithm, seed)
            files.append(nc)
            for name, frame in run_ensembles(nc).items():
                path = tmp / f"{algorithm}{seed}_{name}.csv"
                frame.to_csv(path, index=False)
                per_run[name].append(path)
    outputs = {n: tmp / f"ensemble_{n}.csv" for n in per_run} | {
        "tests": tmp / "tests.csv"
    }
    write_ensemble_tables(per_run, outputs)
    pairs = pd.read_csv(outputs["overlap"])[["dataset", "label_a", "label_b"]]
    sim = pairs.drop_duplicates().assign(
        image_correlation=lambda f: (f.label_a == f.label_b) * 1.0, bp_confusion=0.0
    )
    sim.to_csv(tmp / "similarity.csv", index=False)
    return tmp, outputs, files


@pytest.mark.parametrize(
    ("draw", "table"),
    [
        (figures.ensemble_sizes, "sizes"),
        (figures.overlap_heatmap, "overlap"),
        (figures.unit_measures, "layers"),
    ],
)
def test_table_figures(tables, draw, table):
    tmp, outputs, _ = tables
    out = tmp / f"{table}.png"
    draw(outputs[table], "fashion_mnist", "tiny", [out, tmp / f"{table}.pdf"])
    assert out.stat().st_size > 10_000 and (tmp / f"{table}.pdf").exists()


def test_mixed_selectivity_and_class_means(tables):
    tmp, outputs, files = tables
    out = tmp / "mixed.png"
    figures.mixed_selectivity(
        outputs["layers"],
        outputs["overlap"],
        tmp / "similarity.csv",
        "fashion_mnist",
        "tiny",
        [out],
    )
    assert out.stat().st_size > 10_000
    figures.class_mean_units(files[0], [tmp / "means.png"], 2.0)
    assert (tmp / "means.png").stat().st_size > 10_000


def test_bounded_intervals_stop_at_the_measures_range():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # two seeds a little below 1: the 95 % t-interval (df = 1) reaches far past 1
    frame = pd.DataFrame(
        {"algorithm": "ff", "label": [0, 0, 1, 1], "hoyer": [0.95, 0.99, 0.2, 0.6]}
    )
    fig, ax = plt.subplots()
    figures.grouped_bars(ax, frame, "hoyer", [0, 1], ["a", "b"], "label", (0, 1))
    from matplotlib.container import BarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    segments = bars.errorbar.lines[2][0].get_segments()
    low, high = sorted(segments[0][:, 1])
    assert high == pytest.approx(1.0) and low < 0.97
    assert all(s[:, 1].min() >= 0.0 for s in segments)
    plt.close(fig)
