"""Asset `metric_tables` (degraded test inputs scored against clean) and its NaN-rate check."""

from pathlib import Path

import dagster as dg
import pandas as pd

from gensr_dagster.resources import ParamsResource


def _table_path(cfg) -> Path:
    from gensr.metrics.suite import inputs_table_path

    return inputs_table_path(cfg, cfg.metrics.score_inputs_split)


@dg.asset(
    deps=["degraded_corpus"],
    group_name="metrics",
    description="Long metric table (clip x metric: value, reason, backend, version) of the degraded "
    "split metrics.score_inputs_split scored against clean: the 'degraded input' baseline.",
)
def metric_tables(context: dg.AssetExecutionContext, params: ParamsResource) -> dg.MaterializeResult:
    from gensr.stages.score import plot_histograms, score_degraded_inputs

    cfg = params.load()
    summary = score_degraded_inputs(cfg)
    long = pd.read_parquet(summary["path"])
    plot = plot_histograms(long, Path(cfg.paths.reports) / "metrics" / f"degraded_{summary['split']}_hist.png",
                           f"degraded {summary['split']} vs clean ({summary['n_clips']} clips)")
    lines = ["| metric | mean | std | NaN | top NaN reason |", "|---|---|---|---|---|"]
    for metric, s in summary["metrics"].items():
        lines.append(f"| {metric} | {s['mean']} | {s['std']} | {s['nan']}/{s['n']} | {s['top_nan_reason'] or ''} |")
    meta = {
        "path": dg.MetadataValue.path(str(Path(summary["path"]).resolve())),
        "n_clips": summary["n_clips"],
        "n_rows": summary["n_rows"],
        "wall_seconds": dg.MetadataValue.float(float(summary["wall_seconds"])),
        "summary": dg.MetadataValue.md("\n".join(lines)),
        "histograms": dg.MetadataValue.path(str(plot.resolve())),
    }
    for metric, s in summary["metrics"].items():
        meta[f"{metric}/mean"] = dg.MetadataValue.float(float("nan") if s["mean"] is None else s["mean"])
        meta[f"{metric}/std"] = dg.MetadataValue.float(float("nan") if s["std"] is None else s["std"])
        meta[f"{metric}/nan"] = s["nan"]
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=metric_tables, blocking=True,
                description="Every metric's NaN fraction is at most metrics.max_nan_rate.")
def metric_tables_nan_rate(params: ParamsResource) -> dg.AssetCheckResult:
    from gensr.stages.score import nan_rates

    cfg = params.load()
    path = _table_path(cfg)
    if not path.is_file():
        return dg.AssetCheckResult(passed=False, description=f"{path} missing")
    rates = nan_rates(pd.read_parquet(path))
    worst = max(rates, key=rates.get)
    over = {m: r for m, r in rates.items() if r > cfg.metrics.max_nan_rate}
    return dg.AssetCheckResult(
        passed=not over,
        description=(f"over metrics.max_nan_rate={cfg.metrics.max_nan_rate}: {over}" if over
                     else f"worst {worst}: {rates[worst]:.3f}"),
        metadata={"nan_rates": dg.MetadataValue.json(rates), "max_nan_rate": cfg.metrics.max_nan_rate},
    )
