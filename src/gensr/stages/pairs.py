"""Stage `pairs` (+ `pairs-export`): (chosen, rejected) pairs from the scored candidates of one paradigm.

    data/pairs/<paradigm>/<strategy>/pairs.parquet, stats.json   (one folder per pair strategy)

The SFT-only controls of the ablation (sft_clean, sft_chosen) have no pair rule of their own:
they train on the rows of the multi pair set (`pair_strategy`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from gensr.config import Params
from gensr.config.ablation import SFT_STRATEGIES
from gensr.layout import candidates_dir
from gensr.preference.pairs import (
    build_pair_table,
    metric_names,
    pair_table_to_arrow,
    rebase,
    rules_for_strategy,
    strategy_slug,
    violations,
)
from gensr.preference.stats import candidate_spread, pair_stats
from gensr.preference.suite import metric_info
from gensr.storage import atomic_path, file_sha256, require_path, summary_beside, write_json, write_parquet


def metrics_path(params: Params, paradigm: str) -> Path:
    return Path(params.paths.data) / "metrics" / paradigm / "metrics.parquet"


def pairs_dir(params: Params, paradigm: str, strategy: str) -> Path:
    return Path(params.paths.data) / "pairs" / paradigm / strategy_slug(pair_strategy(strategy))


def pair_strategy(strategy: str) -> str:
    """The pair set a strategy trains on: its own, or multi's for the SFT-only controls."""
    return "multi" if strategy in SFT_STRATEGIES else strategy


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_metrics_wide(path: Path) -> pd.DataFrame:
    """Long metric table -> one row per candidate (clip_id), one float column per metric."""
    from gensr.metrics import to_wide

    candidates = path.parent.parent.parent / "candidates" / path.parent.name / "manifest.parquet"
    fix = f"score the candidates first: `gensr score --candidates {candidates} --out {path}`"
    long = pd.read_parquet(require_path(path, "metric table", fix))
    return _wide(to_wide(long))


def pair_sets(params: Params, paradigm: str) -> list[str]:
    """pairs.strategies plus every pair set the ablation trains on for this paradigm, in a stable order."""
    sets = list(params.pairs.strategies)
    if paradigm in params.ablation.paradigms:
        for strategy in params.ablation.strategies:
            if pair_strategy(strategy) not in sets:
                sets.append(pair_strategy(strategy))
    return sets


def pair_metrics(params: Params, wide: pd.DataFrame, source: Path) -> tuple[list[str], dict[str, bool]]:
    """The metrics that vote (`pairs.metrics`, or every column of the wide table `wide` read from `source`) and
    each column's direction (higher is better). A listed metric the table lacks is an error naming `source`."""
    all_metrics = [c for c in wide.columns if c != "clip_id"]
    metrics = list(params.pairs.metrics) if params.pairs.metrics is not None else all_metrics
    missing = [m for m in metrics if m not in all_metrics]
    if missing:
        raise KeyError(f"pairs.metrics lists {missing}, absent from {source}; available: {all_metrics}")
    info = {m.name: m for m in metric_info(all_metrics)}
    return metrics, {m: info[m].higher_is_better for m in all_metrics}


