"""`gensr degrade`: the clean corpus -> degraded copies + manifest (dvc stage `degrade`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load


@app.command("degrade")
def degrade_command(
    clean: Optional[Path] = typer.Option(None, "--clean", help="Clean corpus dir (default: <paths.data>/clean)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output dir (default: <paths.data>/degraded)."),
    summary_json: Optional[Path] = typer.Option(None, "--summary", help="Also write the run summary (counts, wall seconds) to this JSON file; dvc.yaml passes `data/degraded.json`, which `make bench` reads. Nothing is written outside --out without it."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Degrade every clean utterance with the seeded mix of the `degrade` params block.

    Exits 0 when done (unusable clean rows and user noise/RIR files are in <out>/quarantine.parquet);
    exits 2 with one line when the request cannot be met (no clean manifest, a params mix that cannot work).
    """
    from gensr.stages.degrade import build_degraded_corpus

    cfg = load(params, set_)
    clean = clean or cfg.paths.data / "clean"
    out = out or cfg.paths.data / "degraded"
    summary = build_degraded_corpus(cfg, clean, out, summary=summary_json)
    typer.echo(
        f"degraded {summary['n_degraded']} clips ({summary['hours']:.2f} h) from {summary['n_clean']} clean "
        f"into {out}; quarantined {summary['n_quarantined']}; {summary['seconds']:.1f} s"
    )
    for row in summary["mix"]:
        typer.echo(f"  {row['type']:<12} {row['count']:>6}  {row['fraction']:6.1%}  {row['params']}")
