"""Assets of the singing application: `singing_corpus`, `singing_pseudo_labels`, `initial_voicefixer`,
`finetuned_voicefixer` and `singing_evaluation`, thin shells over gensr.stages.singing_corpus / singing.

The pseudo-labels depend on every partition of `aligned_checkpoints` and `base_checkpoints` (the annotator's
paradigm is pseudo_labels.paradigm, MGM by default); they are not partitioned themselves.
"""

import base64
from pathlib import Path

import dagster as dg

from gensr.stages import singing as stage
from gensr.stages.singing_corpus import build_singing_corpus
from gensr_dagster.resources import MlflowResource, ParamsResource


def _run_id(context) -> str | None:
    try:
        return context.run.run_id
    except Exception:  # noqa: BLE001 -- direct invocation in tests has no run
        return None


def _png_md(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"


def _counts_md(summary: dict) -> str:
    lines = ["| labels | kept | dropped (reason: count) |", "|---|---|---|"]
    for source, s in summary["sources"].items():
        dropped = ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()) or "none"
        lines.append(f"| {source} | {s['n_kept']} / {s['n_labels']} | {dropped} |")
    return "\n".join(lines)


@dg.asset(group_name="singing",
          description="Embedded singing corpus (data/singing): eSpeak NG lyrics sung by WORLD to seeded melodies, "
          "degraded; split finetune (no references handed out), test (references kept apart), real recordings.")
def singing_corpus(params: ParamsResource) -> dg.MaterializeResult:
    s = build_singing_corpus(params.load(), progress=False)
    return dg.MaterializeResult(metadata={
        "n_clips": s["n_clips"], "splits": dg.MetadataValue.json(s["splits"]),
        "sung_seconds": dg.MetadataValue.float(float(s["sung_seconds"])), "n_quarantined": s["n_quarantined"],
        "seconds": dg.MetadataValue.float(float(s["seconds"])),
        "path": dg.MetadataValue.path(str(Path(s["path"]).resolve())),
    })


@dg.asset(deps=[singing_corpus, "aligned_checkpoints", "base_checkpoints"], group_name="singing",
          description="Pseudo-clean labels of every finetune (and real) clip by the aligned annotator, and by its "
          "base as the control; each gated by non-intrusive checks (silence, NaN, length, level, DNSMOS).")
def singing_pseudo_labels(params: ParamsResource) -> dg.MaterializeResult:
    cfg = params.load()
    s = stage.build_pseudo_labels(cfg, progress=False)
    meta = {"paradigm": s["paradigm"], "strategy": s["strategy"], "n_clips": s["n_clips"],
            "labels": dg.MetadataValue.md(_counts_md(s)),
            "seconds": dg.MetadataValue.float(float(s["seconds"])),
            "path": dg.MetadataValue.path(str(Path(s["path"]).resolve()))}
    for source, v in s["sources"].items():
        meta[f"{source}/kept"] = v["n_kept"]
        meta[f"{source}/dropped"] = dg.MetadataValue.json(v["dropped"])
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=singing_pseudo_labels, blocking=True,
                description="Each label set keeps at least pseudo_labels.min_kept labels (what fine-tuning needs).")
def enough_labels_kept(params: ParamsResource) -> dg.AssetCheckResult:
    import json

    cfg = params.load()
    kept = {}
    for source in ("aligned", "base"):
        path = stage.labels_dir(cfg, source) / "summary.json"
        if path.is_file():
            kept[source] = json.loads(path.read_text())["n_kept"]
    need = cfg.pseudo_labels.min_kept if cfg.pseudo_labels else 1
    short = {k: v for k, v in kept.items() if v < need}
    return dg.AssetCheckResult(
        passed=len(kept) == 2 and not short,
        description=("no label summary found" if not kept else
                     f"fewer than pseudo_labels.min_kept={need}: {short}" if short else f"kept {kept}"),
        metadata={"kept": dg.MetadataValue.json(kept), "min_kept": need},
    )


