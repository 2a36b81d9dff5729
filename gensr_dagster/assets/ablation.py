"""Assets `confirm_set`, `base_evaluation`, `ablation` (partitions "<paradigm>|<strategy>") and `ablation_summary`.

Thin shells over gensr.stages.confirm / evaluate / ablation; the paradigms and strategies are read from
params.yaml when the definitions load, so the partitions follow `ablation.paradigms` x `ablation.strategies`.
"""

import base64
import json
from pathlib import Path

import dagster as dg

from gensr.config import load_params
from gensr.config.align import PARADIGMS
from gensr.stages import ablation as ablation_stage
from gensr.stages import evaluate as evaluate_stage
from gensr.stages.confirm import build_confirm_set
from gensr_dagster.partitions import ablation_key, paradigm_partitions, partitioned_check, split_ablation_key
from gensr_dagster.resources import MlflowResource, ParamsResource


def _matrix() -> tuple[list[str], list[str]]:
    try:
        block = load_params().ablation
        return list(block.paradigms), list(block.strategies)
    except Exception:  # definitions must load even outside the project root; the stage validates again
        return list(PARADIGMS), ["multi", "sft_clean"]


# dvc.yaml's matrix, ablation.paradigms x ablation.strategies, as flat keys "<paradigm>|<strategy>": a
# MultiPartitionsDefinition would need every paradigm in its paradigm dimension (Dagster maps it onto the
# paradigm partitions of preference_pairs and base_evaluation only when both dimensions are equal), so the
# paradigms the demo does not ablate would show as never materialized after `make demo`.
_PARADIGMS, _STRATEGIES = _matrix()
ablation_partitions = dg.StaticPartitionsDefinition([ablation_key(p, s) for p in _PARADIGMS for s in _STRATEGIES])
# ablation[p|s] stands on partition p of its inputs, stated key by key
_BY_PARADIGM = dg.StaticPartitionMapping({p: [ablation_key(p, s) for s in _STRATEGIES] for p in _PARADIGMS})


@dg.asset(deps=["clean_corpus"], group_name="corpus",
          description="The confirmation set (data/confirm): new sentences, confirm.seed, degraded like the corpus; "
          "read only by the final evaluation and the ablation report.")
def confirm_set(params: ParamsResource) -> dg.MaterializeResult:
    cfg = params.load()
    s = build_confirm_set(cfg)
    return dg.MaterializeResult(metadata={
        "n_utterances": s["n_utterances"], "n_speakers": s["n_speakers"],
        "hours": dg.MetadataValue.float(float(s["hours"])), "shared_texts_with_main": s["shared_texts_with_main"],
        "path": dg.MetadataValue.path(str(Path(s["path"]).resolve())),
    })


@dg.asset(deps=["base_checkpoints", confirm_set, "degraded_corpus"], partitions_def=paradigm_partitions,
          group_name="alignment",
          description="The base side of every comparison: the base restorer on test (+ ablation.splits), scored once.")
def base_evaluation(context: dg.AssetExecutionContext, params: ParamsResource) -> dg.MaterializeResult:
    cfg = params.load()
    paradigm = context.partition_key
    splits = ["test"] + [s for s in cfg.ablation.splits if s != "test" and paradigm in cfg.ablation.paradigms]
    out = evaluate_stage.evaluate_base(cfg, paradigm, splits)
    return dg.MaterializeResult(metadata={f"{s}/n_clips": v["n_clips"] for s, v in out.items()})


@dg.asset(deps=[dg.AssetDep("preference_pairs", partition_mapping=_BY_PARADIGM),
                dg.AssetDep(base_evaluation, partition_mapping=_BY_PARADIGM)],
          partitions_def=ablation_partitions, group_name="ablation",
          description="One ablation strategy trained with the shared budget and evaluated on ablation.splits "
          "(a child run under the ablation's MLflow parent).")
def ablation(context: dg.AssetExecutionContext, params: ParamsResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load([f"paths.mlruns={mlflow.mlruns_dir}"])
    paradigm, strategy = split_ablation_key(context.partition_key)
    s = ablation_stage.run_strategy(cfg, paradigm, strategy, dagster_run_id=context.run_id)
    meta = {"objective": s["objective"], "train_seconds": dg.MetadataValue.float(float(s["train_seconds"]))}
    for split, r in s["evaluation"].items():
        meta[f"{split}/improves"] = r["target_met"]
        meta[f"{split}/verdict"] = dg.MetadataValue.json(r["verdict"])
    if s.get("mlflow_run_id"):
        meta["mlflow"] = dg.MetadataValue.url(mlflow.run_url(s["mlflow_run_id"], "gensr-ablation"))
    return dg.MaterializeResult(metadata=meta)


@partitioned_check(asset=ablation, partitions_def=ablation_partitions, blocking=False,
                   description="Warns when a single-metric strategy hacks: its target significantly better while a "
                   "metric of another dimension is significantly worse (the pre-registered rule).")
def single_metric_does_not_hack(context: dg.AssetCheckExecutionContext, params: ParamsResource) -> dg.AssetCheckResult:
    cfg = params.load()
    keys = _partitions_checked(context, cfg)
    hacks, checked = {}, 0
    for paradigm, strategy in keys:
        if not strategy.startswith("single:"):
            continue
        for split in cfg.ablation.splits:
            path = ablation_stage.report_dir(cfg, paradigm, strategy, split) / "evaluation.json"
            if not path.exists():
                continue
            from gensr.evaluate.verdicts import hacking_verdict

            checked += 1
            v = hacking_verdict(json.loads(path.read_text()), strategy.split(":", 1)[1], 1 - cfg.evaluate.confidence)
            if v["hacking"]:
                hacks[f"{paradigm}/{strategy}/{split}"] = v["damaged_metrics"]
    return dg.AssetCheckResult(
        passed=not hacks, severity=dg.AssetCheckSeverity.WARN,
        description=(f"hacking: {hacks}" if hacks else f"no hacking in {checked} single-metric evaluations"),
        metadata={"checked": checked, "hacking": dg.MetadataValue.json(hacks)},
    )


def _partitions_checked(context, cfg) -> list[tuple[str, str]]:
    """The partition that ran, or every paradigm x strategy of the ablation."""
    try:
        if context.has_partition_key:
            return [split_ablation_key(context.partition_key)]
    except Exception:
        pass
    return [(p, s) for p in cfg.ablation.paradigms for s in cfg.ablation.strategies]


@dg.asset(deps=[ablation], group_name="ablation",
          description="The ablation's Table-3-style tables per split, pre-registered verdicts, figure, MLflow parent.")
def ablation_summary(params: ParamsResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load([f"paths.mlruns={mlflow.mlruns_dir}"])
    s = ablation_stage.summarize_ablation(cfg)
    png = base64.b64encode(Path(s["figure"]).read_bytes()).decode()
    meta = {
        "table": dg.MetadataValue.md(s["markdown"]),
        "figure": dg.MetadataValue.md(f"![ablation](data:image/png;base64,{png})"),
        "figure_path": dg.MetadataValue.path(str(Path(s["figure"]).resolve())),
        "verdicts": dg.MetadataValue.json(s["verdicts"]),
    }
    if s.get("mlflow_run_id"):
        meta["mlflow"] = dg.MetadataValue.url(mlflow.run_url(s["mlflow_run_id"], "gensr-ablation"))
    return dg.MaterializeResult(metadata=meta)
