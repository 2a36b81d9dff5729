"""The project's Dagster asset graph with no-op assets: the same keys, dependencies, partitions and partition
mappings, each asset materializing instantly. tests/test_dagster_materialize_all.py loads it as a code location
to run the backfill of everything in-process, in seconds instead of the pipeline's hours."""

import dagster as dg

from gensr_dagster.definitions import defs as _real


def _mirror(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(specs=list(assets_def.specs), name=f"{assets_def.node_def.name}_mirror", can_subset=True)
    def _noop(context: dg.AssetExecutionContext):
        for key in sorted(context.selected_asset_keys):
            yield dg.MaterializeResult(asset_key=key)
    return _noop


defs = dg.Definitions(
    assets=[_mirror(a) for a in _real.resolve_asset_graph().assets_defs if a.is_executable],
    executor=dg.in_process_executor,
)
