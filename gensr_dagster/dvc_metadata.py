"""The metadata an asset attaches when Dagster materializes it, read back from the files its DVC stage wrote.

`gensr dagster-sync` reports what `dvc repro` built; Dagster did not run the stage, so the summary the stage
function returned is gone, but every stage writes it (or what it is computed from) beside its outputs. One
reader per asset, keyed as in ASSET_METADATA; the keys and tables are those of the asset in gensr_dagster/assets/,
built with the same helpers. What no file records is left out, never made up: a stage's wall time where only
the Dagster asset measured it, the metric histograms only the Dagster asset draws, the demo page's section
status. A reader returns {} when its files are missing; a malformed file raises and the sync reports the error.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Callable

import dagster as dg

from gensr.config import Params
from gensr.stages.score import candidates_manifest, candidates_table


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _path(p: str | Path) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(Path(p).resolve()))


def _float(x) -> dg.MetadataValue:
    return dg.MetadataValue.float(float("nan") if x is None else float(x))


def _url(url: str | None) -> dict:
    return {"mlflow": dg.MetadataValue.url(url)} if url else {}


def _experiment_url(run_url: str | None) -> str | None:
    """The experiment's page from one of its runs' links (…/experiments/<id>/runs/<run>?view)."""
    return re.sub(r"/runs/[0-9a-f]+", "", run_url) if run_url else None


def _beside(folder: Path, recorded: str) -> Path:
    """A file a summary names (relative to the stage's working directory), found in the folder it was written to."""
    return folder / Path(recorded).name


# --- data ------------------------------------------------------------------------------------------
def clean_corpus(cfg: Params, partition=None) -> dict:
    import pyarrow.parquet as pq

    from gensr.stages.corpus import default_out_dir, summarize

    out = default_out_dir(cfg)
    if not (out / "manifest.parquet").is_file():
        return {}
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    quarantine = out / "quarantine.parquet"
    s = summarize(rows, pq.read_metadata(quarantine).num_rows if quarantine.is_file() else 0, out, cfg.corpus.source)
    split_rows = "\n".join(f"| {n} | {v['n_utterances']} | {v['n_speakers']} | {v['hours']:.3f} |"
                           for n, v in s["splits"].items())
    return {"path": _path(out), "source": s["source"], "n_utterances": s["n_utterances"],
            "n_speakers": s["n_speakers"], "speakers": dg.MetadataValue.json(s["speakers"]),
            "total_hours": _float(s["total_hours"]), "n_quarantined": s["n_quarantined"],
            **{f"n_{n}": v["n_utterances"] for n, v in s["splits"].items()},
            "splits": dg.MetadataValue.md("| split | utterances | speakers | hours |\n|---|---|---|---|\n" + split_rows)}


def degraded_corpus(cfg: Params, partition=None) -> dict:
    import pyarrow.parquet as pq

    from gensr.stages.degrade import summarize
    from gensr_dagster.assets.degrade import _dirs, _mix_markdown

    clean_dir, out = _dirs(cfg)
    if not (out / "manifest.parquet").is_file():
        return {}
    manifest = pq.read_table(out / "manifest.parquet")

    def rows(p: Path) -> int:
        return pq.read_metadata(p).num_rows if p.is_file() else 0

    s = summarize(manifest, rows(out / "quarantine.parquet"), rows(clean_dir / "manifest.parquet"), 0.0)
    return {"path": _path(out), "n_clean": s["n_clean"], "n_degraded": s["n_degraded"],
            "total_hours": _float(s["hours"]), "per_split": dg.MetadataValue.json(s["per_split"]),
            "degradation_mix": dg.MetadataValue.md(_mix_markdown(s["mix"])), "n_quarantined": s["n_quarantined"],
            "n_quarantined_clean": rows(clean_dir / "quarantine.parquet")}


def confirm_set(cfg: Params, partition=None) -> dict:
    out = Path(cfg.paths.data) / "confirm"
    s = _json(out / "summary.json")
    if s is None:
        return {}
    return {"n_utterances": s["n_utterances"], "n_speakers": s["n_speakers"], "hours": _float(s["hours"]),
            "shared_texts_with_main": s["shared_texts_with_main"], "path": _path(out)}


def metric_tables(cfg: Params, paradigm: str) -> dict:
    from gensr.metrics.suite import inputs_table_path
    from gensr.stages.score import candidates_table
    from gensr_dagster.assets.metrics import _summary_md

    tables = {"inputs": inputs_table_path(cfg, cfg.metrics.score_inputs_split),
              "candidates": candidates_table(cfg, paradigm)}
    summaries = {"inputs": tables["inputs"].with_suffix(".json"), "candidates": tables["candidates"].parent / "summary.json"}
    meta = {}
    for name, table in tables.items():
        s = _json(summaries[name])
        if s is None or not table.is_file():
            continue
        meta[f"{name}/path"] = _path(table)
        meta[f"{name}/n_clips"] = s["n_clips"]
        meta[f"{name}/wall_seconds"] = _float(s["wall_seconds"])
        meta[f"{name}/summary"] = dg.MetadataValue.md(_summary_md(s))
        hist = Path(cfg.paths.reports) / "metrics" / f"{paradigm}_{name}_hist.png"  # drawn by the Dagster asset only
        if hist.is_file():
            meta[f"{name}/histograms"] = _path(hist)
        for metric, m in s["metrics"].items():
            meta[f"{name}/{metric}/mean"] = _float(m["mean"])
            meta[f"{name}/{metric}/std"] = _float(m["std"])
            meta[f"{name}/{metric}/nan"] = m["nan"]
    return meta


# --- restorers -------------------------------------------------------------------------------------
def codec_checkpoint(cfg: Params, partition=None) -> dict:
    from gensr.stages import restorers
    from gensr_dagster.assets.restorers import _comparison_md

    s = _json(restorers.codec_dir(cfg) / "summary.json")
    if s is None:
        return {}
    return {"path": _path(restorers.codec_checkpoint(cfg)), "training_seconds": _float(s["train_seconds"]),
            "final_loss": _float(s["final_loss"]),
            "ceiling_degraded_phase": dg.MetadataValue.md(_comparison_md(s["ceiling"]["degraded_phase"])),
            "ceiling_clean_phase": dg.MetadataValue.md(_comparison_md(s["ceiling"]["clean_phase"])),
            **_url(s.get("mlflow_url"))}


def base_checkpoints(cfg: Params, paradigm: str) -> dict:
    from gensr.layout import base_checkpoint
    from gensr_dagster.assets.restorers import _comparison_md

    ckpt = base_checkpoint(cfg, paradigm)
    s = _json(ckpt.parent / "summary.json")
    if s is None:
        return {}
    meta = {"path": _path(ckpt), "training_seconds": _float(s["train_seconds"]),
            "final_loss": _float(s["final_loss"]), "trainable_params": s["n_trainable_params"],
            "test_vs_degraded": dg.MetadataValue.md(_comparison_md(s["test"]))}
    meta.update(_url(s.get("mlflow_url")))
    if s.get("codec_ceiling"):
        meta["codec_ceiling"] = dg.MetadataValue.md(_comparison_md(s["codec_ceiling"]["degraded_phase"]))
    return meta


def candidate_samples(cfg: Params, paradigm: str) -> dict:
    out = Path(cfg.paths.data) / "candidates" / paradigm
    s = _json(out / "summary.json")
    if s is None:
        return {}
    return {"path": _path(_beside(out, s["path"])), "candidates": s["n_rows"], "clips": s["n_clips"],
            "candidates_per_clip": s["n_candidates"], "sampling_seconds": _float(s["seconds"]),
            "shards_resumed": s["shards_resumed"], "sampling": dg.MetadataValue.json(s["sampling"])}


# --- alignment -------------------------------------------------------------------------------------
def preference_pairs(cfg: Params, paradigm: str) -> dict:
    from gensr.preference.stats import stats_markdown
    from gensr.stages.pairs import pair_sets, pairs_dir

    meta = {}
    for strategy in pair_sets(cfg, paradigm):
        s = _json(pairs_dir(cfg, paradigm, strategy) / "stats.json")
        if s is None:
            continue
        key = strategy.replace(":", "_")
        meta[f"{key}/n_pairs"] = s["n_pairs"]
        meta[f"{key}/clips_with_pair"] = s["n_clips_with_pair"]
        meta[f"{key}/pairs_per_clip"] = _float(s["pairs_per_clip_mean"])
        meta[f"{key}/stats"] = dg.MetadataValue.md(stats_markdown(s))
        meta[f"{key}/path"] = _path(pairs_dir(cfg, paradigm, strategy))
    return meta


def aligned_checkpoints(cfg: Params, paradigm: str) -> dict:
    from gensr.stages.dpo import aligned_dir

    out = aligned_dir(cfg, paradigm, cfg.dpo.strategy)
    s = _json(out / "summary.json")
    if s is None:
        return {}
    after, before = s["heldout_after"], s["heldout_before"]
    return {"checkpoint": _path(_beside(out, s["checkpoint"])), "strategy": cfg.dpo.strategy,
            "n_train_pairs": s["n_train_pairs"], "n_heldout_pairs": s["n_heldout_pairs"],
            "heldout_reward_accuracy": _float(after.get("rewards/accuracies")),
            "heldout_reward_margin": _float(after.get("rewards/margins")),
            "base_prefers_chosen": _float(before.get("reference_prefers_chosen")),
            "train_final": dg.MetadataValue.json(s["train_final"]), "seconds": _float(s["seconds"]),
            **_url(s.get("mlflow_url"))}


def evaluation(cfg: Params, paradigm: str) -> dict:
    from gensr.stages.dpo import aligned_dir
    from gensr.stages.evaluate import evaluation_dir

    out = evaluation_dir(cfg, paradigm)
    res = _json(out / "evaluation.json")
    if res is None:
        return {}
    meta = {"win_rate": _float(res["win_rate"]), "dimensions_improved": len(res["improved_dimensions"]),
            "significantly_worse": dg.MetadataValue.json(res["significantly_worse"]),
            "target_met": bool(res["target_met"]), "report": _path(out / "evaluation.json")}
    if (out / "table.md").is_file():
        meta["table"] = dg.MetadataValue.md((out / "table.md").read_text())
    table1 = Path(cfg.paths.reports) / "table1.md"
    if table1.is_file():
        meta["table1"] = _path(table1)
    dpo = _json(aligned_dir(cfg, paradigm, res.get("strategy") or cfg.evaluate.strategy) / "summary.json")
    return {**meta, **_url((dpo or {}).get("mlflow_url"))}


def base_evaluation(cfg: Params, paradigm: str) -> dict:
    s = _json(Path(cfg.paths.reports) / "base" / paradigm / "summary.json")
    return {f"{split}/n_clips": v["n_clips"] for split, v in (s or {}).items()}


def ablation(cfg: Params, key: str) -> dict:
    from gensr.stages.ablation import model_dir, report_dir
    from gensr_dagster.partitions import split_ablation_key

    paradigm, strategy = split_ablation_key(key)
    s = _json(report_dir(cfg, paradigm, strategy, "summary.json"))
    if s is None:
        return {}
    meta = {"objective": s["objective"], "train_seconds": _float(s["train_seconds"])}
    for split, r in s["evaluation"].items():
        meta[f"{split}/improves"] = r["target_met"]
        meta[f"{split}/verdict"] = dg.MetadataValue.json(r["verdict"])
    return {**meta, **_url((_json(model_dir(cfg, paradigm, strategy) / "summary.json") or {}).get("mlflow_url"))}


def ablation_summary(cfg: Params, partition=None) -> dict:
    reports = Path(cfg.paths.reports)
    md, figure, verdicts = reports / "ablation.md", reports / "ablation.png", _json(reports / "ablation.json")
    if not md.is_file() or verdicts is None:
        return {}
    meta = {"table": dg.MetadataValue.md(md.read_text()),
            "verdicts": dg.MetadataValue.json({k: v["verdicts"] for k, v in verdicts.items()})}
    if figure.is_file():
        png = base64.b64encode(figure.read_bytes()).decode()
        meta["figure"] = dg.MetadataValue.md(f"![ablation](data:image/png;base64,{png})")
        meta["figure_path"] = _path(figure)
    url = _ablation_parent_url(cfg)
    return {**meta, **_url(url)}


def _ablation_parent_url(cfg: Params) -> str | None:
    """The ablation's MLflow parent run, through one child's parentRunId tag (read-only: the store is not
    created or migrated); else the ablation experiment's page."""
    from gensr.stages.ablation import model_dir

    child = next((s for p in cfg.ablation.paradigms for st in cfg.ablation.strategies
                  if (s := _json(model_dir(cfg, p, st) / "summary.json")) and s.get("mlflow_run_id")), None)
    if child is None:
        return None
    db = Path(cfg.paths.mlruns) / "mlflow.db"
    if db.is_file():
        try:
            from mlflow.tracking import MlflowClient

            from gensr.tracking import tracking_uri, ui_url

            run = MlflowClient(tracking_uri(cfg.paths.mlruns)).get_run(child["mlflow_run_id"])
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent:
                return ui_url(run.info.experiment_id, parent)
        except Exception:  # noqa: BLE001 -- a store from elsewhere: fall back to the experiment's page
            pass
    return _experiment_url(child.get("mlflow_url"))


# --- report and singing ----------------------------------------------------------------------------
def demo_page(cfg: Params, partition=None) -> dict:
    from gensr.stages.report import demo_dir

    page = (demo_dir(cfg) / "index.html").resolve()
    if not page.is_file():
        return {}
    files = [f for f in page.parent.rglob("*") if f.is_file()]
    return {"page": dg.MetadataValue.path(str(page)), "open": dg.MetadataValue.url(page.as_uri()),
            "n_audio": sum(f.suffix == ".wav" for f in files), "n_images": sum(f.suffix == ".png" for f in files)}


def singing_corpus(cfg: Params, partition=None) -> dict:
    from gensr.stages.singing_corpus import singing_dir

    s = _json(singing_dir(cfg) / "summary.json")
    if s is None:
        return {}
    return {"n_clips": s["n_clips"], "splits": dg.MetadataValue.json(s["splits"]),
            "sung_seconds": _float(s["sung_seconds"]), "n_quarantined": s["n_quarantined"],
            "seconds": _float(s["seconds"]), "path": _path(singing_dir(cfg))}


def singing_pseudo_labels(cfg: Params, partition=None) -> dict:
    from gensr.stages.singing import labels_root
    from gensr_dagster.assets.singing import _counts_md

    s = _json(labels_root(cfg) / "summary.json")
    if s is None:
        return {}
    meta = {"paradigm": s["paradigm"], "strategy": s["strategy"], "n_clips": s["n_clips"],
            "labels": dg.MetadataValue.md(_counts_md(s)), "seconds": _float(s["seconds"]),
            "path": _path(labels_root(cfg))}
    for source, v in s["sources"].items():
        meta[f"{source}/kept"] = v["n_kept"]
        meta[f"{source}/dropped"] = dg.MetadataValue.json(v["dropped"])
    return meta


def initial_voicefixer(cfg: Params, partition=None) -> dict:
    from gensr.stages.singing import voicefixer_dir

    out = voicefixer_dir(cfg, "initial")
    s = _json(out / "summary.json")
    if s is None:
        return {}
    return {"checkpoint": _path(_beside(out, s["checkpoint"])), "n_train_pairs": s["n_train_pairs"],
            "official": s["official"], "parameters": dg.MetadataValue.json(s["parameters"]),
            "seconds": _float(s["seconds"]), **_url(s.get("mlflow_url"))}


def finetuned_voicefixer(cfg: Params, partition=None) -> dict:
    from gensr.stages.singing import voicefixer_dir

    meta = {}
    for source in ("aligned", "base"):
        out = voicefixer_dir(cfg, f"finetuned_{source}")
        s = _json(out / "summary.json")
        if s is None:
            continue
        meta[f"{source}/labels_kept"] = s["n_kept"]
        meta[f"{source}/labels_dropped"] = dg.MetadataValue.json(s["dropped"])
        meta[f"{source}/final_loss"] = _float(s["train"]["analysis"]["final_loss"])
        meta[f"{source}/checkpoint"] = _path(_beside(out, s["checkpoint"]))
        if s.get("mlflow_url"):
            meta[f"{source}/mlflow"] = dg.MetadataValue.url(s["mlflow_url"])
    return meta


def singing_evaluation(cfg: Params, partition=None) -> dict:
    from gensr.stages.singing import singing_reports_dir, voicefixer_dir
    from gensr_dagster.assets.singing import _png_md

    out = singing_reports_dir(cfg)
    res = _json(out / "evaluation.json")
    if res is None:
        return {}
    meta = {"target_met": bool(res["target"].get("met", False)),
            "dropped_metrics": dg.MetadataValue.json({"metrics": res["dropped_metrics"],
                                                      "reason": res["content_check"].get("reason")}),
            "report": _path(out / "table.md"), "seconds": _float(res["seconds"]["total"])}
    if (out / "table.md").is_file():
        meta["table"] = dg.MetadataValue.md((out / "table.md").read_text())
    if res.get("triptychs"):
        meta["triptychs"] = dg.MetadataValue.md("\n\n".join(_png_md(out / p, Path(p).stem) for p in res["triptychs"]))
    initial = _json(voicefixer_dir(cfg, "initial") / "summary.json") or {}
    return {**meta, **_url(_experiment_url(initial.get("mlflow_url")))}


def _shard(stage: str, table: Callable[[Params, str], Path]) -> Callable:
    """A shard partition that `dvc repro` built inside its paradigm's one stage run: where its rows are."""
    def metadata(cfg: Params, key: dg.MultiPartitionKey) -> dict:
        paradigm, shard = key.keys_by_dimension["paradigm"], key.keys_by_dimension["shard"]
        return {"gensr/built_by": dg.MetadataValue.text(f"`dvc repro` ran every shard of {paradigm} in one {stage} run; "
                                                        f"the rows of shard {shard} are in the table"),
                "table": _path(table(cfg, paradigm))}
    return metadata


ASSET_METADATA = {
    "candidate_shards": _shard("sample", candidates_manifest), "metric_shards": _shard("score_candidates", candidates_table),
    "clean_corpus": clean_corpus, "degraded_corpus": degraded_corpus, "confirm_set": confirm_set,
    "metric_tables": metric_tables, "codec_checkpoint": codec_checkpoint, "base_checkpoints": base_checkpoints,
    "candidate_samples": candidate_samples, "preference_pairs": preference_pairs,
    "aligned_checkpoints": aligned_checkpoints, "evaluation": evaluation, "base_evaluation": base_evaluation,
    "ablation": ablation, "ablation_summary": ablation_summary, "demo_page": demo_page,
    "singing_corpus": singing_corpus, "singing_pseudo_labels": singing_pseudo_labels,
    "initial_voicefixer": initial_voicefixer, "finetuned_voicefixer": finetuned_voicefixer,
    "singing_evaluation": singing_evaluation,
}
