"""Lightning data parallelism from params (`scaleout.trainer`): trainer arguments, and each rank's share of a batch.

Every batch_size in params is the global batch. With `devices` processes, rank r trains on rows
[r * b, (r + 1) * b) of every global batch, b = batch_size / devices; the global batches themselves are drawn
exactly as one process draws them. DDP averages the ranks' gradients, so a loss that is a mean over the batch's rows
gives the one-process gradient (up to float rounding; tests/test_scaleout.py).

Only launchers that start the processes inside `trainer.fit` are used (ddp_spawn, ddp_fork): rank 0's weights and
the trainer's callback metrics come back to the calling process, which then writes the stage's outputs once.
"""

from __future__ import annotations

import hashlib
import logging
import warnings

import lightning as L
import torch
from torch.utils.data import Sampler

from gensr.config.scaleout import TrainerParams


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_lightning() -> None:
    """Silence two lines Lightning prints at every fit that are not about this project: its advertising tip
    ("💡 Tip: ... litlogger") and a deprecation that torch raises inside Lightning's own code (`LeafSpec`, from
    lightning/pytorch/utilities/_pytree.py). A `make demo` printed them 20 times each. Idempotent."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in log.filters):
        log.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def trainer_kwargs(trainer: TrainerParams | None) -> dict:
    """Keyword arguments for L.Trainer; None (or one device) is the single-process CPU run of before."""
    if trainer is None:
        return {"accelerator": "cpu", "devices": 1}
    if trainer.devices == 1:
        return {"accelerator": trainer.accelerator, "devices": 1}
    from lightning.pytorch.strategies import DDPStrategy

    start_method = {"ddp_spawn": "spawn", "ddp_fork": "fork"}[trainer.strategy]
    return {
        "accelerator": trainer.accelerator,
        "devices": trainer.devices,
        "strategy": DDPStrategy(start_method=start_method, find_unused_parameters=trainer.find_unused_parameters),
        # the ranks slice the global batches themselves (RankBatches, CropBatches); a DistributedSampler would
        # re-deal the rows and change which pairs share a step
        "use_distributed_sampler": False,
    }


def rank_rows(global_batch: int, rank: int, world: int) -> slice:
    """This rank's rows of a global batch; the batch must split evenly (uneven halves would weight rows unequally)."""
    if global_batch % world:
        raise ValueError(f"batch of {global_batch} does not split over {world} processes: make every batch_size a "
                         f"multiple of scaleout.trainer.devices")
    per_rank = global_batch // world
    return slice(rank * per_rank, (rank + 1) * per_rank)


class RankBatches(Sampler):
    """A batch sampler that yields this rank's rows of each batch of `batches` (the global batch sampler).

    A last global batch too small to split evenly (drop_last off) is dealt as evenly as it goes, every rank
    keeping at least one row; fewer rows than ranks is an error, since a rank without rows would stall the others.
    """

    def __init__(self, batches: Sampler, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            if len(batch) < self.world:
                raise ValueError(f"a batch of {len(batch)} rows cannot feed {self.world} processes: use at least "
                                 f"scaleout.trainer.devices pairs (or fewer devices)")
            if len(batch) % self.world == 0:
                yield batch[rank_rows(len(batch), self.rank, self.world)]
            else:
                yield batch[self.rank :: self.world]


def rank_seed(seed: int, rank: int) -> int:
    """The global torch seed of one rank: losses that draw noise (FM's t, MGM's masks, the codec's code noise) must not
    draw the same numbers on every rank."""
    return int.from_bytes(hashlib.sha256(f"rank:{seed}:{rank}".encode()).digest()[:8], "little") % (2**63)


class RankSeeds(L.Callback):
    """Reseeds torch's global RNG per rank when the fit starts (picklable, for spawned processes)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_start(self, trainer, pl_module) -> None:
        torch.manual_seed(rank_seed(self.seed, trainer.global_rank))


def rank_callbacks(trainer: TrainerParams | None, seed: int) -> list:
    """Callbacks a multi-process fit needs (none for one process, which keeps the caller's RNG stream)."""
    if trainer is None or trainer.devices == 1:
        return []
    return [RankSeeds(seed)]
