"""Scale-out on existing engines: Lightning DDP on 2 CPU processes (gloo) against 1 process with the same global batch,
and candidate sampling + scoring as Dagster shard partitions run in parallel processes against one stage run.

DDP tolerance: both runs compute the same global-batch mean gradient; only float32 summation order differs (two
half-batch means averaged by the all-reduce against one full-batch mean). On these runs that moves the loss by about
1e-7 relative (float32 epsilon), and weights by at most about 1e-5 (Adam divides tiny gradient entries by their own
tiny RMS, so their last bits show up in the update). The loss tolerance is 1e-5 relative: 100x that rounding, and
still more than 100x below the deviation the same run shows with other crops (the control below), or that a rank
training on the wrong rows would show.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import PARAMS
from test_align import _write_pairs, tiny_restorer
from test_models import SR, TINY, synthetic_clip, write_degraded_corpus

LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-3  # Adam-normalised rounding (see above); a wrong batch moves weights by about lr per step


def _two_cpu_processes(strategy: str):
    from gensr.config.scaleout import TrainerParams

    return TrainerParams(accelerator="cpu", devices=2, strategy=strategy, find_unused_parameters=True)


class RowsChecked:
    """An SFT loss that fails unless each process gets `rows` rows (global batch / devices); picklable for spawn."""

    def __init__(self, loss_fn, rows: int):
        self.loss_fn, self.rows = loss_fn, rows

    def __call__(self, degraded, clean, lengths):
        if degraded.shape[0] != self.rows:
            raise AssertionError(f"a process got {degraded.shape[0]} rows, expected {self.rows}")
        return self.loss_fn(degraded, clean, lengths)


def _max_rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


@pytest.mark.slow
def test_sft_on_two_ddp_spawn_processes_follows_the_one_process_loss_trajectory():
    """AR restorer (deterministic teacher-forced loss), global batch 4: 1 process x 4 rows vs 2 spawned x 2 rows."""
    from gensr.config.models import TrainLoop
    from gensr.train.loop import fit

    clips = [synthetic_clip(i, seconds=1.0) for i in range(8)]  # longer than the crop: every row has the same length
    loop = TrainLoop(steps=8, batch_size=4, lr=3e-3, warmup_steps=1, weight_decay=0.01, grad_clip=1.0, crop_seconds=0.5)
    one = tiny_restorer("ar")
    two, control = copy.deepcopy(one), copy.deepcopy(one)
    single = fit(one, RowsChecked(one.sft_loss, 4), one.trainable_parameters(), clips, loop, SR, seed=5)
    ddp = fit(two, RowsChecked(two.sft_loss, 2), two.trainable_parameters(), clips, loop, SR, seed=5,
              trainer=_two_cpu_processes("ddp_spawn"))
    other = fit(control, control.sft_loss, control.trainable_parameters(), clips, loop, SR, seed=6)  # other crops

    assert single["steps"] == ddp["steps"] == 8
    deviation = _max_rel(single["losses"], ddp["losses"])
    print(f"SFT loss trajectory, max relative deviation 2 vs 1 process: {deviation:.2e} (control {_max_rel(single['losses'], other['losses']):.2e})")
    assert deviation < LOSS_RTOL
    assert _max_rel(single["losses"], other["losses"]) > 100 * LOSS_RTOL  # the tolerance tells batches apart
    assert single["losses"][-1] < single["losses"][0]  # it trained
    # rank 0's weights came back to this process
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.allclose(a, b, atol=WEIGHT_ATOL), name
    moved = max(float((a - b).abs().max()) for a, b in zip(one.state_dict().values(), tiny_restorer("ar").state_dict().values()))
    print(f"largest weight change by training {moved:.2e}, largest 2 vs 1 process difference "
          f"{max(float((a - b).abs().max()) for a, b in zip(one.state_dict().values(), two.state_dict().values())):.2e}")
    assert moved > 10 * WEIGHT_ATOL  # training moved the weights far more than the tolerance allows


@pytest.mark.slow
def test_dpo_on_two_ddp_fork_processes_matches_one_process(tmp_path):
    """FM DPO with its live reference (per-pair seeded t and noise), 8 train pairs, global batch 4, 6 steps (two
    epochs: the second reshuffle too): the final policy, the last step's loss and diagnostics (mean over ranks) and
    the held-out pair accuracy match 1 process; the Lightning checkpoint keeps the optimizer state."""
    from gensr.align.train import DPOSettings, run_dpo
    from gensr.models import Restorer

    pairs = _write_pairs(tmp_path, n_pairs=10)  # 8 train + 2 held out
    base_path = tiny_restorer("fm").save(tmp_path / "base.pt")
    settings = DPOSettings(paradigm="fm", beta=20.0, lr=1e-4, steps=6, batch_size=4, sft_weight=0.0, sft_target="chosen",
                           score_draws=1, weight_decay=0.0, grad_clip=1.0, val_every_steps=3, ref_batch_size=4,
                           segment_seconds=0.2, audio_examples=0, sample_rate=SR, seed=3)
    runs = {}
    for name, trainer in (("one", None), ("two", _two_cpu_processes("ddp_fork"))):
        policy, reference = Restorer.load(base_path), Restorer.load(base_path)
        summary = run_dpo(policy, reference, pairs, tmp_path / "pairs.parquet", base_path, settings, tmp_path / name,
                          trainer=trainer)
        runs[name] = (policy, summary, torch.load(tmp_path / name / "dpo.ckpt", weights_only=True))
    (p1, s1, c1), (p2, s2, c2) = runs["one"], runs["two"]
    assert s1["train_final"].keys() == s2["train_final"].keys() and "train/loss" in s1["train_final"]
    for key, value in s1["train_final"].items():
        assert s2["train_final"][key] == pytest.approx(value, rel=LOSS_RTOL, abs=1e-7), key
    assert s1["heldout_after"]["loss"] != pytest.approx(s1["heldout_before"]["loss"], rel=1e-3)  # it trained
    assert s2["heldout_after"]["loss"] == pytest.approx(s1["heldout_after"]["loss"], rel=LOSS_RTOL)
    for (name, a), b in zip(p1.state_dict().items(), p2.state_dict().values()):
        assert torch.allclose(a, b, atol=WEIGHT_ATOL), name
    assert c2["global_step"] == c1["global_step"] == 6 and len(c2["optimizer_states"]) == 1
    assert c2["optimizer_states"][0]["state"], "the DDP checkpoint must keep the optimizer state"
    assert all(k.startswith("policy.") for k in c2["state_dict"])


@pytest.mark.slow
def test_heads_only_ar_dpo_on_two_ddp_fork_processes_matches_one_process(tmp_path):
    """AR DPO with only its heads trainable (dpo.ar's default): the trunk runs once per pair before the fit, and the
    ranks train on their rows of those outputs; final policy and last-step diagnostics match 1 process."""
    from gensr.align.train import DPOSettings, run_dpo
    from gensr.models import Restorer

    pairs = _write_pairs(tmp_path, n_pairs=10, codebooks=2)  # 8 train + 2 held out
    base_path = tiny_restorer("ar").save(tmp_path / "base.pt")
    settings = DPOSettings(paradigm="ar", beta=0.5, lr=1e-3, steps=4, batch_size=4, sft_weight=1.0, sft_target="clean",
                           score_draws=None, weight_decay=0.0, grad_clip=1.0, val_every_steps=2, ref_batch_size=4,
                           segment_seconds=0.2, audio_examples=0, sample_rate=SR, seed=3, trainable=("heads",))
    runs = {}
    for name, trainer in (("one", None), ("two", _two_cpu_processes("ddp_fork"))):
        policy, reference = Restorer.load(base_path), Restorer.load(base_path)
        summary = run_dpo(policy, reference, pairs, tmp_path / "pairs.parquet", base_path, settings, tmp_path / name,
                          trainer=trainer)
        runs[name] = (Restorer.load(tmp_path / name / "restorer.pt"), summary)
    (p1, s1), (p2, s2) = runs["one"], runs["two"]
    assert s1["trunk_once"] and s2["trunk_once"]
    assert s1["train_final"]["train/rewards/margins"] != 0  # the pairs' sides differ: the DPO term is at work
    for key, value in s1["train_final"].items():
        # a reward is beta x the difference of two summed log-probs of tens of nats: float32 rounding of those sums
        # shows at about 1e-5 absolute (5.7e-6 seen), where the loss itself agrees to LOSS_RTOL
        tolerance = {"abs": 1e-4} if "rewards" in key else {"rel": LOSS_RTOL, "abs": 1e-7}
        assert s2["train_final"][key] == pytest.approx(value, **tolerance), key
    base = Restorer.load(base_path)
    for (name, a), b, c in zip(p1.state_dict().items(), p2.state_dict().values(), base.state_dict().values()):
        assert torch.allclose(a, b, atol=WEIGHT_ATOL), name
        assert name.startswith("heads.") or torch.equal(a, c), name
    assert any(not torch.equal(a, c) for a, c in zip(p1.state_dict().values(), base.state_dict().values()))


def test_rank_batches_split_the_one_process_batches():
    """Rank r of w gets rows [r*b, (r+1)*b) of each global batch; the union is the one-process batch sequence."""
    from torch.utils.data import BatchSampler, RandomSampler

    from gensr.train.distributed import RankBatches

    def global_batches():
        return list(BatchSampler(RandomSampler(range(10), generator=torch.Generator().manual_seed(7)), 4, True))

    expected = global_batches()
    ranks = [list(RankBatches(BatchSampler(RandomSampler(range(10), generator=torch.Generator().manual_seed(7)), 4, True),
                              r, 2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == expected and all(len(b) == 2 for r in ranks for b in r)
    odd = list(RankBatches([[0, 1, 2]], 1, 2))
    assert odd == [[1]]
    with pytest.raises(ValueError, match="scaleout.trainer.devices"):
        list(RankBatches([[0]], 0, 2))


def test_crop_batches_of_the_ranks_are_the_one_process_batch_split():
    from gensr.train.data import CropBatches

    clips = [synthetic_clip(i, seconds=0.3 + 0.1 * i) for i in range(5)]
    whole = list(CropBatches(clips, 3, 4, 4000, seed=2))
    halves = [list(CropBatches(clips, 3, 4, 4000, seed=2, rank=r, world=2)) for r in range(2)]
    for step, (deg, clean, lengths) in enumerate(whole):
        assert torch.equal(torch.cat([halves[0][step][0], halves[1][step][0]]), deg)
        assert torch.equal(torch.cat([halves[0][step][1], halves[1][step][1]]), clean)
        assert torch.equal(torch.cat([halves[0][step][2], halves[1][step][2]]), lengths)
    with pytest.raises(ValueError, match="scaleout.trainer.devices"):
        CropBatches(clips, 3, 5, 4000, seed=2, rank=0, world=2)


def test_trainer_params_refuse_launchers_that_rerun_the_stage(project_params):
    from gensr.config import ConfigError

    with pytest.raises(ConfigError, match="re-runs the whole command"):
        project_params(["scaleout.trainer.strategy=ddp"])
    with pytest.raises(ConfigError, match="re-runs the whole command"):
        project_params(["scaleout.trainer.devices=2"])  # strategy auto would pick ddp
    with pytest.raises(ConfigError, match="restorers.ar.train.batch_size"):
        project_params(["scaleout.trainer.devices=2", "scaleout.trainer.strategy=ddp_spawn",
                        "restorers.ar.train.batch_size=7"])
    ok = project_params(["scaleout.trainer.devices=2", "scaleout.trainer.strategy=ddp_spawn"])
    assert ok.scaleout.trainer.devices == 2
    assert project_params().scaleout.trainer.devices == 1  # the default stays one process


# --- candidate sampling and scoring as Dagster shard partitions -------------------------------------------------

SHARDED = ["sample.n_candidates=2", "sample.n_clips=6", "sample.shard_clips=1", "sample.split=pref",
           "metrics.names=[si_sdr,mel_distance,estoi]", "metrics.workers=1", "metrics.shard_size=2",
           "metrics.score_inputs_split=test"]


def _project(root, models):
    """A degraded corpus of 9 clips (7 in the pool, 2 test) under root/data; the overrides that point there."""
    write_degraded_corpus(root / "data", 9, lambda i: 0.5 + 0.1 * i, lambda i: "test" if i >= 7 else "pref")
    return [*TINY, f"paths.data={root / 'data'}", f"paths.models={models}", f"paths.reports={root / 'reports'}", *SHARDED]


def _materialize_shards_at_once(asset: str, home: Path, overrides: list[str]) -> None:
    """One `dagster asset materialize --partition fm|k` process per shard partition of `asset`, all started at once,
    as a backfill's run launcher starts one run per partition. Each run executes its step with the project's default
    executor in multiprocess mode (max_concurrent 2), i.e. in a process of its own."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from gensr_dagster.partitions import SHARD_KEYS

    config = {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}},
              "resources": {"params": {"config": {"params_path": str(PARAMS), "overrides": overrides}}}}
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "gensr_dagster.definitions",
                               "--select", asset, "--partition", f"fm|{shard}", "--config-json", json.dumps(config)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for shard in SHARD_KEYS]
    outputs = [proc.communicate(timeout=1800)[0] for proc in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]


