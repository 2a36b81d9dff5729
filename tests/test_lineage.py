"""Lineage snapshot: the Dagster asset graph and the DVC stages name the same artifacts.

A rename or a dropped dependency fails here instead of silently breaking lineage.
"""

from __future__ import annotations

import yaml

from conftest import ROOT

EXPECTED_ASSETS = {
    "clean_corpus": set(),
    "degraded_corpus": {"clean_corpus"},
    "codec_checkpoint": {"clean_corpus", "degraded_corpus"},
    "base_checkpoints": {"codec_checkpoint", "degraded_corpus"},
    "candidate_shards": {"base_checkpoints"},
    "candidate_samples": {"base_checkpoints", "candidate_shards"},
    "metric_shards": {"candidate_samples"},
    "metric_tables": {"candidate_samples", "degraded_corpus", "metric_shards"},
    "preference_pairs": {"metric_tables"},
    "aligned_checkpoints": {"base_checkpoints", "preference_pairs"},
    "evaluation": {"aligned_checkpoints"},
    "confirm_set": {"clean_corpus"},
    "base_evaluation": {"base_checkpoints", "confirm_set", "degraded_corpus"},
    "ablation": {"preference_pairs", "base_evaluation"},
    "ablation_summary": {"ablation"},
    "demo_page": {"evaluation", "ablation_summary", "singing_evaluation"},
    "singing_corpus": set(),
    "singing_pseudo_labels": {"singing_corpus", "aligned_checkpoints", "base_checkpoints"},
    "initial_voicefixer": {"degraded_corpus"},
    "finetuned_voicefixer": {"initial_voicefixer", "singing_pseudo_labels"},
    "singing_evaluation": {"finetuned_voicefixer", "initial_voicefixer", "singing_corpus", "aligned_checkpoints"},
}
PARTITIONED = {"base_checkpoints", "candidate_samples", "metric_tables", "preference_pairs",
               "aligned_checkpoints", "evaluation", "base_evaluation"}
MATRIX_PARTITIONED = {"ablation"}  # dvc.yaml's matrix: "<paradigm>|<strategy>"
SHARD_PARTITIONED = {"candidate_shards", "metric_shards"}  # paradigm x shard (scaleout.shards)


def _graph():
    from gensr_dagster.definitions import defs

    return defs.resolve_asset_graph()


def test_asset_keys_and_dependencies_snapshot():
    graph = _graph()
    got = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert got == EXPECTED_ASSETS


def test_paradigm_assets_are_partitioned_by_paradigm():
    graph = _graph()
    for key in graph.get_all_asset_keys():
        part = graph.get(key).partitions_def
        if key.to_user_string() in PARTITIONED:
            assert part is not None and set(part.get_partition_keys()) == {"ar", "mgm", "fm"}, key
        elif key.to_user_string() in MATRIX_PARTITIONED:
            from gensr.config import load_params

            ablation = load_params(ROOT / "params.yaml").ablation  # ablation.paradigms x ablation.strategies
            assert set(part.get_partition_keys()) == {f"{p}|{s}" for p in ablation.paradigms
                                                      for s in ablation.strategies}, key
        elif key.to_user_string() in SHARD_PARTITIONED:
            from gensr.config import load_params

            dims = {d.name: d.partitions_def.get_partition_keys() for d in part.partitions_defs}
            shards = load_params(ROOT / "params.yaml").scaleout.shards
            assert dims == {"paradigm": ["ar", "mgm", "fm"], "shard": [str(i) for i in range(shards)]}, key
        else:
            assert part is None, key


def test_paradigm_partitions_stand_on_all_their_shard_partitions():
    """candidate_samples[fm] depends on candidate_shards[fm|0..], and candidate_shards[fm|k] on base_checkpoints[fm]."""
    import dagster as dg

    graph = _graph()
    for child, parent in (("candidate_shards", "base_checkpoints"), ("candidate_samples", "candidate_shards"),
                          ("metric_shards", "candidate_samples"), ("metric_tables", "metric_shards")):
        mapping = graph.get_partition_mapping(dg.AssetKey(child), dg.AssetKey(parent))
        assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping), (child, parent, mapping)
    shards = graph.get(dg.AssetKey("candidate_shards")).partitions_def
    samples = graph.get(dg.AssetKey("candidate_samples")).partitions_def
    mapping = graph.get_partition_mapping(dg.AssetKey("candidate_samples"), dg.AssetKey("candidate_shards"))
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        samples.subset_with_partition_keys(["fm"]), samples, shards).partitions_subset.get_partition_keys()
    shard_keys = next(d.partitions_def for d in shards.partitions_defs if d.name == "shard").get_partition_keys()
    assert len(shard_keys) >= 2 and sorted(str(k) for k in upstream) == [f"fm|{k}" for k in shard_keys]


def test_every_asset_check_targets_a_known_asset():
    graph = _graph()
    targets = {c.asset_key.to_user_string() for c in graph.asset_check_keys}
    assert {"clean_corpus", "degraded_corpus", "metric_tables", "preference_pairs", "evaluation"} <= targets
    assert targets <= set(EXPECTED_ASSETS)


def test_every_check_of_a_partitioned_asset_is_partitioned_like_it():
    """So a run, and `gensr dagster-sync`, checks the partition it materialized and each partition keeps its result."""
    from gensr_dagster.definitions import defs

    graph = _graph()
    partitioned = 0
    for key in graph.asset_check_keys:
        spec = defs.get_asset_checks_def(key).get_spec_for_check_key(key)
        assert spec.partitions_def == graph.get(key.asset_key).partitions_def, key
        partitioned += spec.partitions_def is not None
    assert partitioned >= 5  # base_checkpoints, metric_tables, preference_pairs, evaluation, ablation


def test_dvc_stages_cover_the_pipeline_and_call_the_cli():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    expected = {"corpus", "degrade", "score_inputs", "train_codec", "train_base", "sample",
                "score_candidates", "pairs", "dpo", "evaluate", "evaluation_table", "confirm_corpus",
                "evaluate_base", "ablation", "ablation_summary", "singing_corpus", "singing_labels",
                "initial_voicefixer", "finetuned_voicefixer", "singing_evaluation"}
    assert expected <= set(stages)
    assert set(stages["ablation"]["matrix"]) == {"paradigm", "strategy"}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        assert body["cmd"].startswith("gensr "), name
        assert body.get("outs") or body.get("metrics"), f"stage {name} declares no outputs"


def test_stages_that_resume_from_shards_keep_them_across_dvc_repro():
    """DVC deletes a stage's outputs before it runs it, unless they are `persist`: without it an interrupted
    `make demo` lost every finished shard of score_candidates (the stages' own resume then had nothing to
    resume from). The stages remove stale shards themselves."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    resumable = {"degrade": "data/degraded", "sample": "data/candidates/${item}",
                 "score_candidates": "data/metrics/${item}"}
    for name, path in resumable.items():
        outs = stages[name].get("do", stages[name])["outs"]
        flags = next((o[path] for o in outs if isinstance(o, dict) and path in o), {})  # a bare path: no flags
        assert flags.get("persist") is True, f"{name}: {path} must be persist: true"
