"""Assets `codec_checkpoint`, `base_checkpoints`, `candidate_shards` and `candidate_samples` over
gensr.stages.restorers/sample.

The restorer assets are partitioned by paradigm (ar, mgm, fm); the codec is shared. `candidate_shards` is
partitioned paradigm x shard (scaleout.shards): each shard partition samples its share of the resume shards,
and `candidate_samples` assembles the manifest (sampling any shard still missing itself).
"""


from pathlib import Path

import dagster as dg

from gensr.stages import restorers as stage
from gensr.stages import sample as sampling
from gensr.tracking import EXPERIMENTS
from gensr_dagster.partitions import (
    checked_paradigms,
    paradigm_partitions,
    paradigm_shard_partitions,
    partitioned_check,
    shard_of,
)
from gensr_dagster.resources import MlflowResource, ParamsResource


def _comparison_md(comparison: dict) -> str:
    lines = ["| metric | degraded | restored | diff | 95% CI |", "|---|---|---|---|---|"]
    for metric, r in sorted(comparison.items()):
        lines.append(f"| {metric} | {r['degraded']:.3f} | {r['restored']:.3f} | {r['diff']:+.3f} "
                     f"| [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] |")
    return "\n".join(lines)


def _run_id(context) -> str | None:
    try:
        return context.run.run_id
    except Exception:
        return None


@dg.asset(deps=["clean_corpus", "degraded_corpus"], group_name="restorers",
          description="Spectral codec (conv encoder, residual VQ from k-means, conv decoder) for the token paradigms, "
                      "with its ceiling (clean -> codec -> waveform) on the test split; its MLflow run is in the "
                      "gensr-codec experiment.")
def codec_checkpoint(context: dg.AssetExecutionContext, params: ParamsResource,
                     mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load([f"paths.mlruns={mlflow.mlruns_dir}"])
    s = stage.train_codec(cfg, dagster_run_id=_run_id(context))
    ceiling = s["ceiling"]["degraded_phase"]
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(Path(s["checkpoint"]).resolve())),
        "training_seconds": dg.MetadataValue.float(s["train_seconds"]),
        "final_loss": dg.MetadataValue.float(s["final_loss"]),
        "ceiling_degraded_phase": dg.MetadataValue.md(_comparison_md(ceiling)),
        "ceiling_clean_phase": dg.MetadataValue.md(_comparison_md(s["ceiling"]["clean_phase"])),
        "mlflow": dg.MetadataValue.url(mlflow.run_url(s["mlflow_run_id"], EXPERIMENTS["codec"])),
    })


@dg.asset(deps=[codec_checkpoint, "degraded_corpus"], partitions_def=paradigm_partitions, group_name="restorers",
          description="One SFT-trained restorer per paradigm (AR, MGM, FM), scored on the held-out test split.")
def base_checkpoints(context: dg.AssetExecutionContext, params: ParamsResource,
                     mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load([f"paths.mlruns={mlflow.mlruns_dir}"])
    s = stage.train_base(cfg, context.partition_key, dagster_run_id=_run_id(context))
    meta = {
        "path": dg.MetadataValue.path(str(Path(s["checkpoint"]).resolve())),
        "training_seconds": dg.MetadataValue.float(s["train_seconds"]),
        "final_loss": dg.MetadataValue.float(s["final_loss"]),
        "trainable_params": s["n_trainable_params"],
        "test_vs_degraded": dg.MetadataValue.md(_comparison_md(s["test"])),
        "mlflow": dg.MetadataValue.url(mlflow.run_url(s["mlflow_run_id"], EXPERIMENTS["sft"])),
    }
    if s.get("codec_ceiling"):
        meta["codec_ceiling"] = dg.MetadataValue.md(_comparison_md(s["codec_ceiling"]["degraded_phase"]))
    return dg.MaterializeResult(metadata=meta)


@partitioned_check(asset=base_checkpoints, partitions_def=paradigm_partitions, blocking=True,
                   description="Restored test outputs beat the degraded inputs on DNSMOS OVRL and PESQ-WB "
                               "(95% CI > 0).")
def base_beats_degraded(context: dg.AssetCheckExecutionContext, params: ParamsResource) -> dg.AssetCheckResult:
    import json

    cfg = params.load()
    verdicts = {}
    for paradigm in checked_paradigms(context):
        path = sampling.base_checkpoint(cfg, paradigm).parent / "summary.json"
        if path.is_file():
            verdicts[paradigm] = json.loads(path.read_text()).get("beats_degraded", {})
    failed = [p for p, v in verdicts.items() if not all(v.get(m) for m in stage.HEADLINE_METRICS)]
    return dg.AssetCheckResult(passed=bool(verdicts) and not failed,
                               description=f"failed: {failed}" if failed else f"checked {sorted(verdicts)}",
                               metadata={"verdicts": dg.MetadataValue.json(verdicts)})


@dg.asset(deps=[base_checkpoints], partitions_def=paradigm_shard_partitions,
          group_name="restorers",
          description="One shard partition of candidate_samples: the resume shards i with i % scaleout.shards == shard "
                      "(WAVs + shard tables, no manifest).")
def candidate_shards(context: dg.AssetExecutionContext, params: ParamsResource) -> dg.MaterializeResult:
    cfg = params.load()
    paradigm, part, parts = shard_of(context, cfg)
    s = sampling.sample_candidates_part(cfg, paradigm, part, parts)
    return dg.MaterializeResult(metadata={
        "clips": s["n_clips"],
        "candidates_per_clip": s["n_candidates"],
        "resume_shards": s["shards"],
        "shards_resumed": s["shards_resumed"],
        "sampling_seconds": dg.MetadataValue.float(s["seconds"]),
        "shard_files": dg.MetadataValue.json([Path(f).name for f in s["shard_files"]]),
    })


@dg.asset(deps=[base_checkpoints, candidate_shards],
          partitions_def=paradigm_partitions, group_name="restorers",
          description="N seeded candidates per degraded train clip of the pair subset, per paradigm.")
def candidate_samples(context: dg.AssetExecutionContext, params: ParamsResource) -> dg.MaterializeResult:
    cfg = params.load()
    s = sampling.sample_candidates(cfg, context.partition_key)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(Path(s["path"]).resolve())),
        "candidates": s["n_rows"],
        "clips": s["n_clips"],
        "candidates_per_clip": s["n_candidates"],
        "sampling_seconds": dg.MetadataValue.float(s["seconds"]),
        "shards_resumed": s["shards_resumed"],
        "sampling": dg.MetadataValue.json(s["sampling"]),
    })
