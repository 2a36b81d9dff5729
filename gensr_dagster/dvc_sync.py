"""`gensr dagster-sync`: the Dagster UI shows what `dvc repro` built, without running anything again.

Dagster did not run DVC's stages, so it learns of them as runless asset events, its API for materializations
made outside it (`DagsterInstance.report_runless_asset_event`):
- one AssetMaterialization per asset partition whose DVC stages are in dvc.lock with every output on disk,
  carrying the stage names, each output's md5 from dvc.lock, a DataVersion made of those md5s, and the metadata
  the asset attaches when Dagster materializes it (read back from the stage's files: gensr_dagster.dvc_metadata);
- one AssetCheckEvaluation per asset check of those assets: the real check function, run on the files (every
  check here only reads), reported against the asset's latest materialization. A check of a partitioned asset
  is partitioned like it (gensr_dagster.partitions.partitioned_check): it runs once per partition DVC built, with
  that partition as its context's, and is reported against that partition's latest materialization, so each
  partition shows its own result (`base_beats_degraded` on ar judges models/base/ar only). The evaluations of
  one sync are stored by one in-process run of the one-op job `gensr_dvc_sync` (SYNC_JOB), not as runless
  events: Dagster 1.13 stores one runless evaluation per check partition (a second one breaks a unique index of
  its check table), and the run lists in the UI what each sync checked.

Only what changed is reported: a partition whose data version equals that of its latest DVC-reported
materialization is skipped, and so is a check already evaluated against the latest materialization. `make demo`
runs it after `dvc repro` (not as a DVC stage: see the Makefile), so a rerun that changed nothing adds no event.

Stages map to assets by name (STAGE_ASSETS) and to partitions by their command's `--paradigm` / `--strategy`.
A stage without them that feeds a partitioned asset (score_inputs, evaluation_table) joins every partition of it.
The Dagster-only shard assets (candidate_shards, metric_shards: paradigm x shard) have no stage of their own:
`sample@<p>` and `score_candidates@<p>` do every shard of paradigm p in one run, so each shard partition of p is
reported as built by that stage (SHARD_STAGES), with the same data version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from collections import defaultdict
from pathlib import Path
from typing import Callable

import dagster as dg
import yaml

# The tags Dagster itself reads a materialization's data version from (the webserver's external-asset
# endpoint sets the same two).
from dagster._core.definitions.data_version import DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG

SOURCE_TAG, SOURCE = "gensr/source", "dvc"
SYNC_JOB = "gensr_dvc_sync"

# dvc.yaml stage (before any @item) -> the Dagster asset it builds; tests/test_dagster_sync.py checks that every
# stage of dvc.yaml is here and names an asset of the definitions.
STAGE_ASSETS = {
    "corpus": "clean_corpus", "degrade": "degraded_corpus", "confirm_corpus": "confirm_set",
    "score_inputs": "metric_tables", "score_candidates": "metric_tables",
    "train_codec": "codec_checkpoint", "train_base": "base_checkpoints", "sample": "candidate_samples",
    "pairs": "preference_pairs", "dpo": "aligned_checkpoints",
    "evaluate": "evaluation", "evaluation_table": "evaluation", "evaluate_base": "base_evaluation",
    "ablation": "ablation", "ablation_summary": "ablation_summary", "demo_page": "demo_page",
    "singing_corpus": "singing_corpus", "singing_labels": "singing_pseudo_labels",
    "initial_voicefixer": "initial_voicefixer", "finetuned_voicefixer": "finetuned_voicefixer",
    "singing_evaluation": "singing_evaluation",
}


# Dagster-only shard asset -> the dvc.yaml stage that does all of its shards of one paradigm in one run
SHARD_STAGES = {"candidate_shards": "sample", "metric_shards": "score_candidates"}


@dataclasses.dataclass(frozen=True)
class LockStage:
    """One stage entry of dvc.lock: its name (e.g. train_base@ar), command and output md5s."""

    name: str
    cmd: str
    outs: dict[str, str]


@dataclasses.dataclass
class Target:
    """One asset partition and the DVC stages that built it."""

    asset: str
    partition: str | None
    stages: list[LockStage]

    @property
    def label(self) -> str:
        return f"{self.asset}[{self.partition}]" if self.partition else self.asset

    def data_version(self) -> str:
        """A hash of every output's md5: equal exactly when DVC's outputs are."""
        outs = sorted((s.name, path, md5) for s in self.stages for path, md5 in s.outs.items())
        return hashlib.sha256(json.dumps(outs).encode()).hexdigest()[:16]


@dataclasses.dataclass
class SyncReport:
    reported: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    checks: dict[str, bool] = dataclasses.field(default_factory=dict)  # "<asset>[<partition>]:<check>" -> passed
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


def read_lock(path: str | Path) -> list[LockStage]:
    lock = yaml.safe_load(Path(path).read_text()) or {}
    stages = []
    for name, body in (lock.get("stages") or {}).items():
        cmd = body.get("cmd", "")
        stages.append(LockStage(name, " && ".join(cmd) if isinstance(cmd, list) else str(cmd),
                                {o["path"]: o["md5"] for o in body.get("outs", []) if o.get("md5")}))
    return stages


def _options(cmd: str) -> dict[str, str]:
    """`--name value` pairs of a command (the partition keys of foreach/matrix stages)."""
    words = shlex.split(cmd)
    return {w[2:]: v for w, v in zip(words, words[1:]) if w.startswith("--")}


def stage_partition(partitions_def, cmd: str) -> str | None:
    """The partition a stage builds, from its command; None when the asset is unpartitioned or the command
    names no partition (a stage shared by every partition)."""
    if partitions_def is None:
        return None
    opts = _options(cmd)
    if "paradigm" not in opts:
        return None
    if "strategy" in opts and not partitions_def.has_partition_key(opts["paradigm"]):
        from gensr_dagster.partitions import ablation_key

        return ablation_key(opts["paradigm"], opts["strategy"])  # the ablation's matrix: "<paradigm>|<strategy>"
    return opts["paradigm"]  # every other partitioning a stage builds is by paradigm (dpo's --strategy is not one)


def plan(stages: list[LockStage], graph) -> tuple[list[Target], dict[str, str]]:
    """Group lock stages into asset partitions; returns the targets and {stage: why it maps to nothing}."""
    own: dict[tuple[str, str | None], list[LockStage]] = defaultdict(list)
    shared: dict[str, list[LockStage]] = defaultdict(list)
    skipped = {}
    for stage in stages:
        asset = STAGE_ASSETS.get(stage.name.split("@")[0])
        if asset is None or not graph.has(dg.AssetKey(asset)):
            skipped[stage.name] = "no Dagster asset builds this stage's outputs"
            continue
        pdef = graph.get(dg.AssetKey(asset)).partitions_def
        partition = stage_partition(pdef, stage.cmd)
        if pdef is not None and partition is None:
            shared[asset].append(stage)
        elif pdef is not None and partition not in pdef.get_partition_keys():
            skipped[stage.name] = f"'{partition}' is not a partition of {asset} (check params.yaml)"
        else:
            own[(asset, partition)].append(stage)
    by_name = {s.name: s for sts in own.values() for s in sts}
    for shard_asset, stage_name in SHARD_STAGES.items():
        if not graph.has(dg.AssetKey(shard_asset)):
            continue
        for key in graph.get(dg.AssetKey(shard_asset)).partitions_def.get_partition_keys():
            stage = by_name.get(f"{stage_name}@{key.keys_by_dimension['paradigm']}")
            if stage is not None:
                own[(shard_asset, key)] = [stage]
    # upstream first: Dagster judges a downstream asset stale when its input was materialized after it
    order = {key.to_user_string(): i for i, key in enumerate(graph.toposorted_asset_keys)}
    targets = [Target(asset, partition, sts + shared.get(asset, [])) for (asset, partition), sts in own.items()]
    return sorted(targets, key=lambda t: order[t.asset]), skipped


def project_params(root: Path, mlruns: str | Path | None = None, params_file: str = "params.yaml"):
    """The project's params with its relative paths resolved against `root` (the sync may run elsewhere)."""
    from gensr.config import load_params

    raw = load_params(root / params_file).paths
    overrides = [f"paths.{k}={Path(v) if Path(v).is_absolute() else (root / v).resolve()}"
                 for k, v in raw.model_dump().items() if k != "mlruns"]
    mlruns = Path(mlruns) if mlruns else Path(raw.mlruns)
    overrides.append(f"paths.mlruns={mlruns if mlruns.is_absolute() else (root / mlruns).resolve()}")
    return load_params(root / params_file, overrides), overrides


