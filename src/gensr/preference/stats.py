"""Pair statistics: how many clips yield a pair, pairs per clip, and the margin distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gensr.preference.rules import MetricRule

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return {"n": 0}
    out = {f"q{int(q * 100):02d}": float(np.quantile(x, q)) for q in QUANTILES}
    return {"n": int(len(x)), "mean": float(x.mean()), "min": float(x.min()), "max": float(x.max()), **out}


def pair_stats(pairs: pd.DataFrame, n_clips: int, rules: list[MetricRule]) -> dict:
    """Summary of one pair table; `n_clips` counts the (non-test) degraded clips that had candidates."""
    per_clip = pairs.groupby("deg_id").size()
    n_with = int(len(per_clip))
    per_metric = {}
    for r in rules:
        c, j = f"chosen_{r.name}", f"rejected_{r.name}"
        if c in pairs and j in pairs:
            adv = r.sign * (pairs[c].to_numpy(np.float64) - pairs[j].to_numpy(np.float64))
            per_metric[r.name] = _quantiles(adv)
    return {
        "n_clips": int(n_clips),
        "n_clips_with_pair": n_with,
        "frac_clips_with_pair": float(n_with / n_clips) if n_clips else 0.0,
        "n_pairs": int(len(pairs)),
        "n_pairs_train": int((pairs["role"] == "train").sum()),
        "n_pairs_heldout": int((pairs["role"] == "heldout").sum()),
        "pairs_per_clip_mean": float(per_clip.mean()) if n_with else 0.0,
        "pairs_per_clip_hist": {str(k): int(v) for k, v in per_clip.value_counts().sort_index().items()},
        "margin_norm": _quantiles(pairs["margin_norm"].to_numpy(np.float64)),
        "metric_advantage": per_metric,
    }


def candidate_spread(candidates: pd.DataFrame, wide: pd.DataFrame) -> dict:
    """How much the N candidates of one clip differ, per metric: the mean over clips of the within-clip
    std and range (max - min), and how many clips have all candidates equal on that metric.

    `candidates`: cand_id, deg_id (the candidate manifest); `wide`: clip_id (= cand_id) + one column per
    metric. NaN values are left out of a clip's spread; a clip needs two finite values to count."""
    table = candidates[["cand_id", "deg_id"]].merge(wide, left_on="cand_id", right_on="clip_id", how="inner")
    out = {}
    for metric in [c for c in wide.columns if c != "clip_id"]:
        groups = table.groupby("deg_id")[metric]
        n_finite = groups.count()
        keep = n_finite[n_finite >= 2].index
        if not len(keep):
            out[metric] = {"n_clips": 0}
            continue
        std = groups.std(ddof=0).loc[keep]
        rng = (groups.max() - groups.min()).loc[keep]
        out[metric] = {"n_clips": int(len(keep)), "within_clip_std_mean": float(std.mean()),
                       "within_clip_range_mean": float(rng.mean()),
                       "clips_all_equal": int((rng == 0).sum())}
    return out


def stats_markdown(stats: dict) -> str:
    """A short markdown summary for Dagster metadata and the dataset card."""
    lines = [
        f"- clips with at least one pair: {stats['n_clips_with_pair']} / {stats['n_clips']} "
        f"({100 * stats['frac_clips_with_pair']:.1f}%)",
        f"- pairs: {stats['n_pairs']} (train {stats['n_pairs_train']}, held-out {stats['n_pairs_heldout']}), "
        f"{stats['pairs_per_clip_mean']:.2f} per clip with pairs; histogram {stats['pairs_per_clip_hist']}",
    ]
    m = stats["margin_norm"]
    if m.get("n"):
        lines.append(f"- normalised margin (mean advantage, in stds): median {m['q50']:.3f}, "
                     f"10-90% [{m['q10']:.3f}, {m['q90']:.3f}]")
    if stats["metric_advantage"]:
        lines += ["", "| metric | median advantage | 10% | 90% |", "|---|---|---|---|"]
        for name, q in stats["metric_advantage"].items():
            if q.get("n"):
                lines.append(f"| {name} | {q['q50']:.4g} | {q['q10']:.4g} | {q['q90']:.4g} |")
    spread = {k: v for k, v in stats.get("candidate_spread", {}).items() if v.get("n_clips")}
    if spread:
        lines += ["", "Candidate spread (mean over clips of the within-clip std / range):", "",
                  "| metric | std | range | clips with all candidates equal |", "|---|---|---|---|"]
        for name, v in spread.items():
            lines.append(f"| {name} | {v['within_clip_std_mean']:.4g} | {v['within_clip_range_mean']:.4g} | "
                         f"{v['clips_all_equal']} / {v['n_clips']} |")
    return "\n".join(lines)
