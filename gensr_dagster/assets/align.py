"""Assets `preference_pairs`, `aligned_checkpoints`, `evaluation` (partitioned by paradigm) over gensr.stages.pairs/dpo/evaluate."""


import json
from pathlib import Path

import dagster as dg

from gensr.stages import dpo as dpo_stage
from gensr.stages import evaluate as evaluate_stage
from gensr.stages import pairs as pairs_stage
from gensr_dagster.partitions import checked_paradigms, paradigm_partitions, partitioned_check
from gensr_dagster.resources import MlflowResource, ParamsResource


class PairsConfig(dg.Config):
    strategies: list[str] = []  # empty = pairs.strategies from params.yaml


class AlignConfig(dg.Config):
    strategy: str = ""  # empty = dpo.strategy (aligned_checkpoints) / evaluate.strategy (evaluation)


@dg.asset(
    deps=["metric_tables"],
    partitions_def=paradigm_partitions,
    group_name="alignment",
    description="(chosen, rejected) pairs per clip: unanimous Pareto dominance over the metric suite "
    "(or single-metric / ground-truth controls), with stats and full metric vectors.",
)
def preference_pairs(context: dg.AssetExecutionContext, config: PairsConfig, params: ParamsResource) -> dg.MaterializeResult:
    from gensr.preference.stats import stats_markdown

    cfg = params.load()
    paradigm = context.partition_key
    summary = pairs_stage.build_pairs(cfg, paradigm, config.strategies or None)
    meta = {}
    for strategy, s in summary.items():
        key = strategy.replace(":", "_")
        meta[f"{key}/n_pairs"] = s["n_pairs"]
        meta[f"{key}/clips_with_pair"] = s["n_clips_with_pair"]
        meta[f"{key}/pairs_per_clip"] = dg.MetadataValue.float(s["pairs_per_clip_mean"])
        meta[f"{key}/stats"] = dg.MetadataValue.md(stats_markdown(s))
        meta[f"{key}/path"] = dg.MetadataValue.path(str(pairs_stage.pairs_dir(cfg, paradigm, strategy).resolve()))
    return dg.MaterializeResult(metadata=meta)


@partitioned_check(asset=preference_pairs, partitions_def=paradigm_partitions, blocking=True,
                   description="In every pair the chosen candidate dominates on every metric (margins respected), "
                               "no NaN.")
def pairs_chosen_dominates(context: dg.AssetCheckExecutionContext, params: ParamsResource) -> dg.AssetCheckResult:
    cfg = params.load()
    results, checked = {}, 0
    for paradigm in checked_paradigms(context):
        for strategy in cfg.pairs.strategies:
            path = pairs_stage.pairs_dir(cfg, paradigm, strategy) / "pairs.parquet"
            if path.exists():
                results[f"{paradigm}/{strategy}"] = pairs_stage.check_pairs(path)
                checked += 1
    failed = {k: v for k, v in results.items() if not v["passed"]}
    return dg.AssetCheckResult(
        passed=checked > 0 and not failed,
        description="no pair table found" if not checked else (f"failed: {sorted(failed)}" if failed else "ok"),
        metadata={"tables_checked": checked, "details": dg.MetadataValue.json(results)},
    )


