"""`gensr dagster-sync`: what `dvc repro` built shows in Dagster as materializations (DVC stage, md5s, data
version, the asset's own metadata) with the asset checks' results, and a sync that finds nothing new adds nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from conftest import PARAMS, ROOT
from gensr_dagster import dvc_sync
from gensr_dagster.dvc_sync import STAGE_ASSETS, plan, read_lock, sync
from gensr_dagster.partitions import SHARD_ASSETS


def _graph():
    from gensr_dagster.definitions import defs

    return defs.resolve_asset_graph()


def _instance(tmp_path: Path) -> dg.DagsterInstance:
    """A real (sqlite) instance in its own DAGSTER_HOME, as `make dagster` uses."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "gensr_dagster" / "dagster.yaml").read_text())
    return dg.DagsterInstance.local_temp(str(home))


def _materializations(instance, asset: str, partition: str | None = None) -> list:
    f = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None)
    return [r.asset_materialization for r in instance.fetch_materializations(f, limit=100).records]


def _check_evaluations(instance, asset: str) -> dict[str, object]:
    """check name -> its latest evaluation record, for every check of `asset` that has one."""
    out = {}
    for key in _graph().asset_check_keys:
        if key.asset_key == dg.AssetKey(asset):
            record = instance.get_latest_asset_check_evaluation_record(key)
            if record is not None:
                out[key.name] = record
    return out


# --- the stage -> asset map --------------------------------------------------------------------------
def test_every_dvc_stage_builds_an_asset_and_every_asset_has_a_stage():
    graph = _graph()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_ASSETS)
    assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    # the shard partitions of sampling and scoring run only under Dagster; DVC runs those stages whole
    assert set(STAGE_ASSETS.values()) == assets - set(SHARD_ASSETS)
    assert set(SHARD_ASSETS.values()) <= set(STAGE_ASSETS.values())


