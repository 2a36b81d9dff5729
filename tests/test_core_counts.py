"""Process and thread counts (metrics.workers, degrade.workers, singing.workers, singing.degrade.workers,
restorers.threads): an integer >= 1 or `auto`, the cores available to the process; outputs that must not
depend on the count don't."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import PARAMS, ROOT
from test_models import synthetic_clip

COUNTS = ["metrics.workers", "degrade.workers", "singing.workers", "singing.degrade.workers", "restorers.threads"]


def counts_of(params) -> dict[str, int]:
    def dotted(key: str):
        node = params
        for part in key.split("."):
            node = getattr(node, part)
        return node

    return {key: dotted(key) for key in COUNTS}


def test_default_workers_are_auto_and_resolve_to_the_available_cores(project_params):
    from gensr.config.cores import available_cores

    params = project_params()
    cores = available_cores()
    assert cores >= 1
    if hasattr(os, "sched_getaffinity"):
        assert cores == len(os.sched_getaffinity(0))
    counts = counts_of(params)
    assert {k: v for k, v in counts.items() if k != "restorers.threads"} == dict.fromkeys(COUNTS[:4], cores)
    assert counts_of(project_params([f"{k}=auto" for k in COUNTS])) == dict.fromkeys(COUNTS, cores)
    assert counts_of(project_params([f"{k}=3" for k in COUNTS])) == dict.fromkeys(COUNTS, 3)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_auto_follows_the_cpu_affinity_of_the_process():
    """A process pinned to one core (taskset, a cluster's cpuset) gets 1, not the machine's count."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from gensr.config import load_params; "
            f"p = load_params({str(PARAMS)!r}, ['restorers.threads=auto']); "
            "print(p.metrics.workers, p.degrade.workers, p.singing.workers, p.singing.degrade.workers, p.restorers.threads)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"] * 5


def test_auto_without_affinity_is_the_cpu_count(monkeypatch):
    """macOS and Windows have no os.sched_getaffinity."""
    from gensr.config.cores import available_cores

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert available_cores() == (os.cpu_count() or 1)


@pytest.mark.parametrize("key", COUNTS)
@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5", "true", "'4'", "Auto", "null", "[2]"])
def test_a_count_is_a_positive_integer_or_auto(project_params, key, value):
    from gensr.config import ConfigError

    with pytest.raises(ConfigError) as err:
        project_params([f"{key}={value}"])
    message = str(err.value)
    assert f"{key}: " in message, message
    # true/false is refused for every number by the params base (gensr.config.base) in its own words
    assert "integer >= 1 or 'auto'" in message or (value == "true" and "true/false" in message), message


def test_cli_exits_2_naming_the_count():
    from typer.testing import CliRunner

    from gensr.cli import app

    result = CliRunner().invoke(app, ["params", "-p", str(PARAMS), "-S", "metrics.workers=two"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    named = [line for line in result.output.splitlines() if "metrics.workers" in line]
    assert len(named) == 1 and "integer >= 1 or 'auto'" in named[0] and "'two'" in named[0]


def test_metric_table_does_not_depend_on_the_worker_count(project_params, tmp_path):
    """One in-process scorer (workers=1) or spawned workers give the same bytes, the torch
    (speaker_cosine) and onnxruntime (DNSMOS) metrics included."""
    import soundfile as sf
    import torch

    from gensr.metrics import score_manifest

    rows = []
    for i in range(6):
        clip = synthetic_clip(i, seconds=1.5)  # harmonic and amplitude-modulated: resemblyzer's VAD keeps it
        sf.write(tmp_path / f"clean{i}.wav", clip.clean, 16000, subtype="FLOAT")
        sf.write(tmp_path / f"cand{i}.wav", clip.degraded, 16000, subtype="FLOAT")
        rows.append({"clip_id": f"c{i}", "path": str(tmp_path / f"cand{i}.wav"),
                     "ref_path": str(tmp_path / f"clean{i}.wav"), "text": None})
    names = "metrics.names=[si_sdr,estoi,speaker_cosine,dnsmos_ovrl]"
    tables = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(4)  # as a CLI process on a multi-core machine: workers=1 scores in this process
    try:
        for workers in ("1", "2", "auto"):
            out = tmp_path / f"w{workers}.parquet"
            long = score_manifest(project_params([names, f"metrics.workers={workers}"]), pd.DataFrame(rows), out,
                                  progress=False)
            assert long["value"].notna().all(), long[long["value"].isna()]
            tables[workers] = out.read_bytes()
    finally:
        torch.set_num_threads(threads)
    assert tables["1"] == tables["2"] == tables["auto"]
