"""`gensr dagster-sync`: show in the Dagster UI what `dvc repro` built (gensr_dagster.dvc_sync)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from gensr.cli import app


@app.command("dagster-sync")
def dagster_sync_command(
    root: Path = typer.Option(Path("."), "--root", help="Project folder: its dvc.lock, params.yaml and outputs "
                              "are read, never written."),
    mlruns: Optional[Path] = typer.Option(None, "--mlruns", help="MLflow store for the links (default paths.mlruns)."),
    checks: bool = typer.Option(True, "--checks/--no-checks", help="Also run the asset checks on the files."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Skip stages whose outputs `dvc status` finds "
                                "changed since dvc.lock (--no-verify: outputs need only exist; runs no dvc)."),
) -> None:
    """Report every asset `dvc repro` built to the Dagster instance in $DAGSTER_HOME, as materializations with
    their metadata, DVC stage and md5s, plus the asset checks' results. Nothing is rerun; what did not change
    since the last sync is not reported again."""
    if not os.environ.get("DAGSTER_HOME"):
        raise ValueError("DAGSTER_HOME is not set; `make demo` and `make dagster` set it to .dagster_home")
    if not (root / "dvc.lock").is_file():  # before the instance, which would log about its folder first
        raise FileNotFoundError(f"--root {root}: no dvc.lock there; run `dvc repro` in it first")
    if mlruns is not None and not mlruns.is_dir():
        raise NotADirectoryError(f"--mlruns {mlruns}: not a folder")
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    import dagster as dg

    from gensr_dagster.dvc_sync import sync

    with dg.DagsterInstance.get() as instance:
        r = sync(root, instance, mlruns=mlruns, checks=checks, verify=verify, log=typer.echo)
    for label, why in r.skipped.items():
        typer.echo(f"skipped {label}: {why}")
    for label, why in r.errors.items():
        typer.echo(f"error {label}: {why}", err=True)
    failed = sorted(k for k, ok in r.checks.items() if not ok)
    typer.echo(f"Dagster: {len(r.reported)} materializations reported, {len(r.unchanged)} unchanged, "
               f"{len(r.skipped)} skipped; {len(r.checks)} checks evaluated"
               + (f", failed: {', '.join(failed)}" if failed else ""))
