import numpy as np
import pytest
import xarray as xr

from ffrep.metrics import (
    active_fraction,
    active_fraction_da,
    class_means,
    ensembles,
    hoyer,
    hoyer_da,
)


def test_hoyer_one_active_unit_is_one():
    x = np.zeros((1, 50))
    x[0, 7] = 4.2
    assert hoyer(x)[0] == pytest.approx(1.0)


def test_hoyer_all_equal_is_zero():
    assert hoyer(np.full((3, 20), 0.5)) == pytest.approx(np.zeros(3), abs=1e-12)


def test_hoyer_matches_formula_and_is_scale_invariant():
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(40, 30)), 0)
    n = x.shape[1]
    direct = (np.sqrt(n) - np.abs(x).sum(1) / np.linalg.norm(x, axis=1)) / (
        np.sqrt(n) - 1
    )
    np.testing.assert_allclose(hoyer(x), direct, rtol=1e-12)
    np.testing.assert_allclose(hoyer(17.0 * x), hoyer(x), rtol=1e-12)


def test_hoyer_all_zero_rows_are_nan():
    x = np.zeros((3, 10))
    x[1, :3] = 1.0
    h = hoyer(x)
    assert np.isnan(h[0]) and np.isnan(h[2]) and not np.isnan(h[1])


def test_hoyer_needs_two_units():
    with pytest.raises(ValueError, match="two units"):
        hoyer(np.ones((2, 1)))


def test_active_fraction():
    x = np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(active_fraction(x), [0.5, 0.0])


def test_xarray_wrappers_reduce_the_named_dim():
    da = xr.DataArray(np.eye(4)[:, ::-1], dims=("unit", "sample"))
    np.testing.assert_allclose(hoyer_da(da, dim="unit").values, np.ones(4))
    assert hoyer_da(da, dim="unit").dims == ("sample",)
    np.testing.assert_allclose(active_fraction_da(da).values, np.full(4, 0.25))


def test_ensembles_find_the_units_a_class_drives():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 50)
    x = rng.random((150, 12)) * 0.1
    for k in range(3):
        x[labels == k, 4 * k : 4 * k + 2] += 5.0
    members = ensembles(class_means(x, labels, n_classes=3), factor=2.0)
    expected = np.zeros((3, 12), bool)
    for k in range(3):
        expected[k, 4 * k : 4 * k + 2] = True
    np.testing.assert_array_equal(members, expected)