def test_the_projects_dvc_lock_maps_onto_partitions_of_the_definitions():
    """The tracked dvc.lock (AR pipeline + ablation): foreach items become paradigm partitions, the ablation
    matrix paradigm x strategy keys; score_inputs and evaluation_table join every partition they feed."""
    targets, skipped = plan(read_lock(ROOT / "dvc.lock"), _graph())
    assert skipped == {}
    by_label = {t.label: [s.name for s in t.stages] for t in targets}
    assert by_label["base_checkpoints[ar]"] == ["train_base@ar"]
    assert by_label["metric_tables[ar]"] == ["score_candidates@ar", "score_inputs"]
    assert by_label["evaluation[ar]"] == ["evaluate@ar", "evaluation_table"]
    assert by_label["ablation[ar|single:wer]"] == ["ablation@ar-single:wer"]
    # the Dagster-only shard partitions: every shard of ar was done by the one stage run of ar
    shards = range(len(_graph().get(dg.AssetKey("metric_shards")).partitions_def.get_partition_keys()) // 3)
    for k in shards:
        assert by_label[f"candidate_shards[ar|{k}]"] == ["sample@ar"]
        assert by_label[f"metric_shards[ar|{k}]"] == ["score_candidates@ar"]
    whole = [t for t in targets if t.asset not in SHARD_ASSETS]
    assert len({t.data_version() for t in whole}) == len(whole)
    order = [t.asset for t in targets]
    assert order.index("clean_corpus") < order.index("degraded_corpus") < order.index("metric_tables")


# --- partitions, missing outputs, unknown partitions ---------------------------------------------------
def _lock(root: Path, stages: dict) -> None:
    body = {"schema": "2.0", "stages": {
        name: {"cmd": cmd, "outs": [{"path": p, "hash": "md5", "md5": md5} for p, md5 in outs.items()]}
        for name, (cmd, outs) in stages.items()}}
    (root / "dvc.lock").write_text(yaml.safe_dump(body, sort_keys=False))


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_partitioned_stages_report_their_partition_once(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS.read_text())
    _write(root / "reports/base/ar/summary.json", {"test": {"n_clips": 5, "path": "reports/base/ar/test/per_clip.parquet"}})
    verdict = {"dimensions_better": [], "dimensions_worse": []}
    _write(root / "reports/ablation/ar/single:wer/summary.json", {
        "paradigm": "ar", "strategy": "single:wer", "objective": "dpo", "train_seconds": 1.5, "n_train_pairs": 4,
        "mlflow_run_id": None, "evaluation": {"test": {"n_clips": 5, "target_met": False, "verdict": verdict,
                                                       "significantly_worse": []}}})
    (root / "models/ablation/ar/single:wer").mkdir(parents=True)
    (root / "data/candidates/ar").mkdir(parents=True)
    _lock(root, {
        "sample@ar": ("gensr sample --paradigm ar", {"data/candidates/ar": "e" * 32 + ".dir"}),
        "evaluate_base@ar": ("gensr evaluate-base --paradigm ar", {"reports/base/ar": "a" * 32 + ".dir"}),
        "ablation@ar-single:wer": ("gensr ablation --paradigm ar --strategy single:wer",
                                   {"models/ablation/ar/single:wer": "b" * 32 + ".dir",
                                    "reports/ablation/ar/single:wer": "c" * 32 + ".dir"}),
        "ablation@ar-single:nope": ("gensr ablation --paradigm ar --strategy single:nope", {}),
        "train_base@fm": ("gensr train-base --paradigm fm", {"models/base/fm": "d" * 32 + ".dir"}),
    })
    with _instance(tmp_path) as instance:
        r = sync(root, instance, verify=False)  # no DVC repo here: a hand-written lock
        n_shards = len(_graph().get(dg.AssetKey("candidate_shards")).partitions_def.get_partition_keys()) // 3
        shards = [f"candidate_shards[ar|{k}]" for k in range(n_shards)]
        assert sorted(r.reported) == sorted(shards + ["candidate_samples[ar]", "base_evaluation[ar]",
                                                      "ablation[ar|single:wer]"])
        assert r.reported.index(shards[-1]) < r.reported.index("candidate_samples[ar]")  # upstream first
        # a shard partition's work was done inside sample@ar's one run: reported so, with where its rows are
        (shard,) = _materializations(instance, "candidate_shards", "ar|0")
        assert shard.metadata["dvc/stage"].value == "sample@ar" and "one sample run" in shard.metadata["gensr/built_by"].value
        assert shard.metadata["table"].value.endswith("data/candidates/ar/manifest.parquet")
        assert "not a partition of ablation" in r.skipped["ablation@ar-single:nope"]
        assert "models/base/fm is in dvc.lock but not on disk" in r.skipped["base_checkpoints[fm]"]
        assert instance.get_materialized_partitions(dg.AssetKey("ablation")) == {"ar|single:wer"}
        assert instance.get_materialized_partitions(dg.AssetKey("base_evaluation")) == {"ar"}
        (m,) = _materializations(instance, "ablation", "ar|single:wer")
        assert m.metadata["test/improves"].value is False and m.metadata["objective"].value == "dpo"
        assert m.metadata["dvc/stage"].value == "ablation@ar-single:wer"
        assert _materializations(instance, "base_evaluation", "ar")[0].metadata["test/n_clips"].value == 5
        # the ablation's check ran once (no evaluation.json yet: nothing to judge) and is not run again
        (check,) = _check_evaluations(instance, "ablation").values()
        assert check.evaluation.passed and "0 single-metric evaluations" in check.evaluation.description
        assert check.partition == "ar|single:wer"
        assert r.checks == {"ablation[ar|single:wer]:single_metric_does_not_hack": True}
        again = sync(root, instance, verify=False)
        assert again.reported == [] and again.checks == {}
        assert sorted(again.unchanged) == sorted(["ablation[ar|single:wer]", "base_evaluation[ar]",
                                                  "candidate_samples[ar]", *shards])


def _base_summary(root: Path, paradigm: str, beats: bool) -> None:
    _write(root / f"models/base/{paradigm}/summary.json", {
        "train_seconds": 1.0, "final_loss": 0.5, "n_trainable_params": 10, "test": {},
        "beats_degraded": {"dnsmos_ovrl": beats, "pesq_wb": beats}})


def test_a_partitioned_assets_checks_judge_each_partition_dvc_built(tmp_path):
    """base_beats_degraded runs once per paradigm in dvc.lock, on that paradigm's files only, and each result is
    stored on its partition; fm's files on disk (no stage of it in dvc.lock) are not judged."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS.read_text())
    for paradigm, beats in (("ar", True), ("mgm", False), ("fm", False)):
        _base_summary(root, paradigm, beats)
    stages = {p: (f"gensr train-base --paradigm {p}", {f"models/base/{p}": c * 32 + ".dir"}) for p, c in
              (("ar", "a"), ("mgm", "b"))}
    _lock(root, {f"train_base@{p}": stage for p, stage in stages.items()})
    key = dg.AssetCheckKey(dg.AssetKey("base_checkpoints"), "base_beats_degraded")
    with _instance(tmp_path) as instance:
        r = sync(root, instance, verify=False)
        assert r.reported == ["base_checkpoints[ar]", "base_checkpoints[mgm]"]
        assert r.checks == {"base_checkpoints[ar]:base_beats_degraded": True,
                            "base_checkpoints[mgm]:base_beats_degraded": False}
        for paradigm, passed in (("ar", True), ("mgm", False)):
            record = dvc_sync._latest_check_record(instance, key, paradigm)
            assert record.partition == paradigm and record.evaluation.passed is passed
            run = instance.get_run_by_id(record.run_id)
            assert run.job_name == dvc_sync.SYNC_JOB
            assert run.status == dg.DagsterRunStatus.FAILURE  # a failed blocking check fails the run, as in Dagster
            assert record.evaluation.metadata["verdicts"].value.keys() == {paradigm}
            latest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key.asset_key, asset_partitions=[paradigm]), limit=1).records[0]
            assert record.evaluation.target_materialization_data.storage_id == latest.storage_id
        assert dvc_sync._latest_check_record(instance, key, "fm") is None

        # nothing new: no check runs again; mgm rebuilt (a new md5): only mgm is checked again
        assert sync(root, instance, verify=False).checks == {}
        _base_summary(root, "mgm", True)
        _lock(root, {"train_base@ar": stages["ar"],
                     "train_base@mgm": ("gensr train-base --paradigm mgm", {"models/base/mgm": "c" * 32 + ".dir"})})
        again = sync(root, instance, verify=False)
        assert again.reported == ["base_checkpoints[mgm]"]
        assert again.checks == {"base_checkpoints[mgm]:base_beats_degraded": True}
        assert dvc_sync._latest_check_record(instance, key, "ar").evaluation.passed


def test_a_check_context_carries_the_partition_as_a_run_gives_it():
    """An ablation partition arrives as its "<paradigm>|<strategy>" key, which the ablation check splits; a
    paradigm x shard partition as a MultiPartitionKey."""
    from gensr_dagster.partitions import split_ablation_key

    context = dvc_sync._check_context({}, "ar|single:wer")
    assert context.has_partition_key and split_ablation_key(context.partition_key) == ("ar", "single:wer")
    key = dg.MultiPartitionKey({"paradigm": "ar", "shard": "1"})
    assert dvc_sync._check_context({}, key).partition_key.keys_by_dimension == {"paradigm": "ar", "shard": "1"}
    assert not dvc_sync._check_context({}, None).has_partition_key


def test_a_summary_that_cannot_be_read_is_reported_as_such(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS.read_text())
    (root / "data/confirm").mkdir(parents=True)
    (root / "data/confirm/summary.json").write_text("{not json")
    _lock(root, {"confirm_corpus": ("gensr confirm-corpus", {"data/confirm": "e" * 32 + ".dir"})})
    with _instance(tmp_path) as instance:
        r = sync(root, instance, checks=False, verify=False)
        assert r.reported == ["confirm_set"] and "JSONDecodeError" in r.errors["confirm_set"]
        (m,) = _materializations(instance, "confirm_set")
        assert "JSONDecodeError" in m.metadata["gensr/metadata_error"].value


def test_no_dvc_lock_is_a_clear_error(tmp_path):
    with _instance(tmp_path) as instance:
        with pytest.raises(FileNotFoundError, match="run `dvc repro`"):
            sync(tmp_path, instance)


# --- end to end: a real `dvc repro`, synced, rerun, changed --------------------------------------------
def _project(root: Path, snr_db: list[float]) -> None:
    params = yaml.safe_load(PARAMS.read_text())
    params["corpus"].update(n_utterances=24, split={"train": 0.64, "pref": 0.2, "valid": 0.08, "test": 0.08})
    params["degrade"]["workers"] = 1
    params["degrade"]["noise"]["snr_db"] = snr_db
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.slow
def test_a_dvc_repro_shows_in_dagster_and_a_rerun_that_changed_nothing_adds_nothing(tmp_path):
    from dagster._core.definitions.data_version import extract_data_version_from_entry

    from gensr_dagster.assets import corpus, degrade
    from gensr_dagster.resources import ParamsResource

    root = tmp_path / "proj"
    root.mkdir()
    _project(root, [-5.0, 15.0])
    real = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stages = {name: {**real[name], "deps": [d for d in real[name]["deps"] if not d.startswith("src/")]}
              for name in ("corpus", "degrade")}  # the project's two stages, minus the code deps outside tmp
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "repro", "-q")
    lock = {s.name: s for s in read_lock(root / "dvc.lock")}

    with _instance(tmp_path) as instance:
        first = sync(root, instance)
        assert first.reported == ["clean_corpus", "degraded_corpus"] and first.errors == {}
        assert first.checks == {"clean_corpus:clean_corpus_integrity": True,
                                "degraded_corpus:degraded_aligned_with_clean": True,
                                "degraded_corpus:degraded_audio_finite": True}
        synced = {}
        for asset, stage in (("clean_corpus", "corpus"), ("degraded_corpus", "degrade")):
            record = instance.get_latest_data_version_record(dg.AssetKey(asset))
            m = record.asset_materialization
            assert m.metadata["dvc/stage"].value == stage
            assert m.metadata["dvc/md5"].value == lock[stage].outs  # each output's md5 as dvc.lock has it
            expected = dvc_sync.Target(asset, None, [lock[stage]]).data_version()
            assert extract_data_version_from_entry(record.event_log_entry) == dg.DataVersion(expected)
            assert "dvc repro" in m.description
            synced[asset] = m.metadata
            latest_id = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0].storage_id
            for name, check in _check_evaluations(instance, asset).items():
                assert check.evaluation.passed, name
                assert check.evaluation.target_materialization_data.storage_id == latest_id

        # the metadata is what the assets attach when Dagster materializes them from the same params
        twin = tmp_path / "twin"
        twin.mkdir()
        (twin / "params.yaml").write_text((root / "params.yaml").read_text())
        resource = ParamsResource(params_path=str(twin / "params.yaml"), overrides=[f"paths.data={twin / 'data'}"])
        result = dg.materialize([corpus.clean_corpus, degrade.degraded_corpus], resources={"params": resource})
        for asset, measured_by_dagster_only in (("clean_corpus", set()), ("degraded_corpus", {"seconds"})):
            own = result.asset_materializations_for_node(asset)[0].metadata
            got = {k: v for k, v in synced[asset].items() if not k.startswith("dvc/")}
            assert set(got) == set(own) - measured_by_dagster_only
            for key in set(got) - {"path"}:
                assert got[key] == own[key], key

        # nothing changed: neither a second sync nor a no-op `dvc repro` adds an event
        lock_bytes = (root / "dvc.lock").read_bytes()
        assert sync(root, instance).reported == []
        _dvc(root, "repro", "-q")
        assert (root / "dvc.lock").read_bytes() == lock_bytes
        again = sync(root, instance)
        assert again.reported == [] and again.checks == {}
        assert [len(_materializations(instance, a)) for a in ("clean_corpus", "degraded_corpus")] == [1, 1]

        # a degrade param changes: only degraded_corpus gets a new version, and only its checks run again
        _project(root, [0.0, 15.0])
        _dvc(root, "repro", "-q")
        changed = sync(root, instance)
        assert changed.reported == ["degraded_corpus"] and changed.unchanged == ["clean_corpus"]
        assert set(changed.checks) == {"degraded_corpus:degraded_aligned_with_clean",
                                       "degraded_corpus:degraded_audio_finite"}
        new, old = _materializations(instance, "degraded_corpus")
        assert new.tags[dvc_sync.DATA_VERSION_TAG] != old.tags[dvc_sync.DATA_VERSION_TAG]
        assert len(_materializations(instance, "clean_corpus")) == 1

        # an output edited after the repro no longer has dvc.lock's md5: `dvc status` says so and it is skipped
        next((root / "data" / "degraded" / "wav").iterdir()).unlink()
        tampered = sync(root, instance)
        assert tampered.reported == [] and "`dvc status`: data/degraded modified" in tampered.skipped["degraded_corpus"]
        assert len(_materializations(instance, "degraded_corpus")) == 2


def test_the_cli_needs_dagster_home_and_prints_what_it_reported(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gensr.cli import app

    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS.read_text())
    _write(root / "reports/base/ar/summary.json", {"test": {"n_clips": 5, "path": "x"}})
    _lock(root, {"evaluate_base@ar": ("gensr evaluate-base --paradigm ar", {"reports/base/ar": "a" * 32 + ".dir"}),
                 "train_base@fm": ("gensr train-base --paradigm fm", {"models/base/fm": "d" * 32 + ".dir"})})
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    out = CliRunner().invoke(app, ["dagster-sync", "--root", str(root), "--no-verify"])
    assert out.exit_code == 2 and "DAGSTER_HOME" in out.output
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    out = CliRunner().invoke(app, ["dagster-sync", "--root", str(root), "--no-verify"])
    assert out.exit_code == 0, out.output
    assert "reported base_evaluation[ar]" in out.output and "skipped base_checkpoints[fm]" in out.output
    assert "1 materializations reported, 0 unchanged, 1 skipped" in out.output
    out = CliRunner().invoke(app, ["dagster-sync", "--root", str(root), "--no-verify"])
    assert "0 materializations reported, 1 unchanged" in out.output
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("base_evaluation")) == {"ar"}
