"""`gensr train-codec`, `gensr train-base --paradigm X`, `gensr sample --paradigm X`, `gensr restore`."""

from __future__ import annotations

import json
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


def _print(summary: dict) -> None:
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command("train-codec")
def train_codec_command(params: Path = ParamsOption, set_: Optional[list[str]] = SetOption,
                        no_track: bool = typer.Option(False, "--no-track", help="Skip MLflow logging.")) -> None:
    """Train the spectral codec (residual VQ) on the clean train split and measure its ceiling."""
    from gensr.stages.restorers import train_codec

    _print(train_codec(load(params, set_), track=not no_track))


@app.command("train-base")
def train_base_command(paradigm: str = typer.Option(..., "--paradigm", help=PARADIGM_HELP),
                       params: Path = ParamsOption, set_: Optional[list[str]] = SetOption,
                       no_track: bool = typer.Option(False, "--no-track", help="Skip MLflow logging.")) -> None:
    """SFT-train one restorer paradigm, then restore and score the test split."""
    from gensr.stages.restorers import train_base

    _print(train_base(load(params, set_), _check_paradigm(paradigm), track=not no_track))


@app.command("sample")
def sample_command(paradigm: str = typer.Option(..., "--paradigm", help=PARADIGM_HELP),
                   checkpoint: Optional[Path] = typer.Option(None, help="Default: models/base/<paradigm>/restorer.pt."),
                   out: Optional[Path] = typer.Option(None, help="Default: data/candidates/<paradigm>."),
                   params: Path = ParamsOption, set_: Optional[list[str]] = SetOption) -> None:
    """Sample sample.n_candidates seeded candidates per clip of the pair subset (resumable by shard)."""
    from gensr.stages.sample import sample_candidates

    _print(sample_candidates(load(params, set_), _check_paradigm(paradigm), checkpoint, out))


@app.command("restore")
def restore_command(paradigm: str = typer.Option(..., "--paradigm", help=PARADIGM_HELP),
                    checkpoint: Path = typer.Option(..., help="A restorer checkpoint (base or aligned)."),
                    split: str = typer.Option("test"), out: Optional[Path] = typer.Option(None),
                    max_clips: Optional[int] = typer.Option(None),
                    params: Path = ParamsOption, set_: Optional[list[str]] = SetOption) -> None:
    """Restore every clip of a split once (seeded per clip) with any restorer checkpoint."""
    from gensr.sampling.restore import restore_split

    typer.echo(str(restore_split(load(params, set_), _check_paradigm(paradigm), checkpoint, split, out, max_clips)))
