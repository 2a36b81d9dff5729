"""`gensr dagster-materialize-all`: materialize every asset and partition from Dagster, the equivalent of
`dvc repro` (gensr_dagster.materialize_all: one asset backfill, run by Dagster's backfill daemon)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from gensr.cli import app


@app.command("dagster-materialize-all")
def dagster_materialize_all_command(
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the backfill ends and exit 1 if it "
                              "failed (--no-wait: launch it and return; the UI shows its progress)."),
    poll: float = typer.Option(10.0, "--poll", min=0.5, help="Seconds between progress lines while waiting."),
) -> None:
    """Launch one asset backfill of every Dagster asset and every partition, in dependency order, on the instance
    in $DAGSTER_HOME (what the UI's "Materialize all" does). Dagster's backfill daemon runs it: the one of
    `make dagster` if it is up, else one started here (`dagster-daemon run`) until the backfill ends."""
    if not os.environ.get("DAGSTER_HOME"):
        raise ValueError("DAGSTER_HOME is not set; `make dagster-materialize-all` and `make dagster` set it to "
                         ".dagster_home")
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    import dagster as dg

    from gensr_dagster import materialize_all as m

    with dg.DagsterInstance.get() as instance:
        running = m.backfill_daemon_running(instance)
        if not running and not wait:
            raise ValueError("--no-wait: no Dagster daemon runs for this instance, so nothing would run the "
                             "backfill; start `make dagster`, or drop --no-wait to run one here until it ends")
        backfill = m.launch(instance)
        typer.echo(f"backfill {backfill.backfill_id}: every asset, every partition "
                   f"(http://127.0.0.1:3000/runs/b/{backfill.backfill_id})")
        if not wait:
            return
        daemon = None if running else _start_daemon()
        try:
            status = _wait(instance, backfill.backfill_id, poll, daemon)
        finally:
            if daemon is not None:
                _stop(daemon)
    typer.echo(f"backfill {backfill.backfill_id}: {status.value}")
    if status not in m.DONE:
        raise typer.Exit(1)


def _start_daemon() -> subprocess.Popen:
    """Dagster's own daemon on this instance and this code location, in its own process group."""
    exe = shutil.which("dagster-daemon") or str(Path(sys.executable).with_name("dagster-daemon"))
    typer.echo("no Dagster daemon runs for this instance: starting `dagster-daemon run` until the backfill ends")
    return subprocess.Popen([exe, "run", "-m", "gensr_dagster.definitions"], start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the daemon started here and its code server (its process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(instance, backfill_id: str, poll: float, daemon: subprocess.Popen | None):
    from gensr_dagster import materialize_all as m

    last = None
    while True:
        backfill = instance.get_backfill(backfill_id)
        counts = m.run_counts(instance, backfill_id)
        line = f"{backfill.status.value}: runs " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                                                     or "none yet")
        if line != last:
            typer.echo(line)
            last = line
        if backfill.status in m.TERMINAL:
            return backfill.status
        if daemon is not None and daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with code {daemon.returncode} before backfill {backfill_id} "
                               "ended; it stays requested and resumes with the next daemon (`make dagster`)")
        time.sleep(poll)
