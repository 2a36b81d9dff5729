"""`gensr singing-corpus`: the embedded singing corpus (data/singing)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load


@app.command("singing-corpus")
def singing_corpus_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Sing eSpeak NG lyrics to seeded melodies (WORLD), degrade them, and add singing.user_dir's real recordings.

    Writes <paths.data>/singing: finetune.parquet (no references), test.parquet, references.parquet (test only).
    """
    from gensr.stages.singing_corpus import build_singing_corpus

    cfg = load(params, set_)
    start = time.perf_counter()
    try:
        summary = build_singing_corpus(cfg)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        typer.echo(f"error: {err}".splitlines()[0], err=True)
        raise typer.Exit(2) from None
    splits = summary["splits"]
    typer.echo(f"{summary['n_clips']} sung clips ({summary['sung_seconds']:.0f} s): finetune {splits['finetune']}, "
               f"test {splits['test']}, real {splits['real']}; {summary['n_degraded']} degraded, quarantined "
               f"{summary['n_quarantined']}, into {summary['path']}; {time.perf_counter() - start:.1f} s")