@dg.asset(
    deps=[preference_pairs, "base_checkpoints"],
    partitions_def=paradigm_partitions,
    group_name="alignment",
    description="DPO-aligned restorer per paradigm x strategy (Lightning; frozen reference not saved), tracked in MLflow.",
)
def aligned_checkpoints(context: dg.AssetExecutionContext, config: AlignConfig, params: ParamsResource,
                        mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load([f"paths.mlruns={mlflow.mlruns_dir}"])
    paradigm = context.partition_key
    s = dpo_stage.train_dpo(cfg, paradigm, config.strategy or None, dagster_run_id=context.run_id)
    after, before = s["heldout_after"], s["heldout_before"]
    return dg.MaterializeResult(metadata={
        "checkpoint": dg.MetadataValue.path(str(Path(s["checkpoint"]).resolve())),
        "strategy": config.strategy or cfg.dpo.strategy,
        "n_train_pairs": s["n_train_pairs"],
        "n_heldout_pairs": s["n_heldout_pairs"],
        "heldout_reward_accuracy": dg.MetadataValue.float(float(after.get("rewards/accuracies", float("nan")))),
        "heldout_reward_margin": dg.MetadataValue.float(float(after.get("rewards/margins", float("nan")))),
        "base_prefers_chosen": dg.MetadataValue.float(float(before.get("reference_prefers_chosen", float("nan")))),
        "train_final": dg.MetadataValue.json(s["train_final"]),
        "seconds": dg.MetadataValue.float(float(s["seconds"])),
        "mlflow": dg.MetadataValue.url(s.get("mlflow_url", "")),
    })


@dg.asset(
    deps=[aligned_checkpoints],
    partitions_def=paradigm_partitions,
    group_name="alignment",
    description="Base vs aligned on the held-out test split: paired-bootstrap CIs, Pareto win rate, Table 1.",
)
def evaluation(context: dg.AssetExecutionContext, config: AlignConfig, params: ParamsResource) -> dg.MaterializeResult:
    cfg = params.load()
    paradigm = context.partition_key
    res = evaluate_stage.evaluate_paradigm(cfg, paradigm, config.strategy or None)
    table1 = None
    try:
        table1 = evaluate_stage.evaluation_table(cfg)  # needs every paradigm of evaluate.paradigms
    except FileNotFoundError:
        context.log.info("Table 1 waits for the other paradigms' evaluations")
    mlflow_url = _dpo_run_url(cfg, paradigm, res["strategy"])
    meta = {
        "table": dg.MetadataValue.md(res["markdown"]),
        "win_rate": dg.MetadataValue.float(float(res["win_rate"])),
        "dimensions_improved": len(res["improved_dimensions"]),
        "significantly_worse": dg.MetadataValue.json(res["significantly_worse"]),
        "target_met": res["target_met"],
        "report": dg.MetadataValue.path(str((evaluate_stage.evaluation_dir(cfg, paradigm) / "evaluation.json").resolve())),
    }
    if table1 is not None:
        meta["table1"] = dg.MetadataValue.path(str((Path(cfg.paths.reports) / "table1.md").resolve()))
    if mlflow_url:
        meta["mlflow"] = dg.MetadataValue.url(mlflow_url)
    return dg.MaterializeResult(metadata=meta)


def _dpo_run_url(cfg, paradigm: str, strategy: str) -> str | None:
    path = dpo_stage.aligned_dir(cfg, paradigm, strategy) / "summary.json"
    return json.loads(path.read_text()).get("mlflow_url") if path.exists() else None


@partitioned_check(asset=evaluation, partitions_def=paradigm_partitions, blocking=False,
                   description="Warns when the aligned model is worse than base on any metric by that metric's own CI "
                               "(uncorrected: stricter than the Holm-corrected target verdict).")
def aligned_not_significantly_worse(context: dg.AssetCheckExecutionContext, params: ParamsResource) -> dg.AssetCheckResult:
    cfg = params.load()
    worse, found = {}, 0
    for paradigm in checked_paradigms(context):
        path = evaluate_stage.evaluation_dir(cfg, paradigm) / "evaluation.json"
        if path.exists():
            found += 1
            res = json.loads(path.read_text())
            if res["significantly_worse"]:
                worse[paradigm] = {m: res["metrics"][m]["diff"] for m in res["significantly_worse"]}
    return dg.AssetCheckResult(
        passed=found > 0 and not worse,
        severity=dg.AssetCheckSeverity.WARN,
        description=("no evaluation found" if not found else
                     f"worse by their own CI (uncorrected; the Holm verdict is target_met in evaluation.json): {worse}"
                     if worse else "no metric worse by its own CI"),
        metadata={"evaluations": found, "worse": dg.MetadataValue.json(worse)},
    )
