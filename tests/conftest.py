"""Test environment: offline, quiet, and with the project root at hand."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports huggingface_hub/mlflow: no network, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


@pytest.fixture
def project_params():
    """Load the real params.yaml with overrides: project_params(['corpus.n_utterances=20'])."""
    from gensr.config import load_params

    def _load(overrides=None):
        return load_params(PARAMS, overrides or [])

    return _load
