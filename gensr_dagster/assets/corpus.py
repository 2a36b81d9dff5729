"""Asset `clean_corpus` over gensr.stages.corpus, with a blocking integrity check."""

from pathlib import Path

import dagster as dg

from gensr.corpus.splits import SPLITS
from gensr.stages.corpus import build_clean_corpus, default_out_dir
from gensr.storage import summary_beside
from gensr_dagster.resources import ParamsResource


@dg.asset(group_name="data", description="Clean utterances + transcripts + speaker ids, split train/valid/test.")
def clean_corpus(context: dg.AssetExecutionContext, params: ParamsResource) -> dg.MaterializeResult:
    cfg = params.load()
    out_dir = default_out_dir(cfg)
    summary = build_clean_corpus(cfg, out_dir, summary_beside(out_dir))  # as dvc.yaml: data/clean.json
    split_rows = "\n".join(
        f"| {name} | {s['n_utterances']} | {s['n_speakers']} | {s['hours']:.3f} |" for name, s in summary["splits"].items()
    )
    context.log.info(f"clean corpus: {summary['n_utterances']} utterances, {summary['n_speakers']} speakers in {out_dir}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(Path(out_dir).resolve())),
            "source": summary["source"],
            "n_utterances": summary["n_utterances"],
            "n_speakers": summary["n_speakers"],
            "speakers": dg.MetadataValue.json(summary["speakers"]),
            "total_hours": dg.MetadataValue.float(float(summary["total_hours"])),
            "n_quarantined": summary["n_quarantined"],
            **{f"n_{name}": s["n_utterances"] for name, s in summary["splits"].items()},
            "splits": dg.MetadataValue.md("| split | utterances | speakers | hours |\n|---|---|---|---|\n" + split_rows),
        }
    )


@dg.asset_check(asset=clean_corpus, blocking=True, description="Transcripts, speakers, disjoint splits, audio on disk.")
def clean_corpus_integrity(params: ParamsResource) -> dg.AssetCheckResult:
    import pandas as pd
    import soundfile as sf

    cfg = params.load()
    out_dir = default_out_dir(cfg)
    manifest = pd.read_parquet(out_dir / "manifest.parquet")
    problems = []
    if manifest.empty:
        problems.append("manifest is empty")
    if manifest["utt_id"].duplicated().any():
        problems.append("duplicate utt_id (splits would overlap)")
    if (manifest["text"].str.strip() == "").any():
        problems.append("utterance without transcript")
    if (manifest["speaker"].str.strip() == "").any():
        problems.append("utterance without speaker")
    if not manifest["split"].isin(SPLITS).all():
        problems.append(f"split outside {'/'.join(SPLITS)}")
    n_speakers = manifest["speaker"].nunique()
    expected_speakers = min(len(cfg.corpus.voices), cfg.corpus.n_utterances)
    if cfg.corpus.source == "tts" and n_speakers < expected_speakers:
        problems.append(f"{n_speakers} speakers < {expected_speakers} voices")
    missing = [p for p in manifest["path"] if not (out_dir / p).is_file()]
    if missing:
        problems.append(f"{len(missing)} WAVs missing, e.g. {missing[0]}")
    rates = {sf.info(str(out_dir / p)).samplerate for p in manifest["path"][:50] if (out_dir / p).is_file()}
    if rates - {cfg.audio.sample_rate}:
        problems.append(f"sample rates {sorted(rates)} != audio.sample_rate {cfg.audio.sample_rate}")
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or "ok",
        metadata={"n_utterances": len(manifest), "n_speakers": int(n_speakers), "n_problems": len(problems)},
    )
