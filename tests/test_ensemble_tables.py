"""Ensemble tables of constructed activation files, and their combination."""

import numpy as np
import pandas as pd
import pytest

from ffrep.analysis import write_ensemble_tables
from ffrep.ensembles import bp_confusion, image_similarity, run_ensembles

from analysis_data import SHARED, driven_units, write_file


@pytest.fixture
def tables(tmp_path):
    return run_ensembles(write_file(tmp_path / "a.nc", wrong=20), factor=2.0)


def test_sizes_and_overlaps_of_known_ensembles(tables):
    sizes = tables["sizes"]
    assert set(sizes.layer) == {1, 2}
    for k in range(10):
        row = sizes[(sizes.layer == 1) & (sizes.label == k)].iloc[0]
        assert row.ensemble_size == len(driven_units(k))
    overlap = tables["overlap"].set_index(["layer", "label_a", "label_b"]).overlap
    assert overlap[(1, 0, 6)] == 2 and overlap[(1, 6, 0)] == 2
    assert overlap[(1, 2, 4)] == 1
    assert overlap[(1, 1, 3)] == 0


def test_misclassified_samples_are_left_out(tables):
    sizes = tables["sizes"]
    # the first 20 samples (all of class 0) are marked wrong
    assert sizes[(sizes.layer == 1) & (sizes.label == 0)].n_samples.iloc[0] == 20
    assert sizes[(sizes.layer == 1) & (sizes.label == 1)].n_samples.iloc[0] == 40


def test_unit_and_layer_tables(tables):
    units = tables["units"][tables["units"].layer == 1]
    assert len(units) == 60
    mixed = sorted(u for us in SHARED.values() for u in us)
    assert sorted(units[units.n_ensembles >= 2].unit) == mixed
    own = units[units.unit < 50]
    assert (own.selectivity > 0.9).all()
    assert (own.preferred_label == own.unit // 5).all()
    layer = tables["layers"].iloc[0]
    assert layer.units_in_two_or_more == 3
    assert layer.units_in_no_ensemble == 60 - 53
    assert 0 < layer.hoyer < 1 and 0 < layer.lifetime_sparseness < 1


def test_combined_tables_summaries_and_tests(tmp_path):
    per_run = {name: [] for name in ("sizes", "overlap", "units", "layers")}
    for algorithm in ("ff", "bp"):
        for seed in (0, 1, 2):
            t = run_ensembles(
                write_file(tmp_path / f"{algorithm}{seed}.nc", algorithm, seed)
            )
            for name, frame in t.items():
                path = tmp_path / f"{algorithm}{seed}_{name}.csv"
                frame.to_csv(path, index=False)
                per_run[name].append(path)
    outputs = {n: tmp_path / f"out_{n}.csv" for n in per_run}
    outputs |= {
        "sizes_summary": tmp_path / "sizes_summary.csv",
        "tests": tmp_path / "tests.csv",
        "similarity": tmp_path / "similarity.csv",
    }
    write_ensemble_tables(per_run, outputs)
    summary = pd.read_csv(outputs["sizes_summary"])
    assert {
        "ensemble_size_mean",
        "ensemble_size_ci_low",
        "ensemble_size_ci_high",
    } <= set(summary.columns)
    assert (summary.n_seeds == 3).all()
    tests = pd.read_csv(outputs["tests"])
    assert set(tests.algorithm_b) == {"bp"}
    assert len(pd.read_csv(outputs["layers"])) == 12


def test_image_similarity_and_confusion():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 30))
    base[1] = base[0] + 0.01 * rng.normal(size=30)  # classes 0 and 1 look alike
    labels = np.repeat(np.arange(10), 5)
    x = base[labels] + 0.01 * rng.normal(size=(50, 30))
    sim = image_similarity(x, labels)
    assert sim[0, 1] > 0.99 and abs(sim[0, 2]) < 0.8
    prediction = labels.copy()
    prediction[:2] = 1  # two class-0 images called 1
    conf = bp_confusion(labels, prediction)
    assert conf[0, 1] == conf[1, 0] == pytest.approx(2 / 10)
    assert conf[0, 0] == pytest.approx(3 / 5)
