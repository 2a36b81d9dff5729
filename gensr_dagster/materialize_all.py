"""Materialize everything from Dagster, the equivalent of `dvc repro`: one asset backfill of every asset and every
partition (`gensr dagster-materialize-all`, `make dagster-materialize-all`).

Why a backfill and not a job: a Dagster asset job needs one partitions definition for all its assets (Dagster
1.13's `define_asset_job` over this graph fails: "Selected assets must have the same partitions definitions"), and
this graph mixes unpartitioned assets, paradigm partitions, paradigm x shard and the ablation's matrix keys. An asset
backfill has no such limit. It is what the UI's "Materialize all" launches when the selection has partitions.
Dagster's backfill daemon (in `dagster dev`, or `dagster-daemon run`) executes it: it requests a run for an asset
partition once the partitions it depends on are materialized (through the partition mappings), groups
unpartitioned assets, and runs a non-partitioned asset after every upstream partition. It does not run what
depends on a failed partition. No scheduler of the project's own.

The backfill is built as the webserver's `launchPartitionBackfill` mutation builds one (a `PartitionBackfill`
of an asset graph subset) and added to the instance, where the daemon finds it. Its target is every partition of
every asset, as the UI's "Materialize all" with all partitions (the ablation's are dvc.yaml's matrix,
`ablation.paradigms` x `ablation.strategies`).
"""

from __future__ import annotations

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_backfill_id
from dagster._time import get_current_timestamp

BACKFILL_TAG = "dagster/backfill"  # the tag Dagster puts on every run of a backfill
TITLE = "materialize_all"
DONE = {BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS}
TERMINAL = DONE | {BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED, BulkActionStatus.CANCELED}


def all_assets_backfill(asset_graph, instance: dg.DagsterInstance, *, tags: dict[str, str] | None = None
                        ) -> PartitionBackfill:
    """A backfill of every materializable asset of `asset_graph`, every partition of each."""
    from dagster._core.definitions.assets.graph.asset_graph_subset import (
        AssetGraphSubset,
    )

    target = AssetGraphSubset.from_asset_keys(asset_graph.materializable_asset_keys, asset_graph)
    return PartitionBackfill.from_asset_graph_subset(
        backfill_id=make_new_backfill_id(), backfill_timestamp=get_current_timestamp(), tags=dict(tags or {}),
        dynamic_partitions_store=instance,
        asset_graph_subset=target,
        title=TITLE, run_config=None,
        description="Every asset and every partition that dvc.yaml builds, in dependency order: `dvc repro`.")


def launch(instance: dg.DagsterInstance, asset_graph=None) -> PartitionBackfill:
    """Add the backfill of everything to the instance; its daemon runs it."""
    if asset_graph is None:
        from gensr_dagster.definitions import defs

        asset_graph = defs.resolve_asset_graph()
    backfill = all_assets_backfill(asset_graph, instance)
    instance.add_backfill(backfill)
    return backfill


def target_partitions(backfill: PartitionBackfill, asset_graph) -> dict[str, set[str | None]]:
    """asset -> the partition keys the backfill targets ({None} for an unpartitioned asset)."""
    out: dict[str, set[str | None]] = {}
    for ap in backfill.get_asset_backfill_data(asset_graph).target_subset.iterate_asset_partitions():
        out.setdefault(ap.asset_key.to_user_string(), set()).add(
            None if ap.partition_key is None else str(ap.partition_key))
    return out


def backfill_daemon_running(instance: dg.DagsterInstance) -> bool:
    """Whether a daemon with a backfill loop heartbeats to this instance (`dagster dev` runs one)."""
    from dagster._daemon.controller import get_daemon_statuses
    from dagster._daemon.daemon import BackfillDaemon

    kind = BackfillDaemon.daemon_type()
    return bool(get_daemon_statuses(instance, [kind], ignore_errors=True)[kind].healthy)


def run_counts(instance: dg.DagsterInstance, backfill_id: str) -> dict[str, int]:
    """Runs of the backfill by status (QUEUED, STARTED, SUCCESS, FAILURE, ...), for progress lines."""
    counts: dict[str, int] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id})):
        counts[run.status.value] = counts.get(run.status.value, 0) + 1
    return counts
