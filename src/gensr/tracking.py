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
    "codec": "gensr-codec",
    "sft": "gensr-sft",
    "dpo": "gensr-dpo",
    "ablation": "gensr-ablation",
    "voicefixer": "gensr-voicefixer",
}
# Shown on each experiment's page in the UI (the `mlflow.note.content` tag): written when the experiment is
# created, and added to an older one that has none (a description edited in the UI is kept).
EXPERIMENT_DESCRIPTIONS = {
    "gensr-codec": "The spectral RVQ codec that the AR and MGM restorers predict tokens of: one run per `gensr "
                   "train-codec`, with its training curves and its ceiling (clean codes decoded, scored against the "
                   "degraded inputs on the test split).",
    "gensr-sft": "The base restorers, one run per paradigm (ar, mgm, fm) and `gensr train-base`: supervised training "
                 "on (degraded, clean) pairs, with loss curves, audio examples and spectrograms. Every DPO run starts "
                 "from one of them.",
    "gensr-dpo": "DPO alignment of a base restorer on multi-metric (unanimous) preference pairs, one run per paradigm "
                 "x strategy: DPO diagnostics (rewards/chosen, rewards/margins, rewards/accuracies), held-out pair "
                 "metrics, and the final test evaluation against the base (eval/<metric>/diff with CIs).",
    "gensr-ablation": "The ablation: one parent run per ablation (its budget, table, figure and verdict tags) with "
                      "one nested child per paradigm x strategy (multi, single-metric, SFT-only controls), all "
                      "trained with the same budget; every child logs the whole suite under the same keys "
                      "(<split>/<metric>/diff), so Compare lines the strategies up.",
    "gensr-voicefixer": "The singing application: the initial Voicefixer trained on speech, then fine-tuned on "
                        "pseudo-clean singing labels made by the aligned restorer.",
}
NOTE_TAG = "mlflow.note.content"
# MLflow 3 opens experiments in its GenAI view (traces, judges) unless told they are model training.
KIND_TAG, KIND_MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
PORT_ENV, DEFAULT_PORT = "GENSR_MLFLOW_PORT", 5000
ML_VIEW = "workflowType=machine_learning"
TAG_GIT_SHA = "gensr.git_sha"
TAG_DATA_HASH = "gensr.data_hash"
TAG_DAGSTER_RUN = "gensr.dagster_run_id"
TAG_STAGE = "gensr.stage"
# A run that wrote a checkpoint carries the file's sha256 (and the file, under checkpoint/); a run that starts from a
# checkpoint (DPO from its base) finds the run that made it by that sha256 and names it in TAG_BASE_RUN.
TAG_CHECKPOINT = "gensr.checkpoint_sha256"
TAG_BASE_RUN = "gensr.base_run_id"
CHECKPOINT_ARTIFACTS = "checkpoint"


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


def experiment_tags(name: str) -> dict[str, str]:
    """Tags every project experiment carries: its description and the model-training kind."""
    tags = {KIND_TAG: KIND_MODEL_TRAINING}
    if name in EXPERIMENT_DESCRIPTIONS:
        tags[NOTE_TAG] = EXPERIMENT_DESCRIPTIONS[name]
    return tags


def get_or_create_experiment(mlruns_dir: str | Path, kind: str) -> str:
    """The experiment of `kind` (created with its tags); an older one missing a tag gets it."""
    mlflow = configure(mlruns_dir)
    name = EXPERIMENTS.get(kind, kind)
    tags = experiment_tags(name)
    with _store_lock(mlruns_dir):
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            return mlflow.create_experiment(name, artifact_location=f"{artifact_root(mlruns_dir)}/{name}", tags=tags)
        client = mlflow.tracking.MlflowClient()
        for key, value in tags.items():
            if key not in exp.tags:  # never overwrite a description a user edited in the UI
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id


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


def ui_port() -> int:
    """The port `make mlflow-ui` serves on: $GENSR_MLFLOW_PORT, else 5000."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{PORT_ENV}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


def ui_url(experiment_id: str | None = None, run_id: str | None = None, port: int | None = None) -> str:
    """A link into the MLflow UI's model-training view: the experiment list, an experiment, or a run."""
    base = f"http://127.0.0.1:{port or ui_port()}/#/experiments"
    if experiment_id is None:
        return f"{base}?{ML_VIEW}"
    path = f"{base}/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{path}?{ML_VIEW}"


def run_url(mlruns_dir: str | Path, run) -> str:
    """Link shown in Dagster metadata and summaries; resolves when `make mlflow-ui` is running."""
    return ui_url(run.info.experiment_id, run.info.run_id)


def experiment_url(mlruns_dir: str | Path, kind: str) -> str:
    """The model-training view of the experiment of `kind`, or of the experiment list when it does not exist yet.

    Read-only: a missing store is not created."""
    name = EXPERIMENTS.get(kind, kind)
    if not (Path(mlruns_dir) / "mlflow.db").is_file():
        return ui_url()
    exp = configure(mlruns_dir).get_experiment_by_name(name)
    return ui_url(exp.experiment_id) if exp is not None else ui_url()


