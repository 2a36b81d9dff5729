"""Base vs aligned on the same test clips: paired-bootstrap CIs, dimension verdicts and win rate.

- Per metric: the mean difference aligned - base over clips where both are finite, with a seeded
  percentile paired bootstrap (clips resampled with replacement, the same resamples for every
  metric). A CI that excludes 0 is significant; its side, read in the metric's direction, says
  better or worse.
- Per dimension (quality, fidelity, content, timbre): each metric's per-clip difference is signed
  so that positive is better and divided by the std of the base values, then averaged over the
  dimension's metrics. The dimension improves when that mean is > 0 (its CI is reported too).
- Win rate: the share of clips where aligned Pareto-dominates base on every metric (NaN never wins).
- Target: the pre-registered rule of `gensr.evaluate.verdicts.improvement_verdict` (Holm-corrected
  dimension and metric tests, false-positive rate <= 1 - confidence). The per-metric flags and the
  "dimensions improved" count (means above 0) stay as descriptions, not as the test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gensr.evaluate.bootstrap import bootstrap_columns, nanmean as _nanmean, resample_indices
from gensr.evaluate.verdicts import improvement_verdict
from gensr.preference.rules import MetricRule, dominance_matrix
from gensr.preference.suite import MetricInfo


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
    min_dimensions: int = 1,
) -> dict:
    """Everything the evaluation report says about one paradigm (JSON-ready)."""
    b, a = paired_frame(base, aligned, metrics)
    n = len(b)
    if n == 0:
        raise ValueError("base and aligned share no test clips: check that both were restored on the same split")
    sign = np.array([1.0 if m.higher_is_better else -1.0 for m in metrics])
    bv, av = b.to_numpy(np.float64), a.to_numpy(np.float64)
    diff = av - bv  # NaN where either side is NaN
    idx = resample_indices(n, n_bootstrap, seed)
    ci = bootstrap_columns(diff, idx, confidence)
    out_metrics = {}
    for j, m in enumerate(metrics):
        lo, hi, mean_diff = float(ci.ci_low[j]), float(ci.ci_high[j]), float(ci.mean[j])
        valid = np.isfinite(diff[:, j])
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
            "ci_low": lo,
            "ci_high": hi,
            "p_value": float(ci.p_value[j]),
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
        d = bootstrap_columns(per_clip, idx, confidence)
        score = float(d.mean)
        dims[dim] = {
            "metrics": [metrics[j].name for j in cols],
            "std_diff": score,
            "ci_low": float(d.ci_low),
            "ci_high": float(d.ci_high),
            "p_value": float(d.p_value),
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
    res = {
        "n_clips": n,
        "metrics": out_metrics,
        "dimensions": dims,
        "win_rate": wins / n,
        "loss_rate": losses / n,
        "improved_dimensions": improved_dims,  # means above 0: descriptive, not a test
        "significantly_worse": worse,  # per-metric CI, uncorrected: descriptive
    }
    verdict = improvement_verdict(res, alpha=1 - confidence, min_dimensions=min_dimensions)
    res.update(target_met=verdict["target_met"], target=verdict["rule"], verdict=verdict)
    return res
