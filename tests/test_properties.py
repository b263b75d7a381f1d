"""Properties of the sparsity and ensemble metrics, checked on generated data."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ffrep import metrics

settings.register_profile("ffrep", max_examples=60, deadline=None)
settings.load_profile("ffrep")

# post-ReLU activations as the workflow stores them: float32, >= 0, often 0
values = st.one_of(
    st.just(0.0),
    st.floats(2.0**-20, 2.0**20, width=32),
)


def activations(min_units=2, max_units=40, max_rows=30):
    shape = st.tuples(st.integers(1, max_rows), st.integers(min_units, max_units))
    return hnp.arrays(np.float32, shape, elements=values)


def signed_activations():
    shape = st.tuples(st.integers(1, 20), st.integers(2, 30))
    return hnp.arrays(np.float32, shape, elements=st.floats(-1e6, 1e6, width=32))


powers_of_two = st.sampled_from([2.0**k for k in (-20, -3, -1, 1, 4, 30)])


def direct_hoyer(x: np.ndarray) -> np.ndarray:
    """The spec's formula, row by row, with NumPy's norms."""
    x = x.astype(np.float64)
    n = x.shape[1]
    out = []
    for row in x:
        l2 = np.linalg.norm(row, 2)
        ratio = np.linalg.norm(row, 1) / l2 if l2 > 0 else np.nan
        out.append((np.sqrt(n) - ratio) / (np.sqrt(n) - 1))
    return np.array(out)


# --- Hoyer sparseness --------------------------------------------------------


@given(activations())
def test_hoyer_in_unit_interval_nan_only_for_zero_rows(x):
    h = metrics.hoyer(x)
    zero = ~(x != 0).any(axis=1)
    assert np.array_equal(np.isnan(h), zero)
    assert ((h[~zero] >= -1e-12) & (h[~zero] <= 1 + 1e-12)).all(), h[~zero]


def test_hoyer_of_flat_rows_is_not_negative():
    # found by hypothesis: 18 equal units give -2.7e-16
    assert metrics.hoyer(np.ones((1, 18), np.float32))[0] >= 0


@given(signed_activations())
def test_hoyer_uses_magnitudes(x):
    assert np.array_equal(metrics.hoyer(x), metrics.hoyer(np.abs(x)), equal_nan=True)


@given(st.integers(2, 500), st.data())
def test_hoyer_extremes(n, data):
    value = data.draw(st.floats(2.0**-20, 2.0**20, width=32))
    one_hot = np.zeros((1, n), np.float32)
    one_hot[0, data.draw(st.integers(0, n - 1))] = value
    assert metrics.hoyer(one_hot)[0] == 1.0
    flat = np.full((1, n), value, np.float32)
    assert abs(metrics.hoyer(flat)[0]) < 1e-6


@given(activations(), powers_of_two)
def test_hoyer_scale_invariant_exactly_by_powers_of_two(x, c):
    scaled = (x.astype(np.float64) * c).astype(np.float32)
    assert np.array_equal(metrics.hoyer(scaled), metrics.hoyer(x), equal_nan=True)


@given(activations(), st.floats(1e-3, 1e3))
def test_hoyer_scale_invariant(x, c):
    np.testing.assert_allclose(
        metrics.hoyer(x.astype(np.float64) * c), metrics.hoyer(x), atol=1e-12
    )


@given(activations(), st.randoms(use_true_random=False))
def test_hoyer_unit_order_invariant(x, rnd):
    order = list(range(x.shape[1]))
    rnd.shuffle(order)
    np.testing.assert_allclose(metrics.hoyer(x[:, order]), metrics.hoyer(x), atol=1e-12)


@given(activations(), st.integers(1, 7))
def test_hoyer_chunked_equals_direct(x, chunk):
    whole = metrics.hoyer(x)
    with mock.patch.object(metrics, "CHUNK", chunk):
        chunked = metrics.hoyer(x)
    assert np.array_equal(chunked, whole, equal_nan=True)
    np.testing.assert_allclose(whole, direct_hoyer(x), atol=1e-12)


@pytest.mark.parametrize("row", [[1e-170, 0.0, 0.0], [1e200, 1e200, 0.0]])
def test_hoyer_extreme_float64_magnitudes(row):
    x = np.array([row])
    np.testing.assert_allclose(metrics.hoyer(x), direct_hoyer(x / np.abs(x).max()))


def test_hoyer_needs_two_units():
    with pytest.raises(ValueError, match="at least two units"):
        metrics.hoyer(np.ones((3, 1)))


# --- active fraction ---------------------------------------------------------


@given(activations(min_units=1), st.floats(1e-3, 1e3), st.integers(1, 7))
def test_active_fraction_bounds_scale_and_chunks(x, c, chunk):
    f = metrics.active_fraction(x)
    assert ((f >= 0) & (f <= 1)).all()
    np.testing.assert_array_equal(f, (x > 0).sum(1) / x.shape[1])
    np.testing.assert_array_equal(metrics.active_fraction(x.astype(np.float64) * c), f)
    with mock.patch.object(metrics, "CHUNK", chunk):
        np.testing.assert_array_equal(metrics.active_fraction(x), f)


@given(activations(min_units=1), st.randoms(use_true_random=False))
def test_active_fraction_unit_order_invariant(x, rnd):
    order = list(range(x.shape[1]))
    rnd.shuffle(order)
    np.testing.assert_array_equal(
        metrics.active_fraction(x[:, order]), metrics.active_fraction(x)
    )


# --- class means and ensembles ----------------------------------------------


@st.composite
def labelled(draw):
    x = draw(activations(min_units=2, max_rows=40))
    labels = draw(hnp.arrays(np.int64, x.shape[0], elements=st.integers(0, 9)))
    return x, labels


@given(labelled(), st.integers(1, 7))
def test_class_means_match_direct_means(data, chunk):
    x, labels = data
    means = metrics.class_means(x, labels)
    for k in range(10):
        rows = x[labels == k].astype(np.float64)
        if len(rows):
            np.testing.assert_allclose(means[k], rows.mean(0), rtol=1e-12)
        else:
            assert np.isnan(means[k]).all()
    with mock.patch.object(metrics, "CHUNK", chunk):
        assert np.array_equal(metrics.class_means(x, labels), means, equal_nan=True)


# small multiples of 1/8: every sum is exact, so properties hold to the bit
exact_means = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 10), st.integers(2, 40)),
    elements=st.integers(0, 400).map(lambda v: v / 8),
)


def direct_ensembles(means: np.ndarray, factor: float) -> np.ndarray:
    out = np.zeros(means.shape, bool)
    for k, row in enumerate(means):
        for j in range(len(row)):
            others = np.delete(row, j)
            out[k, j] = row[j] > factor * others.mean()
    return out


@given(exact_means, st.sampled_from([1.0, 2.0, 3.0]))
def test_ensembles_match_direct_formula(means, factor):
    np.testing.assert_array_equal(
        metrics.ensembles(means, factor), direct_ensembles(means, factor)
    )


@given(exact_means, powers_of_two, st.randoms(use_true_random=False))
def test_ensembles_invariant_to_scale_and_unit_order(means, c, rnd):
    members = metrics.ensembles(means)
    np.testing.assert_array_equal(metrics.ensembles(means * c), members)
    order = list(range(means.shape[1]))
    rnd.shuffle(order)
    np.testing.assert_array_equal(metrics.ensembles(means[:, order]), members[:, order])


@given(exact_means)
def test_ensemble_members_beat_the_class_average(means):
    members = metrics.ensembles(means, factor=2.0)
    row_mean = means.mean(1, keepdims=True)
    # a member is above twice the others' mean, hence above the class average
    assert (means[members] > np.broadcast_to(row_mean, means.shape)[members]).all()
    # not every unit can be above twice the mean of the others
    assert not members.all(axis=1).any()


# --- xarray wrappers ---------------------------------------------------------


@given(activations())
def test_wrappers_follow_the_named_dim(x):
    da = xr.DataArray(x, dims=("sample", "unit"))
    flipped = da.transpose("unit", "sample")
    np.testing.assert_array_equal(
        metrics.hoyer_da(flipped, dim="unit").values, metrics.hoyer(x)
    )
    np.testing.assert_array_equal(
        metrics.active_fraction_da(flipped, dim="unit").values,
        metrics.active_fraction(x),
    )
