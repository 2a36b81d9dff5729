"""Stages `ablation` and `ablation_summary`: multi- vs single-metric DPO vs SFT-only controls, one budget.

Every strategy of `ablation.strategies` starts from the same base checkpoint and trains with the same
budget (`ablation.budget`), seeds, batches and trainable parameters as every other; only the pair
rule and the loss differ (`strategy_settings`):
- `multi`, `gt_as_chosen`, `single:<metric>`: DPO (plus the SFT term) on that pair set;
- `sft_clean`: the SFT term alone on the clean references of multi's pair clips; `sft_chosen`: the
  SFT term alone on multi's winners. Neither computes a preference score (objective 'sft').

Outputs
    models/ablation/<paradigm>/<strategy>/   restorer.pt, summary.json (the training run)
    reports/ablation/<paradigm>/<strategy>/<split>/   evaluation.json, table.md, restored/per_clip.parquet
    reports/ablation.{json,md,csv}, reports/ablation_plot.csv, reports/ablation.png   (the summary)

The base side of each comparison is computed once per paradigm and split (`evaluate-base`,
reports/base/). MLflow: one parent run per ablation (experiment gensr-ablation, found again by the
hash of its budget, strategies, splits and base checkpoints) holding the budget, the table and the
figure; one nested child per paradigm x strategy with the training curves and, under the same keys
in every child, the whole evaluation suite (`<split>/<metric>/diff` etc.).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gensr.config import Params
from gensr.config.ablation import SFT_STRATEGIES
from gensr.layout import base_checkpoint
from gensr.preference.pairs import strategy_slug
from gensr.stages.dpo import dpo_inputs, dpo_settings, train_dpo
from gensr.stages.evaluate import compare_checkpoint
from gensr.stages.pairs import _write_text
from gensr.storage import file_sha256, require_path, write_json

PRIMARY = ("multi", "sft_clean")  # the pre-registered head-to-head: does the DPO term add anything over SFT?
ROLE_TAG, KEY_TAG = "gensr.ablation_role", "gensr.ablation_key"


# Folders carry the strategy's own name (e.g. single:pesq_wb): dvc.yaml's matrix stage names its outputs with it.
def model_dir(params: Params, paradigm: str, strategy: str) -> Path:
    return Path(params.paths.models) / "ablation" / paradigm / strategy


def report_dir(params: Params, paradigm: str, strategy: str, split: str) -> Path:
    return Path(params.paths.reports) / "ablation" / paradigm / strategy / split


def strategy_settings(params: Params, paradigm: str, strategy: str):
    """dpo.<paradigm> with the ablation's budget; the SFT controls switch the objective and the SFT target."""
    b = params.ablation.budget
    base = dpo_settings(params, paradigm)
    objective = "sft" if strategy in SFT_STRATEGIES else "dpo"
    target = {"sft_clean": "clean", "sft_chosen": "chosen"}.get(strategy, base.sft_target)
    return dataclasses.replace(base, beta=b.beta, lr=b.lr, steps=b.steps, batch_size=b.batch_size,
                               sft_weight=b.sft_weight, sft_target=target, objective=objective)


