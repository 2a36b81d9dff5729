"""Asset `metric_tables` per paradigm (candidates and degraded inputs scored against clean)
and its NaN-rate check, and `metric_shards` (paradigm x shard): one shard partition of the
candidates' scoring each, which metric_tables assembles (scoring any shard still missing itself)."""

from pathlib import Path

import dagster as dg
import pandas as pd

from gensr_dagster.partitions import (
    checked_paradigms,
    paradigm_partitions,
    paradigm_shard_partitions,
    partitioned_check,
    shard_of,
)
from gensr_dagster.resources import ParamsResource


def _tables(cfg, paradigm: str) -> dict[str, Path]:
    """name -> long table of this partition: the paradigm's candidates and the degraded inputs."""
    from gensr.metrics.suite import inputs_table_path
    from gensr.stages.score import candidates_table

    return {"candidates": candidates_table(cfg, paradigm),
            "inputs": inputs_table_path(cfg, cfg.metrics.score_inputs_split)}


def _summary_md(summary: dict) -> str:
    lines = ["| metric | mean | std | NaN | top NaN reason |", "|---|---|---|---|---|"]
    for metric, s in summary["metrics"].items():
        lines.append(f"| {metric} | {s['mean']} | {s['std']} | {s['nan']}/{s['n']} | {s['top_nan_reason'] or ''} |")
    return "\n".join(lines)


@dg.asset(
    deps=["candidate_samples"],
    partitions_def=paradigm_shard_partitions,
    group_name="metrics",
    description="One shard partition of the candidates' metric table: the resume shards i with "
    "i % scaleout.shards == shard, scored into <table>.shards/ (metric_tables concatenates them).",
)
def metric_shards(context: dg.AssetExecutionContext, params: ParamsResource) -> dg.MaterializeResult:
    from gensr.stages.score import score_candidates_part

    cfg = params.load()
    paradigm, part, parts = shard_of(context, cfg)
    s = score_candidates_part(cfg, paradigm, part, parts)
    return dg.MaterializeResult(metadata={
        "clips": s["n_clips"],
        "resume_shards": s["shards"],
        "shards_resumed": s["shards_resumed"],
        "workers": s["workers"],
        "wall_seconds": dg.MetadataValue.float(float(s["wall_seconds"])),
        "scorer_seconds": dg.MetadataValue.json(s["scorer_seconds"]),
    })


@dg.asset(
    deps=["degraded_corpus", "candidate_samples", metric_shards],
    partitions_def=paradigm_partitions,
    group_name="metrics",
    description="Long metric tables (clip x metric: value, reason, backend, version): the paradigm's "
    "candidates vs clean (for preference pairs) and the degraded split metrics.score_inputs_split vs clean.",
)
def metric_tables(context: dg.AssetExecutionContext, params: ParamsResource) -> dg.MaterializeResult:
    from gensr.stages.score import candidates_manifest, plot_histograms, score_candidates, score_degraded_inputs

    cfg = params.load()
    paradigm = context.partition_key
    summaries = {"inputs": score_degraded_inputs(cfg)}
    if candidates_manifest(cfg, paradigm).is_file():
        summaries["candidates"] = score_candidates(cfg, paradigm)
    else:
        context.log.warning(f"{candidates_manifest(cfg, paradigm)} missing: only the degraded inputs were scored")
    meta = {}
    for name, summary in summaries.items():
        long = pd.read_parquet(summary["path"])
        plot = plot_histograms(long, Path(cfg.paths.reports) / "metrics" / f"{paradigm}_{name}_hist.png",
                               f"{paradigm} {name} ({summary['n_clips']} clips)")
        meta[f"{name}/path"] = dg.MetadataValue.path(str(Path(summary["path"]).resolve()))
        meta[f"{name}/n_clips"] = summary["n_clips"]
        meta[f"{name}/wall_seconds"] = dg.MetadataValue.float(float(summary["wall_seconds"]))
        meta[f"{name}/summary"] = dg.MetadataValue.md(_summary_md(summary))
        meta[f"{name}/histograms"] = dg.MetadataValue.path(str(plot.resolve()))
        for metric, s in summary["metrics"].items():
            meta[f"{name}/{metric}/mean"] = dg.MetadataValue.float(float("nan") if s["mean"] is None else s["mean"])
            meta[f"{name}/{metric}/std"] = dg.MetadataValue.float(float("nan") if s["std"] is None else s["std"])
            meta[f"{name}/{metric}/nan"] = s["nan"]
    return dg.MaterializeResult(metadata=meta)


@partitioned_check(asset=metric_tables, partitions_def=paradigm_partitions, blocking=True,
                   description="Every metric's NaN fraction is at most metrics.max_nan_rate, in every table written.")
def metric_tables_nan_rate(context: dg.AssetCheckExecutionContext, params: ParamsResource) -> dg.AssetCheckResult:
    from gensr.stages.score import nan_rates

    cfg = params.load()
    rates, over = {}, {}
    for paradigm in checked_paradigms(context):
        for name, path in _tables(cfg, paradigm).items():
            if path.is_file():
                for metric, rate in nan_rates(pd.read_parquet(path)).items():
                    key = f"{name}/{metric}" if name == "inputs" else f"{paradigm}/{metric}"
                    rates[key] = rate
                    if rate > cfg.metrics.max_nan_rate:
                        over[key] = rate
    if not rates:
        return dg.AssetCheckResult(passed=False, description="no metric table found")
    worst = max(rates, key=rates.get)
    return dg.AssetCheckResult(
        passed=not over,
        description=(f"over metrics.max_nan_rate={cfg.metrics.max_nan_rate}: {over}" if over
                     else f"worst {worst}: {rates[worst]:.3f}"),
        metadata={"nan_rates": dg.MetadataValue.json(rates), "max_nan_rate": cfg.metrics.max_nan_rate},
    )
