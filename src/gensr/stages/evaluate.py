"""Stages `evaluate` and `evaluation_table`: base vs aligned on a held-out split, with paired-bootstrap CIs.

    reports/evaluation/<paradigm>/   per-clip metrics of base, aligned, degraded; evaluation.json, table.md
    reports/evaluation.json + reports/table1.{md,csv,parquet}   (`dvc metrics show/diff`)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from gensr.config import Params
from gensr.corpus.splits import CONFIRM, DEV
from gensr.layout import base_checkpoint
from gensr.preference.suite import metric_info
from gensr.stages.dpo import aligned_dir
from gensr.stages.pairs import _wide, _write_text
from gensr.storage import file_sha256, require_path, summary_beside, write_json, write_parquet


EVAL_SPLITS = ("test", "valid", DEV, CONFIRM)


def evaluation_dir(params: Params, paradigm: str, split: str = "test") -> Path:
    """reports/evaluation/<paradigm>; a tuning split other than test goes to reports/evaluation_<split>/."""
    name = "evaluation" if split == "test" else f"evaluation_{split}"
    return Path(params.paths.reports) / name / paradigm


def base_dir(params: Params, paradigm: str, split: str) -> Path:
    """reports/base/<paradigm>/<split>: the base side, restored and scored once, read by every comparison."""
    return Path(params.paths.reports) / "base" / paradigm / split


def check_split(split: str) -> str:
    if split not in EVAL_SPLITS:
        raise ValueError(f"evaluate on 'test' (or 'valid' / '{DEV}' for tuning, '{CONFIRM}' for the final report), "
                         f"not '{split}': the base trained on train clips and DPO on the pairs of sample.split")
    return split


def restore_and_score(params: Params, paradigm: str, checkpoint: Path, out_dir: Path, split: str = "test") -> pd.DataFrame:
    """Restore `split` with `checkpoint` into `out_dir` and score it: wide table, clip_id = deg_id.

    With evaluate.samples_per_clip > 1 each metric is the per-clip mean over the samples (NaN if any
    sample's value is NaN: a failed metric is never averaged away). The per-clip table is also written
    to out_dir/per_clip.parquet, for paired comparisons between any two checkpoints."""
    from gensr.sampling.restore import restore_split

    manifest = restore_split(params, paradigm, checkpoint, split=split, out_dir=out_dir,
                             max_clips=params.evaluate.max_clips, samples=params.evaluate.samples_per_clip)
    wide = _score_restored(params, manifest, checkpoint, out_dir)
    rows = pd.read_parquet(manifest)
    if "cand_id" in rows:
        wide = per_clip_means(wide, dict(zip(rows["cand_id"], rows["deg_id"])), f"{out_dir / 'metrics.parquet'}")
    wide = _wide(wide)
    write_parquet(pa.Table.from_pandas(wide, preserve_index=False), out_dir / "per_clip.parquet")
    return wide


def per_clip_means(wide: pd.DataFrame, deg_of: dict[str, str], source: str = "scores") -> pd.DataFrame:
    """Wide per-sample scores (clip_id = sample id) -> per-clip means (clip_id = deg_id).

    A NaN in any sample makes that clip's mean NaN: the failure stays visible instead of being
    averaged over the samples that worked."""
    unmapped = ~wide["clip_id"].isin(deg_of.keys())
    if unmapped.any():
        raise ValueError(f"{source}: {int(unmapped.sum())} scored rows have no clip in the manifest")
    per_sample = wide.assign(clip_id=wide["clip_id"].map(deg_of)).set_index("clip_id")
    return per_sample.groupby(level=0, sort=True).agg(lambda v: v.mean(skipna=False)).reset_index()


def _score_restored(params: Params, manifest: Path, checkpoint: Path, out_dir: Path) -> pd.DataFrame:
    from gensr.metrics import to_wide
    from gensr.metrics.suite import fingerprint, manifest_rows, score_manifest

    # Scoring dominates the cost; reuse the table when the restored audio and metrics params are unchanged
    # (the base side of every comparison, and a rerun after a crash). The audio's bytes, not only the manifest:
    # a sampler change re-restores the same ids under the same paths with the same manifest.
    key = {"manifest_sha256": file_sha256(manifest), "checkpoint_sha256": file_sha256(checkpoint),
           "scored": fingerprint(manifest_rows(manifest), params.metrics),
           "metrics": params.metrics.model_dump(mode="json", exclude={"workers", "shard_size"})}
    table, key_path = out_dir / "metrics.parquet", out_dir / "metrics.key.json"
    if table.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == json.loads(json.dumps(key)):
        return to_wide(pd.read_parquet(table))
    long = score_manifest(params, manifest, table)
    write_json(key, key_path)
    return to_wide(long)


def base_scores(params: Params, paradigm: str, split: str) -> pd.DataFrame:
    """Per-clip scores of the base restorer on `split` (cached in reports/base/<paradigm>/<split>)."""
    ckpt = require_path(base_checkpoint(params, paradigm), "base checkpoint",
                        f"run `gensr train-base --paradigm {paradigm}`")
    return restore_and_score(params, paradigm, ckpt, base_dir(params, paradigm, check_split(split)), split)


def degraded_input_scores(params: Params, split: str = "test") -> pd.DataFrame:
    """Scores of the degraded inputs against clean (the Table-1 'degraded input' row)."""
    from gensr.metrics import to_wide
    from gensr.metrics.suite import score_inputs

    if split == CONFIRM:
        from gensr.layout import confirm_degraded_manifest

        manifest = require_path(confirm_degraded_manifest(params), "confirmation set",
                                "run `gensr confirm-corpus` first")
        out = Path(params.paths.reports) / "base" / f"degraded_{CONFIRM}.parquet"
        return _wide(to_wide(score_inputs(params, split=split, degraded=manifest.parent, out=out)))
    return _wide(to_wide(score_inputs(params, split=split)))


def evaluate_base(params: Params, paradigm: str, splits: list[str]) -> dict:
    """Stage `evaluate-base`: the base side of every evaluation and ablation comparison, once per split. The run's
    wall seconds and clip counts go to reports/base/<paradigm>.json (beside the folder later stages depend on)."""
    start = time.perf_counter()
    out = {}
    for split in splits:
        base = base_scores(params, paradigm, split)
        degraded_input_scores(params, split)
        out[split] = {"n_clips": len(base), "path": str(base_dir(params, paradigm, split) / "per_clip.parquet")}
    folder = Path(params.paths.reports) / "base" / paradigm
    write_json(out, folder / "summary.json")
    write_json({"paradigm": paradigm, "n_clips": {s: v["n_clips"] for s, v in out.items()},
                "seconds": round(time.perf_counter() - start, 2)}, summary_beside(folder))
    return out


def compare_checkpoint(params: Params, paradigm: str, checkpoint: Path, out_dir: Path, split: str, label: str) -> dict:
    """`checkpoint` vs the base on `split` (same clips, same restoration seeds): the `compare` result, with the
    degraded inputs' means, written to out_dir/evaluation.json and table.md."""
    from gensr.evaluate.compare import compare
    from gensr.evaluate.table import table_markdown

    check_split(split)
    base = base_scores(params, paradigm, split)
    aligned = restore_and_score(params, paradigm, checkpoint, out_dir / "restored", split)
    degraded = degraded_input_scores(params, split)
    # the whole suite, not only the metrics that voted for pairs: hacking shows up on the others
    names = [c for c in base.columns if c != "clip_id" and c in aligned.columns]
    infos = metric_info(names)
    res = compare(base, aligned, infos, n_bootstrap=params.evaluate.n_bootstrap,
                  confidence=params.evaluate.confidence, seed=params.seed, min_dimensions=params.evaluate.min_dimensions)
    common = set(base["clip_id"]) & set(aligned["clip_id"])
    deg = degraded[degraded["clip_id"].isin(common)]
    res["degraded"] = {m.name: float(np.nanmean(deg[m.name])) if m.name in deg and len(deg) else float("nan")
                       for m in infos}
    res.update(paradigm=paradigm, strategy=label, split=split, base_checkpoint=str(base_checkpoint(params, paradigm)),
               aligned_checkpoint=str(checkpoint))
    write_json(res, out_dir / "evaluation.json")
    md = table_markdown(res["degraded"], {paradigm: res}, infos, label, params.evaluate.confidence)
    _write_text(out_dir / "table.md", md)
    return {**res, "markdown": md}


def evaluate_paradigm(params: Params, paradigm: str, strategy: str | None = None, split: str = "test") -> dict:
    """Base vs aligned (the `dpo` stage's checkpoint) on `split`; writes reports/evaluation[_<split>]/<paradigm>/.

    test is the report; valid and dev (valid plus the pref clips whose pairs DPO holds out) are for tuning;
    confirm (a set built after the fact, never read by tuning) is for the final report only.
    """
    start = time.perf_counter()
    strategy = strategy or params.evaluate.strategy
    check_split(split)
    aligned_ckpt = require_path(aligned_dir(params, paradigm, strategy) / "restorer.pt", "aligned checkpoint",
                                f"run `gensr dpo --paradigm {paradigm} --strategy {strategy}`")
    out = evaluation_dir(params, paradigm, split)
    res = compare_checkpoint(params, paradigm, aligned_ckpt, out, split, strategy)
    if split == "test":
        _log_evaluation_to_dpo_run(params, paradigm, strategy, res, out / "table.md")
    # wall seconds beside the folder (<folder>.json), which evaluation_table and demo_page depend on
    write_json({"paradigm": paradigm, "strategy": strategy, "split": split, "n_clips": res["n_clips"],
                "seconds": round(time.perf_counter() - start, 2)}, summary_beside(out))
    return res


def _log_evaluation_to_dpo_run(params: Params, paradigm: str, strategy: str, res: dict, table_md: Path) -> None:
    """The final evaluation lands in the DPO run it evaluates (one run per paradigm x strategy)."""
    summary_path = aligned_dir(params, paradigm, strategy) / "summary.json"
    run_id = json.loads(summary_path.read_text()).get("mlflow_run_id") if summary_path.exists() else None
    if not run_id:
        return
    from gensr.tracking import configure

    mlflow = configure(params.paths.mlruns)
    client = mlflow.tracking.MlflowClient()
    for name, v in res["metrics"].items():
        for key in ("base", "aligned", "diff", "ci_low", "ci_high"):
            if np.isfinite(v[key]):
                client.log_metric(run_id, f"eval/{name}/{key}", v[key])
    client.log_metric(run_id, "eval/win_rate", res["win_rate"])
    client.log_metric(run_id, "eval/dimensions_improved", len(res["improved_dimensions"]))
    client.log_metric(run_id, "eval/target_met", float(res["target_met"]))
    client.log_artifact(run_id, str(table_md), "evaluation")


def evaluation_table(params: Params) -> dict:
    """reports/evaluation.json (dvc metrics) + reports/table1.{md,csv} + reports/evaluation_diffs.csv; the run's wall
    seconds go to reports/table1.json (not the metrics file: `dvc metrics diff` compares results, not timings)."""
    start = time.perf_counter()
    from gensr.evaluate.table import diff_rows, table_markdown, table_rows
    from gensr.preference.suite import MetricInfo

    results = {}
    for p in params.evaluate.paradigms:
        path = require_path(evaluation_dir(params, p) / "evaluation.json", "evaluation",
                            f"run `gensr evaluate --paradigm {p}`")
        results[p] = json.loads(path.read_text())
    first = next(iter(results.values()))
    from gensr.metrics.registry import METRIC_NAMES

    # JSON keys come back sorted; show the suite's own order (quality, fidelity, content, timbre)
    order = {n: i for i, n in enumerate(METRIC_NAMES)}
    infos = sorted((MetricInfo(n, v["dimension"], v["higher_is_better"]) for n, v in first["metrics"].items()),
                   key=lambda m: (order.get(m.name, len(order)), m.name))
    results = {p: {**r, "metrics": {m.name: r["metrics"][m.name] for m in infos}} for p, r in results.items()}
    strategy = first["strategy"]
    reports = Path(params.paths.reports)
    md = table_markdown(first["degraded"], results, infos, strategy, params.evaluate.confidence)
    _write_text(reports / "table1.md", md)
    rows = table_rows(first["degraded"], results, infos, strategy)
    write_parquet(pa.Table.from_pandas(rows, preserve_index=False), reports / "table1.parquet")
    _write_text(reports / "table1.csv", rows.to_csv(index=False, float_format="%.6g"))
    _write_text(reports / "evaluation_diffs.csv", diff_rows(results).to_csv(index=False, float_format="%.6g"))
    metrics_json = {
        p: {"win_rate": r["win_rate"], "loss_rate": r["loss_rate"], "target_met": r["target_met"],
            "dimensions_improved": len(r["improved_dimensions"]), "n_significantly_worse": len(r["significantly_worse"]),
            "metrics": {n: {k: v[k] for k in ("base", "aligned", "diff", "ci_low", "ci_high")}
                        for n, v in r["metrics"].items()}}
        for p, r in results.items()
    }
    write_json(metrics_json, reports / "evaluation.json")
    write_json({"paradigms": list(results), "seconds": round(time.perf_counter() - start, 2)}, reports / "table1.json")
    return {"markdown": md, "results": results}
