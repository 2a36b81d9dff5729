"""Where every artifact lives, under params.paths: one place, so shells and stages agree."""

from __future__ import annotations

from pathlib import Path

from gensr.config import Params


def degraded_manifest(params: Params) -> Path:
    return Path(params.paths.data) / "degraded" / "manifest.parquet"


def confirm_dir(params: Params) -> Path:
    """The confirmation set: new sentences, its own seed, read only by the final evaluation and report."""
    return Path(params.paths.data) / "confirm"


def confirm_degraded_manifest(params: Params) -> Path:
    return confirm_dir(params) / "degraded" / "manifest.parquet"


def candidates_dir(params: Params, paradigm: str) -> Path:
    return Path(params.paths.data) / "candidates" / paradigm


def base_checkpoint(params: Params, paradigm: str) -> Path:
    return Path(params.paths.models) / "base" / paradigm / "restorer.pt"
