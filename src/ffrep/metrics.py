"""Sparsity and ensemble metrics: NumPy kernels and thin xarray wrappers.

Every kernel takes activations with samples on the first axis and units on
the last; the wrappers take a DataArray and the name of the unit dimension.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

CHUNK = 8192


def hoyer(x: np.ndarray) -> np.ndarray:
    """Hoyer sparseness of each row of ``x`` (samples, units).

    ``(sqrt(n) - ||x||_1 / ||x||_2) / (sqrt(n) - 1)``: 1 when one unit is
    active, 0 when all units are equal. All-zero rows are undefined and
    give NaN.

    >>> hoyer(np.array([[0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]))
    array([1., 0.])
    """
    x = np.asarray(x)
    n = x.shape[-1]
    if n < 2:
        raise ValueError("Hoyer sparseness needs at least two units")
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], CHUNK):
        block = np.asarray(x[start : start + CHUNK], dtype=np.float64)
        l1 = np.abs(block).sum(-1)
        l2 = np.sqrt(np.square(block).sum(-1))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(l2 > 0, l1 / l2, np.nan)
        out[start : start + CHUNK] = (np.sqrt(n) - ratio) / (np.sqrt(n) - 1)
    return out


def active_fraction(x: np.ndarray) -> np.ndarray:
    """Fraction of units with activation > 0, per row of ``x``."""
    x = np.asarray(x)
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], CHUNK):
        out[start : start + CHUNK] = (x[start : start + CHUNK] > 0).mean(-1)
    return out


def class_means(x: np.ndarray, labels: np.ndarray, n_classes: int = 10):
    """Mean activation of every unit over each class's rows: (classes, units).

    A class without samples gets a row of NaN.
    """
    x = np.asarray(x)
    sums = np.zeros((n_classes, x.shape[-1]), dtype=np.float64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    for start in range(0, x.shape[0], CHUNK):
        np.add.at(
            sums,
            labels[start : start + CHUNK],
            np.asarray(x[start : start + CHUNK], dtype=np.float64),
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def ensembles(means: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """Ensemble membership (classes, units) from class means.

    Unit j belongs to class k's ensemble when ``m_kj > factor * mean_{i != j} m_ki``,
    the mean taken over the class's other units.

    >>> ensembles(np.array([[0.0, 0.0, 0.0, 5.0]]))
    array([[False, False, False,  True]])
    """
    means = np.asarray(means, dtype=np.float64)
    n = means.shape[-1]
    others = (means.sum(-1, keepdims=True) - means) / (n - 1)
    return means > factor * others


def hoyer_da(x: xr.DataArray, dim: str = "unit") -> xr.DataArray:
    """:func:`hoyer` over ``dim`` of a DataArray."""
    return xr.apply_ufunc(
        hoyer, x.transpose(..., dim), input_core_dims=[[dim]], dask="forbidden"
    )


def active_fraction_da(x: xr.DataArray, dim: str = "unit") -> xr.DataArray:
    """:func:`active_fraction` over ``dim`` of a DataArray."""
    return xr.apply_ufunc(
        active_fraction, x.transpose(..., dim), input_core_dims=[[dim]]
    )
