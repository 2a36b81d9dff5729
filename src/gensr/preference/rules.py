"""The unanimous pair rule: Pareto dominance with per-metric margins, and the per-clip selection.

A candidate `a` dominates `b` when its advantage in each metric's direction,
    adv_m = sign_m * (a_m - b_m),
satisfies adv_m >= margin_m for EVERY metric m and adv_m > 0 for at least one. With zero margins
this is Pareto dominance: never worse, strictly better somewhere. "Not worse" rather than
"strictly better" on every metric is what lets discrete metrics (WER/CER, often tied between
candidates of one clip) take part; a positive margin demands a real advantage on that metric.
NaN on either side makes the comparison false, so NaN never votes and never pairs.

Selection per clip: every dominating (chosen, rejected) pair is scored by its *normalised
margin*, the mean advantage over the metrics after dividing each by that metric's std across
all candidates of the table (so no metric's units dominate). The K highest pairs are kept; ties
break on (chosen_id, rejected_id), so the result does not depend on row order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class MetricRule:
    """One metric's vote: its column name, direction and the margin the chosen must exceed."""

    name: str
    higher_is_better: bool
    margin: float = 0.0

    @property
    def sign(self) -> float:
        return 1.0 if self.higher_is_better else -1.0


def signed_values(values: np.ndarray, rules: list[MetricRule]) -> np.ndarray:
    """[N, M] metric values flipped so that larger is always better."""
    return values * np.array([r.sign for r in rules], dtype=np.float64)


def dominance_matrix(values: np.ndarray, rules: list[MetricRule]) -> np.ndarray:
    """[N, N] bool: entry (i, j) is True when candidate i dominates j on every metric."""
    signed = signed_values(np.asarray(values, dtype=np.float64), rules)
    margins = np.array([r.margin for r in rules], dtype=np.float64)
    advantage = signed[:, None, :] - signed[None, :, :]  # [N, N, M]
    if not len(rules):
        return np.zeros(advantage.shape[:2], dtype=bool)
    with np.errstate(invalid="ignore"):
        # NaN compares False in both tests, so a NaN anywhere blocks the pair
        return (advantage >= margins).all(axis=-1) & (advantage > 0).any(axis=-1)


def dominates(a: np.ndarray, b: np.ndarray, rules: list[MetricRule]) -> bool:
    """True when metric vector `a` dominates `b` under `rules`."""
    return bool(dominance_matrix(np.stack([a, b]), rules)[0, 1])


def metric_scales(table: pd.DataFrame, rules: list[MetricRule]) -> np.ndarray:
    """Std of each metric over every candidate (rows sorted first, so row order can't change it)."""
    cols = [r.name for r in rules]
    ordered = table.sort_values(["clip_id", "cand_id"], kind="mergesort")[cols].to_numpy(dtype=np.float64)
    with warnings.catch_warnings():  # an all-NaN metric has no spread; it falls back to 1
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanstd(ordered, axis=0) if len(ordered) else np.ones(len(cols))
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def select_pairs(table: pd.DataFrame, rules: list[MetricRule], max_pairs_per_clip: int) -> pd.DataFrame:
    """Pick at most K dominating pairs per clip.

    `table` has one row per candidate: clip_id, cand_id and one column per rule. Returns columns
    clip_id, chosen_id, rejected_id, rank (0 = best in its clip), margin_norm, sorted by
    (clip_id, rank).
    """
    if not rules:
        raise ValueError("select_pairs needs at least one metric rule")
    missing = [r.name for r in rules if r.name not in table.columns]
    if missing:
        raise KeyError(f"metric columns {missing} are not in the candidate table")
    if table.duplicated(["clip_id", "cand_id"]).any():
        raise ValueError("candidate table has duplicate (clip_id, cand_id) rows")
    scale = metric_scales(table, rules)
    cols = [r.name for r in rules]
    rows = []
    for clip_id, group in table.sort_values(["clip_id", "cand_id"], kind="mergesort").groupby("clip_id", sort=True):
        ids = group["cand_id"].to_numpy()
        values = group[cols].to_numpy(dtype=np.float64)
        dom = dominance_matrix(values, rules)
        chosen_idx, rejected_idx = np.nonzero(dom)
        if len(chosen_idx) == 0:
            continue
        signed = signed_values(values, rules) / scale
        norm = (signed[chosen_idx] - signed[rejected_idx]).mean(axis=1)
        found = pd.DataFrame(
            {"chosen_id": ids[chosen_idx], "rejected_id": ids[rejected_idx], "margin_norm": norm}
        ).sort_values(["margin_norm", "chosen_id", "rejected_id"], ascending=[False, True, True], kind="mergesort")
        found = found.head(max_pairs_per_clip).reset_index(drop=True)
        found.insert(0, "clip_id", clip_id)
        found["rank"] = np.arange(len(found), dtype=np.int64)
        rows.append(found)
    if not rows:
        return pd.DataFrame(
            {
                "clip_id": pd.Series(dtype=str),
                "chosen_id": pd.Series(dtype=str),
                "rejected_id": pd.Series(dtype=str),
                "margin_norm": pd.Series(dtype=np.float64),
                "rank": pd.Series(dtype=np.int64),
            }
        )
    return pd.concat(rows, ignore_index=True)[["clip_id", "chosen_id", "rejected_id", "rank", "margin_norm"]]


def select_worst(table: pd.DataFrame, rules: list[MetricRule], max_pairs_per_clip: int) -> pd.DataFrame:
    """For `gt_as_chosen`: the K candidates per clip with the lowest mean normalised score (NaN-skipping).

    Returns clip_id, rejected_id, rank; the clean reference is the chosen side of every pair.
    """
    scale = metric_scales(table, rules)
    cols = [r.name for r in rules]
    ordered = table.sort_values(["clip_id", "cand_id"], kind="mergesort").reset_index(drop=True)
    z = signed_values(ordered[cols].to_numpy(dtype=np.float64), rules) / scale
    with warnings.catch_warnings():  # all-NaN rows/columns give NaN, handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        centred = z - np.nanmean(z, axis=0) if len(z) else z
        score = np.nanmean(centred, axis=1) if centred.shape[1] else np.zeros(len(ordered))
    ordered = ordered.assign(_score=np.nan_to_num(score, nan=np.inf))  # all-NaN candidates go last
    ordered = ordered.sort_values(["clip_id", "_score", "cand_id"], kind="mergesort")
    picked = ordered.groupby("clip_id", sort=True).head(max_pairs_per_clip)
    out = picked[["clip_id", "cand_id"]].rename(columns={"cand_id": "rejected_id"}).reset_index(drop=True)
    out["rank"] = out.groupby("clip_id").cumcount().astype(np.int64)
    return out
