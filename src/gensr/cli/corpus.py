"""`gensr corpus` (dvc stage `corpus`) and `gensr ingest` (a user tool for any audio folder)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load


@app.command("corpus")
def corpus_command(
    out: Optional[Path] = typer.Option(None, "--out", help="Output dir (default: <paths.data>/clean)."),
    summary_json: Optional[Path] = typer.Option(None, "--summary", help="Also write the run summary (counts, wall seconds) to this JSON file; dvc.yaml passes `data/clean.json`, which `make bench` reads. Nothing is written outside --out without it."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Build the clean corpus (bundled eSpeak NG TTS, or a user folder) with train/valid/test splits."""
    from gensr.stages.corpus import build_clean_corpus, default_out_dir

    cfg = load(params, set_)
    out = out or default_out_dir(cfg)
    start = time.perf_counter()
    summary = build_clean_corpus(cfg, out, summary_json)
    typer.echo(
        f"{summary['n_utterances']} utterances ({summary['total_hours']:.3f} h), {summary['n_speakers']} speakers, "
        f"source {summary['source']}, into {out}; quarantined {summary['n_quarantined']}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    for split, info in summary["splits"].items():
        typer.echo(f"  {split:<6} {info['n_utterances']:>6} utts  {info['n_speakers']:>3} speakers  {info['hours']:.3f} h")


@app.command("ingest")
def ingest_command(
    audio_dir: Path = typer.Argument(..., help="Folder of audio files (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Where the 16 kHz mono WAVs and quarantine.parquet go."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Convert every usable file to 16 kHz mono float WAV; quarantine the rest with a reason.

    Exits 0 when it finished, whatever it quarantined (see <out>/quarantine.parquet); every entry
    of the folder is kept or listed there with its reason. Exits 2, with one line, when the folder
    cannot be read or --out holds it. Rerunning resumes: a file already converted from the same
    bytes with the same params is reused; outputs no longer produced are removed.
    """
    from gensr.corpus.ingest import ingest_directory

    cfg = load(params, set_)
    if not audio_dir.is_dir():
        raise NotADirectoryError(f"{audio_dir}: not a folder (pass the folder holding your audio files)")
    summary = ingest_directory(audio_dir, out, cfg.ingest, cfg.audio.sample_rate)
    typer.echo(
        f"{summary['n_files']} files: kept {summary['n_kept']} ({summary['n_written']} written, "
        f"{summary['n_reused']} already done, {summary['n_split']} split into parts), "
        f"quarantined {summary['n_quarantined']} -> {out / 'quarantine.parquet'}"
    )
    for reason, count in summary["quarantine_reasons"].items():
        typer.echo(f"  {reason:<16} {count}")


@app.command("confirm-corpus")
def confirm_corpus_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Build the confirmation set (data/confirm): new sentences, confirm.seed, degraded like the corpus.

    Only `gensr evaluate --split confirm` and the ablation report read it; no tuning run may.
    """
    from gensr.stages.confirm import build_confirm_set

    cfg = load(params, set_)
    summary = build_confirm_set(cfg)
    typer.echo(f"{summary['n_utterances']} utterances ({summary['hours']:.3f} h, {summary['n_speakers']} speakers), "
               f"{summary['n_degraded']} degraded clips into {summary['path']}; {summary['seconds']:.1f} s")
