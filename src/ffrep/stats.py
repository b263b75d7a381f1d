"""Statistics over seeds: t-based confidence intervals and Welch tests."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95

# measures that lie in [0, 1] (accuracies, fractions, shares and the
# sparseness, selectivity and Jaccard indices) and those that cannot be
# negative (counts, sizes, overlaps), by their column names
_UNIT = re.compile(
    r"(^|_)(accuracy|hoyer|selectivity|sparseness|fraction|jaccard|share)"
)
_COUNT = re.compile(r"^(n_|units_in_)|(^|_)(size|overlap)$")


def measure_range(column: str) -> tuple[float, float] | None:
    """The range a measure's values lie in, from its name, or None.

    >>> measure_range("active_fraction"), measure_range("mean_ensemble_size")
    ((0.0, 1.0), (0.0, inf))
    >>> measure_range("inhibition_ratio") is None
    True
    """
    if _UNIT.search(column):
        return 0.0, 1.0
    if _COUNT.search(column):
        return 0.0, np.inf
    return None


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """Mean and half-width of the t-based confidence interval of ``values``.

    ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` over the finite values, with ``s``
    the sample standard deviation. The half-width is NaN for fewer than two
    values.

    >>> m, h, n = t_interval([1.0, 2.0, 3.0])
    >>> round(m, 3), round(h, 3), n
    (2.0, 2.484, 3)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return np.nan, np.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, np.nan, n
    sem = v.std(ddof=1) / np.sqrt(n)
    return mean, float(sps.t.ppf((1 + confidence) / 2, n - 1) * sem), n


def summarise(
    frame: pd.DataFrame,
    by: list[str],
    values: list[str] | None = None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Per group of ``by``: mean, std, 95 % CI bounds and count of each value.

    Columns ``{v}_mean``, ``{v}_std``, ``{v}_ci_low``, ``{v}_ci_high`` and
    ``{v}_n``, plus ``n_seeds`` (rows in the group). ``values`` defaults to every
    numeric column but the keys and ``seed``. An interval is cut at the range
    of its measure (:func:`measure_range`): with few seeds a t-interval of a
    fraction can otherwise run past 0 or 1.
    """
    if values is None:
        values = [
            c
            for c in frame.columns
            if c not in [*by, "seed"] and pd.api.types.is_numeric_dtype(frame[c])
        ]
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        for v in values:
            mean, half, n = t_interval(group[v], confidence)
            low, high = measure_range(v) or (-np.inf, np.inf)
            row[f"{v}_mean"] = mean
            row[f"{v}_std"] = float(group[v].std(ddof=1)) if n > 1 else np.nan
            row[f"{v}_ci_low"] = max(mean - half, low)
            row[f"{v}_ci_high"] = min(mean + half, high)
            row[f"{v}_n"] = n
        row["n_seeds"] = len(group)
        rows.append(row)
    return pd.DataFrame(rows)


def hedges_g(a, b) -> float:
    """Standardised mean difference ``(mean_a - mean_b) / s_pooled`` with
    Hedges' small-sample correction ``1 - 3 / (4 (n_a + n_b) - 9)``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return np.nan
    pooled = np.sqrt(
        ((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2)
    )
    if pooled == 0:
        return np.nan
    return float((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def welch(a, b) -> dict:
    """Welch's unequal-variance t-test of two samples and its effect size."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = {
        "n_a": a.size,
        "n_b": b.size,
        "mean_a": float(a.mean()) if a.size else np.nan,
        "mean_b": float(b.mean()) if b.size else np.nan,
        "t": np.nan,
        "df": np.nan,
        "p_value": np.nan,
        "hedges_g": hedges_g(a, b),
    }
    if a.size >= 2 and b.size >= 2 and (a.var() > 0 or b.var() > 0):
        res = sps.ttest_ind(a, b, equal_var=False)
        out.update(t=float(res.statistic), p_value=float(res.pvalue))
        out["df"] = float(res.df)
    return out


def compare_algorithms(
    frame: pd.DataFrame,
    metric: str,
    by: list[str],
    reference: str = "ff",
    others: tuple[str, ...] = ("bp", "bp_ff"),
) -> pd.DataFrame:
    """Welch test of ``metric`` between ``reference`` and each of ``others``
    within each group of ``by`` (seeds are the replicates)."""
    rows = []
    for key, group in frame.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ref = group.loc[group.algorithm == reference, metric]
        for other in others:
            alt = group.loc[group.algorithm == other, metric]
            if ref.empty or alt.empty:
                continue
            rows.append(
                {
                    **dict(zip(by, key, strict=True)),
                    "metric": metric,
                    "algorithm_a": reference,
                    "algorithm_b": other,
                    **welch(ref, alt),
                }
            )
    return pd.DataFrame(rows)
