"""`gensr score` (any files), `gensr score-inputs` and `gensr score-candidates` (dvc stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load


def _print_summary(summary: dict) -> None:
    typer.echo(f"scored {summary['n_clips']} clips -> {summary['path']} ({summary['wall_seconds']:.1f} s, "
               f"{summary['workers']} workers, {summary['shards_resumed']}/{summary['shards']} shards resumed)")
    for metric, s in summary["metrics"].items():
        mean = "nan" if s["mean"] is None else f"{s['mean']:.4f}"
        std = "" if s["std"] is None else f" ± {s['std']:.4f}"
        reason = f"  (NaN: {s['top_nan_reason']})" if s["nan"] else ""
        typer.echo(f"  {metric:<15} {mean}{std}  nan {s['nan']}/{s['n']}{reason}")


@app.command("score")
def score_command(
    candidates: Path = typer.Option(..., "--candidates", help="Manifest Parquet (clip id, path[, ref_path|clean_path, text]) or a folder of audio files."),
    out: Path = typer.Option(..., "--out", help="Long-format metric table to write (Parquet)."),
    references: Optional[Path] = typer.Option(None, "--references", help="Folder of clean references: sub/x.wav is scored against <references>/sub/x.* only."),
    transcripts: Optional[Path] = typer.Option(None, "--transcripts", help="CSV/JSONL with text and clip_id (or path/file)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: metrics.workers)."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Score your own files on every metric in metrics.names (resumable; NaN + reason on failure)."""
    from gensr.stages.score import score_files

    cfg = load(params, set_)
    if workers is not None:
        if workers < 1:
            raise ValueError(f"--workers {workers}: give at least 1")
        from gensr.config import with_overrides

        cfg = with_overrides(cfg, [f"metrics.workers={workers}"])
    summary = score_files(cfg, candidates, out, references, transcripts)
    _print_summary(summary)
    typer.echo(f"  {summary['n_with_reference']} clips had a reference, {summary['n_with_text']} a transcript")


@app.command("score-inputs")
def score_inputs_command(
    degraded: Optional[Path] = typer.Option(None, "--degraded", help="Degraded corpus dir (default: <paths.data>/degraded)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output table (default: <paths.data>/metrics/degraded_<split>.parquet)."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Score the degraded metrics.score_inputs_split against clean (the 'degraded' baseline)."""
    from gensr.stages.score import score_degraded_inputs

    cfg = load(params, set_)
    summary = score_degraded_inputs(cfg, degraded, out)
    _print_summary(summary)


@app.command("score-candidates")
def score_candidates_command(
    paradigm: str = typer.Option(..., "--paradigm", help="ar | mgm | fm: scores <paths.data>/candidates/<paradigm>."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Score one paradigm's candidates against clean -> <paths.data>/metrics/<paradigm>/metrics.parquet."""
    from gensr.stages.score import score_candidates

    cfg = load(params, set_)
    summary = score_candidates(cfg, paradigm)
    _print_summary(summary)
