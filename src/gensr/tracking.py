"""MLflow conventions: one sqlite backend per project, artifacts beside it, standard tags.

Every training run goes through `start_run`, which tags it with the git sha, the data hash
and the Dagster run id (when there is one). Lightning attaches to the same run with
`lightning_logger(run)`; nobody exports MLFLOW_RUN_ID.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Iterator, Mapping

EXPERIMENTS = {
    "sft": "gensr-sft",
    "dpo": "gensr-dpo",
    "ablation": "gensr-ablation",
    "voicefixer": "gensr-voicefixer",
}
TAG_GIT_SHA = "gensr.git_sha"
TAG_DATA_HASH = "gensr.data_hash"
TAG_DAGSTER_RUN = "gensr.dagster_run_id"
TAG_STAGE = "gensr.stage"


def tracking_uri(mlruns_dir: str | Path) -> str:
    """Absolute sqlite URI; MLflow 3.17's file store is in maintenance mode."""
    return f"sqlite:///{Path(mlruns_dir).resolve() / 'mlflow.db'}"


def artifact_root(mlruns_dir: str | Path) -> str:
    return (Path(mlruns_dir).resolve() / "artifacts").as_uri()


def git_sha(cwd: str | Path = ".") -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except Exception:
        return "unknown"


def data_hash(*paths: str | Path) -> str:
    """Short content hash of files (or of every file under folders), order-independent of walk."""
    h = hashlib.sha256()
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    for f in files:
        h.update(str(f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


_READY: set[str] = set()


@contextlib.contextmanager
def _store_lock(mlruns_dir: str | Path) -> Iterator[None]:
    """An exclusive lock across processes on the store folder.

    Two stages that start together on a fresh store (e.g. Dagster partitions in parallel) would both run
    MLflow's schema migrations on the same sqlite file, and the second one fails ("Online migration
    expected to match one row"). They would also both create the same experiment."""
    import fcntl

    with open(Path(mlruns_dir) / ".store.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def configure(mlruns_dir: str | Path):
    """Point MLflow at the project store (created or migrated under a lock) and return the mlflow module."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    Path(mlruns_dir).mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(mlruns_dir)
    mlflow.set_tracking_uri(uri)
    if uri not in _READY:
        with _store_lock(mlruns_dir):
            mlflow.tracking.MlflowClient(uri).search_experiments(max_results=1)  # creates / migrates the schema
        _READY.add(uri)
    return mlflow


def get_or_create_experiment(mlruns_dir: str | Path, kind: str) -> str:
    mlflow = configure(mlruns_dir)
    name = EXPERIMENTS.get(kind, kind)
    with _store_lock(mlruns_dir):
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return mlflow.create_experiment(name, artifact_location=f"{artifact_root(mlruns_dir)}/{name}")


@contextlib.contextmanager
def start_run(
    mlruns_dir: str | Path,
    kind: str,
    run_name: str,
    *,
    params: Mapping | None = None,
    tags: Mapping[str, str] | None = None,
    data_paths: tuple[str | Path, ...] = (),
    dagster_run_id: str | None = None,
    parent_run_id: str | None = None,
) -> Iterator:
    """Start (and end) an MLflow run with the project's standard tags."""
    mlflow = configure(mlruns_dir)
    exp_id = get_or_create_experiment(mlruns_dir, kind)
    all_tags = {TAG_GIT_SHA: git_sha(), TAG_STAGE: kind}
    if data_paths:
        all_tags[TAG_DATA_HASH] = data_hash(*data_paths)
    dagster_run_id = dagster_run_id or os.environ.get("DAGSTER_RUN_ID")
    if dagster_run_id:
        all_tags[TAG_DAGSTER_RUN] = dagster_run_id
    all_tags.update(tags or {})
    nested = parent_run_id is not None
    with mlflow.start_run(
        experiment_id=exp_id, run_name=run_name, tags=all_tags, nested=nested, parent_run_id=parent_run_id
    ) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        yield run


def flatten(tree: Mapping, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_url(mlruns_dir: str | Path, run) -> str:
    """Link shown in Dagster metadata; resolves when `make mlflow-ui` is running."""
    return f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def lightning_logger(mlruns_dir: str | Path, run):
    """An MLFlowLogger attached to an existing run (never falls back to the file store)."""
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(
        experiment_name=None or _experiment_name(mlruns_dir, run),
        tracking_uri=tracking_uri(mlruns_dir),
        run_id=run.info.run_id,
        log_model=False,
    )


def _experiment_name(mlruns_dir, run) -> str:
    mlflow = configure(mlruns_dir)
    return mlflow.get_experiment(run.info.experiment_id).name
