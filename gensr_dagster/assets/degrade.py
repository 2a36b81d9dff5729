"""Asset `degraded_corpus`: thin wiring over gensr.stages.degrade, plus metadata and checks."""

from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from gensr.config import Params
from gensr.stages.degrade import build_degraded_corpus, misaligned_clips, nonfinite_clips
from gensr.storage import summary_beside
from gensr_dagster.resources import ParamsResource


def _dirs(cfg: Params) -> tuple[Path, Path]:
    return Path(cfg.paths.data) / "clean", Path(cfg.paths.data) / "degraded"


def _mix_markdown(mix: list[dict]) -> str:
    lines = ["| type | count | fraction | params (range or counts) |", "|---|---:|---:|---|"]
    lines += [f"| {m['type']} | {m['count']} | {m['fraction']:.1%} | {m['params']} |" for m in mix]
    return "\n".join(lines)


@dg.asset(
    deps=["clean_corpus"],
    group_name="data",
    description="Seeded degraded copies of the clean corpus (noise, reverb, clipping, band limit, packet loss, "
    "codec), sample-aligned with the clean references, and a manifest of exactly what was applied.",
)
def degraded_corpus(context: dg.AssetExecutionContext, params: ParamsResource) -> dg.MaterializeResult:
    cfg = params.load()
    clean_dir, out_dir = _dirs(cfg)
    summary = build_degraded_corpus(cfg, clean_dir, out_dir, progress=False, summary=summary_beside(out_dir))
    clean_quarantine = clean_dir / "quarantine.parquet"
    context.log.info(f"degraded {summary['n_degraded']} clips in {summary['seconds']} s")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out_dir.resolve())),
            "n_clean": summary["n_clean"],
            "n_degraded": summary["n_degraded"],
            "total_hours": dg.MetadataValue.float(summary["hours"]),
            "per_split": dg.MetadataValue.json(summary["per_split"]),
            "degradation_mix": dg.MetadataValue.md(_mix_markdown(summary["mix"])),
            "n_quarantined": summary["n_quarantined"],
            "n_quarantined_clean": pq.read_metadata(clean_quarantine).num_rows if clean_quarantine.is_file() else 0,
            "seconds": dg.MetadataValue.float(summary["seconds"]),
        }
    )


@dg.asset_check(asset=degraded_corpus, blocking=True, description="Every degraded WAV has its clean file's length.")
def degraded_aligned_with_clean(params: ParamsResource) -> dg.AssetCheckResult:
    bad = misaligned_clips(_dirs(params.load())[1])
    return dg.AssetCheckResult(passed=not bad, metadata={"n_misaligned": len(bad), "examples": bad[:10]})


@dg.asset_check(asset=degraded_corpus, blocking=True, description="No NaN or Inf sample in any degraded WAV.")
def degraded_audio_finite(params: ParamsResource) -> dg.AssetCheckResult:
    bad = nonfinite_clips(_dirs(params.load())[1])
    return dg.AssetCheckResult(passed=not bad, metadata={"n_nonfinite": len(bad), "examples": bad[:10]})
