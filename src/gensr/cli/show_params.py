"""`gensr params`: print the validated params (after overrides) as YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gensr.cli import ParamsOption, SetOption, app, load


@app.command("params")
def show_params(params: Path = ParamsOption, set_: Optional[list[str]] = SetOption) -> None:
    """Validate params.yaml (plus -S overrides) and print the result."""
    import yaml

    cfg = load(params, set_)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
