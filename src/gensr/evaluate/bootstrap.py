"""The one paired bootstrap of the project: per-clip differences -> mean, percentile CI, p-value (and
`clustered_mean`, the same resampling over clusters of rows, e.g. the preference pairs of one clip).

Clips are resampled with replacement, the same resamples for every column, so the CIs of several
metrics (or dimensions) of one comparison are joint draws. A NaN difference (a metric that could
not be computed on one side) is left out of each resample's mean, never counted as 0.

The two-sided p-value is the percentile-bootstrap one, consistent with the CI: 2 x the smaller
share of resampled means on either side of 0, with the +1 correction, so it is never 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def nanmean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def resample_indices(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """[n_bootstrap, n] clip indices, seeded: the same draws for every column of one comparison."""
    if n < 1:
        raise ValueError("the paired bootstrap needs at least one clip")
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


@dataclass(frozen=True)
class BootstrapResult:
    """Per column: mean difference, CI bounds, two-sided p-value and the number of finite clips."""

    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    n: np.ndarray


def bootstrap_columns(diff: np.ndarray, idx: np.ndarray, confidence: float) -> BootstrapResult:
    """Paired bootstrap of each column of `diff` ([n] or [n, M]) over the resamples `idx`."""
    diff = np.asarray(diff, dtype=np.float64)
    one = diff.ndim == 1
    d = diff[:, None] if one else diff
    boot = nanmean(d[idx], axis=1)  # [B, M]
    finite = np.isfinite(d)
    m = d.shape[1]
    mean, lo, hi, p = (np.full(m, np.nan) for _ in range(4))
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    for j in range(m):
        if not finite[:, j].any():
            continue
        b = boot[:, j][np.isfinite(boot[:, j])]
        mean[j] = float(np.mean(d[finite[:, j], j]))
        lo[j], hi[j] = np.quantile(b, [lo_q, hi_q])
        below, above = (b <= 0).sum(), (b >= 0).sum()
        p[j] = min(1.0, 2 * (min(below, above) + 1) / (len(b) + 1))
    res = BootstrapResult(mean, lo, hi, p, finite.sum(axis=0))
    if one:
        res = BootstrapResult(*(np.asarray(v)[0] for v in (res.mean, res.ci_low, res.ci_high, res.p_value, res.n)))
    return res


def clustered_mean(values: np.ndarray, clusters: np.ndarray, n_bootstrap: int, confidence: float,
                   seed: int) -> tuple[float, float, float]:
    """Mean of `values` over rows, with a percentile CI from resampling whole clusters with replacement (e.g. the
    preference pairs of one clip, which share its candidates): each resample's mean is its rows' sum over its row
    count, so a clip weighs by its number of rows as in the plain mean."""
    values = np.asarray(values, dtype=np.float64)
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    sums, counts = np.bincount(inverse, weights=values), np.bincount(inverse)
    idx = resample_indices(len(counts), n_bootstrap, seed)
    boot = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(values.mean()), float(lo), float(hi)


def paired_bootstrap(diff: np.ndarray, n_bootstrap: int, confidence: float, seed: int) -> BootstrapResult:
    """`bootstrap_columns` with its own seeded resamples over the rows of `diff`."""
    diff = np.asarray(diff, dtype=np.float64)
    return bootstrap_columns(diff, resample_indices(len(diff), n_bootstrap, seed), confidence)


def holm(p_values, alpha: float) -> np.ndarray:
    """Holm's step-down rejections (family-wise error <= alpha); a NaN p-value is never rejected."""
    p = np.asarray(p_values, dtype=np.float64)
    reject = np.zeros(len(p), dtype=bool)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="mergesort")]
    m = len(order)
    for rank, j in enumerate(order):
        if p[j] > alpha / (m - rank):
            break
        reject[j] = True
    return reject
