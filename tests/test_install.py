"""The default install is CPU-only: no nvidia-*/CUDA wheels, no triton, a CPU build of torch (issue 22).

The CUDA stack came to 3.2 GB of nvidia-* wheels plus 0.9 GB of triton, for a pipeline that runs on the CPU.
`make setup STACK=cuda` builds it on purpose (in .venv-cuda, for the ECAPA backend) and sets GENSR_ALLOW_CUDA=1.
"""

from __future__ import annotations

import os
import re
from importlib.metadata import distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIST = re.compile(r"^(nvidia[-_].*|cuda[-_].*|triton|pytorch[-_]triton.*)$", re.IGNORECASE)


def _names(lines) -> set[str]:
    return {re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0] for line in lines
            if line.strip() and not line.lstrip().startswith("#")}


def test_default_constraints_pin_no_cuda_wheel_and_a_cpu_torch():
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    assert not sorted(n for n in _names(lines) if CUDA_DIST.match(n))
    torch_pins = [line for line in lines if line.lower().startswith("torch==")]
    assert len(torch_pins) == 1 and torch_pins[0].endswith("+cpu"), torch_pins


@pytest.mark.skipif(os.environ.get("GENSR_ALLOW_CUDA") == "1", reason="STACK=cuda: the CUDA stack on purpose")
def test_the_venv_has_no_nvidia_or_cuda_wheel():
    installed = sorted({d.metadata["Name"] for d in distributions() if CUDA_DIST.match(d.metadata["Name"] or "")})
    assert not installed, (f"CUDA wheels in the CPU-only venv: {installed}. Rebuild it with `make clean-venv setup` "
                           "(or use STACK=cuda, which sets GENSR_ALLOW_CUDA=1)")
    import torch

    assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build"
