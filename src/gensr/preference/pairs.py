"""Pair tables: candidates + metric vectors -> (chosen, rejected) rows for one strategy.

Strategies
- `multi`: every configured metric must agree (the unanimous rule of the paper).
- `single:<metric>`: that metric alone decides (the reward-hacking ablation).
- `gt_as_chosen`: the clean reference is the chosen side, the worst candidates the rejected (a control
  that the paper reports collapses).

Every pair carries both candidates' ids, paths (relative to the pair table's folder; for AR/MGM also
the paths of their sampled tokens, null otherwise) and full metric vectors (`chosen_<metric>`, `rejected_<metric>`), plus a per-pair seed that DPO uses for
the shared mask / timestep / noise of chosen and rejected, and a `role` (train | heldout).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from gensr.corpus.splits import heldout_utterance
from gensr.preference.rules import MetricRule, select_pairs, select_worst

ROLE_TRAIN, ROLE_HELDOUT = "train", "heldout"
CLEAN_SUFFIX = "__clean"
BASE_COLUMNS = [
    ("pair_id", pa.string()),
    ("paradigm", pa.string()),
    ("strategy", pa.string()),
    ("deg_id", pa.string()),
    ("utt_id", pa.string()),
    ("split", pa.string()),
    ("role", pa.string()),
    ("rank", pa.int64()),
    ("chosen_id", pa.string()),
    ("rejected_id", pa.string()),
    ("chosen_path", pa.string()),
    ("rejected_path", pa.string()),
    ("chosen_codes_path", pa.string()),
    ("rejected_codes_path", pa.string()),
    ("degraded_path", pa.string()),
    ("clean_path", pa.string()),
    ("text", pa.string()),
    ("speaker", pa.string()),
    ("seed", pa.int64()),
    ("margin_norm", pa.float64()),
]


def strategy_slug(strategy: str) -> str:
    """Folder-safe name of a strategy: single:pesq -> single-pesq."""
    return strategy.replace(":", "-")


def rules_for_strategy(
    strategy: str, metrics: list[str], higher_is_better: dict[str, bool], margins: dict[str, float]
) -> list[MetricRule]:
    """The metric rules that vote under `strategy` (gt_as_chosen ranks candidates by all metrics)."""
    unknown = [m for m in margins if m not in higher_is_better]
    if unknown:
        raise KeyError(f"pairs.margins names metrics {unknown} that the metric table does not have; "
                       f"known: {sorted(higher_is_better)}")
    if strategy.startswith("single:"):
        name = strategy.split(":", 1)[1]
        if name not in higher_is_better:
            raise KeyError(f"strategy '{strategy}': metric '{name}' is not in the metric table; "
                           f"known: {sorted(higher_is_better)}")
        metrics = [name]
    return [MetricRule(m, higher_is_better[m], float(margins.get(m, 0.0))) for m in metrics]


def pair_seed(seed: int, pair_id: str) -> int:
    """Stable per-pair seed (independent of row order and of Python's hash salt)."""
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 1)


def rebase(path: str, from_dir: Path, to_dir: Path) -> str:
    """A path relative to `from_dir` re-expressed relative to `to_dir` (the project's path rule)."""
    return os.path.relpath(os.path.normpath(Path(from_dir).resolve() / path), Path(to_dir).resolve())


