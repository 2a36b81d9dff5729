"""Paradigm name -> Restorer class, and loading any restorer checkpoint by its recorded paradigm."""

from __future__ import annotations

from pathlib import Path

PARADIGMS = ("ar", "mgm", "fm")


def restorer_class(paradigm: str):
    from gensr.models.ar import ARRestorer
    from gensr.models.fm import FMRestorer
    from gensr.models.mgm import MGMRestorer

    classes = {"ar": ARRestorer, "mgm": MGMRestorer, "fm": FMRestorer}
    if paradigm not in classes:
        raise ValueError(f"unknown paradigm '{paradigm}'; choose one of {', '.join(PARADIGMS)}")
    return classes[paradigm]


def load_restorer(path: str | Path, map_location: str = "cpu"):
    """Load a checkpoint written by Restorer.save, whatever its paradigm."""
    from gensr.models.restorer import Restorer

    return Restorer.load(path, map_location)