# --- MLflow parent --------------------------------------------------------------------------
def ablation_key(params: Params) -> str:
    """Identifies one ablation: what every child shares (budget, strategies, splits, bases, seeds)."""
    a = params.ablation
    bases = {p: file_sha256(base_checkpoint(params, p)) if base_checkpoint(params, p).is_file() else None
             for p in a.paradigms}
    key = {"ablation": a.model_dump(mode="json"), "dpo": params.dpo.model_dump(mode="json"), "bases": bases,
           "seed": params.seed, "pairs": params.pairs.model_dump(mode="json"),
           "evaluate": params.evaluate.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def parent_run_id(params: Params) -> str:
    """The parent run of this ablation: found by its key, or created (under the store lock)."""
    from gensr.tracking import _store_lock, configure, get_or_create_experiment, git_sha

    mlflow = configure(params.paths.mlruns)
    client = mlflow.tracking.MlflowClient()
    exp = get_or_create_experiment(params.paths.mlruns, "ablation")
    key = ablation_key(params)
    with _store_lock(params.paths.mlruns):
        found = client.search_runs([exp], f"tags.`{ROLE_TAG}` = 'parent' and tags.`{KEY_TAG}` = '{key}'",
                                   max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(exp, run_name=f"ablation {'+'.join(params.ablation.paradigms)} {key[:8]}",
                                tags={ROLE_TAG: "parent", KEY_TAG: key, "gensr.git_sha": git_sha()})
        from gensr.tracking import flatten

        for k, v in flatten({"budget": params.ablation.budget.model_dump(),
                             "strategies": ",".join(params.ablation.strategies),
                             "paradigms": ",".join(params.ablation.paradigms),
                             "splits": ",".join(params.ablation.splits)}).items():
            client.log_param(run.info.run_id, k, str(v))
        client.set_terminated(run.info.run_id)
        return run.info.run_id


def _retire_children(client, parent: str, paradigm: str, strategy: str) -> None:
    """A rerun of one strategy replaces its child: the previous one is deleted (MLflow keeps it restorable)."""
    exp = client.get_run(parent).info.experiment_id
    old = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}' and tags.`gensr.paradigm` = "
                                    f"'{paradigm}' and tags.`gensr.strategy` = '{strategy}'")
    for run in old:
        client.delete_run(run.info.run_id)


# --- one strategy ---------------------------------------------------------------------------
def run_strategy(params: Params, paradigm: str, strategy: str, *, track: bool = True,
                 dagster_run_id: str | None = None) -> dict:
    """Train one strategy with the shared budget, then compare it with the base on every ablation split."""
    start = time.perf_counter()
    if strategy not in params.ablation.strategies:
        raise ValueError(f"strategy '{strategy}' is not in ablation.strategies {params.ablation.strategies}")
    if paradigm not in params.ablation.paradigms:
        raise ValueError(f"paradigm '{paradigm}' is not in ablation.paradigms {params.ablation.paradigms}")
    dpo_inputs(params, paradigm, strategy)  # a missing input is refused before MLflow is touched
    settings = strategy_settings(params, paradigm, strategy)
    out = model_dir(params, paradigm, strategy)
    parent = None
    if track:
        from gensr.tracking import configure

        parent = parent_run_id(params)
        _retire_children(configure(params.paths.mlruns).tracking.MlflowClient(), parent, paradigm, strategy)
    summary = train_dpo(params, paradigm, strategy, track=track, dagster_run_id=dagster_run_id, settings=settings,
                        out_dir=out, kind="ablation", parent_run_id=parent,
                        tags={KEY_TAG: ablation_key(params), ROLE_TAG: "child"} if track else None)
    results = {}
    for split in params.ablation.splits:
        res = compare_checkpoint(params, paradigm, out / "restorer.pt", report_dir(params, paradigm, strategy, split),
                                 split, strategy)
        results[split] = {k: res[k] for k in ("n_clips", "target_met", "verdict", "significantly_worse")}
        if track and summary.get("mlflow_run_id"):
            log_evaluation(params, summary["mlflow_run_id"], split, res)
    out_summary = {"paradigm": paradigm, "strategy": strategy, "objective": settings.objective,
                   "train_seconds": summary["seconds"], "n_train_pairs": summary["n_train_pairs"],
                   "mlflow_run_id": summary.get("mlflow_run_id"), "evaluation": results,
                   "seconds": round(time.perf_counter() - start, 2)}  # the stage: training and every split's evaluation
    write_json(out_summary, report_dir(params, paradigm, strategy, "summary.json"))
    return out_summary


def log_evaluation(params: Params, run_id: str, split: str, res: dict) -> None:
    """The whole suite under keys every child shares, so MLflow's Compare lines the strategies up."""
    from gensr.tracking import configure

    client = configure(params.paths.mlruns).tracking.MlflowClient()
    for name, v in res["metrics"].items():
        for key in ("base", "aligned", "diff", "ci_low", "ci_high", "p_value"):
            if np.isfinite(v[key]):
                client.log_metric(run_id, f"{split}/{name}/{key}", float(v[key]))
    for dim, v in res["dimensions"].items():
        for key in ("std_diff", "ci_low", "ci_high", "p_value"):
            if np.isfinite(v[key]):
                client.log_metric(run_id, f"{split}/dim/{dim}/{key}", float(v[key]))
    client.log_metric(run_id, f"{split}/target_met", float(res["target_met"]))
    client.log_metric(run_id, f"{split}/win_rate", float(res["win_rate"]))
    client.log_text(run_id, res["markdown"], f"evaluation/{split}.md")