def changed_outputs(root: Path) -> dict[str, list[str]]:
    """{stage: its outputs that differ from dvc.lock}, by `dvc status` (fast after a repro: DVC caches file
    hashes). Raises RuntimeError when DVC cannot answer (e.g. a repro holds the repo lock)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"`dvc status` failed in {root}: {(out.stderr or out.stdout).strip()[-300:]}")
    status = json.loads(out.stdout or "{}")
    changed = {}
    for stage, entries in status.items():
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("changed outs"):
                changed.setdefault(stage, []).extend(f"{p} {why}" for p, why in entry["changed outs"].items())
    return changed


def _dvc_metadata(t: Target) -> dict:
    return {"dvc/stage": dg.MetadataValue.text(", ".join(s.name for s in t.stages)),
            "dvc/cmd": dg.MetadataValue.text("\n".join(s.cmd for s in t.stages)),
            "dvc/md5": dg.MetadataValue.json({path: md5 for s in t.stages for path, md5 in s.outs.items()}),
            "dvc/data_version": dg.MetadataValue.text(t.data_version())}


def _last_dvc_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None) -> str | None:
    """The data version of the latest materialization this sync reported (Dagster's own ones do not count)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=100).records
    for record in records:
        tags = record.asset_materialization.tags or {}
        if tags.get(SOURCE_TAG) == SOURCE:
            return tags.get(DATA_VERSION_TAG)
    return None


def _report_materialization(instance, t: Target, metadata: dict) -> None:
    stages = ", ".join(s.name for s in t.stages)
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=t.asset, partition=t.partition, metadata={**metadata, **_dvc_metadata(t)},
        description=f"Built by `dvc repro` (dvc.lock stage {stages}); reported by `gensr dagster-sync`, "
                    "not run by Dagster.",
        tags={DATA_VERSION_TAG: t.data_version(), DATA_VERSION_IS_USER_PROVIDED_TAG: "true", SOURCE_TAG: SOURCE}))


