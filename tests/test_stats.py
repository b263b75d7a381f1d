"""Confidence intervals and tests over seeds, against SciPy."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ffrep.stats import compare_algorithms, hedges_g, summarise, t_interval, welch


def test_t_interval_matches_scipy():
    v = np.array([0.31, 0.35, 0.29, 0.4, 0.33])
    mean, half, n = t_interval(v)
    low, high = sps.t.interval(0.95, n - 1, loc=v.mean(), scale=sps.sem(v))
    assert (mean - half, mean + half) == pytest.approx((low, high))
    assert n == 5


def test_t_interval_of_one_value_has_no_width():
    mean, half, n = t_interval([0.5, np.nan])
    assert mean == 0.5 and np.isnan(half) and n == 1


def test_welch_matches_scipy_and_effect_size():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 9.0])
    out = welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert out["t"] == pytest.approx(ref.statistic)
    assert out["p_value"] == pytest.approx(ref.pvalue)
    pooled = np.sqrt((3 * a.var(ddof=1) + 3 * b.var(ddof=1)) / 6)
    d = (a.mean() - b.mean()) / pooled
    assert hedges_g(a, b) == pytest.approx(d * (1 - 3 / (4 * 8 - 9)))


def test_summarise_and_compare_per_layer():
    rng = np.random.default_rng(0)
    rows = [
        {"algorithm": a, "layer": layer, "seed": s, "hoyer": base + rng.normal(0, 0.01)}
        for a, base in (("ff", 0.8), ("bp", 0.3), ("bp_ff", 0.7))
        for layer in (1, 2)
        for s in range(5)
    ]
    frame = pd.DataFrame(rows)
    summary = summarise(frame, ["algorithm", "layer"])
    ff1 = summary[(summary.algorithm == "ff") & (summary.layer == 1)].iloc[0]
    assert ff1.hoyer_ci_low < ff1.hoyer_mean < ff1.hoyer_ci_high
    assert ff1.n_seeds == 5
    tests = compare_algorithms(frame, "hoyer", ["layer"])
    assert set(tests.algorithm_b) == {"bp", "bp_ff"}
    assert len(tests) == 4
    vs_bp = tests[tests.algorithm_b == "bp"]
    assert (vs_bp.p_value < 1e-6).all() and (vs_bp.hedges_g > 10).all()


def test_intervals_stop_at_the_measures_range():
    import pandas as pd

    from ffrep.stats import summarise

    frame = pd.DataFrame(
        {
            "algorithm": ["ff", "ff"],
            "seed": [0, 1],
            "accuracy": [0.1, 0.99],
            "ensemble_size": [0.0, 40.0],
            "inhibition_ratio": [-1.0, 3.0],
        }
    )
    row = summarise(frame, ["algorithm"]).iloc[0]
    # two seeds: t(0.975, 1) = 12.7, so the raw intervals run far past the range
    assert row.accuracy_ci_low == 0.0 and row.accuracy_ci_high == 1.0
    assert row.ensemble_size_ci_low == 0.0 and row.ensemble_size_ci_high > 40
    assert row.inhibition_ratio_ci_low < -1 and row.inhibition_ratio_ci_high > 3
