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


def pytest_configure(config):
    _make_speechbrain_lazy_modules_inspectable()


def _make_speechbrain_lazy_modules_inspectable() -> None:
    """Once the ECAPA tests import speechbrain, its LazyModule stubs (e.g. for the absent k2)
    raise ImportError on `getattr(module, "__file__", None)`. Hypothesis scans sys.modules that
    way, so every property test after them would fail. Dunder lookups become AttributeError.
    speechbrain is in the `ecapa` extra only (`make setup STACK=cuda`): without it there is nothing to patch."""
    import importlib.util

    if importlib.util.find_spec("speechbrain") is None:
        return
    from speechbrain.utils import importutils

    original = importutils.LazyModule.__getattr__

    def __getattr__(self, attr):
        try:
            return original(self, attr)
        except ImportError as err:
            if attr.startswith("__"):
                raise AttributeError(attr) from err
            raise

    importutils.LazyModule.__getattr__ = __getattr__