def _run_and_step(instance, run_id: str) -> tuple[int, int, tuple[float, float]]:
    """(pid of the run, pid of its one step, (run start, run end) time) from the run's event log."""
    import dagster as dg

    events = [e for e in instance.all_logs(run_id) if e.dagster_event is not None]
    kind = {e.dagster_event.event_type: e for e in events}
    start, end = kind[dg.DagsterEventType.RUN_START], kind[dg.DagsterEventType.RUN_SUCCESS]
    return start.dagster_event.pid, kind[dg.DagsterEventType.STEP_START].dagster_event.pid, (start.timestamp, end.timestamp)


@pytest.mark.slow
def test_shard_partitions_in_parallel_processes_give_the_one_run_tables(tmp_path):
    """FM, 6 pool clips x 2 candidates: 6 sampling shards and 6 scoring shards dealt over the shard partitions of
    params.yaml (2), each partition one Dagster run whose step runs in its own process (multiprocess executor), both
    launched at once; candidate_samples and metric_tables then only assemble. The manifest, every WAV and the metric
    table are byte-identical to one `sample_candidates` + `score_candidates` run."""
    import os

    import dagster as dg

    from gensr.config import load_params
    from gensr.models.fm import FMRestorer
    from gensr.stages.sample import sample_candidates, shard_partitions
    from gensr.stages.score import score_candidates
    from gensr_dagster.assets.metrics import metric_tables
    from gensr_dagster.assets.restorers import candidate_samples
    from gensr_dagster.partitions import SHARD_KEYS
    from gensr_dagster.resources import ParamsResource

    one_overrides = _project(tmp_path / "one", tmp_path / "models")
    sharded_overrides = _project(tmp_path / "sharded", tmp_path / "models")
    params = load_params(PARAMS, one_overrides)
    assert shard_partitions(params) == len(SHARD_KEYS) >= 2
    p = params.restorers.fm
    model = FMRestorer.build(params.restorers.features.model_dump(), p.model.model_dump(), p.sampling.model_dump())
    torch.nn.init.normal_(model.velocity.out.weight, std=0.05)  # a non-trivial field
    model.save(tmp_path / "models/base/fm/restorer.pt")

    sample_candidates(params, "fm")  # the reference: one process, every shard
    score_candidates(params, "fm")

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.local_temp(str(home))
    assert not instance.get_runs()  # creates the run storage before two processes race to
    resources = {"params": ParamsResource(params_path=str(PARAMS), overrides=sharded_overrides)}
    _materialize_shards_at_once("candidate_shards", home, sharded_overrides)
    sampled = instance.get_runs()
    assembled = dg.materialize([candidate_samples], partition_key="fm", resources=resources, instance=instance)
    meta = assembled.asset_materializations_for_node("candidate_samples")[0].metadata
    assert meta["shards_resumed"].value == 6  # the shard partitions sampled every resume shard; assembly sampled none
    _materialize_shards_at_once("metric_shards", home, sharded_overrides)
    scored = [r for r in instance.get_runs() if r.run_id not in {s.run_id for s in sampled} | {assembled.run_id}]
    tables = dg.materialize([metric_tables], partition_key="fm", resources=resources, instance=instance)
    assert tables.success

    one, sharded = tmp_path / "one/data", tmp_path / "sharded/data"
    manifest = Path("candidates/fm/manifest.parquet")
    assert (one / manifest).read_bytes() == (sharded / manifest).read_bytes()
    wavs = sorted(p.relative_to(one) for p in (one / "candidates/fm/wav").glob("*.wav"))
    assert len(wavs) == 12 and all((one / w).read_bytes() == (sharded / w).read_bytes() for w in wavs)
    table = Path("metrics/fm/metrics.parquet")
    assert (one / table).read_bytes() == (sharded / table).read_bytes()
    assert len(pd.read_parquet(sharded / table)) == 12 * 3
    assert not (sharded / "metrics/fm/metrics.parquet.shards").exists()  # assembled, shard folder removed

    for runs in (sampled, scored):
        assert sorted(r.tags["dagster/partition"] for r in runs) == [f"fm|{k}" for k in SHARD_KEYS]
        found = [_run_and_step(instance, r.run_id) for r in runs]
        print("runs (run pid, step pid, window):", [(a, b, f"{w[0] % 1000:.1f}-{w[1] % 1000:.1f}") for a, b, w in found])
        pids = [pid for run_pid, step_pid, _ in found for pid in (run_pid, step_pid)]
        assert len(set(pids) | {os.getpid()}) == 2 * len(runs) + 1  # each run, and the executor's step in it, apart
        assert max(w[0] for *_, w in found) < min(w[1] for *_, w in found)  # every shard run was running at once