# --- summary --------------------------------------------------------------------------------
def _per_clip(params: Params, paradigm: str, strategy: str, split: str) -> pd.DataFrame:
    path = report_dir(params, paradigm, strategy, split) / "restored" / "per_clip.parquet"
    return pd.read_parquet(require_path(path, "per-clip scores",
                                        f"run `gensr ablation --paradigm {paradigm} --strategy {strategy}`"))


def summarize_ablation(params: Params, *, track: bool = True) -> dict:
    """Table-3-style tables per split, the pre-registered verdicts, the figure, and the MLflow parent; the run's wall
    seconds go to reports/ablation_summary.json (not ablation.json: `dvc metrics diff` compares results)."""
    start = time.perf_counter()
    from gensr.evaluate.ablation import ablation_figure, ablation_rows, ablation_verdicts, table_markdown

    alpha = 1 - params.evaluate.confidence
    reports = Path(params.paths.reports)
    results, verdicts = {}, {}
    for paradigm in params.ablation.paradigms:
        for split in params.ablation.splits:
            res = {s: json.loads(require_path(report_dir(params, paradigm, s, split) / "evaluation.json", "evaluation",
                                              f"run `gensr ablation --paradigm {paradigm} --strategy {s}`").read_text())
                   for s in params.ablation.strategies}
            per_clip = {s: _per_clip(params, paradigm, s, split) for s in params.ablation.strategies}
            results[(paradigm, split)] = res
            verdicts[(paradigm, split)] = ablation_verdicts(res, per_clip, alpha, params.evaluate.n_bootstrap,
                                                            params.evaluate.confidence, params.seed,
                                                            params.evaluate.min_dimensions)
    rows = ablation_rows(results)
    md = table_markdown(results, verdicts, params.evaluate.confidence)
    _write_text(reports / "ablation.md", md)
    _write_text(reports / "ablation.csv", rows.to_csv(index=False, float_format="%.6g"))
    _write_text(reports / "ablation_plot.csv", rows[["paradigm", "split", "strategy", "metric", "diff", "ci_low",
                                                      "ci_high", "significant"]].to_csv(index=False, float_format="%.6g"))
    figure = ablation_figure(results, verdicts, reports / "ablation.png")
    metrics_json = {f"{p}/{split}": {"verdicts": v, "diff": {s: {m: r["metrics"][m]["diff"] for m in r["metrics"]}
                                                             for s, r in results[(p, split)].items()}}
                    for (p, split), v in verdicts.items()}
    write_json(metrics_json, reports / "ablation.json")
    summary = {"markdown": md, "figure": str(figure), "verdicts": {f"{p}/{s}": v for (p, s), v in verdicts.items()}}
    if track:
        summary["mlflow_run_id"] = _log_parent(params, md, rows, figure, verdicts)
    write_json({"paradigm_splits": len(verdicts), "seconds": round(time.perf_counter() - start, 2)},
               reports / "ablation_summary.json")
    return summary


def _log_parent(params: Params, md: str, rows: pd.DataFrame, figure: Path, verdicts: dict) -> str:
    from gensr.tracking import configure

    client = configure(params.paths.mlruns).tracking.MlflowClient()
    parent = parent_run_id(params)
    client.log_text(parent, md, "ablation.md")
    client.log_text(parent, rows.to_csv(index=False, float_format="%.6g"), "ablation.csv")
    client.log_artifact(parent, str(figure))
    for (paradigm, split), v in verdicts.items():
        h2h = v["head_to_head"].get("multi_vs_sft_clean")
        if h2h is not None:
            client.set_tag(parent, f"verdict.{paradigm}.{split}.multi_vs_sft_clean", str(h2h["winner"]))
        for strategy, hv in v["hacking"].items():
            client.set_tag(parent, f"verdict.{paradigm}.{split}.hacking.{strategy_slug(strategy)}", str(hv["hacking"]))
    return parent