def log_checkpoint(mlruns_dir: str | Path, run_id: str, checkpoint: str | Path) -> str:
    """Log `checkpoint` as an artifact of the run (checkpoint/<file name>) and tag the run with its sha256."""
    from gensr.storage import file_sha256

    client = configure(mlruns_dir).MlflowClient()
    sha = file_sha256(checkpoint)
    client.log_artifact(run_id, str(checkpoint), CHECKPOINT_ARTIFACTS)
    client.set_tag(run_id, TAG_CHECKPOINT, sha)
    return sha


def find_checkpoint_run(mlruns_dir: str | Path, checkpoint: str | Path):
    """The live run that wrote `checkpoint`, found by the file's sha256, or None.

    First the newest run tagged with that sha256 (`log_checkpoint`); else, for runs made before checkpoints were
    tagged, the run named by the summary.json beside the checkpoint when that summary records the same sha256."""
    import json
    import re

    from gensr.storage import file_sha256

    sha = file_sha256(checkpoint)
    client = configure(mlruns_dir).MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if experiments:
        found = client.search_runs(experiments, f"tags.`{TAG_CHECKPOINT}` = '{sha}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            return found[0]
    summary = Path(checkpoint).parent / "summary.json"
    try:
        recorded = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("checkpoint_sha256") != sha:
        return None
    run_id = recorded.get("mlflow_run_id")
    if not run_id:
        match = re.search(r"/runs/([0-9a-f]{32})", str(recorded.get("mlflow_url", "")))
        run_id = match.group(1) if match else None
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:  # a summary from another store
        return None
    return run if run.info.lifecycle_stage == "active" else None


def link_base_run(mlruns_dir: str | Path, run_id: str, base_checkpoint: str | Path) -> str | None:
    """Name the run that trained `base_checkpoint` on run `run_id`: the TAG_BASE_RUN tag and a line with a link in
    its description. Returns the base run's id, or None when this store holds no run of that checkpoint (the
    description then says so)."""
    from gensr.storage import file_sha256

    client = configure(mlruns_dir).MlflowClient()
    base = find_checkpoint_run(mlruns_dir, base_checkpoint)
    sha = file_sha256(base_checkpoint)[:12]
    if base is None:
        line = f"Starts from `{base_checkpoint}` (sha256 {sha}…); no run of this store wrote that checkpoint."
    else:
        client.set_tag(run_id, TAG_BASE_RUN, base.info.run_id)
        experiment = client.get_experiment(base.info.experiment_id).name
        line = (f"Starts from `{base_checkpoint}` (sha256 {sha}…), trained in run "
                f"[{base.info.run_name or base.info.run_id}]({ui_url(base.info.experiment_id, base.info.run_id)}) "
                f"of `{experiment}`.")
    note = client.get_run(run_id).data.tags.get(NOTE_TAG)
    client.set_tag(run_id, NOTE_TAG, f"{note}\n\n{line}" if note else line)
    return None if base is None else base.info.run_id


def run_with_checkpoint(mlruns_dir: str | Path, kind: str, run_name: str, body, *,
                        starts_from: str | Path | None = None, **start_run_args) -> dict:
    """`body(run, mlflow)` inside a new run of `kind` (`start_run_args` go to `start_run`): every stage that trains
    a checkpoint records it this way. The summary `body` returns names the checkpoint it wrote, logged as an
    artifact of the run (`log_checkpoint`); the summary gains the run's id and link. A run that `starts_from` a
    checkpoint (DPO from its base, fine-tuning from the initial model) names the run that wrote it first
    (`link_base_run`), and its id goes into the summary as `base_mlflow_run_id` (None when no run of this store
    wrote that checkpoint)."""
    mlflow = configure(mlruns_dir)
    with start_run(mlruns_dir, kind, run_name, **start_run_args) as run:
        base_run = link_base_run(mlruns_dir, run.info.run_id, starts_from) if starts_from is not None else None
        summary = body(run, mlflow)
        log_checkpoint(mlruns_dir, run.info.run_id, summary["checkpoint"])
        summary["mlflow_run_id"] = run.info.run_id
        summary["mlflow_url"] = run_url(mlruns_dir, run)
        if starts_from is not None:
            summary["base_mlflow_run_id"] = base_run
    return summary


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


def _main(argv: list[str] | None = None) -> None:
    """`python -m gensr.tracking url [kind] [--mlruns DIR]`: print a model-training-view URL (make mlflow-ui)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gensr.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    url = sub.add_parser("url", help="print the UI link of an experiment (model-training view)")
    url.add_argument("kind", nargs="?", default=None, help=f"one of {sorted(EXPERIMENTS)}; none = the list")
    url.add_argument("--mlruns", default="mlruns")
    args = parser.parse_args(argv)
    print(experiment_url(args.mlruns, args.kind) if args.kind else ui_url())


if __name__ == "__main__":
    _main()
