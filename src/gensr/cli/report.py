"""`gensr demo-page`: the paper-style demo page (reports/demo/index.html)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load


@app.command("demo-page")
def demo_page_command(
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder of the page (default <paths.reports>/demo)."),
    summary_json: Optional[Path] = typer.Option(None, "--summary", help="Also write the run summary (counts, wall seconds) to this JSON file; dvc.yaml passes `reports/demo.json`, which `make bench` reads. Nothing is written outside --out without it."),
) -> None:
    """Build the demo page from whatever the pipeline has made so far; it opens from disk, no server needed."""
    from gensr.stages.report import demo_page

    cfg = load(params, set_)
    s = demo_page(cfg, params, out, summary=summary_json)
    sections = ", ".join(f"{k} {v}" for k, v in s["sections"].items())
    typer.echo(f"{s['path']}: {s['n_audio']} audio files, {s['n_images']} images; sections: {sections}")
