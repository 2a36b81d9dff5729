"""Stages `pairs`, `dpo`, `evaluate` (+ `evaluation_table`): preference pairs, DPO alignment, held-out evaluation.

Layout (all under params.paths):
- data/pairs/<paradigm>/<strategy>/pairs.parquet, stats.json
- models/aligned/<paradigm>/<strategy>/restorer.pt (the aligned policy), dpo.ckpt (Lightning, no
  reference inside), reference_scores.parquet (AR/MGM cache), summary.json
- reports/evaluation/<paradigm>/ (per-clip metrics of base, aligned, degraded; evaluation.json) and
  reports/evaluation.json + reports/table1.{md,csv} for `dvc metrics show/diff`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from gensr.config import Params
from gensr.corpus.splits import DEV
from gensr.preference.pairs import (
    build_pair_table,
    metric_names,
    pair_table_to_arrow,
    rebase,
    rules_for_strategy,
    strategy_slug,
    violations,
)
from gensr.preference.stats import candidate_spread, pair_stats
from gensr.preference.suite import metric_info
from gensr.storage import atomic_path, file_sha256, write_json, write_parquet

# --- layout ---------------------------------------------------------------------------------


def candidates_dir(params: Params, paradigm: str) -> Path:
    return Path(params.paths.data) / "candidates" / paradigm


def metrics_path(params: Params, paradigm: str) -> Path:
    return Path(params.paths.data) / "metrics" / paradigm / "metrics.parquet"


def base_checkpoint(params: Params, paradigm: str) -> Path:
    return Path(params.paths.models) / "base" / paradigm / "restorer.pt"


def pairs_dir(params: Params, paradigm: str, strategy: str) -> Path:
    return Path(params.paths.data) / "pairs" / paradigm / strategy_slug(strategy)


def aligned_dir(params: Params, paradigm: str, strategy: str) -> Path:
    return Path(params.paths.models) / "aligned" / paradigm / strategy_slug(strategy)


def evaluation_dir(params: Params, paradigm: str, split: str = "test") -> Path:
    """reports/evaluation/<paradigm>; a tuning split other than test goes to reports/evaluation_<split>/."""
    name = "evaluation" if split == "test" else f"evaluation_{split}"
    return Path(params.paths.reports) / name / paradigm


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _need(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found; {fix}")
    return path


# --- pairs ----------------------------------------------------------------------------------


def load_metrics_wide(path: Path) -> pd.DataFrame:
    """Long metric table -> one row per candidate (clip_id), one float column per metric."""
    from gensr.metrics import to_wide

    long = pd.read_parquet(_need(path, "metric table", "score the candidates first: `gensr score --candidates "
                                 f"{path.parent.parent.parent / 'candidates' / path.parent.name / 'manifest.parquet'} --out {path}`"))
    return _wide(to_wide(long))


def build_pairs(params: Params, paradigm: str, strategies: list[str] | None = None) -> dict:
    """Pair tables of one paradigm for each strategy (default: pairs.strategies)."""
    cdir = candidates_dir(params, paradigm)
    manifest = pd.read_parquet(_need(cdir / "manifest.parquet", "candidate manifest",
                                     f"run `gensr sample --paradigm {paradigm}` first"))
    wide = load_metrics_wide(metrics_path(params, paradigm))
    all_metrics = [c for c in wide.columns if c != "clip_id"]
    metrics = list(params.pairs.metrics) if params.pairs.metrics is not None else all_metrics
    missing = [m for m in metrics if m not in all_metrics]
    if missing:
        raise KeyError(f"pairs.metrics lists {missing}, absent from {metrics_path(params, paradigm)}; "
                       f"available: {all_metrics}")
    info = {m.name: m for m in metric_info(all_metrics)}
    hib = {m: info[m].higher_is_better for m in all_metrics}
    summary = {}
    for strategy in strategies or params.pairs.strategies:
        out_dir = pairs_dir(params, paradigm, strategy)
        out_dir.mkdir(parents=True, exist_ok=True)
        cands = manifest.copy()
        for col in ("path", "clean_path", "degraded_path", "codes_path"):
            if col in cands:
                cands[col] = [rebase(p, cdir, out_dir) if isinstance(p, str) else None for p in cands[col]]
        rules = rules_for_strategy(strategy, metrics, hib, dict(params.pairs.margins))
        pairs = build_pair_table(cands, wide, strategy=strategy, rules=rules,
                                 max_pairs_per_clip=params.pairs.max_pairs_per_clip, seed=params.seed,
                                 heldout_fraction=params.pairs.heldout_fraction)
        if strategy != "gt_as_chosen" and not violations(pairs, rules).empty:
            raise AssertionError(f"{out_dir}: {len(violations(pairs, rules))} pairs break the {strategy} rule")
        path = write_parquet(pair_table_to_arrow(pairs), out_dir / "pairs.parquet")
        n_clips = int(manifest.loc[manifest["split"] != "test", "deg_id"].nunique())
        stats = pair_stats(pairs, n_clips, rules)
        stats.update(paradigm=paradigm, strategy=strategy, metrics=[r.name for r in rules],
                     margins={r.name: r.margin for r in rules}, max_pairs_per_clip=params.pairs.max_pairs_per_clip,
                     pairs_sha256=file_sha256(path),
                     candidate_spread=candidate_spread(manifest[manifest["split"] != "test"], wide))
        write_json(stats, out_dir / "stats.json")
        summary[strategy] = stats
    return summary


def check_pairs(pairs_path: Path) -> dict:
    """Chosen dominates rejected on every metric, no NaN (read back from the written table)."""
    pairs = pd.read_parquet(pairs_path)
    stats = json.loads((pairs_path.parent / "stats.json").read_text())
    strategy = stats["strategy"]
    if strategy == "gt_as_chosen":
        bad = pairs[pairs[[f"rejected_{m}" for m in metric_names(pairs)]].isna().all(axis=1)]
        return {"passed": True, "n_pairs": len(pairs), "n_violations": 0,
                "note": "gt_as_chosen: the clean reference is chosen by construction", "n_unscored": len(bad)}
    from gensr.preference.rules import MetricRule

    rules = [MetricRule(m, hib, stats["margins"][m]) for m, hib in
             zip(stats["metrics"], [i.higher_is_better for i in metric_info(stats["metrics"])])]
    bad = violations(pairs, rules)
    return {"passed": bad.empty and len(pairs) > 0, "n_pairs": len(pairs), "n_violations": len(bad),
            "first_violations": bad["pair_id"].head(5).tolist()}


def export_pairs(params: Params, paradigm: str, strategy: str, out_dir: Path) -> dict:
    from gensr.preference.export import export_dataset

    src = pairs_dir(params, paradigm, strategy)
    stats = json.loads(_need(src / "stats.json", "pair stats", f"run `gensr pairs --paradigm {paradigm}`").read_text())
    info = {"paradigm": paradigm, "strategy": strategy, "margins": stats["margins"],
            "max_pairs_per_clip": stats["max_pairs_per_clip"], "data_hash": stats["pairs_sha256"][:16],
            "params": {"pairs": params.pairs.model_dump(mode="json"), "seed": params.seed}}
    return export_dataset(src / "pairs.parquet", out_dir, stats, info)


# --- dpo ------------------------------------------------------------------------------------


def dpo_settings(params: Params, paradigm: str):
    from gensr.align.train import DPOSettings

    hp, d = params.dpo.for_paradigm(paradigm), params.dpo
    return DPOSettings(paradigm=paradigm, beta=hp.beta, lr=hp.lr, steps=hp.steps, batch_size=hp.batch_size,
                       sft_weight=hp.sft_weight, sft_target=hp.sft_target, score_draws=hp.score_draws,
                       score_temperature=hp.score_temperature,
                       trainable=None if hp.trainable is None else tuple(hp.trainable),
                       weight_decay=d.weight_decay, grad_clip=d.grad_clip, val_every_steps=d.val_every_steps,
                       ref_batch_size=d.ref_batch_size, segment_seconds=d.segment_seconds,
                       audio_examples=d.audio_examples, sample_rate=params.audio.sample_rate, seed=params.seed)


def train_dpo(params: Params, paradigm: str, strategy: str | None = None, *, track: bool = True,
              dagster_run_id: str | None = None) -> dict:
    """Align the base restorer of `paradigm` with DPO on the pairs of `strategy` (default dpo.strategy)."""
    import torch

    from gensr.models import load_restorer
    from gensr.tracking import run_url, start_run

    strategy = strategy or params.dpo.strategy
    pairs_path = _need(pairs_dir(params, paradigm, strategy) / "pairs.parquet", "pair table",
                       f"run `gensr pairs --paradigm {paradigm}` with '{strategy}' in pairs.strategies")
    base = _need(base_checkpoint(params, paradigm), "base checkpoint", f"run `gensr train-base --paradigm {paradigm}`")
    threads = getattr(getattr(params, "restorers", None), "threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    pairs = pd.read_parquet(pairs_path)
    policy, reference = load_restorer(base), load_restorer(base)
    settings = dpo_settings(params, paradigm)
    out_dir = aligned_dir(params, paradigm, strategy)
    from gensr.align.train import run_dpo

    if not track:
        return run_dpo(policy, reference, pairs, pairs_path, base, settings, out_dir)
    mlruns = Path(params.paths.mlruns)
    log_params = {"paradigm": paradigm, "strategy": strategy, "base_checkpoint": str(base),
                  "pairs_sha256": file_sha256(pairs_path), "n_pairs": len(pairs), **settings.__dict__,
                  "pairs": params.pairs.model_dump(mode="json")}
    tags = {"gensr.paradigm": paradigm, "gensr.strategy": strategy, "gensr.base_checkpoint": str(base)}
    with start_run(mlruns, "dpo", f"dpo-{paradigm}-{strategy_slug(strategy)}", params=log_params, tags=tags,
                   data_paths=(pairs_path,), dagster_run_id=dagster_run_id) as run:
        summary = run_dpo(policy, reference, pairs, pairs_path, base, settings, out_dir, run=run, mlruns_dir=mlruns)
        summary["mlflow_url"] = run_url(mlruns, run)
    write_json(summary, out_dir / "summary.json")
    return summary


# --- evaluate -------------------------------------------------------------------------------


def restore_and_score(params: Params, paradigm: str, checkpoint: Path, out_dir: Path, split: str = "test") -> pd.DataFrame:
    """Restore `split` with `checkpoint` into `out_dir` and score it: wide table, clip_id = deg_id.

    With evaluate.samples_per_clip > 1 each metric is the per-clip mean over the samples (NaN if any
    sample's value is NaN: a failed metric is never averaged away)."""
    manifest = restore_split_for_evaluation(params, paradigm, checkpoint, out_dir, split)
    wide = _score_restored(params, manifest, checkpoint, out_dir)
    rows = pd.read_parquet(manifest)
    if "cand_id" not in rows:
        return wide
    return per_clip_means(wide, dict(zip(rows["cand_id"], rows["deg_id"])), f"{out_dir / 'metrics.parquet'}")


def per_clip_means(wide: pd.DataFrame, deg_of: dict[str, str], source: str = "scores") -> pd.DataFrame:
    """Wide per-sample scores (clip_id = sample id) -> per-clip means (clip_id = deg_id).

    A NaN in any sample makes that clip's mean NaN: the failure stays visible instead of being
    averaged over the samples that worked."""
    unmapped = ~wide["clip_id"].isin(deg_of.keys())
    if unmapped.any():
        raise ValueError(f"{source}: {int(unmapped.sum())} scored rows have no clip in the manifest")
    per_sample = wide.assign(clip_id=wide["clip_id"].map(deg_of)).set_index("clip_id")
    return per_sample.groupby(level=0, sort=True).agg(lambda v: v.mean(skipna=False)).reset_index()


def restore_split_for_evaluation(params: Params, paradigm: str, checkpoint: Path, out_dir: Path, split: str) -> Path:
    from gensr.stages.sample import restore_split

    return restore_split(params, paradigm, checkpoint, split=split, out_dir=out_dir,
                         max_clips=params.evaluate.max_clips, samples=params.evaluate.samples_per_clip)


def _score_restored(params: Params, manifest: Path, checkpoint: Path, out_dir: Path) -> pd.DataFrame:
    from gensr.metrics import to_wide
    from gensr.metrics.suite import score_manifest

    # Scoring dominates the cost; reuse the table when the restored audio and metrics params are unchanged
    # (e.g. the base side while DPO is being tuned).
    key = {"manifest_sha256": file_sha256(manifest), "checkpoint_sha256": file_sha256(checkpoint),
           "metrics": params.metrics.model_dump(mode="json", exclude={"workers", "shard_size"})}
    table, key_path = out_dir / "metrics.parquet", out_dir / "metrics.key.json"
    if table.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == json.loads(json.dumps(key)):
        return to_wide(pd.read_parquet(table))
    long = score_manifest(params, manifest, table)
    write_json(key, key_path)
    return to_wide(long)


def degraded_input_scores(params: Params, split: str = "test") -> pd.DataFrame:
    """Scores of the degraded inputs against clean (the Table-1 'degraded input' row)."""
    from gensr.metrics import to_wide
    from gensr.metrics.suite import score_inputs

    return to_wide(score_inputs(params, split=split))


def _wide(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index() if "clip_id" not in df.columns else df
    return df.sort_values("clip_id", kind="mergesort").reset_index(drop=True)


def evaluate_paradigm(params: Params, paradigm: str, strategy: str | None = None, split: str = "test") -> dict:
    """Base vs aligned on the test split (never used for pairs); writes reports/evaluation/<paradigm>/.

    `split="valid"` runs the same comparison on the valid split, for tuning DPO without touching test;
    `split="dev"` on valid plus the pref clips whose pairs DPO holds out (about twice as many clips).
    """
    if split not in ("test", "valid", DEV):
        raise ValueError(f"evaluate on 'test' (or 'valid' / '{DEV}' for tuning), not '{split}': the base trained on "
                         "train clips and DPO on the pairs of sample.split")
    from gensr.evaluate.compare import compare
    from gensr.evaluate.table import table_markdown

    strategy = strategy or params.evaluate.strategy
    out = evaluation_dir(params, paradigm, split)
    base_ckpt = _need(base_checkpoint(params, paradigm), "base checkpoint", f"run `gensr train-base --paradigm {paradigm}`")
    aligned_ckpt = _need(aligned_dir(params, paradigm, strategy) / "restorer.pt", "aligned checkpoint",
                         f"run `gensr dpo --paradigm {paradigm} --strategy {strategy}`")
    base = _wide(restore_and_score(params, paradigm, base_ckpt, out / "base", split))
    aligned = _wide(restore_and_score(params, paradigm, aligned_ckpt, out / strategy_slug(strategy), split))
    degraded = _wide(degraded_input_scores(params, split))
    # the whole suite, not only the metrics that voted for pairs: hacking shows up on the others
    names = [c for c in base.columns if c != "clip_id" and c in aligned.columns]
    infos = metric_info(names)
    res = compare(base, aligned, infos, n_bootstrap=params.evaluate.n_bootstrap,
                  confidence=params.evaluate.confidence, seed=params.seed)
    common = set(base["clip_id"]) & set(aligned["clip_id"])
    deg = degraded[degraded["clip_id"].isin(common)]
    res["degraded"] = {m.name: float(np.nanmean(deg[m.name])) if m.name in deg and len(deg) else float("nan")
                       for m in infos}
    res.update(paradigm=paradigm, strategy=strategy, split=split, base_checkpoint=str(base_ckpt), aligned_checkpoint=str(aligned_ckpt))
    write_json(res, out / "evaluation.json")
    md = table_markdown(res["degraded"], {paradigm: res}, infos, strategy, params.evaluate.confidence)
    _write_text(out / "table.md", md)
    if split == "test":
        _log_evaluation_to_dpo_run(params, paradigm, strategy, res, out / "table.md")
    return {**res, "markdown": md}


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
    """reports/evaluation.json (dvc metrics) + reports/table1.{md,csv} + reports/evaluation_diffs.csv."""
    from gensr.evaluate.table import diff_rows, table_markdown, table_rows
    from gensr.preference.suite import MetricInfo

    results = {}
    for p in params.evaluate.paradigms:
        path = _need(evaluation_dir(params, p) / "evaluation.json", "evaluation", f"run `gensr evaluate --paradigm {p}`")
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
    return {"markdown": md, "results": results}
