"""Pairs per scored candidate: how the pool's size turns into preference pairs, from the last `dvc repro`.

Scoring the pool's candidates is the demo's largest cost, so the pool should be sized by what it yields. For each
paradigm with a scored pool (data/candidates/<p>/manifest.parquet and data/metrics/<p>/metrics.parquet) this keeps
the first n candidates of every clip (n = 2 .. sample.n_candidates; each candidate is an independently seeded
draw, so the first n are a pool of n draws), builds the pairs with the pairs stage's own rule
(`gensr.preference.pairs.build_pair_table`, `pairs.metrics`, `pairs.margins`, `pairs.max_pairs_per_clip`) and
prints, per pair set: pairs per pool clip, pairs per scored candidate, train pairs, and how many epochs of
those train pairs the DPO budgets that read the set would make (dpo.<p> for `multi`, ablation.budget for the
ablation's sets). Nothing is scored or trained; it reads the stages' outputs.

    python -m benchmarks pool [--root=DIR] [--paradigms=ar,mgm,fm] [--strategies=multi,single:pesq_wb]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def yields(params, paradigm: str, strategy: str, root: Path) -> list[dict]:
    """One row per pool size n: pairs, train pairs, clips with a pair, for the first n candidates of each clip."""
    from gensr.layout import candidates_dir
    from gensr.preference.pairs import ROLE_TRAIN, build_pair_table, rules_for_strategy
    from gensr.stages.pairs import load_metrics_wide, metrics_path, pair_metrics

    manifest = pd.read_parquet(root / candidates_dir(params, paradigm) / "manifest.parquet")
    table = root / metrics_path(params, paradigm)
    wide = load_metrics_wide(table)
    metrics, hib = pair_metrics(params, wide, table)
    rules = rules_for_strategy(strategy, metrics, hib, dict(params.pairs.margins))
    pool = manifest[manifest["split"] != "test"]
    n_clips = pool["deg_id"].nunique()
    rows = []
    for n in range(2, int(pool["candidate"].max()) + 2):
        sub = pool[pool["candidate"] < n]
        pairs = build_pair_table(sub, wide, strategy=strategy, rules=rules,
                                 max_pairs_per_clip=params.pairs.max_pairs_per_clip, seed=params.seed,
                                 heldout_fraction=params.pairs.heldout_fraction)
        rows.append({"n": n, "candidates": len(sub), "clips": n_clips, "pairs": len(pairs),
                     "train": int((pairs["role"] == ROLE_TRAIN).sum()), "clips_with_pair": pairs["deg_id"].nunique()})
    return rows


def budgets(params, paradigm: str, strategy: str) -> dict[str, int]:
    """Pair draws (steps x batch) of each DPO budget that trains on `strategy`'s pairs of `paradigm`."""
    from gensr.stages.pairs import pair_strategy

    out = {}
    if strategy in params.pairs.strategies:
        cfg = getattr(params.dpo, paradigm)
        out[f"dpo.{paradigm}"] = cfg.steps * cfg.batch_size
    ablation_sets = {pair_strategy(s) for s in params.ablation.strategies}
    if paradigm in params.ablation.paradigms and strategy in ablation_sets:
        out["ablation.budget"] = params.ablation.budget.steps * params.ablation.budget.batch_size
    return out


def main(argv: list[str]) -> None:
    from gensr.config import load_params
    from gensr.stages.pairs import metrics_path

    ap = argparse.ArgumentParser(prog="python -m benchmarks pool", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="project directory whose outputs are read")
    ap.add_argument("--paradigms", default="ar,mgm,fm")
    ap.add_argument("--strategies", default="multi", help="pair sets, comma separated (e.g. multi,single:pesq_wb)")
    args = ap.parse_args(argv)
    params = load_params(args.root / "params.yaml")
    for paradigm in args.paradigms.split(","):
        if not (args.root / metrics_path(params, paradigm)).is_file():
            print(f"{paradigm}: no scored pool under {args.root} (run `dvc repro score_candidates@{paradigm}`)")
            continue
        for strategy in args.strategies.split(","):
            draws = budgets(params, paradigm, strategy)
            print(f"\n{paradigm}, {strategy} pairs"
                  + (f" (pair draws per fit: {', '.join(f'{k} {v}' for k, v in draws.items())})" if draws else ""))
            print("| n per clip | candidates scored | pairs | per clip | per scored candidate | clips with a pair "
                  "| train pairs |" + "".join(f" epochs of {k} |" for k in draws))
            print("|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(draws))
            for r in yields(params, paradigm, strategy, args.root):
                epochs = "".join(f" {v / r['train']:.2f} |" if r["train"] else " - |" for v in draws.values())
                print(f"| {r['n']} | {r['candidates']} | {r['pairs']} | {r['pairs'] / r['clips']:.2f} "
                      f"| {r['pairs'] / r['candidates']:.3f} | {r['clips_with_pair']} | {r['train']} |{epochs}")
