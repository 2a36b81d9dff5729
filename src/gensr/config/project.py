"""Project-wide params: seed, output folders and the audio rate every stage works at."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from gensr.config.base import Block


class PathsParams(Block):
    """Where each family of outputs lives, relative to the project root (DVC outs)."""

    data: Path
    models: Path
    reports: Path
    mlruns: Path


class AudioParams(Block):
    sample_rate: int = Field(gt=0, description="Rate of every WAV the pipeline writes (Hz).")
