"""One launch materializes everything from Dagster (issue 20): an asset backfill of every asset and partition
(gensr_dagster.materialize_all, `gensr dagster-materialize-all`), since no asset job can hold this graph."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import ROOT


def _graph():
    from gensr_dagster.definitions import defs

    return defs.resolve_asset_graph()


def _every_asset_partition(graph) -> dict[str, set[str | None]]:
    """asset -> every partition key of its partitions definition ({None} if unpartitioned)."""
    return {key.to_user_string(): ({str(k) for k in graph.get(key).partitions_def.get_partition_keys()}
                                   if graph.get(key).is_partitioned else {None})
            for key in graph.materializable_asset_keys}


def test_no_asset_job_can_hold_every_asset():
    """Why a backfill: Dagster 1.13 refuses an asset job over assets of different partitions definitions. If this
    fails, Dagster lifted the limit and one `define_asset_job` could replace the backfill."""
    from gensr_dagster.definitions import defs

    job = dg.define_asset_job("everything", selection=dg.AssetSelection.all())
    with pytest.raises(dg.DagsterInvalidDefinitionError) as err:
        dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("everything")
    assert "same partitions definitions" in str(err.value.__cause__ or err.value)


def test_the_backfill_covers_every_asset_and_every_partition():
    from gensr.config import load_params
    from gensr_dagster.materialize_all import all_assets_backfill, target_partitions

    graph = _graph()
    with dg.DagsterInstance.ephemeral() as instance:
        backfill = all_assets_backfill(graph, instance)
    targets = target_partitions(backfill, graph)
    assert targets == _every_asset_partition(graph)
    assert set(targets) == {k.to_user_string() for k in graph.get_all_asset_keys()}  # every asset is materializable
    params = load_params(ROOT / "params.yaml")
    # the ablation's partitions are dvc.yaml's matrix, the ones its stage accepts (no partition that could only fail)
    assert targets["ablation"] == {f"{p}|{s}" for p in params.ablation.paradigms for s in params.ablation.strategies}
    assert targets["metric_shards"] == {f"{p}|{k}" for p in ("ar", "mgm", "fm") for k in range(params.scaleout.shards)}
    assert targets["demo_page"] == {None}


def _materializations(instance, graph) -> dict[tuple[str, str | None], list[int]]:
    """(asset, partition) -> storage ids of its materializations, in the order they were stored."""
    out: dict[tuple[str, str | None], list[int]] = {}
    for key in graph.get_all_asset_keys():
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=10_000).records
        for r in records:
            partition = r.event_log_entry.dagster_event.partition
            out.setdefault((key.to_user_string(), partition), []).append(r.storage_id)
    return out


def _parents(graph, key: dg.AssetKey, partition: str | None) -> list[tuple[str, str | None]]:
    """Every (asset, partition) that `key[partition]` depends on, through the graph's partition mappings."""
    out = []
    for parent in graph.get(key).parent_keys:
        if not graph.get(parent).is_partitioned:
            out.append((parent.to_user_string(), None))
            continue
        if partition is None:  # an unpartitioned asset stands on every partition of a partitioned parent
            keys = graph.get(parent).partitions_def.get_partition_keys()
        else:
            keys = graph.get_parent_partition_keys_for_child(partition, parent, key).partitions_subset \
                .get_partition_keys()
        out += [(parent.to_user_string(), str(k)) for k in keys]
    return out


def test_the_backfill_runs_every_asset_partition_after_what_it_depends_on(tmp_path):
    """The backfill of everything, run by Dagster's own backfill daemon loop in-process over the project's graph
    with no-op assets (tests/dagster_mirror_defs.py): every asset partition is materialized once, each after
    every partition it depends on, and the backfill ends COMPLETED_SUCCESS."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import (
        create_test_daemon_workspace_context,
        instance_for_test,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.backfill import execute_backfill_iteration

    from gensr_dagster.materialize_all import DONE, launch

    start = time.perf_counter()
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(
        python_file=str(Path(__file__).with_name("dagster_mirror_defs.py")), attribute="defs",
        working_directory=str(ROOT)), location_name="mirror")
    overrides = {  # runs launched at once, in this process
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "run_launcher": {"module": "dagster._core.launcher.sync_in_memory_run_launcher",
                         "class": "SyncInMemoryRunLauncher"},
    }
    with instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance, \
            create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget([origin]), instance) as workspace:
        graph = workspace.create_request_context().asset_graph
        backfill = launch(instance, graph)
        for _ in range(100):
            list(execute_backfill_iteration(workspace, logging.getLogger("test_backfill")))
            status = instance.get_backfill(backfill.backfill_id).status
            if status.value != "REQUESTED":
                break
        assert status in DONE, status
        done = _materializations(instance, graph)
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))

    expected = {(a, p) for a, parts in _every_asset_partition(graph).items() for p in parts}
    assert set(done) == expected
    assert all(len(ids) == 1 for ids in done.values()), {k: v for k, v in done.items() if len(v) > 1}
    for (asset, partition), (stored,) in done.items():
        for parent in _parents(graph, dg.AssetKey(asset), partition):
            if parent in expected:  # a parent partition outside the target (none here) need not have run
                assert max(done[parent]) < stored, f"{asset}[{partition}] ran before {parent[0]}[{parent[1]}]"
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert time.perf_counter() - start < 120


def test_the_projects_instance_runs_one_run_at_a_time(tmp_path, monkeypatch):
    """The repo's dagster.yaml (copied to $DAGSTER_HOME by the Makefile) queues a backfill's runs one at a time:
    on 2 cores runs side by side only contend, and metric_tables partitions share the degraded-input tables."""
    import shutil

    shutil.copy(ROOT / "gensr_dagster" / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
