"""MLflow lineage: a DPO run names the run that trained its base checkpoint (found by the file's sha256), and
the codec, base and aligned checkpoints are artifacts of their runs; the codec has its own experiment."""

from __future__ import annotations

import json

import pytest

from gensr import tracking
from gensr.storage import file_sha256


def _client(mlruns):
    return tracking.configure(mlruns).MlflowClient()


def _checkpoint_artifact(client, run_id, tmp_path, name="restorer.pt") -> bytes:
    paths = [a.path for a in client.list_artifacts(run_id, tracking.CHECKPOINT_ARTIFACTS)]
    assert paths == [f"{tracking.CHECKPOINT_ARTIFACTS}/{name}"]
    local = client.download_artifacts(run_id, paths[0], str(tmp_path / run_id))
    return open(local, "rb").read()


@pytest.mark.slow
def test_dpo_run_names_its_base_run_and_both_log_their_checkpoints(tmp_path, project_params):
    from test_align import tiny_dpo_project, tiny_restorer

    from gensr.layout import base_checkpoint
    from gensr.stages.dpo import aligned_dir, train_dpo
    from gensr.stages.pairs import pairs_dir
    from gensr.stages.restorers import _run_and_record

    params = tiny_dpo_project(tmp_path, project_params, steps=2)
    base_ckpt = base_checkpoint(params, "fm")

    def train(run, mlflow):  # the base stage's recording, with a tiny restorer in place of the SFT fit
        tiny_restorer("fm").save(base_ckpt)
        return {"paradigm": "fm", "checkpoint": str(base_ckpt), "checkpoint_sha256": file_sha256(base_ckpt)}

    base_summary = _run_and_record(params, base_ckpt.parent, "sft", "sft-fm", "fm", {"paradigm": "fm"},
                                   pairs_dir(params, "fm", "multi") / "pairs.parquet", train, track=True,
                                   dagster_run_id=None)
    summary = train_dpo(params, "fm", "multi")

    client = _client(tmp_path / "mlruns")
    dpo = client.get_run(summary["mlflow_run_id"])
    (base,) = client.search_runs([client.get_experiment_by_name("gensr-sft").experiment_id])
    assert base_summary["mlflow_url"].split("/runs/")[1].startswith(base.info.run_id)
    assert dpo.data.tags[tracking.TAG_BASE_RUN] == base.info.run_id
    note = dpo.data.tags[tracking.NOTE_TAG]
    assert tracking.ui_url(base.info.experiment_id, base.info.run_id) in note and "sft-fm" in note
    # each checkpoint is an artifact of the run that wrote it, tagged with its sha256
    aligned_ckpt = aligned_dir(params, "fm", "multi") / "restorer.pt"
    assert base.data.tags[tracking.TAG_CHECKPOINT] == file_sha256(base_ckpt)
    assert dpo.data.tags[tracking.TAG_CHECKPOINT] == file_sha256(aligned_ckpt) != file_sha256(base_ckpt)
    assert _checkpoint_artifact(client, base.info.run_id, tmp_path) == base_ckpt.read_bytes()
    assert _checkpoint_artifact(client, dpo.info.run_id, tmp_path) == aligned_ckpt.read_bytes()


def test_base_run_made_before_checkpoint_tags_is_found_through_its_summary(tmp_path):
    """An older store: the base run has no checkpoint tag, but the summary.json beside the checkpoint names it
    and records the same sha256. A checkpoint whose bytes changed since then finds nothing."""
    mlruns = tmp_path / "mlruns"
    ckpt = tmp_path / "models" / "base" / "ar" / "restorer.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights v1")
    with tracking.start_run(mlruns, "sft", "sft-ar") as base:
        base_url = tracking.run_url(mlruns, base)
    (ckpt.parent / "summary.json").write_text(json.dumps({"checkpoint_sha256": file_sha256(ckpt),
                                                          "mlflow_url": base_url}))
    with tracking.start_run(mlruns, "dpo", "dpo-ar-multi") as dpo:
        assert tracking.link_base_run(mlruns, dpo.info.run_id, ckpt) == base.info.run_id
    client = _client(mlruns)
    assert client.get_run(dpo.info.run_id).data.tags[tracking.TAG_BASE_RUN] == base.info.run_id

    ckpt.write_bytes(b"weights v2")  # retrained outside this store: the summary's sha256 no longer matches
    assert tracking.find_checkpoint_run(mlruns, ckpt) is None
    with tracking.start_run(mlruns, "dpo", "dpo-ar-multi") as orphan:
        assert tracking.link_base_run(mlruns, orphan.info.run_id, ckpt) is None
    tags = client.get_run(orphan.info.run_id).data.tags
    assert tracking.TAG_BASE_RUN not in tags
    assert "no run of this store wrote that checkpoint" in tags[tracking.NOTE_TAG]
    assert file_sha256(ckpt)[:12] in tags[tracking.NOTE_TAG]


