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
