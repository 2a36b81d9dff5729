"""Scale-out on existing engines: Lightning DDP on 2 CPU processes (gloo) against 1 process with the same global batch.

DDP tolerance: both runs compute the same global-batch mean gradient; only float32 summation order differs (two
half-batch means averaged by the all-reduce against one full-batch mean). On these runs that moves the loss by about
1e-7 relative (float32 epsilon), and weights by at most about 1e-5 (Adam divides tiny gradient entries by their own
tiny RMS, so their last bits show up in the update). The loss tolerance is 1e-5 relative: 100x that rounding, and
still more than 100x below the deviation the same run shows with other crops (the control below), or that a rank
training on the wrong rows would show.
"""

from __future__ import annotations

import copy

import pytest
import torch

from test_align import _write_pairs, tiny_restorer
from test_models import SR, synthetic_clip

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
