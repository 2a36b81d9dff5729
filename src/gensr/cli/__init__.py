"""`gensr <stage>`: one command per pipeline stage, used by dvc.yaml and by people.

Every module in this package registers its commands on `app`; heavy imports stay inside
the commands so that `gensr --help` answers at once.

Errors a user can cause exit 2 with one line, in one place (`refusal`, applied by `_Commands` to
every command): the stages raise ValueError (ConfigError, ManifestError, ...), FileNotFoundError
and the other path errors with a message naming the file, param or flag, and no command catches
them itself. Anything else is a bug and keeps its traceback (exit 1); GENSR_TRACEBACK=1 shows the
traceback of a refusal too.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

# What a user can cause: an invalid param/flag/table (ValueError and its kin: ConfigError, ManifestError,
# pyarrow's ArrowInvalid, UnicodeDecodeError, JSONDecodeError), a missing column or key of their table
# (KeyError), and a path that is missing, of the wrong kind or not readable/writable.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError)


def refusal(err: BaseException) -> str | None:
    """The one line `gensr` prints for an error the user caused, or None for a bug (which keeps its traceback).

    An OSError is the user's when it names a path (ELOOP, ENAMETOOLONG, EROFS, ...): the line names it too."""
    if isinstance(err, OSError) and not isinstance(err, USER_ERRORS) and not err.filename:
        return None
    if not isinstance(err, (*USER_ERRORS, OSError)):
        return None
    if isinstance(err, KeyError) and err.args:
        text = f"missing key {err.args[0]!r}"
    elif isinstance(err, FileExistsError) and err.filename and not Path(err.filename).is_dir():
        text = f"{err.filename}: is a file where a folder is needed"  # mkdir's bare "[Errno 17] File exists"
    else:
        text = str(err)
    text = " ".join(text.split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return f"error: {text}"


class _Commands(TyperGroup):
    """The root group: maps every command's user errors to exit 2 and one line on stderr (see `refusal`)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as err:  # re-raised unless it is the user's
            line = refusal(err)
            if line is None or os.environ.get("GENSR_TRACEBACK") == "1":
                raise
            typer.echo(line, err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="gensr",
    help="GenSR-Pref: multi-metric preference alignment for generative speech restoration.",
    cls=_Commands,
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
    """Load params for a command; a ConfigError names the file, the flag or the key (exit 2 via `refusal`)."""
    from gensr.config import load_params

    return load_params(params_path, overrides or [])


def _register_commands() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def main() -> None:
    _register_commands()
    app()


_register_commands()
