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
        block = np.abs(np.asarray(x[start : start + CHUNK], dtype=np.float64))
        # divide by the row's largest value so squares neither under- nor overflow
        peak = block.max(-1, keepdims=True)
        block /= np.where(peak > 0, peak, 1.0)
        l1 = block.sum(-1)
        l2 = np.sqrt(np.square(block).sum(-1))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(l2 > 0, l1 / l2, np.nan)
        h = (np.sqrt(n) - ratio) / (np.sqrt(n) - 1)
        # rounding can step a hair outside [0, 1]
        out[start : start + CHUNK] = np.clip(h, 0.0, 1.0)
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


def overlap_matrix(members: np.ndarray) -> np.ndarray:
    """Shared units of every pair of ensembles: (classes, classes) integers.

    ``O_kl = |E_k ∩ E_l| = sum_j M_kj M_lj`` for a membership matrix ``M``
    (classes, units); the diagonal holds the ensemble sizes.

    >>> overlap_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=bool))
    array([[2, 1],
           [1, 2]])
    """
    m = np.asarray(members).astype(np.int64)
    return m @ m.T


def jaccard_matrix(members: np.ndarray) -> np.ndarray:
    """``|E_k ∩ E_l| / |E_k ∪ E_l|`` of every pair; NaN when both are empty.

    >>> jaccard_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=bool))
    array([[1.        , 0.33333333],
           [0.33333333, 1.        ]])
    """
    inter = overlap_matrix(members).astype(np.float64)
    size = np.diag(inter)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def memberships(members: np.ndarray) -> np.ndarray:
    """Number of ensembles each unit belongs to: (units,) integers.

    A unit in two or more ensembles has mixed selectivity.

    >>> memberships(np.array([[1, 1, 0], [0, 1, 0]], dtype=bool))
    array([1, 2, 0])
    """
    return np.asarray(members).astype(np.int64).sum(0)


