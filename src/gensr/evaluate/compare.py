"""Base vs aligned on the same test clips: paired-bootstrap CIs, dimension verdicts and win rate.

- Per metric: the mean difference aligned - base over clips where both are finite, with a seeded
  percentile paired bootstrap (clips resampled with replacement, the same resamples for every
  metric). A CI that excludes 0 is significant; its side, read in the metric's direction, says
  better or worse.
- Per dimension (quality, fidelity, content, timbre): each metric's per-clip difference is signed
  so that positive is better and divided by the std of the base values, then averaged over the
  dimension's metrics. The dimension improves when that mean is > 0 (its CI is reported too).
- Win rate: the share of clips where aligned Pareto-dominates base on every metric (NaN never wins).
- Target (the paper's finding): >= 3 of the 4 dimensions improve and no metric is significantly worse.
"""

from __future__ import annotations

import warnings
import numpy as np
import pandas as pd

from gensr.preference.rules import MetricRule, dominance_matrix
from gensr.preference.suite import MetricInfo


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def paired_frame(base: pd.DataFrame, aligned: pd.DataFrame, metrics: list[MetricInfo]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Base and aligned wide tables restricted to their common clips, same order (sorted clip_id)."""
    common = sorted(set(base["clip_id"]) & set(aligned["clip_id"]))
    cols = [m.name for m in metrics]
    b = base.set_index("clip_id").loc[common, cols]
    a = aligned.set_index("clip_id").loc[common, cols]
    return b, a


def compare(
    base: pd.DataFrame,
    aligned: pd.DataFrame,
    metrics: list[MetricInfo],
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> dict:
    """Everything the evaluation report says about one paradigm (JSON-ready)."""
    b, a = paired_frame(base, aligned, metrics)
    n = len(b)
    if n == 0:
        raise ValueError("base and aligned share no test clips: check that both were restored on the same split")
    sign = np.array([1.0 if m.higher_is_better else -1.0 for m in metrics])
    bv, av = b.to_numpy(np.float64), a.to_numpy(np.float64)
    diff = av - bv  # NaN where either side is NaN
    idx = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
    boot = _nanmean(diff[idx], axis=1)  # [n_boot, M]
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    out_metrics = {}
    for j, m in enumerate(metrics):
        valid = np.isfinite(diff[:, j])
        lo, hi = (np.nanquantile(boot[:, j], [lo_q, hi_q]) if valid.any() else (np.nan, np.nan))
        mean_diff = float(np.mean(diff[valid, j])) if valid.any() else float("nan")
        if lo > 0 or hi < 0:
            verdict = "better" if (lo > 0) == m.higher_is_better else "worse"
        else:
            verdict = "ns"
        out_metrics[m.name] = {
            "dimension": m.dimension,
            "higher_is_better": m.higher_is_better,
            "n": int(valid.sum()),
            "base": float(np.mean(bv[valid, j])) if valid.any() else float("nan"),
            "aligned": float(np.mean(av[valid, j])) if valid.any() else float("nan"),
            "diff": mean_diff,
            "ci_low": float(lo),
            "ci_high": float(hi),
            "significant": verdict,
            "improved": bool(np.isfinite(mean_diff) and sign[j] * mean_diff > 0),
        }

    scale = np.nanstd(bv, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    std_signed = diff * sign / scale  # [n, M], positive = better
    dims = {}
    for dim in sorted({m.dimension for m in metrics}):
        cols = [j for j, m in enumerate(metrics) if m.dimension == dim]
        per_clip = _nanmean(std_signed[:, cols], axis=1)
        boot_dim = _nanmean(per_clip[idx], axis=1)
        score = float(_nanmean(per_clip, axis=0))
        lo, hi = np.nanquantile(boot_dim, [lo_q, hi_q]) if np.isfinite(per_clip).any() else (np.nan, np.nan)
        dims[dim] = {
            "metrics": [metrics[j].name for j in cols],
            "std_diff": score,
            "ci_low": float(lo),
            "ci_high": float(hi),
            "improved": bool(np.isfinite(score) and score > 0),
        }

    rules = [MetricRule(m.name, m.higher_is_better, 0.0) for m in metrics]
    wins = losses = 0
    for i in range(n):
        dom = dominance_matrix(np.stack([av[i], bv[i]]), rules)
        wins += bool(dom[0, 1])
        losses += bool(dom[1, 0])
    worse = [k for k, v in out_metrics.items() if v["significant"] == "worse"]
    improved_dims = [d for d, v in dims.items() if v["improved"]]
    needed = min(3, len(dims))
    return {
        "n_clips": n,
        "metrics": out_metrics,
        "dimensions": dims,
        "win_rate": wins / n,
        "loss_rate": losses / n,
        "improved_dimensions": improved_dims,
        "significantly_worse": worse,
        "target_met": len(improved_dims) >= needed and not worse,
        "target": f">= {needed} of {len(dims)} dimensions improve in mean, no metric significantly worse",
    }
