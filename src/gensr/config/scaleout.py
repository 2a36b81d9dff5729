"""Params of scale-out on existing engines (block `scaleout`, docs/scaling.md).

- `shards`: the Dagster assets `candidate_shards` and `metric_shards` are partitioned paradigm x shard, with shard
  keys 0..shards-1. Shard k samples (or scores) the resume shards i of the stage with i % shards == k, so shard
  partitions run as separate Dagster runs (a backfill) on whatever the run launcher and executor give them.
- `trainer`: the Lightning devices and strategy of every codec, SFT and DPO fit. The batch sizes in params stay the
  global batch; each of the `devices` processes takes batch / devices of every global batch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gensr.config.base import Block

# Launchers that start the processes from inside the fit and hand rank 0's weights back to the caller. Lightning's
# plain "ddp" re-runs the whole command once per device, so every copy would run the whole stage and write its outputs.
SPAWNING_STRATEGIES = ("ddp_spawn", "ddp_fork")


class TrainerParams(Block):
    """Where Lightning runs a fit: accelerator, device count and the multi-process strategy."""

    accelerator: Literal["cpu", "gpu", "auto"] = Field(
        description="Lightning accelerator of every fit (codec, SFT, DPO); sampling and scoring stay on the CPU.")
    devices: int = Field(ge=1, description="Processes of each fit, one per device; every batch_size in params is the "
                         "global batch and must be divisible by it.")
    strategy: str = Field(description="auto (one device) | ddp_spawn (GPUs, or CPU) | ddp_fork (CPU; starts fastest).")
    find_unused_parameters: bool = Field(
        description="DDP option: needed when a fit has trainable parameters its loss does not reach (the codec's "
        "autoencoder phase never runs its side-input encoder).")

    @model_validator(mode="after")
    def _launcher(self):
        if self.strategy != "auto" and self.strategy not in SPAWNING_STRATEGIES:
            raise ValueError(
                f"strategy '{self.strategy}' is not supported: use auto (one device) or one of {SPAWNING_STRATEGIES}; "
                "Lightning's 'ddp' re-runs the whole command per device, so every copy would run the stage")
        if self.devices > 1 and self.strategy == "auto":
            raise ValueError(f"devices={self.devices} needs strategy ddp_spawn (GPU or CPU) or ddp_fork (CPU): with auto "
                             "Lightning would pick 'ddp', which re-runs the whole command per device")
        return self


class ScaleoutParams(Block):
    shards: int = Field(ge=1, description="Shard partitions per paradigm of the Dagster assets candidate_shards and "
                        "metric_shards; tables are byte-identical for any value.")
    trainer: TrainerParams
