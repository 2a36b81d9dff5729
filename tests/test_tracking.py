"""MLflow conventions: sqlite store under mlruns/, artifacts beside it, standard tags."""

from __future__ import annotations

from gensr import tracking


def test_run_is_tagged_and_stored_in_sqlite(tmp_path):
    mlruns = tmp_path / "mlruns"
    data = tmp_path / "data.txt"
    data.write_text("abc")
    with tracking.start_run(
        mlruns, "sft", "unit", params={"a": {"b": 1}}, data_paths=(data,), dagster_run_id="dg-123"
    ) as run:
        run_id = run.info.run_id
        tracking.configure(mlruns).log_metric("loss", 0.5)
    assert (mlruns / "mlflow.db").is_file()
    client = tracking.configure(mlruns).MlflowClient()
    got = client.get_run(run_id)
    assert got.data.params["a.b"] == "1"
    assert got.data.tags[tracking.TAG_DAGSTER_RUN] == "dg-123"
    assert got.data.tags[tracking.TAG_DATA_HASH] == tracking.data_hash(data)
    assert tracking.TAG_GIT_SHA in got.data.tags
    exp = client.get_experiment(got.info.experiment_id)
    assert exp.name == tracking.EXPERIMENTS["sft"]
    assert exp.artifact_location.startswith((mlruns / "artifacts").as_uri())


def test_data_hash_changes_with_content(tmp_path):
    f = tmp_path / "x"
    f.write_text("1")
    h1 = tracking.data_hash(f)
    f.write_text("2")
    assert tracking.data_hash(f) != h1


def _start_one_run(mlruns: str, barrier) -> str:
    barrier.wait()
    with tracking.start_run(mlruns, "dpo", "concurrent") as run:
        return run.info.experiment_id


def test_stages_starting_together_on_a_fresh_store_all_log(tmp_path):
    """Parallel stages on a new store: one schema migration and one experiment, no process fails."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(3)
    with ProcessPoolExecutor(3, mp_context=ctx) as pool:
        ids = list(pool.map(_start_one_run, [str(tmp_path)] * 3, [barrier] * 3))
    assert len(set(ids)) == 1
    mlflow = tracking.configure(tmp_path)
    runs = mlflow.search_runs([ids[0]], output_format="list")
    assert len(runs) == 3


def test_experiments_carry_a_description_and_the_model_training_kind(tmp_path):
    """The UI shows `mlflow.note.content` as the experiment's description; `codec` has its own experiment."""
    mlruns = tmp_path / "mlruns"
    with tracking.start_run(mlruns, "codec", "codec") as run:
        exp_id = run.info.experiment_id
    exp = tracking.configure(mlruns).MlflowClient().get_experiment(exp_id)
    assert exp.name == "gensr-codec"
    assert exp.tags[tracking.NOTE_TAG] == tracking.EXPERIMENT_DESCRIPTIONS["gensr-codec"]
    assert exp.tags[tracking.KIND_TAG] == tracking.KIND_MODEL_TRAINING
    # every project experiment has a description
    assert set(tracking.EXPERIMENTS.values()) <= set(tracking.EXPERIMENT_DESCRIPTIONS)
    assert all(len(d) > 40 for d in tracking.EXPERIMENT_DESCRIPTIONS.values())


def test_an_older_experiment_gets_its_description_but_an_edited_one_is_kept(tmp_path):
    mlruns = tmp_path / "mlruns"
    mlflow = tracking.configure(mlruns)
    old = mlflow.create_experiment("gensr-sft")  # as a store made before descriptions existed
    edited = mlflow.create_experiment("gensr-dpo", tags={tracking.NOTE_TAG: "my own notes"})
    assert tracking.get_or_create_experiment(mlruns, "sft") == old
    assert tracking.get_or_create_experiment(mlruns, "dpo") == edited
    client = mlflow.MlflowClient()
    assert client.get_experiment(old).tags[tracking.NOTE_TAG] == tracking.EXPERIMENT_DESCRIPTIONS["gensr-sft"]
    assert client.get_experiment(edited).tags[tracking.NOTE_TAG] == "my own notes"
    assert client.get_experiment(edited).tags[tracking.KIND_TAG] == tracking.KIND_MODEL_TRAINING


def test_run_url_opens_the_model_training_view_on_the_configured_port(monkeypatch):
    from types import SimpleNamespace

    run = SimpleNamespace(info=SimpleNamespace(experiment_id="7", run_id="abc123"))
    monkeypatch.delenv(tracking.PORT_ENV, raising=False)
    assert tracking.run_url("mlruns", run) == \
        "http://127.0.0.1:5000/#/experiments/7/runs/abc123?workflowType=machine_learning"
    monkeypatch.setenv(tracking.PORT_ENV, "5123")
    assert tracking.run_url("mlruns", run) == \
        "http://127.0.0.1:5123/#/experiments/7/runs/abc123?workflowType=machine_learning"
    assert tracking.ui_url() == "http://127.0.0.1:5123/#/experiments?workflowType=machine_learning"
    assert tracking.ui_url("7") == "http://127.0.0.1:5123/#/experiments/7?workflowType=machine_learning"
    monkeypatch.setenv(tracking.PORT_ENV, "http")
    import pytest

    with pytest.raises(ValueError, match="GENSR_MLFLOW_PORT"):
        tracking.ui_url()


def test_experiment_url_is_read_only_and_names_the_experiment(tmp_path, monkeypatch, capsys):
    """What `make mlflow-ui` prints: the ablation experiment's model-training view (the list before it exists)."""
    monkeypatch.delenv(tracking.PORT_ENV, raising=False)
    mlruns = tmp_path / "mlruns"
    assert tracking.experiment_url(mlruns, "ablation") == tracking.ui_url()
    assert not mlruns.exists()  # no store is created just to print a link
    exp_id = tracking.get_or_create_experiment(mlruns, "ablation")
    assert tracking.experiment_url(mlruns, "ablation") == \
        f"http://127.0.0.1:5000/#/experiments/{exp_id}?workflowType=machine_learning"
    tracking._main(["url", "ablation", "--mlruns", str(mlruns)])
    assert capsys.readouterr().out.strip() == tracking.experiment_url(mlruns, "ablation")
