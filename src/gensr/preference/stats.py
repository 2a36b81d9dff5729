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
    return "\n".join(lines)
