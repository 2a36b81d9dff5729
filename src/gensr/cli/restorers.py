"""`gensr train-codec`, `gensr train-base --paradigm X`, `gensr sample --paradigm X`, `gensr restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load

PARADIGM_HELP = "ar | mgm | fm"


def _check_paradigm(paradigm: str) -> str:
    from gensr.models.registry import PARADIGMS

    if paradigm not in PARADIGMS:
        typer.echo(f"error: --paradigm must be one of {', '.join(PARADIGMS)}, got '{paradigm}'", err=True)
        raise typer.Exit(2)
    return paradigm


def _comparison_lines(table: dict) -> list[str]:
    """One line per metric of a `{metric: {degraded, restored, diff, ci_low, ci_high}}` comparison."""
    lines = []
    for name, v in sorted(table.items()):
        lines.append(f"  {name:<15} {v['degraded']:8.3f} -> {v['restored']:8.3f}  {v['diff']:+.3f} "
                     f"[{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]")
    return lines


def _print(headline: str, summary_json: Path, tables: dict[str, dict] | None = None, confidence: float = 0.95) -> None:
    """A stage's result in a few lines; the whole summary stays in its JSON file (named on the last line).
    `confidence`: evaluate.confidence, which the tables' CIs were computed with."""
    typer.echo(headline)
    for title, table in (tables or {}).items():
        typer.echo(f"{title} (degraded -> restored, diff [{round(confidence * 100)}% CI]):")
        typer.echo("\n".join(_comparison_lines(table)))
    typer.echo(f"summary: {summary_json}")


@app.command("train-codec")
def train_codec_command(params: Path = ParamsOption, set_: Optional[list[str]] = SetOption,
                        no_track: bool = typer.Option(False, "--no-track", help="Skip MLflow logging.")) -> None:
    """Train the spectral codec (residual VQ) on the clean train split and measure its ceiling."""
    from gensr.stages.restorers import train_codec

    cfg = load(params, set_)
    s = train_codec(cfg, track=not no_track)
    _print(f"codec: {s['checkpoint']} ({s['n_params']:,} parameters), final loss {s['final_loss']:.4f}, "
           f"{s['train_seconds']:.0f} s of training",
           Path(s["checkpoint"]).parent / "summary.json",
           {f"codec ceiling on test, {phase.replace('_', ' ')}": table for phase, table in s["ceiling"].items()},
           cfg.evaluate.confidence)


@app.command("train-base")
def train_base_command(paradigm: str = typer.Option(..., "--paradigm", help=PARADIGM_HELP),
                       params: Path = ParamsOption, set_: Optional[list[str]] = SetOption,
                       no_track: bool = typer.Option(False, "--no-track", help="Skip MLflow logging.")) -> None:
    """SFT-train one restorer paradigm, then restore and score the test split."""
    from gensr.stages.restorers import train_base

    cfg = load(params, set_)
    s = train_base(cfg, _check_paradigm(paradigm), track=not no_track)
    beats = ", ".join(f"{m} {'yes' if ok else 'NO'}" for m, ok in s["beats_degraded"].items())
    _print(f"base {s['paradigm']}: {s['checkpoint']} ({s['n_trainable_params']:,} trainable parameters), "
           f"{s['steps']} steps, final loss {s['final_loss']:.4f}, {s['train_seconds']:.0f} s of training; "
           f"beats the degraded input: {beats}",
           Path(s["checkpoint"]).parent / "summary.json", {"test split": s["test"]}, cfg.evaluate.confidence)


@app.command("sample")
def sample_command(paradigm: str = typer.Option(..., "--paradigm", help=PARADIGM_HELP),
                   checkpoint: Optional[Path] = typer.Option(None, help="Default: models/base/<paradigm>/restorer.pt."),
                   out: Optional[Path] = typer.Option(None, help="Default: data/candidates/<paradigm>."),
                   params: Path = ParamsOption, set_: Optional[list[str]] = SetOption) -> None:
    """Sample sample.n_candidates seeded candidates per clip of the pair subset (resumable by shard)."""
    from gensr.stages.sample import sample_candidates

    s = sample_candidates(load(params, set_), _check_paradigm(paradigm), checkpoint, out)
    _print(f"sample {s['paradigm']}: {s['n_rows']} candidates ({s['n_clips']} clips x {s['n_candidates']}) -> "
           f"{s['path']}, {s['seconds']:.0f} s ({s['shards_resumed']} of {s['shards']} shards resumed)",
           Path(s["path"]).parent / "summary.json")


@app.command("restore")
def restore_command(paradigm: str = typer.Option(..., "--paradigm", help=PARADIGM_HELP),
                    checkpoint: Path = typer.Option(..., help="A restorer checkpoint (base or aligned)."),
                    split: str = typer.Option("test"), out: Optional[Path] = typer.Option(None),
                    max_clips: Optional[int] = typer.Option(None),
                    params: Path = ParamsOption, set_: Optional[list[str]] = SetOption) -> None:
    """Restore every clip of a split once (seeded per clip) with any restorer checkpoint."""
    from gensr.sampling.restore import restore_split

    typer.echo(str(restore_split(load(params, set_), _check_paradigm(paradigm), checkpoint, split, out, max_clips)))
