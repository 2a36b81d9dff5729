"""Crash safety: `gensr sample` and `gensr score-candidates` killed with SIGKILL mid-run, then run
again, leave the same bytes as a run that was never interrupted.

Each test runs the real CLI in a subprocess on a tiny corpus and model built here, kills it once some
shards are on disk (and its final table is not), reruns it, and compares the output folder file by
file with an uninterrupted run in another folder (summary.json aside: it records timings and how
many shards were resumed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import PARAMS, ROOT
from gensr.audio.io import write_wav
from gensr.storage import write_parquet
from test_models import SR, TINY, synthetic_clip, write_degraded_corpus

CLI = [sys.executable, "-c", "from gensr.cli import main; main()"]


def cli(args: list[str], log: Path | None = None) -> subprocess.Popen:
    """`gensr <args>` in a fresh process (and session) that imports this checkout's code. With `log`,
    its output goes to that file instead of a pipe: a pipe would stay open in any worker that
    outlives a killed parent, and reading it would hang."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = open(log, "w") if log else subprocess.PIPE
    try:
        return subprocess.Popen([*CLI, *args, "-p", str(PARAMS)], env=env, stdout=out, stderr=subprocess.STDOUT if log else
                                subprocess.PIPE, text=True, start_new_session=True)
    finally:
        if log:
            out.close()


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def live_processes(group: int) -> list[int]:
    """Pids of the processes of process group `group` that have not exited (zombies excluded)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def kill_once(proc: subprocess.Popen, log: Path, shards: Path, final: Path, n_shards: int,
              timeout: float = 900) -> int:
    """SIGKILL the stage's process as soon as `n_shards` finished shards are in `shards` (as the OOM
    killer or `kill -9 <pid>` would: its workers are not signalled); returns how many there were.
    Any worker it started must exit with it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = list(shards.glob("shard-*.parquet")) if shards.is_dir() else []
        if len(done) >= n_shards:
            break
        assert proc.poll() is None, f"finished before {n_shards} shards were seen:\n{log.read_text()[-3000:]}"
        time.sleep(0.01)
    else:
        pytest.fail(f"no {n_shards} shards in {shards} after {timeout} s")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not final.exists(), "killed too late: the final table was already written"
    deadline = time.monotonic() + 60
    while live_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = live_processes(proc.pid)
    if survivors:
        os.killpg(proc.pid, signal.SIGKILL)  # the test's own process group; don't leak it
        pytest.fail(f"workers {survivors} outlived their killed parent")
    return len(done)