@dg.asset(deps=["degraded_corpus"], group_name="singing",
          description="The initial Voicefixer: trained on (degraded, clean) speech of the corpus train split "
          "(or the official weights), tracked in MLflow ('voicefixer').")
def initial_voicefixer(context: dg.AssetExecutionContext, params: ParamsResource,
                       mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load([f"paths.mlruns={mlflow.mlruns_dir}"])
    s = stage.train_initial_voicefixer(cfg, dagster_run_id=_run_id(context))
    meta = {"checkpoint": dg.MetadataValue.path(str(Path(s["checkpoint"]).resolve())),
            "n_train_pairs": s["n_train_pairs"], "official": s["official"],
            "parameters": dg.MetadataValue.json(s["parameters"]),
            "seconds": dg.MetadataValue.float(float(s["seconds"]))}
    if s.get("mlflow_run_id"):
        meta["mlflow"] = dg.MetadataValue.url(mlflow.run_url(s["mlflow_run_id"], "gensr-voicefixer"))
    return dg.MaterializeResult(metadata=meta)


@dg.asset(deps=[initial_voicefixer, singing_pseudo_labels], group_name="singing",
          description="The initial Voicefixer fine-tuned on (degraded singing, kept pseudo-label) pairs: once on "
          "the aligned annotator's labels, once on the base labels (control); one MLflow run each. Training reads "
          "the finetune table and the labels only, never a clean singing reference.")
def finetuned_voicefixer(context: dg.AssetExecutionContext, params: ParamsResource,
                         mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load([f"paths.mlruns={mlflow.mlruns_dir}"])
    meta = {}
    for source in ("aligned", "base"):
        s = stage.finetune_voicefixer(cfg, source, dagster_run_id=_run_id(context))
        meta[f"{source}/labels_kept"] = s["n_kept"]
        meta[f"{source}/labels_dropped"] = dg.MetadataValue.json(s["dropped"])
        meta[f"{source}/final_loss"] = dg.MetadataValue.float(float(s["train"]["analysis"]["final_loss"]))
        meta[f"{source}/checkpoint"] = dg.MetadataValue.path(str(Path(s["checkpoint"]).resolve()))
        if s.get("mlflow_run_id"):
            meta[f"{source}/mlflow"] = dg.MetadataValue.url(mlflow.run_url(s["mlflow_run_id"], "gensr-voicefixer"))
    return dg.MaterializeResult(metadata=meta)


@dg.asset(deps=[finetuned_voicefixer, initial_voicefixer, singing_corpus, "aligned_checkpoints"], group_name="singing",
          description="Raw input, initial Voicefixer, Voicefixer fine-tuned on aligned / base labels and the aligned "
          "annotator on the singing test split (every metric, paired-bootstrap CIs) and the real recordings "
          "(non-intrusive only); spectrogram triptychs.")
def singing_evaluation(params: ParamsResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    cfg = params.load()
    res = stage.evaluate_singing(cfg, progress=False)
    out = Path(res["path"])
    meta = {"table": dg.MetadataValue.md(res["markdown"]),
            "target_met": bool(res["target"].get("met", False)),
            "dropped_metrics": dg.MetadataValue.json({"metrics": res["dropped_metrics"],
                                                      "reason": res["content_check"].get("reason")}),
            "report": dg.MetadataValue.path(str((out / "table.md").resolve())),
            "seconds": dg.MetadataValue.float(float(res["seconds"]["total"]))}
    if res["triptychs"]:
        meta["triptychs"] = dg.MetadataValue.md("\n\n".join(_png_md(out / p, Path(p).stem) for p in res["triptychs"]))
    from gensr.tracking import experiment_url

    meta["mlflow"] = dg.MetadataValue.url(experiment_url(mlflow.mlruns_dir, "voicefixer"))
    return dg.MaterializeResult(metadata=meta)
