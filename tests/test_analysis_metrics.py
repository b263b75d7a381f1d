"""Oracle tests of the ensemble, selectivity, sparseness and drive metrics."""

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ffrep import metrics
from ffrep.metrics import (
    drive_split,
    jaccard_matrix,
    lifetime_sparseness,
    memberships,
    overlap_matrix,
    reference_excitation,
    selectivity,
    silence_causes,
)

from analysis_data import SHARED, activations, driven_units


def constructed_members():
    x, labels = activations()
    means = metrics.class_means(x, labels)
    return metrics.ensembles(means, 2.0)


def test_ensembles_recover_the_constructed_groups():
    members = constructed_members()
    for k in range(10):
        assert set(np.flatnonzero(members[k])) == set(driven_units(k))


def test_overlap_matrix_counts_the_shared_units():
    overlap = overlap_matrix(constructed_members())
    expected = np.zeros((10, 10), dtype=int)
    for k in range(10):
        expected[k, k] = len(driven_units(k))
    for (a, b), units in SHARED.items():
        expected[a, b] = expected[b, a] = len(units)
    np.testing.assert_array_equal(overlap, expected)


def test_jaccard_is_intersection_over_union():
    m = np.array([[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    j = jaccard_matrix(m)
    assert j[0, 1] == pytest.approx(2 / 4)
    assert j[0, 2] == 0
    assert np.isnan(j[2, 2])


def test_memberships_flag_mixed_units():
    n = memberships(constructed_members())
    mixed = sorted(u for units in SHARED.values() for u in units)
    assert sorted(np.flatnonzero(n >= 2)) == mixed
    assert (n[:50] == 1).all()


def test_selectivity_against_direct_formula():
    rng = np.random.default_rng(1)
    means = rng.random((10, 7))
    got = selectivity(means)
    for j in range(7):
        col = np.sort(means[:, j])
        top, rest = col[-1], col[:-1].mean()
        assert got[j] == pytest.approx((top - rest) / (top + rest))


def test_selectivity_skips_classes_without_samples():
    means = np.array([[2.0, 1.0], [np.nan, np.nan], [0.0, 1.0]])
    np.testing.assert_allclose(selectivity(means), [1.0, 0.0])


def test_lifetime_sparseness_against_direct_formula():
    rng = np.random.default_rng(2)
    x = rng.random((50, 4)) * (rng.random((50, 4)) < 0.3)
    n = x.shape[0]
    for j in range(4):
        r = x[:, j]
        expected = (1 - r.mean() ** 2 / np.mean(r**2)) / (1 - 1 / n)
        assert lifetime_sparseness(x)[j] == pytest.approx(expected)


def test_lifetime_sparseness_extremes_and_silent_units():
    x = np.zeros((5, 3))
    x[2, 0] = 4.0
    x[:, 1] = 2.0
    s = lifetime_sparseness(x)
    assert s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx(0.0)
    assert np.isnan(s[2])


def test_lifetime_sparseness_wrapper_keeps_units():
    x, _ = activations()
    da = xr.DataArray(x, dims=["sample", "unit"], coords={"unit": np.arange(60) + 100})
    out = metrics.lifetime_sparseness_da(da)
    assert out.dims == ("unit",)
    np.testing.assert_allclose(out.values, lifetime_sparseness(x))


@settings(max_examples=50, deadline=None)
@given(
    x=arrays(np.float64, (4, 3), elements=st.floats(-5, 5)),
    w=arrays(np.float64, (2, 3), elements=st.floats(-5, 5)),
    b=arrays(np.float64, (2,), elements=st.floats(-5, 5)),
)
def test_drive_split_sums_to_the_pre_activation(x, w, b):
    exc, inh = drive_split(x, w, b)
    np.testing.assert_allclose(exc + inh, x @ w.T + b, atol=1e-9)
    assert (exc >= 0).all() and (inh <= 0).all()
    # each drive is the sum of the products of one sign
    products = x[:, None, :] * w[None, :, :]
    np.testing.assert_allclose(
        exc, np.where(products > 0, products, 0).sum(-1) + np.maximum(b, 0), atol=1e-9
    )


def test_drive_split_keeps_float32():
    exc, inh = drive_split(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32))
    assert exc.dtype == np.float32 and exc.shape == (2, 4)


def test_silence_causes_on_constructed_drives():
    # unit 0: strong excitation cancelled by inhibition; unit 1: weak excitation
    exc = np.array([[3.0, 0.1], [3.0, 2.0], [2.5, 2.0]])
    inh = np.array([[-4.0, -0.5], [-1.0, -1.0], [-1.0, -1.0]])
    ref = reference_excitation(exc, inh)
    np.testing.assert_allclose(ref, [2.75, 2.0])
    inhibited, underdriven = silence_causes(exc, inh, ref)
    np.testing.assert_array_equal(inhibited, [[True, False], [False] * 2, [False] * 2])
    np.testing.assert_array_equal(
        underdriven, [[False, True], [False] * 2, [False] * 2]
    )


def test_units_never_active_count_as_underdriven():
    exc, inh = np.array([[5.0], [5.0]]), np.array([[-6.0], [-6.0]])
    ref = reference_excitation(exc, inh)
    assert np.isnan(ref[0])
    inhibited, underdriven = silence_causes(exc, inh, ref)
    assert not inhibited.any() and underdriven.all()