def _check_defs(defs: dg.Definitions, assets: set[str]):
    graph = defs.resolve_asset_graph()
    for check_key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        if check_key.asset_key.to_user_string() in assets:
            yield check_key, defs.get_asset_checks_def(check_key)


def _latest_check_record(instance, check_key, partition: str | None):
    """The latest evaluation of a check (of one partition of it, for a partitioned check)."""
    if partition is None:
        return instance.get_latest_asset_check_evaluation_record(check_key)
    from dagster._core.event_api import PartitionKeyFilter

    return instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [check_key], partition_filter=PartitionKeyFilter(key=partition)).get(check_key)


def _check_context(resources: dict, partition: str | None):
    """The context a check gets in a run of `partition`: `context.partition_key` is the partition (a
    MultiPartitionKey for paradigm x shard, as in a run); build_asset_check_context takes no partition."""
    if partition is None:
        return dg.build_asset_check_context(resources=resources)
    from dagster._core.execution.context.invocation import DirectAssetCheckExecutionContext

    return DirectAssetCheckExecutionContext(op_execution_context=dg.build_op_context(resources=resources,
                                                                                     partition_key=partition))


def _evaluate_check(instance, check_key, checks_def, resources: dict, report: SyncReport,
                    partition: str | None = None) -> dg.AssetCheckEvaluation | None:
    """Run one check on the files, against the asset's latest materialization (of `partition`, for a partitioned
    check); None when that one is already checked."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    records = dg.AssetRecordsFilter(asset_key=check_key.asset_key, asset_partitions=[partition]) \
        if partition is not None else check_key.asset_key
    latest = instance.fetch_materializations(records, limit=1).records
    if not latest:
        return None
    target = latest[0]
    previous = _latest_check_record(instance, check_key, partition)
    done = previous is not None and previous.evaluation is not None and \
        previous.evaluation.target_materialization_data is not None and \
        previous.evaluation.target_materialization_data.storage_id == target.storage_id
    if done:
        return None
    spec = checks_def.get_spec_for_check_key(check_key)
    needed = {k: v for k, v in resources.items() if k in checks_def.required_resource_keys}
    label = check_key.asset_key.to_user_string() + (f"[{partition}]" if partition is not None else "")
    try:
        result = checks_def(_check_context(needed, partition))
        passed, severity, description = bool(result.passed), result.severity, result.description
        metadata = dict(result.metadata or {})
    except Exception as err:  # noqa: BLE001 -- a check that cannot run is reported as such, not swallowed
        passed, severity = False, dg.AssetCheckSeverity.ERROR
        description, metadata = f"the check could not run: {type(err).__name__}: {err}", {}
        report.errors[f"check {label}:{check_key.name}"] = description
    report.checks[f"{label}:{check_key.name}"] = passed
    return dg.AssetCheckEvaluation(
        asset_key=check_key.asset_key, check_name=check_key.name, passed=passed, severity=severity,
        description=(description or "") + " (run by `gensr dagster-sync` on the files `dvc repro` wrote)",
        metadata=metadata, blocking=spec.blocking, partition=partition,
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
            storage_id=target.storage_id, run_id=target.run_id, timestamp=target.timestamp))


def _store_evaluations(instance, evaluations: list[dg.AssetCheckEvaluation]) -> str:
    """Store check evaluations through one in-process run of SYNC_JOB, whose one op yields them; returns the run
    id. A failed blocking check fails that run (after every evaluation is stored), as it fails a Dagster run. Its
    console log is silenced: the sync prints its own summary, and a failed check is no error of the sync."""

    @dg.op(name="report_check_evaluations", out={})
    def report_check_evaluations():
        yield from evaluations

    @dg.job(name=SYNC_JOB, tags={SOURCE_TAG: SOURCE},
            description="`gensr dagster-sync`: the asset checks, run on the files `dvc repro` wrote.")
    def sync_checks():
        report_check_evaluations()

    result = sync_checks.execute_in_process(
        instance=instance, run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False)
    stored = len(result.get_asset_check_evaluations())
    if stored != len(evaluations):
        raise RuntimeError(f"run {result.run_id} ({SYNC_JOB}) stored {stored} of {len(evaluations)} check results")
    return result.run_id


def sync(root: str | Path = ".", instance: dg.DagsterInstance | None = None, *, defs: dg.Definitions | None = None,
         mlruns: str | Path | None = None, checks: bool = True, verify: bool = True,
         log: Callable[[str], None] = lambda _: None) -> SyncReport:
    """Report every asset partition built by `dvc repro` in `root` (dvc.lock + outputs, read only) to `instance`.

    With `verify`, a stage whose outputs `dvc status` finds changed since dvc.lock is skipped (its md5s would
    not be the files'); without it, or when DVC cannot answer, outputs only need to exist."""
    from gensr_dagster.dvc_metadata import ASSET_METADATA
    from gensr_dagster.resources import MlflowResource, ParamsResource

    root = Path(root).resolve()
    lock = root / "dvc.lock"
    if not lock.is_file():
        raise FileNotFoundError(f"{lock}: no dvc.lock; run `dvc repro` in {root} first")
    if instance is None:
        instance = dg.DagsterInstance.get()
    if defs is None:
        from gensr_dagster.definitions import defs
    cfg, overrides = project_params(root, mlruns)
    targets, skipped = plan(read_lock(lock), defs.resolve_asset_graph())
    report = SyncReport(skipped=dict(skipped))
    changed: dict[str, list[str]] = {}
    if verify:
        try:
            changed = changed_outputs(root)
        except RuntimeError as err:
            report.errors["dvc status"] = f"{err}; outputs were only checked to exist"
    present: dict[str, list] = defaultdict(list)  # asset -> its partitions (None: unpartitioned) DVC built
    for t in targets:
        missing = [p for s in t.stages for p in s.outs if not (root / p).exists()]
        differ = [c for s in t.stages for c in changed.get(s.name, [])]
        if missing:
            report.skipped[t.label] = f"{missing[0]} is in dvc.lock but not on disk (removed, or its stage is running)"
            continue
        if differ:
            report.skipped[t.label] = f"`dvc status`: {differ[0]} since dvc.lock (rerun `dvc repro`)"
            continue
        present[t.asset].append(t.partition)
        if _last_dvc_version(instance, dg.AssetKey(t.asset), t.partition) == t.data_version():
            report.unchanged.append(t.label)
            continue
        try:
            metadata = ASSET_METADATA[t.asset](cfg, t.partition)
        except Exception as err:  # noqa: BLE001 -- the materialization is still real; say what could not be read
            metadata = {"gensr/metadata_error": dg.MetadataValue.text(f"{type(err).__name__}: {err}")}
            report.errors[t.label] = f"metadata: {type(err).__name__}: {err}"
        _report_materialization(instance, t, metadata)
        report.reported.append(t.label)
        log(f"reported {t.label} (data version {t.data_version()}, {len(metadata)} metadata entries)")
    if checks:
        resources = {"params": ParamsResource(params_path=str(root / "params.yaml"), overrides=overrides),
                     "mlflow": MlflowResource(mlruns_dir=str(cfg.paths.mlruns))}
        evaluations = []
        for check_key, checks_def in _check_defs(defs, set(present)):
            partitioned = checks_def.get_spec_for_check_key(check_key).partitions_def is not None
            for partition in present[check_key.asset_key.to_user_string()] if partitioned else [None]:
                evaluation = _evaluate_check(instance, check_key, checks_def, resources, report, partition)
                if evaluation is not None:
                    evaluations.append(evaluation)
        if evaluations:
            run_id = _store_evaluations(instance, evaluations)
            log(f"{len(evaluations)} check results stored by run {run_id} ({SYNC_JOB})")
    return report
