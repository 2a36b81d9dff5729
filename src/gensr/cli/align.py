"""`gensr pairs`, `pairs-export`, `dpo`, `evaluate-base`, `evaluate`, `evaluation-table`, `ablation`, `ablation-summary`,
`pair-diagnostics`, `pair-learning-curve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load

ParadigmOption = typer.Option(..., "--paradigm", help="ar | mgm | fm")


@app.command("pairs")
def pairs_command(
    paradigm: str = ParadigmOption,
    strategy: Optional[list[str]] = typer.Option(None, "--strategy", help="Override pairs.strategies (repeatable)."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Build (chosen, rejected) pairs from the scored candidates of one paradigm."""
    from gensr.preference.stats import stats_markdown
    from gensr.stages.pairs import build_pairs

    cfg = load(params, set_)
    try:
        summary = build_pairs(cfg, paradigm, strategy or None)
    except AssertionError as err:  # a pair breaking its own rule: a bug, but one line naming the table
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
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
    """Export a pair table as a publishable dataset folder.

    Exits 2 with one line, writing nothing, when the table cannot be exported as it is (missing,
    an id that is no file name, a missing audio file)."""
    from gensr.stages.pairs import export_pairs

    cfg = load(params, set_)
    summary = export_pairs(cfg, paradigm, strategy, out)
    typer.echo(json.dumps(summary))


@app.command("dpo")
def dpo_command(
    paradigm: str = ParadigmOption,
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Pair set to train on (default: dpo.strategy)."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Align the base restorer with DPO (Lightning, tracked in MLflow)."""
    from gensr.stages.dpo import train_dpo

    cfg = load(params, set_)
    s = train_dpo(cfg, paradigm, strategy)
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
             "whose pairs DPO holds out; confirm = the confirmation set (final report only, never for tuning)."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Base vs aligned on a held-out split: paired-bootstrap CIs, win rate, the pre-registered verdict."""
    from gensr.stages.evaluate import evaluate_paradigm

    cfg = load(params, set_)
    res = evaluate_paradigm(cfg, paradigm, strategy, split)
    typer.echo(res["markdown"])


@app.command("evaluation-table")
def evaluation_table_command(params: Path = ParamsOption, set_: Optional[list[str]] = SetOption) -> None:
    """Merge per-paradigm evaluations into reports/evaluation.json and the Table-1 markdown/CSV."""
    from gensr.stages.evaluate import evaluation_table

    cfg = load(params, set_)
    res = evaluation_table(cfg)
    typer.echo(res["markdown"])


@app.command("evaluate-base")
def evaluate_base_command(
    paradigm: str = ParadigmOption,
    split: Optional[list[str]] = typer.Option(
        None, "--split", help="Splits (repeatable); default: test, plus ablation.splits for ablation paradigms."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Restore and score the base restorer once per split (reports/base/<paradigm>/<split>), for every comparison."""
    from gensr.stages.evaluate import evaluate_base

    cfg = load(params, set_)
    splits = split or (["test"] + [s for s in cfg.ablation.splits if s != "test" and paradigm in cfg.ablation.paradigms])
    out = evaluate_base(cfg, paradigm, splits)
    for s, info in out.items():
        typer.echo(f"base {paradigm} on {s}: {info['n_clips']} clips -> {info['path']}")


@app.command("ablation")
def ablation_command(
    paradigm: str = ParadigmOption,
    strategy: str = typer.Option(..., "--strategy", help="One of ablation.strategies, e.g. multi, sft_clean, "
                                 "single:pesq_wb."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Train one ablation strategy with the shared budget and evaluate it on ablation.splits (a nested MLflow run)."""
    from gensr.stages.ablation import run_strategy

    cfg = load(params, set_)
    s = run_strategy(cfg, paradigm, strategy)
    for split, r in s["evaluation"].items():
        v = r["verdict"]
        typer.echo(f"{paradigm} {strategy} on {split} ({r['n_clips']} clips): improves {'yes' if r['target_met'] else 'no'}"
                   f" (dims better {v['dimensions_better'] or '-'}, worse {v['dimensions_worse'] or '-'}, "
                   f"metrics worse {v['metrics_worse'] or '-'})")


@app.command("ablation-summary")
def ablation_summary_command(params: Path = ParamsOption, set_: Optional[list[str]] = SetOption) -> None:
    """The ablation's tables, verdicts and figure (reports/ablation.*), logged to the MLflow parent run."""
    from gensr.stages.ablation import summarize_ablation

    cfg = load(params, set_)
    s = summarize_ablation(cfg)
    typer.echo(s["markdown"])


@app.command("pair-diagnostics")
def pair_diagnostics_command(
    paradigm: str = ParadigmOption,
    strategy: Optional[list[str]] = typer.Option(
        None, "--strategy", help="Checkpoints to diagnose (repeatable): base, or an ablation strategy whose "
                                 "models/ablation/<paradigm>/<strategy> exists; default: base and every such strategy."),
    pairs: Optional[list[str]] = typer.Option(
        None, "--pairs", help="Pair sets to diagnose them on (repeatable), e.g. multi, single:pesq_wb; default: multi."),
    train_pairs: int = typer.Option(300, "--train-pairs", min=1,
                                    help="Train pairs per set to score (a seeded sample); all held-out pairs are."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Does a checkpoint's DPO reward rank pairs it never trained on, beyond what the SFT-only control does?

    Held-out reward accuracy (with clip-resampled CIs), its Spearman correlation with each pairs.metrics margin,
    for AR also under the sampler's top-k view, and every DPO strategy minus sft_clean on the same held-out pairs.
    A dev tool: reads pref-pool pair sets and the ablation checkpoints; writes reports/pair_diagnostics/<paradigm>.*"""
    from gensr.stages.pair_diagnostics import run_pair_diagnostics

    cfg = load(params, set_)
    out = run_pair_diagnostics(cfg, paradigm, strategy or None, pairs or None, train_pairs)
    typer.echo(out["markdown"])
    typer.echo(f"({out['seconds']:.0f} s) -> {Path(cfg.paths.reports) / 'pair_diagnostics' / (paradigm + '.md')}")


@app.command("pair-learning-curve")
def pair_learning_curve_command(
    paradigm: str = ParadigmOption,
    pairs: str = typer.Option("multi", "--pairs", help="The pair set whose clips are split and subsampled."),
    fraction: Optional[list[float]] = typer.Option(
        None, "--fraction", min=0.0, max=1.0,
        help="Share of the training pool per run (repeatable; nested subsets); default: 0.25, 0.5, 1."),
    heldout_fraction: float = typer.Option(1 / 3, "--heldout-fraction", min=0.0, max=1.0,
                                           help="Share of the set's clips held out for every run."),
    params: Path = ParamsOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Does the DPO term's held-out ranking grow with the number of clips it trains on?

    DPO and its SFT-only control (the ablation's budget) on nested subsets of a pair set's clips, all judged on the
    same held-out clips; the verdict rule is fixed in the code (LEARNING_CURVE_RULE). A dev tool on pref-pool pairs;
    writes models/ and reports/pair_diagnostics/<paradigm>_learning_curve.*"""
    from gensr.stages.pair_diagnostics import learning_curve

    cfg = load(params, set_)
    out = learning_curve(cfg, paradigm, pairs, tuple(fraction or (0.25, 0.5, 1.0)), heldout_fraction)
    typer.echo(out["markdown"])
    typer.echo(f"({out['seconds']:.0f} s)")