def selectivity(means: np.ndarray) -> np.ndarray:
    """Class selectivity index of each unit from class means (classes, units).

    ``SI_j = (m_max,j - m_rest,j) / (m_max,j + m_rest,j)`` with ``m_max,j`` the
    largest class mean of unit j and ``m_rest,j`` the mean of its other class
    means (Morcos et al., 2018). 1 when only one class drives the unit, 0 when
    all drive it equally; NaN for a unit silent on every class. Classes whose
    mean is NaN (no samples) are left out.

    >>> selectivity(np.array([[4.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))
    array([ 1.,  0., nan])
    """
    means = np.asarray(means, dtype=np.float64)
    valid = ~np.isnan(means)
    k = valid.sum(0)
    filled = np.where(valid, means, -np.inf)
    top = filled.max(0)
    rest = (np.where(valid, means, 0.0).sum(0) - top) / np.maximum(k - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (top - rest) / (top + rest)
    return np.where((top + rest > 0) & (k >= 2), out, np.nan)


def lifetime_sparseness(x: np.ndarray) -> np.ndarray:
    """Lifetime sparseness of each unit over the samples (rows) of ``x``.

    ``S_j = (1 - (sum_s r_sj / N)^2 / (sum_s r_sj^2 / N)) / (1 - 1 / N)``
    (Vinje & Gallant, 2000): 1 when the unit responds to a single sample, 0 when
    it responds equally to all; NaN for a unit silent on every sample. The
    population counterpart, across units for one sample, is :func:`hoyer`.

    >>> lifetime_sparseness(np.array([[0.0, 1.0], [0.0, 1.0], [5.0, 1.0]]))
    array([1., 0.])
    """
    x = np.asarray(x)
    n = x.shape[0]
    if n < 2:
        raise ValueError("lifetime sparseness needs at least two samples")
    s1 = np.zeros(x.shape[-1], dtype=np.float64)
    s2 = np.zeros(x.shape[-1], dtype=np.float64)
    for start in range(0, n, CHUNK):
        block = np.asarray(x[start : start + CHUNK], dtype=np.float64)
        s1 += block.sum(0)
        s2 += np.square(block).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(s2 > 0, (s1 / n) ** 2 / (s2 / n), np.nan)
    return (1 - ratio) / (1 - 1 / n)


def drive_split(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None):
    """Split the pre-activation ``a = W x + b`` into excitatory and inhibitory
    drive, per sample and unit.

    ``E_sj = sum_i max(W_ji x_si, 0) + max(b_j, 0)`` and
    ``I_sj = sum_i min(W_ji x_si, 0) + min(b_j, 0)``, so ``a = E + I``,
    ``E >= 0 >= I``. The products are split by sign, so inputs of either sign
    (a normalised image) are handled: ``E = W⁺x⁺ + W⁻x⁻``, ``I = W⁻x⁺ + W⁺x⁻``.

    Parameters
    ----------
    x : (samples, inputs) array
    weight : (units, inputs) array
    bias : (units,) array, optional

    Returns
    -------
    excitatory, inhibitory : (samples, units) arrays
        In float32 when every input is float32 (the activations' precision),
        else float64.

    >>> e, i = drive_split(np.array([[1.0, 2.0]]), np.array([[1.0, -1.0]]), [0.5])
    >>> e, i
    (array([[1.5]]), array([[-2.]]))
    """
    dtype = np.result_type(np.asarray(x).dtype, np.asarray(weight).dtype, np.float32)
    x = np.asarray(x, dtype=dtype)
    w = np.asarray(weight, dtype=dtype)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    exc = xp @ wp.T + xn @ wn.T
    inh = xp @ wn.T + xn @ wp.T
    if bias is not None:
        b = np.asarray(bias, dtype=dtype)
        exc += np.maximum(b, 0)
        inh += np.minimum(b, 0)
    return exc, inh


def silence_causes(
    exc: np.ndarray, inh: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Why each silent unit is silent: net inhibition or lack of excitation.

    A unit j is silent on sample s when ``E_sj + I_sj <= 0``. It is *silenced by
    inhibition* when its excitatory drive reaches the unit's reference
    excitation ``E_sj >= R_j`` (by default the median of ``E`` over the samples
    on which the unit is active): it received as much excitation as when it
    fires and inhibition cancelled it. Otherwise it is *under-driven*. Units
    never active have ``R_j = NaN`` and count as under-driven.

    Returns
    -------
    inhibited, underdriven : (samples, units) boolean arrays

    >>> silence_causes(np.array([[2.0, 0.1]]), np.array([[-3.0, -0.2]]),
    ...                np.array([1.0, 1.0]))
    (array([[ True, False]]), array([[False,  True]]))
    """
    silent = exc + inh <= 0
    with np.errstate(invalid="ignore"):
        strong = exc >= np.asarray(reference)[None, :]
    return silent & strong, silent & ~strong


def reference_excitation(
    exc: np.ndarray, inh: np.ndarray, quantile: float = 0.5
) -> np.ndarray:
    """Per unit, the ``quantile`` of ``E`` over samples where the unit is active
    (``E + I > 0``); NaN for a unit never active."""
    out = np.full(exc.shape[1], np.nan)
    # a few units at a time: nanquantile copies what it is given
    for start in range(0, exc.shape[1], 256):
        cols = slice(start, start + 256)
        active = exc[:, cols] + inh[:, cols] > 0
        ever = active.any(0)
        masked = np.where(active, exc[:, cols], np.nan)[:, ever]
        block = out[cols]
        block[ever] = np.nanquantile(masked, quantile, axis=0)
        out[cols] = block
    return out


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


def lifetime_sparseness_da(x: xr.DataArray, dim: str = "sample") -> xr.DataArray:
    """:func:`lifetime_sparseness` over ``dim`` (the samples) of a 2-D DataArray."""
    x = x.transpose(dim, ...)
    (unit,) = (d for d in x.dims if d != dim)
    return xr.DataArray(
        lifetime_sparseness(x.values), dims=[unit], coords={unit: x[unit]}
    )


def overlap_da(members: xr.DataArray, dim: str = "unit") -> xr.DataArray:
    """:func:`overlap_matrix` of a (class, unit) membership DataArray."""
    (cls,) = (d for d in members.dims if d != dim)
    m = members.transpose(cls, dim)
    return xr.DataArray(
        overlap_matrix(m.values),
        dims=[cls, f"{cls}_other"],
        coords={cls: m[cls].values, f"{cls}_other": m[cls].values},
    )
