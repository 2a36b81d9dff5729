"""`gensr pairs`, `gensr pairs-export`, `gensr dpo`, `gensr evaluate`, `gensr evaluation-table` (dvc stages)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load

ParadigmOption = typer.Option(..., "--paradigm", help="ar | mgm | fm")


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1) from None


@app.command("pairs")
def pairs_command(
    paradigm: str = ParadigmOption,
    strategy: Optional[list[str]] = typer.Option(None, "--strategy", help="Override pairs.strategies (repeatable)."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Build (chosen, rejected) pairs from the scored candidates of one paradigm."""
    from gensr.preference.stats import stats_markdown
    from gensr.stages.align import build_pairs

    cfg = load(params, set_)
    try:
        summary = build_pairs(cfg, paradigm, strategy or None)
    except (FileNotFoundError, KeyError, ValueError, AssertionError) as err:
        _fail(err)
    for strat, stats in summary.items():
        typer.echo(f"[{paradigm} / {strat}]\n{stats_markdown(stats)}")


@app.command("pairs-export")
def pairs_export_command(
    paradigm: str = ParadigmOption,
    out: Path = typer.Option(..., "--out", help="Folder of the self-contained dataset (Parquet + audio + README)."),
    strategy: str = typer.Option("multi", "--strategy"),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Export a pair table as a publishable dataset folder."""
    from gensr.stages.align import export_pairs

    cfg = load(params, set_)
    try:
        summary = export_pairs(cfg, paradigm, strategy, out)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(json.dumps(summary))


@app.command("dpo")
def dpo_command(
    paradigm: str = ParadigmOption,
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Pair set to train on (default: dpo.strategy)."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Align the base restorer with DPO (Lightning, tracked in MLflow)."""
    from gensr.stages.align import train_dpo

    cfg = load(params, set_)
    try:
        s = train_dpo(cfg, paradigm, strategy)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    after = s["heldout_after"]
    typer.echo(f"dpo {paradigm}: {s['n_train_pairs']} train / {s['n_heldout_pairs']} held-out pairs, "
               f"{s['seconds']:.0f} s; held-out reward accuracy {after.get('rewards/accuracies', float('nan')):.3f}, "
               f"margin {after.get('rewards/margins', float('nan')):.4f}; -> {s['checkpoint']}  {s.get('mlflow_url', '')}")


@app.command("evaluate")
def evaluate_command(
    paradigm: str = ParadigmOption,
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Aligned checkpoint (default: evaluate.strategy)."),
    split: str = typer.Option(
        "test", "--split",
        help="test (the report); for tuning (reports/evaluation_<split>): valid, or dev = valid + the pref clips "
             "whose pairs DPO holds out."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Base vs aligned on the held-out test split: paired-bootstrap CIs, win rate."""
    from gensr.stages.align import evaluate_paradigm

    cfg = load(params, set_)
    try:
        res = evaluate_paradigm(cfg, paradigm, strategy, split)
    except (FileNotFoundError, KeyError, ValueError) as err:
        _fail(err)
    typer.echo(res["markdown"])


@app.command("evaluation-table")
def evaluation_table_command(params: Path = ParamsOption, set_: Optional[list[str]] = SetOption) -> None:
    """Merge per-paradigm evaluations into reports/evaluation.json and the Table-1 markdown/CSV."""
    from gensr.stages.align import evaluation_table

    cfg = load(params, set_)
    try:
        res = evaluation_table(cfg)
    except (FileNotFoundError, KeyError, ValueError) as err:
        _fail(err)
    typer.echo(res["markdown"])