def test_a_tagged_run_wins_and_a_deleted_one_is_skipped(tmp_path):
    """Two runs wrote the same bytes (a byte-reproducible retrain): the newer live one is the base."""
    mlruns = tmp_path / "mlruns"
    ckpt = tmp_path / "restorer.pt"
    ckpt.write_bytes(b"same weights")
    ids = []
    for name in ("first", "second"):
        with tracking.start_run(mlruns, "sft", name) as run:
            assert tracking.log_checkpoint(mlruns, run.info.run_id, ckpt) == file_sha256(ckpt)
            ids.append(run.info.run_id)
    assert tracking.find_checkpoint_run(mlruns, ckpt).info.run_id == ids[1]
    _client(mlruns).delete_run(ids[1])
    assert tracking.find_checkpoint_run(mlruns, ckpt).info.run_id == ids[0]


def test_a_run_with_a_checkpoint_keeps_it_and_names_the_run_it_starts_from(tmp_path):
    """What every training stage records (tracking.run_with_checkpoint): the file as an artifact, the run's id and
    link in the summary, and for a run that starts from a checkpoint, the run that wrote that one."""
    mlruns = tmp_path / "mlruns"
    first, second = tmp_path / "initial.pt", tmp_path / "tuned.pt"

    def body(path, data):
        def write(run, mlflow):
            path.write_bytes(data)
            mlflow.log_metric("loss", 1.0)
            return {"checkpoint": str(path)}
        return write

    made = tracking.run_with_checkpoint(mlruns, "voicefixer", "initial", body(first, b"v1"))
    tuned = tracking.run_with_checkpoint(mlruns, "voicefixer", "tuned", body(second, b"v2"), starts_from=first)
    client = _client(mlruns)
    assert _checkpoint_artifact(client, made["mlflow_run_id"], tmp_path, "initial.pt") == b"v1"
    assert _checkpoint_artifact(client, tuned["mlflow_run_id"], tmp_path, "tuned.pt") == b"v2"
    assert "base_mlflow_run_id" not in made and tuned["base_mlflow_run_id"] == made["mlflow_run_id"]
    run = client.get_run(tuned["mlflow_run_id"])
    assert run.data.tags[tracking.TAG_BASE_RUN] == made["mlflow_run_id"]
    assert tuned["mlflow_url"] == tracking.ui_url(run.info.experiment_id, run.info.run_id)


@pytest.mark.slow
def test_a_tiny_codec_run_lands_in_its_own_experiment_with_its_checkpoint(tmp_path, monkeypatch):
    """`gensr train-codec` logs into gensr-codec (with its description), never beside the restorers in gensr-sft."""
    from test_models import synthetic_clip, tiny_params

    import gensr.train.data
    from gensr.layout import degraded_manifest
    from gensr.stages import restorers

    params = tiny_params([f"paths.data={tmp_path / 'data'}", f"paths.models={tmp_path / 'models'}",
                          f"paths.mlruns={tmp_path / 'mlruns'}", "restorers.threads=1"])
    degraded_manifest(params).parent.mkdir(parents=True)
    degraded_manifest(params).write_bytes(b"the data hash reads it")
    monkeypatch.setattr(gensr.train.data, "load_paired_clips", lambda *_: [synthetic_clip(i) for i in range(4)])
    monkeypatch.setattr(restorers, "codec_ceiling", lambda *_: {})  # the metric suite is tested elsewhere
    summary = restorers.train_codec(params)

    client = _client(tmp_path / "mlruns")
    run = client.get_run(summary["mlflow_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == tracking.EXPERIMENTS["codec"] == "gensr-codec"
    assert experiment.tags[tracking.NOTE_TAG] == tracking.EXPERIMENT_DESCRIPTIONS["gensr-codec"]
    assert client.get_experiment_by_name("gensr-sft") is None
    assert run.info.run_name == "codec" and run.data.params["codec.model.latent_dim"] == "8"
    assert "final_loss" in run.data.metrics
    assert f"/experiments/{experiment.experiment_id}/runs/{run.info.run_id}" in summary["mlflow_url"]
    codec = restorers.codec_checkpoint(params)
    assert run.data.tags[tracking.TAG_CHECKPOINT] == file_sha256(codec) == summary["checkpoint_sha256"]
    assert _checkpoint_artifact(client, run.info.run_id, tmp_path, "codec.pt") == codec.read_bytes()
