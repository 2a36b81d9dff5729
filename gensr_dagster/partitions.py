"""Shard partitions (paradigm x shard) of candidate sampling and scoring, read from params.yaml when the definitions
load (`scaleout.shards`).

A backfill over the shard partitions launches one run per shard; the run launcher and the run coordinator of the
Dagster instance decide where and how many run at once (docs/scaling.md), the executor runs the step.
"""

from __future__ import annotations

import warnings

import dagster as dg

from gensr.config.align import PARADIGMS

paradigm_partitions = dg.StaticPartitionsDefinition(list(PARADIGMS))


def _shard_keys() -> list[str]:
    try:
        from gensr.config import load_params
        from gensr.stages.sample import shard_partitions

        return [str(i) for i in range(shard_partitions(load_params()))]
    except Exception:  # definitions must load even outside the project root; shard_of checks the count again
        return ["0"]


SHARD_KEYS = _shard_keys()
# Dagster-only assets: shard partitions of a DVC stage's work (the asset they feed is the one that stage builds)
SHARD_ASSETS = {"candidate_shards": "candidate_samples", "metric_shards": "metric_tables"}
paradigm_shard_partitions = dg.MultiPartitionsDefinition({
    "paradigm": dg.StaticPartitionsDefinition(list(PARADIGMS)),
    "shard": dg.StaticPartitionsDefinition(SHARD_KEYS),
})
# Dependencies between a paradigm partition (candidate_samples[ar]) and the shard partitions of that paradigm (ar|0,
# ar|1, ...) need no explicit mapping: Dagster infers MultiToSingleDimensionPartitionMapping on the shared dimension
# (tests/test_lineage.py checks that it does).


def ablation_key(paradigm: str, strategy: str) -> str:
    """The ablation's partition key of one dvc.yaml matrix item (`ablation@<paradigm>-<strategy>`)."""
    return f"{paradigm}|{strategy}"


def split_ablation_key(key: str) -> tuple[str, str]:
    paradigm, _, strategy = str(key).partition("|")
    return paradigm, strategy


def shard_of(context: dg.AssetExecutionContext, params) -> tuple[str, int, int]:
    """(paradigm, shard, shards) of the partition being materialized; the run's params must agree with the shard
    partitions the definitions were loaded with, or some shards would never be sampled."""
    from gensr.stages.sample import shard_partitions

    key = context.partition_key.keys_by_dimension
    parts = len(SHARD_KEYS)
    if shard_partitions(params) != parts:
        raise ValueError(f"scaleout.shards is {shard_partitions(params)} in this run's params, but the Dagster "
                         f"definitions were loaded with {parts} shard partitions: reload the code location (or drop "
                         "the scaleout.shards override)")
    return key["paradigm"], int(key["shard"]), parts


def partitioned_check(*, asset, partitions_def: dg.PartitionsDefinition, **kwargs):
    """`dg.asset_check` for a partitioned asset, partitioned like it: a run checks the partition it materialized
    (so does `gensr dagster-sync`), and Dagster keeps one result per partition, so a failing paradigm shows on its
    partition only. Partitioned checks are a Dagster preview feature (1.13): its warning is silenced here only."""
    def decorate(fn):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                                    category=dg.PreviewWarning)
            return dg.asset_check(asset=asset, partitions_def=partitions_def, **kwargs)(fn)
    return decorate


def checked_paradigms(context) -> list[str]:
    """The paradigm partition a check runs for, or every paradigm for a check called without one."""
    try:
        if context.has_partition_key:
            return [context.partition_key]
    except Exception:  # a context built without a run (a direct call) may have no partition information
        pass
    return list(PARADIGMS)