def plant_killed_writes(*folders: Path) -> None:
    """What a kill inside an atomic write leaves behind: a temp file beside its target."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".killed.abc123.tmp.parquet").write_bytes(b"partial")


def tree_bytes(root: Path, skip=("summary.json",)) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


# --- gensr sample ---------------------------------------------------------------------------------
N_CLIPS = 10


def sample_project(root: Path, checkpoint: Path) -> list[str]:
    """A degraded corpus of N_CLIPS pref clips under root/data, the FM checkpoint at the base path;
    returns the CLI overrides."""
    write_degraded_corpus(root / "data", N_CLIPS, lambda i: 1.5 + 0.1 * i, lambda i: "pref")
    (root / "models/base/fm").mkdir(parents=True)
    shutil.copyfile(checkpoint, root / "models/base/fm/restorer.pt")
    return [*TINY, f"paths.data={root / 'data'}", f"paths.models={root / 'models'}", "sample.split=pref",
            "sample.n_candidates=3", "sample.n_clips=null", "sample.shard_clips=1", "restorers.threads=1",
            "restorers.fm.sampling.ode_steps=200"]


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process groups from /proc")


@pytest.fixture()
def fm_checkpoint(tmp_path) -> Path:
    import torch

    from gensr.models.fm import FMRestorer
    from test_models import tiny_params

    torch.manual_seed(0)
    params = tiny_params()
    p = params.restorers.fm
    model = FMRestorer.build(params.restorers.features.model_dump(), p.model.model_dump(), p.sampling.model_dump())
    torch.nn.init.normal_(model.velocity.out.weight, std=0.05)  # a non-trivial field
    model.save(tmp_path / "fm.pt")
    return tmp_path / "fm.pt"


def sample_args(overrides: list[str]) -> list[str]:
    return ["sample", "--paradigm", "fm", *[a for o in overrides for a in ("-S", o)]]


def test_sample_killed_mid_run_resumes_to_identical_bytes(tmp_path, fm_checkpoint):
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    finish(cli(sample_args(sample_project(whole, fm_checkpoint))))
    overrides = sample_project(crashed, fm_checkpoint)
    out = crashed / "data/candidates/fm"
    log = tmp_path / "killed.log"
    seen = kill_once(cli(sample_args(overrides), log), log, out / "shards", out / "manifest.parquet", n_shards=2)
    plant_killed_writes(out, out / "shards", out / "wav")
    printed = finish(cli(sample_args(overrides)))
    assert printed.strip().splitlines()[-1] == f"summary: {out / 'summary.json'}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards"] == N_CLIPS and summary["shards_resumed"] >= seen
    assert tree_bytes(crashed / "data/candidates/fm") == tree_bytes(whole / "data/candidates/fm")


def test_sample_shards_of_inputs_that_have_since_changed_are_not_resumed(tmp_path, fm_checkpoint):
    """A sample run stopped after its first shard; the degraded clips are then re-made under the same names (a
    degrade param changed): the rerun restores the new inputs instead of resuming the old restorations."""
    from gensr.config import load_params
    from gensr.stages.sample import sample_candidates, sample_candidates_part

    def project(root: Path):
        overrides = sample_project(root, fm_checkpoint)
        return load_params(PARAMS, [o for o in overrides if not o.startswith("restorers.fm.sampling.ode_steps")])

    stopped, fresh = project(tmp_path / "stopped"), project(tmp_path / "fresh")
    sample_candidates_part(stopped, "fm", 0, N_CLIPS)  # one finished shard on disk, as a kill leaves it
    out = tmp_path / "stopped/data/candidates/fm"
    assert len(list((out / "shards").glob("shard-*.parquet"))) == 1
    for root in (tmp_path / "stopped", tmp_path / "fresh"):  # new degraded audio, same names
        for i in range(N_CLIPS):
            write_wav(root / "data/degraded/wav" / f"u{i:02d}__d0.wav", synthetic_clip(100 + i, 1.5 + 0.1 * i).degraded, SR)
    summary = sample_candidates(stopped, "fm")
    sample_candidates(fresh, "fm")
    assert summary["shards_resumed"] == 0
    assert tree_bytes(out) == tree_bytes(tmp_path / "fresh/data/candidates/fm")


# --- gensr score-candidates -----------------------------------------------------------------------
N_CANDIDATES = 24
FAST = "metrics.names=[si_sdr,mel_distance,estoi,pesq_wb]"


def candidates_project(root: Path) -> list[str]:
    """N_CANDIDATES noisy copies (3 per clip) of clean tones under root/data/candidates/ar; returns the
    CLI overrides."""
    import numpy as np

    rows = []
    out = root / "data/candidates/ar"
    for i in range(N_CANDIDATES):
        utt, cand = f"u{i // 3:02d}", f"u{i // 3:02d}__d0__c{i % 3}"
        clean = synthetic_clip(100 + i // 3, seconds=2.0).clean
        write_wav(root / "data/clean/wav" / f"{utt}.wav", clean, SR)
        noise = np.random.default_rng(i).normal(0, 0.01 * (1 + i % 3), clean.size).astype(np.float32)
        write_wav(out / "wav" / f"{cand}.wav", clean + noise, SR)
        rows.append({"cand_id": cand, "deg_id": f"{utt}__d0", "utt_id": utt, "path": f"wav/{cand}.wav",
                     "clean_path": f"../../clean/wav/{utt}.wav", "text": f"text {i // 3}"})
    write_parquet(pa.Table.from_pylist(rows), out / "manifest.parquet")
    return [FAST, f"paths.data={root / 'data'}", "metrics.shard_size=1"]


def score_args(overrides: list[str]) -> list[str]:
    return ["score-candidates", "--paradigm", "ar", *[a for o in overrides for a in ("-S", o)]]


def test_score_candidates_killed_mid_run_resumes_to_identical_bytes(tmp_path):
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    overrides = [*candidates_project(whole), "metrics.workers=2"]
    finish(cli(score_args(overrides)))
    overrides = [*candidates_project(crashed), "metrics.workers=2"]
    out = crashed / "data/metrics/ar"
    log = tmp_path / "killed.log"
    seen = kill_once(cli(score_args(overrides), log), log, out / "metrics.parquet.shards", out / "metrics.parquet",
                     n_shards=2)
    for name in ("metrics.parquet", "summary.json"):  # killed while writing the final table or summary
        (out / f".{name}.abc123.tmp{Path(name).suffix}").write_bytes(b"partial")
    (out / "metrics.parquet.shards" / ".shard-00009-abc.parquet.x.tmp.parquet").write_bytes(b"partial")
    printed = finish(cli(score_args(overrides)))
    resumed = int(printed.split(" shards resumed")[0].rsplit("workers, ", 1)[1].split("/")[0])
    assert resumed >= seen, printed
    assert tree_bytes(crashed / "data/metrics") == tree_bytes(whole / "data/metrics")
