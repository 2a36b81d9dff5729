"""`gensr <stage>`: one command per pipeline stage, used by dvc.yaml and by people.

Every module in this package registers its commands on `app`; heavy imports stay inside
the commands so that `gensr --help` answers at once.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="gensr",
    help="GenSR-Pref: multi-metric preference alignment for generative speech restoration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file to read.")
SetOption = typer.Option(
    None, "--set", "-S", help="Override one param for this run, e.g. -S corpus.n_utterances=100 (repeatable)."
)


@app.callback()
def _root() -> None:
    """GenSR-Pref: multi-metric preference alignment for generative speech restoration.

    Run stages in order (corpus, degrade, ...) or all of them with `dvc repro`.
    """


def load(params_path: Path, overrides: Optional[list[str]]):
    """Load params for a command; a config error exits 2 with the message, not a traceback."""
    from gensr.config import ConfigError, load_params

    try:
        return load_params(params_path, overrides or [])
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _register_commands() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def main() -> None:
    _register_commands()
    app()


_register_commands()