def build_pairs(params: Params, paradigm: str, strategies: list[str] | None = None) -> dict:
    """Pair tables of one paradigm for each strategy (default: `pair_sets`). The run's wall seconds and pair counts
    go to data/pairs/<paradigm>.json, beside the paradigm's folder (gensr.storage.summary_beside)."""
    start = time.perf_counter()
    cdir = candidates_dir(params, paradigm)
    manifest = pd.read_parquet(require_path(cdir / "manifest.parquet", "candidate manifest",
                                            f"run `gensr sample --paradigm {paradigm}` first"))
    wide = load_metrics_wide(metrics_path(params, paradigm))
    metrics, hib = pair_metrics(params, wide, metrics_path(params, paradigm))
    summary = {}
    for strategy in strategies or pair_sets(params, paradigm):
        out_dir = pairs_dir(params, paradigm, strategy)
        out_dir.mkdir(parents=True, exist_ok=True)
        cands = manifest.copy()
        for col in ("path", "clean_path", "degraded_path", "codes_path"):
            if col in cands:
                cands[col] = [rebase(p, cdir, out_dir) if isinstance(p, str) else None for p in cands[col]]
        rules = rules_for_strategy(strategy, metrics, hib, dict(params.pairs.margins))
        pairs = build_pair_table(cands, wide, strategy=strategy, rules=rules,
                                 max_pairs_per_clip=params.pairs.max_pairs_per_clip, seed=params.seed,
                                 heldout_fraction=params.pairs.heldout_fraction)
        if strategy != "gt_as_chosen" and not violations(pairs, rules).empty:
            raise AssertionError(f"{out_dir}: {len(violations(pairs, rules))} pairs break the {strategy} rule")
        path = write_parquet(pair_table_to_arrow(pairs), out_dir / "pairs.parquet")
        n_clips = int(manifest.loc[manifest["split"] != "test", "deg_id"].nunique())
        stats = pair_stats(pairs, n_clips, rules)
        stats.update(paradigm=paradigm, strategy=strategy, metrics=[r.name for r in rules],
                     margins={r.name: r.margin for r in rules}, max_pairs_per_clip=params.pairs.max_pairs_per_clip,
                     pairs_sha256=file_sha256(path),
                     candidate_spread=candidate_spread(manifest[manifest["split"] != "test"], wide))
        write_json(stats, out_dir / "stats.json")
        summary[strategy] = stats
    if summary:
        write_json({"paradigm": paradigm, "n_clips": next(iter(summary.values()))["n_clips"],
                    "n_pairs": {name: st["n_pairs"] for name, st in summary.items()},
                    "seconds": round(time.perf_counter() - start, 2)},
                   summary_beside(Path(params.paths.data) / "pairs" / paradigm))
    return summary


def check_pairs(pairs_path: Path) -> dict:
    """Chosen dominates rejected on every metric, no NaN (read back from the written table)."""
    pairs = pd.read_parquet(pairs_path)
    stats = json.loads((pairs_path.parent / "stats.json").read_text())
    strategy = stats["strategy"]
    if strategy == "gt_as_chosen":
        bad = pairs[pairs[[f"rejected_{m}" for m in metric_names(pairs)]].isna().all(axis=1)]
        return {"passed": True, "n_pairs": len(pairs), "n_violations": 0,
                "note": "gt_as_chosen: the clean reference is chosen by construction", "n_unscored": len(bad)}
    from gensr.preference.rules import MetricRule

    rules = [MetricRule(m, hib, stats["margins"][m]) for m, hib in
             zip(stats["metrics"], [i.higher_is_better for i in metric_info(stats["metrics"])])]
    bad = violations(pairs, rules)
    return {"passed": bad.empty and len(pairs) > 0, "n_pairs": len(pairs), "n_violations": len(bad),
            "first_violations": bad["pair_id"].head(5).tolist()}


def export_pairs(params: Params, paradigm: str, strategy: str, out_dir: Path) -> dict:
    from gensr.preference.export import export_dataset

    src = pairs_dir(params, paradigm, strategy)
    stats_path = require_path(src / "stats.json", "pair stats", f"run `gensr pairs --paradigm {paradigm}`")
    stats = json.loads(stats_path.read_text())
    try:
        info = {"paradigm": paradigm, "strategy": strategy, "margins": stats["margins"],
                "max_pairs_per_clip": stats["max_pairs_per_clip"], "data_hash": stats["pairs_sha256"][:16],
                "params": {"pairs": params.pairs.model_dump(mode="json"), "seed": params.seed}}
    except (KeyError, TypeError) as err:
        raise ValueError(f"{stats_path}: no key {err}; rebuild it with `gensr pairs --paradigm {paradigm}`") from None
    return export_dataset(require_path(src / "pairs.parquet", "pair table", f"run `gensr pairs --paradigm {paradigm}`"),
                          out_dir, stats, info)



def _wide(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index() if "clip_id" not in df.columns else df
    return df.sort_values("clip_id", kind="mergesort").reset_index(drop=True)