def build_pair_table(
    candidates: pd.DataFrame,
    metrics_wide: pd.DataFrame,
    *,
    strategy: str,
    rules: list[MetricRule],
    max_pairs_per_clip: int,
    seed: int,
    heldout_fraction: float,
) -> pd.DataFrame:
    """Pairs of one paradigm under one strategy.

    `candidates`: the candidate manifest (paths already relative to the output folder).
    `metrics_wide`: one row per candidate (`clip_id` == cand_id), one column per metric.
    Test-split candidates never pair: the test split is reserved for the held-out evaluation.
    """
    metric_cols = [c for c in metrics_wide.columns if c != "clip_id"]
    cands = candidates[candidates["split"] != "test"]
    table = cands.merge(metrics_wide, left_on="cand_id", right_on="clip_id", how="left", suffixes=("", "_m"))
    table = table.drop(columns=["clip_id"]).rename(columns={"deg_id": "clip_id"})
    if strategy == "gt_as_chosen":
        picked = select_worst(table, rules, max_pairs_per_clip)
        picked["chosen_id"] = picked["clip_id"] + CLEAN_SUFFIX
        picked["margin_norm"] = np.nan
    else:
        picked = select_pairs(table, rules, max_pairs_per_clip)

    if "codes_path" not in table.columns:  # a manifest without sampled tokens (e.g. FM's)
        table["codes_path"] = None
    by_id = table.set_index("cand_id")
    rej = by_id.loc[picked["rejected_id"]].reset_index()
    out = pd.DataFrame(
        {
            "paradigm": rej["paradigm"].to_numpy(),
            "strategy": strategy,
            "deg_id": picked["clip_id"].to_numpy(),
            "utt_id": rej["utt_id"].to_numpy(),
            "split": rej["split"].to_numpy(),
            "rank": picked["rank"].to_numpy(np.int64),
            "chosen_id": picked["chosen_id"].to_numpy(),
            "rejected_id": picked["rejected_id"].to_numpy(),
            "rejected_path": rej["path"].to_numpy(),
            "rejected_codes_path": rej["codes_path"].to_numpy(object),
            "degraded_path": rej["degraded_path"].to_numpy(),
            "clean_path": rej["clean_path"].to_numpy(),
            "text": rej["text"].to_numpy(),
            "speaker": rej["speaker"].to_numpy(),
            "margin_norm": picked["margin_norm"].to_numpy(np.float64),
        }
    )
    if strategy == "gt_as_chosen":
        out["chosen_path"] = out["clean_path"]
        out["chosen_codes_path"] = None
        chosen_metrics = pd.DataFrame(np.nan, index=out.index, columns=metric_cols)
    else:
        cho = by_id.loc[picked["chosen_id"]].reset_index()
        out["chosen_path"] = cho["path"].to_numpy()
        out["chosen_codes_path"] = cho["codes_path"].to_numpy(object)
        chosen_metrics = cho[metric_cols].reset_index(drop=True)
    rejected_metrics = rej[metric_cols].reset_index(drop=True)
    out["pair_id"] = out["chosen_id"] + ">" + out["rejected_id"]
    out["seed"] = [pair_seed(seed, p) for p in out["pair_id"]]
    heldout = (out["split"] == "valid") | out["utt_id"].map(lambda u: heldout_utterance(u, heldout_fraction))
    out["role"] = np.where(heldout, ROLE_HELDOUT, ROLE_TRAIN)
    out = out[[name for name, _ in BASE_COLUMNS]]
    for m in metric_cols:
        out[f"chosen_{m}"] = chosen_metrics[m].to_numpy(np.float64)
        out[f"rejected_{m}"] = rejected_metrics[m].to_numpy(np.float64)
    return out.sort_values(["deg_id", "rank"], kind="mergesort").reset_index(drop=True)


def pair_table_to_arrow(pairs: pd.DataFrame) -> pa.Table:
    """Explicit schema: the base columns, then float64 metric vectors in a stable order."""
    fields = list(BASE_COLUMNS)
    fields += [(c, pa.float64()) for c in pairs.columns if c.startswith(("chosen_", "rejected_"))
               and c not in dict(BASE_COLUMNS)]
    schema = pa.schema(fields)
    return pa.Table.from_pandas(pairs[[n for n, _ in fields]], schema=schema, preserve_index=False)


def metric_names(pairs: pd.DataFrame) -> list[str]:
    """The metrics whose vectors a pair table carries."""
    base = dict(BASE_COLUMNS)
    return [c[len("chosen_"):] for c in pairs.columns if c.startswith("chosen_") and c not in base]


def violations(pairs: pd.DataFrame, rules: list[MetricRule]) -> pd.DataFrame:
    """Pairs whose chosen does not dominate the rejected under `rules` (rules.py; NaN is a violation)."""
    ok = np.ones(len(pairs), dtype=bool)
    strict = np.zeros(len(pairs), dtype=bool)
    for r in rules:
        adv = r.sign * (pairs[f"chosen_{r.name}"].to_numpy(np.float64) - pairs[f"rejected_{r.name}"].to_numpy(np.float64))
        with np.errstate(invalid="ignore"):
            ok &= adv >= r.margin
            strict |= adv > 0
    return pairs[~(ok & strict)]
