"""Stages of the singing application after the corpus (gensr.stages.singing_corpus):

    singing_labels        data/singing_labels/{aligned,base}/wav/<deg_id>.wav, labels.parquet (kept / reason per
                          clip), summary.json; data/singing_labels/summary.json (counts per reason), gate_scores.parquet
    initial_voicefixer    models/voicefixer/initial/voicefixer.pt + summary.json: trained on (degraded, clean)
                          speech of the corpus train split (or the official weights, when voicefixer.official_* are set)
    finetuned_voicefixer  models/voicefixer/finetuned_{aligned,base}/voicefixer.pt + summary.json: the initial one
                          fine-tuned on (degraded singing, kept label) pairs; one MLflow run each ('voicefixer')
    singing_evaluation    reports/singing/: table.md, evaluation.json, per_clip.parquet, metrics.parquet,
                          triptychs/<deg_id>.png, restored/<system>/wav/

The annotator is a generative restorer (pseudo_labels.paradigm, default MGM): the aligned checkpoint
models/aligned/<paradigm>/<strategy>/restorer.pt makes the labels, the base checkpoint
models/base/<paradigm>/restorer.pt the control labels, with the same seed per clip. The fine-tuning stage reads
data/singing/finetune.parquet (no reference column), the degraded WAVs and the labels: never the clean singing.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gensr.config import Params
from gensr.config.pseudo import LABEL_SOURCES
from gensr.storage import file_sha256, require_path, write_json, write_parquet

VOICEFIXER_FILE = "voicefixer.pt"
SYSTEMS = ("raw", "initial", "finetuned_aligned", "finetuned_base", "annotator")
VOICEFIXER_SYSTEMS = ("initial", "finetuned_aligned", "finetuned_base")


# --- layout ---------------------------------------------------------------------------------------------
def singing_dir(params: Params) -> Path:
    return Path(params.paths.data) / "singing"


def labels_root(params: Params) -> Path:
    return Path(params.paths.data) / "singing_labels"


def labels_dir(params: Params, source: str) -> Path:
    _check_source(source)
    return labels_root(params) / source


def voicefixer_dir(params: Params, name: str) -> Path:
    """models/voicefixer/<name>: initial, finetuned_aligned or finetuned_base."""
    return Path(params.paths.models) / "voicefixer" / name


def singing_reports_dir(params: Params) -> Path:
    return Path(params.paths.reports) / "singing"


def annotator_checkpoint(params: Params, source: str, paradigm: str | None = None) -> Path:
    """The aligned restorer (source 'aligned') or its base (the control, 'base') of `paradigm` (default
    pseudo_labels.paradigm); the aligned one is pseudo_labels.strategy's."""
    from gensr.layout import base_checkpoint
    from gensr.stages.dpo import aligned_dir

    _check_source(source)
    cfg = _block(params, "pseudo_labels")
    paradigm = paradigm or cfg.paradigm
    if source == "base":
        return base_checkpoint(params, paradigm)
    return aligned_dir(params, paradigm, cfg.strategy) / "restorer.pt"


def annotator_fix(params: Params, source: str, paradigm: str | None = None) -> str:
    """The command that builds `annotator_checkpoint(params, source, paradigm)`."""
    cfg = _block(params, "pseudo_labels")
    paradigm = paradigm or cfg.paradigm
    if source == "aligned":
        return f"run `gensr dpo --paradigm {paradigm} --strategy {cfg.strategy}`"
    return f"run `gensr train-base --paradigm {paradigm}`"


def system_labels(params: Params) -> dict[str, str]:
    paradigm = _block(params, "pseudo_labels").paradigm.upper()
    return {"raw": "raw input", "initial": "initial Voicefixer",
            "finetuned_aligned": "Voicefixer fine-tuned on aligned labels",
            "finetuned_base": "Voicefixer fine-tuned on base labels (control)",
            "annotator": f"aligned {paradigm} (the annotator)"}


# --- helpers --------------------------------------------------------------------------------------------
def _check_source(source: str) -> None:
    if source not in LABEL_SOURCES:
        raise ValueError(f"label source must be one of {LABEL_SOURCES}, got {source!r}")


def _block(params: Params, name: str):
    block = getattr(params, name)
    if block is None:
        raise ValueError(f"params has no `{name}:` block; add one (see params.yaml)")
    return block


def _threads(params: Params) -> None:
    import torch

    torch.set_num_threads(int(params.restorers.threads))


def _finetune_table(params: Params) -> pa.Table:
    path = require_path(singing_dir(params) / "finetune.parquet", "singing finetune table",
                        "run `gensr singing-corpus`")
    return pq.read_table(path)


def _resampled(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    from gensr.audio.io import resample

    return resample(wave, sr_in, sr_out)


def restore_voicefixer(model, waves: list[np.ndarray], sample_rate: int, batch_size: int) -> list[np.ndarray]:
    """Voicefixer restorations at `sample_rate` (resampled to the model's rate and back when they differ)."""
    from gensr.voicefixer.train import restore

    inputs = [_resampled(w, sample_rate, model.sample_rate) for w in waves]
    outs = restore(model, inputs, batch_size)
    return [_resampled(o, model.sample_rate, sample_rate)[: w.size] for o, w in zip(outs, waves)]


def _tracked(params: Params, run_name: str, log_params: dict, data_paths: tuple, tags: dict, body,
             track: bool, dagster_run_id: str | None, starts_from: Path | None = None) -> dict:
    """Run `body(run, mlflow)` inside a 'voicefixer' MLflow run that keeps the checkpoint as an artifact and, when
    it `starts_from` one, names the run that wrote it (or `body(None, None)` untracked)."""
    if not track:
        return body(None, None)
    from gensr.tracking import run_with_checkpoint

    return run_with_checkpoint(params.paths.mlruns, "voicefixer", run_name, body, starts_from=starts_from,
                               params=log_params, data_paths=data_paths, dagster_run_id=dagster_run_id, tags=tags)


def _log_train_metrics(mlflow, summary: dict) -> None:
    for phase in ("analysis", "vocoder"):
        s = summary.get(phase)
        if s:
            mlflow.log_metrics({f"{phase}/final_loss": s["final_loss"], f"{phase}/seconds": s["seconds"]})


# --- stage: singing_labels ------------------------------------------------------------------------------
def build_pseudo_labels(params: Params, sources: tuple[str, ...] = LABEL_SOURCES, *, progress: bool = True) -> dict:
    """Restore every clip of the finetune table (finetune + real) with each annotator checkpoint, gate the
    labels, and write one label table per source (every clip, kept or not, with its reason)."""
    from gensr.pseudo.finetune import check_no_reference
    from gensr.pseudo.gate import LABEL_SCHEMA, gate_labels, reason_counts
    from gensr.pseudo.restore import restore_clips
    from gensr.sampling.restore import clip_seed, load_for_sampling

    start = time.perf_counter()
    cfg, sr = _block(params, "pseudo_labels"), params.audio.sample_rate
    root = singing_dir(params)
    table = _finetune_table(params)
    check_no_reference(table, str(root / "finetune.parquet"))
    rows = sorted(table.to_pylist(), key=lambda r: r["deg_id"])
    if not rows:
        raise ValueError(f"{root / 'finetune.parquet'}: no clip to label (singing.n_clips, singing.user_dir)")
    restored, checkpoints = {}, {}
    for source in sources:
        ckpt = annotator_checkpoint(params, source)
        fix = annotator_fix(params, source)
        require_path(ckpt, f"{source} annotator checkpoint (pseudo_labels.paradigm={cfg.paradigm})", fix)
        restorer = load_for_sampling(params, cfg.paradigm, ckpt)
        checkpoints[source] = {"path": str(ckpt), "sha256": file_sha256(ckpt)}
        restored[source] = restore_clips(
            restorer, rows, root, labels_dir(params, source), lambda d: clip_seed(cfg.seed, d, 0, "label"),
            shard_clips=cfg.shard_clips, sample_rate=sr, checkpoint_sha256=checkpoints[source]["sha256"],
            desc=f"labelling ({source} {cfg.paradigm})", progress=progress)
        del restorer
    by_id = {r["deg_id"]: r for r in rows}
    records = {s: {rec["deg_id"]: rec for rec in restored[s]["records"]} for s in sources}
    items = [{"clip_id": f"{source}/{deg_id}", "label": labels_dir(params, source) / rec["path"],
              "input": root / by_id[deg_id]["path"]}
             for source in sources for deg_id, rec in records[source].items()]
    gate_start = time.perf_counter()
    gated = {g["clip_id"]: g for g in gate_labels(items, cfg.gate, params.metrics, labels_root(params) /
                                                   "gate_scores.parquet", sr, progress=progress)}
    gate_seconds = time.perf_counter() - gate_start
    summary = {"paradigm": cfg.paradigm, "strategy": cfg.strategy, "n_clips": len(rows),
               "splits": dict(sorted(pd.Series([r["split"] for r in rows]).value_counts().items())),
               "gate": cfg.gate.model_dump(), "restore_seconds": {s: restored[s]["seconds"] for s in sources},
               "gate_seconds": round(gate_seconds, 3), "sources": {}}
    for source in sources:
        out_rows = []
        for row in rows:
            rec, g = records[source][row["deg_id"]], gated[f"{source}/{row['deg_id']}"]
            out_rows.append({
                "deg_id": row["deg_id"], "utt_id": row["utt_id"], "split": row["split"], "speaker": row["speaker"],
                "source": source, "paradigm": cfg.paradigm, "checkpoint_sha256": checkpoints[source]["sha256"],
                "seed": rec["seed"], "path": rec["path"], "duration_s": rec["n_samples"] / sr,
                **{k: g[k] for k in ("peak_dbfs", "level_drop_db", "pitch_agreement", "dnsmos_sig", "dnsmos_bak",
                                     "dnsmos_ovrl", "kept", "reason_code", "reason")}})
        write_parquet(pa.Table.from_pylist(out_rows, schema=LABEL_SCHEMA), labels_dir(params, source) / "labels.parquet")
        kept = [r for r in out_rows if r["kept"]]
        s = {"source": source, "checkpoint": checkpoints[source]["path"],
             "checkpoint_sha256": checkpoints[source]["sha256"], "n_labels": len(out_rows), "n_kept": len(kept),
             "kept_by_split": dict(sorted(pd.Series([r["split"] for r in kept], dtype=object).value_counts().items())),
             "dropped": reason_counts(out_rows),
             "kept_means": {m: (float(np.mean([r[m] for r in kept])) if kept else math.nan)
                            for m in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")}}
        write_json(s, labels_dir(params, source) / "summary.json")
        summary["sources"][source] = s
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["path"] = str(labels_root(params))
    write_json(summary, labels_root(params) / "summary.json")
    return summary


# --- stage: initial_voicefixer --------------------------------------------------------------------------
def train_initial_voicefixer(params: Params, *, track: bool = True, dagster_run_id: str | None = None) -> dict:
    """The initial Voicefixer: trained on (degraded, clean) speech of the corpus train split; with both
    voicefixer.official_* checkpoints set, the official weights are the initial model (no training)."""
    from gensr.layout import degraded_manifest
    from gensr.train.data import load_paired_clips
    from gensr.voicefixer import save_voicefixer, voicefixer_from_params
    import torch

    from gensr.voicefixer.train import train_voicefixer

    start = time.perf_counter()
    vf, sr = _block(params, "voicefixer"), params.audio.sample_rate
    _threads(params)
    torch.manual_seed(params.seed)  # the initial weights (training itself is seeded by its loop)
    model = voicefixer_from_params(vf)
    official = vf.official_analysis_ckpt is not None
    out = voicefixer_dir(params, "initial")
    manifest = require_path(degraded_manifest(params), "degraded corpus manifest", "run `gensr degrade`")
    clips = [] if official else load_paired_clips(manifest, "train", sr)
    pairs = [(_resampled(c.degraded, sr, model.sample_rate), _resampled(c.clean, sr, model.sample_rate)) for c in clips]
    log_params = {"model": model.config.model_dump(mode="json"), "train": vf.train.model_dump(mode="json"),
                  "official": official, "n_train_pairs": len(pairs), "seed": params.seed,
                  "parameters": model.parameter_counts()}

    def body(run, mlflow) -> dict:
        from gensr.tracking import lightning_logger

        logger = lightning_logger(params.paths.mlruns, run) if run is not None else None
        fit = None if official else train_voicefixer(model, pairs, vf.train, logger, seed=params.seed)
        ckpt = save_voicefixer(model, out / VOICEFIXER_FILE, extra={"stage": "initial", "official": official})
        summary = {"checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt), "official": official,
                   "n_train_pairs": len(pairs), "parameters": model.parameter_counts(), "train": fit,
                   "seconds": round(time.perf_counter() - start, 3)}
        if mlflow is not None:
            if fit:
                _log_train_metrics(mlflow, fit)
            _log_speech_examples(params, mlflow, model)
        return summary

    summary = _tracked(params, "initial", log_params, (manifest,), {"gensr.voicefixer": "initial"}, body, track,
                       dagster_run_id)
    write_json(summary, out / "summary.json")
    return summary


def _log_speech_examples(params: Params, mlflow, model) -> None:
    """Degraded / restored / clean of the first voicefixer.log_examples speech test clips."""
    from gensr.audio.io import read_wav
    from gensr.sampling.restore import split_rows
    from gensr.train.examples import log_examples

    n = params.voicefixer.log_examples
    if n == 0:
        return
    root, rows = split_rows(params, "test")
    rows = sorted(rows, key=lambda r: r["deg_id"])[:n]
    degraded = [read_wav(root / r["path"])[0] for r in rows]
    restored = restore_voicefixer(model, degraded, params.audio.sample_rate, params.voicefixer.restore_batch)
    log_examples(mlflow, [(r["deg_id"], {"degraded": d, "restored": o, "clean": read_wav(root / r["clean_path"])[0]})
                          for r, d, o in zip(rows, degraded, restored)], params.audio.sample_rate)


# --- stage: finetuned_voicefixer ------------------------------------------------------------------------
def finetune_voicefixer(params: Params, source: str, *, track: bool = True, dagster_run_id: str | None = None) -> dict:
    """Fine-tune the initial Voicefixer on (degraded singing, kept label of `source`) pairs.

    Reads data/singing/finetune.parquet, data/singing/degraded/ and data/singing_labels/<source>/ only."""
    from gensr.pseudo.finetune import finetune_on_labels
    from gensr.pseudo.gate import reason_counts
    from gensr.voicefixer import load_voicefixer, save_voicefixer

    start = time.perf_counter()
    _check_source(source)
    vf, cfg = _block(params, "voicefixer"), _block(params, "pseudo_labels")
    _threads(params)
    initial_ckpt = require_path(voicefixer_dir(params, "initial") / VOICEFIXER_FILE, "initial Voicefixer",
                                "run `gensr initial-voicefixer`")
    label_path = require_path(labels_dir(params, source) / "labels.parquet", f"{source} label table",
                              "run `gensr singing-labels`")
    finetune_path = singing_dir(params) / "finetune.parquet"
    finetune, labels = _finetune_table(params), pq.read_table(label_path)
    model = load_voicefixer(initial_ckpt)
    out = voicefixer_dir(params, f"finetuned_{source}")
    label_rows = labels.to_pylist()
    log_params = {"labels": source, "annotator_paradigm": cfg.paradigm, "annotator_strategy": cfg.strategy,
                  "finetune": vf.finetune.model_dump(mode="json"), "seed": params.seed,
                  "n_labels": len(label_rows), "n_kept": sum(r["kept"] for r in label_rows),
                  "gate": cfg.gate.model_dump(), "initial_sha256": file_sha256(initial_ckpt)}

    def body(run, mlflow) -> dict:
        from gensr.tracking import lightning_logger

        logger = lightning_logger(params.paths.mlruns, run) if run is not None else None
        fit = finetune_on_labels(model, finetune, singing_dir(params), labels, labels_dir(params, source), vf.finetune,
                                 seed=params.seed, min_kept=cfg.min_kept, logger=logger)
        ckpt = save_voicefixer(model, out / VOICEFIXER_FILE, extra={"stage": f"finetuned_{source}",
                                                                    "labels": source})
        summary = {"labels": source, "checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt),
                   "initial_sha256": log_params["initial_sha256"], "n_labels": len(label_rows),
                   "n_kept": len(fit["deg_ids"]), "dropped": reason_counts(label_rows),
                   "train": {k: fit[k] for k in ("analysis", "vocoder", "freeze_vocoder", "n_pairs")},
                   "seconds": round(time.perf_counter() - start, 3)}
        if mlflow is not None:
            _log_train_metrics(mlflow, fit)
            mlflow.log_metrics({"labels/n_kept": len(fit["deg_ids"]), "labels/n_dropped": len(label_rows) - len(fit["deg_ids"])})
            _log_label_examples(params, mlflow, model, initial_ckpt, source, fit["deg_ids"], finetune)
        return summary

    summary = _tracked(params, f"finetuned_{source}", log_params, (finetune_path, label_path),
                       {"gensr.voicefixer": f"finetuned_{source}", "gensr.labels": source}, body, track, dagster_run_id,
                       starts_from=initial_ckpt)
    write_json(summary, out / "summary.json")
    return summary


def _log_label_examples(params: Params, mlflow, model, initial_ckpt: Path, source: str, deg_ids: list[str],
                        finetune: pa.Table) -> None:
    """Degraded / pseudo-label / initial / fine-tuned of the first kept training clips (no reference exists here)."""
    from gensr.audio.io import read_wav
    from gensr.train.examples import log_examples
    from gensr.voicefixer import load_voicefixer

    ids = deg_ids[: params.voicefixer.log_examples]
    if not ids:
        return
    sr = params.audio.sample_rate
    paths = dict(zip(finetune.column("deg_id").to_pylist(), finetune.column("path").to_pylist()))
    degraded = [read_wav(singing_dir(params) / paths[d])[0] for d in ids]
    labels = [read_wav(labels_dir(params, source) / "wav" / f"{d}.wav")[0] for d in ids]
    initial = restore_voicefixer(load_voicefixer(initial_ckpt), degraded, sr, params.voicefixer.restore_batch)
    tuned = restore_voicefixer(model, degraded, sr, params.voicefixer.restore_batch)
    log_examples(mlflow, [(d, {"degraded": x, f"{source}_label": y, "initial": i, "finetuned": t})
                          for d, x, y, i, t in zip(ids, degraded, labels, initial, tuned)], sr)


# --- stage: singing_evaluation --------------------------------------------------------------------------
def _content_check(params: Params, refs: list[dict], root: Path) -> tuple[list[str], dict]:
    """WER/CER stay only if the content backend transcribes clean sung references (mean WER <= the bound)."""
    from gensr.metrics.suite import score_manifest

    ev = _block(params, "singing_eval")
    content = [m for m in ("wer", "cer") if m in params.metrics.names]
    if not content:
        return [], {"checked": False, "reason": "metrics.names has no WER/CER"}
    backend = params.metrics.content.backend
    if ev.content_check_clips == 0 or not refs:
        return content, {"checked": False, "reason": f"dropped unchecked (singing_eval.content_check_clips="
                                                     f"{ev.content_check_clips}, {len(refs)} references)"}
    rows = [{"clip_id": r["deg_id"], "path": str(root / r["clean_path"]), "ref_path": None, "text": r["text"]}
            for r in refs[: ev.content_check_clips]]
    cfg = params.metrics.model_copy(update={"names": content, "workers": 1})
    long = score_manifest(cfg, rows, singing_reports_dir(params) / "content_check.parquet", workers=1, progress=False)
    wer = float(long.loc[long["metric"] == "wer", "value"].mean()) if "wer" in content else math.nan
    info = {"checked": True, "backend": backend, "n_references": len(rows), "reference_wer": wer}
    if not np.isfinite(wer) or wer > ev.max_reference_wer:
        info["reason"] = (f"the content backend ({backend}) transcribes {len(rows)} clean sung references with mean "
                          f"WER {wer:.2f} > singing_eval.max_reference_wer={ev.max_reference_wer}: it cannot score "
                          "the lyrics, so WER/CER would measure the backend, not the restorers")
        return content, info
    info["reason"] = None
    return [], info


def evaluate_singing(params: Params, *, progress: bool = True) -> dict:
    """Every system on the singing test split (intrusive metrics against references.parquet, non-intrusive for
    all) and on the real recordings (non-intrusive only), with paired-bootstrap CIs."""
    from gensr.audio.io import read_wav, write_wav
    from gensr.metrics import to_wide
    from gensr.metrics.registry import get as metric_spec
    from gensr.metrics.suite import score_manifest
    from gensr.preference.suite import metric_info
    from gensr.pseudo.report import compare_systems, triptych_png
    from gensr.pseudo.restore import restore_clips
    from gensr.sampling.restore import clip_seed, load_for_sampling
    from gensr.voicefixer import load_voicefixer

    start = time.perf_counter()
    timings: dict[str, float] = {}
    ev, cfg, sr = _block(params, "singing_eval"), _block(params, "pseudo_labels"), params.audio.sample_rate
    _block(params, "voicefixer")
    _threads(params)
    root, out = singing_dir(params), singing_reports_dir(params)
    test_table = pq.read_table(require_path(root / "test.parquet", "singing test table", "run `gensr singing-corpus`"))
    test = sorted(test_table.to_pylist(), key=lambda r: r["deg_id"])[: ev.max_clips]
    refs = {r["deg_id"]: r for r in pq.read_table(require_path(root / "references.parquet", "singing references",
                                                                "run `gensr singing-corpus`")).to_pylist()}
    missing = [r["deg_id"] for r in test if r["deg_id"] not in refs]
    if missing:
        raise ValueError(f"{root / 'references.parquet'}: no reference for {len(missing)} test clips, e.g. {missing[:3]}")
    real = sorted((r for r in _finetune_table(params).to_pylist() if r["split"] == "real"), key=lambda r: r["deg_id"])
    rows = test + real
    checkpoints = {name: require_path(voicefixer_dir(params, name) / VOICEFIXER_FILE, f"{name} Voicefixer",
                                      "run `gensr initial-voicefixer`" if name == "initial" else
                                      f"run `gensr finetune-voicefixer --labels {name.split('_', 1)[1]}`")
                   for name in VOICEFIXER_SYSTEMS}
    annotator = require_path(annotator_checkpoint(params, "aligned"), "aligned annotator checkpoint",
                             annotator_fix(params, "aligned"))

    # restore: every Voicefixer, then the annotator (seeded per clip)
    t0 = time.perf_counter()
    inputs = [read_wav(root / r["path"])[0] for r in rows]
    paths = {"raw": {r["deg_id"]: root / r["path"] for r in rows}}
    for name, ckpt in checkpoints.items():
        shutil.rmtree(out / "restored" / name, ignore_errors=True)  # no WAV of an earlier clip set lingers
        restored = restore_voicefixer(load_voicefixer(ckpt), inputs, sr, params.voicefixer.restore_batch)
        paths[name] = {}
        for r, wave in zip(rows, restored):
            paths[name][r["deg_id"]] = write_wav(out / "restored" / name / "wav" / f"{r['deg_id']}.wav", wave, sr)
    timings["restore_voicefixers"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    restorer = load_for_sampling(params, cfg.paradigm, annotator)
    res = restore_clips(restorer, rows, root, out / "restored" / "annotator",
                        lambda d: clip_seed(cfg.seed, d, 0, "singing-eval"), shard_clips=cfg.shard_clips,
                        sample_rate=sr, checkpoint_sha256=file_sha256(annotator), desc="restoring (annotator)",
                        progress=progress)
    paths["annotator"] = {rec["deg_id"]: out / "restored" / "annotator" / rec["path"] for rec in res["records"]}
    del restorer
    timings["restore_annotator"] = time.perf_counter() - t0

    # score: one suite call over every system (one worker pool)
    t0 = time.perf_counter()
    dropped, content_info = _content_check(params, [refs[r["deg_id"]] for r in test], root)
    timings["content_check"] = time.perf_counter() - t0
    names = [n for n in params.metrics.names if n not in dropped]
    infos = metric_info(names)
    non_intrusive = [m for m in infos if not metric_spec(m.name).needs_reference and not metric_spec(m.name).needs_text]
    split_of = {r["deg_id"]: r["split"] for r in rows}
    score_rows = [{"clip_id": f"{system}/{r['deg_id']}", "path": str(paths[system][r["deg_id"]]),
                   "ref_path": str(root / refs[r["deg_id"]]["clean_path"]) if r["split"] == "test" else None,
                   "text": r.get("text") if r["split"] == "test" else None}
                  for system in SYSTEMS for r in rows]
    t0 = time.perf_counter()
    long = score_manifest(params.metrics.model_copy(update={"names": names}), score_rows, out / "metrics.parquet",
                          progress=progress)
    timings["score"] = time.perf_counter() - t0
    wide = to_wide(long)
    parts = wide["clip_id"].str.split("/", n=1, expand=True)
    wide.insert(0, "deg_id", parts[1])
    wide.insert(0, "system", parts[0])
    wide.insert(2, "split", wide["deg_id"].map(split_of))
    per_clip = wide.drop(columns="clip_id").sort_values(["system", "deg_id"]).reset_index(drop=True)
    write_parquet(pa.Table.from_pandas(per_clip, preserve_index=False), out / "per_clip.parquet")

    # compare
    labels = system_labels(params)
    boot = {"n_bootstrap": params.evaluate.n_bootstrap, "confidence": params.evaluate.confidence, "seed": params.seed}
    result = {"systems": labels, "metrics": names, "dropped_metrics": dropped, "content_check": content_info,
              "n_test": len(test), "n_real": len(real), "confidence": params.evaluate.confidence,
              "n_bootstrap": params.evaluate.n_bootstrap, "annotator": {"paradigm": cfg.paradigm,
                                                                        "strategy": cfg.strategy,
                                                                        "checkpoint": str(annotator)}}
    pairs = [(s, "initial") for s in ("finetuned_aligned", "finetuned_base", "annotator", "raw")] + \
            [("finetuned_aligned", "finetuned_base")]
    sections = {}
    for split, split_infos in (("test", infos), ("real", non_intrusive)):
        frame = per_clip[per_clip["split"] == split]
        if frame.empty:
            continue
        per_system = {s: frame[frame["system"] == s].set_index("deg_id")[[m.name for m in split_infos]] for s in SYSTEMS}
        comparisons = {f"{a}-{b}": compare_systems(per_system, a, b, split_infos, **boot) for a, b in pairs}
        means = {s: {m.name: float(per_system[s][m.name].mean()) for m in split_infos} for s in SYSTEMS}
        sections[split] = {"n_clips": int(frame["deg_id"].nunique()), "means": means, "comparisons": comparisons}
    result.update(sections)
    result["target"] = _target(sections.get("test"), infos)

    # triptychs (raw / initial / fine-tuned on aligned labels)
    trip = out / "triptychs"
    shutil.rmtree(trip, ignore_errors=True)
    result["triptychs"] = []
    for r in test[: ev.triptychs]:
        panels = {"raw": read_wav(paths["raw"][r["deg_id"]])[0], "initial Voicefixer": read_wav(paths["initial"][r["deg_id"]])[0],
                  "fine-tuned (aligned labels)": read_wav(paths["finetuned_aligned"][r["deg_id"]])[0]}
        png = triptych_png(trip / f"{r['deg_id']}.png", panels, sr, r["deg_id"])
        result["triptychs"].append(str(png.relative_to(out)))
        # the raw input beside its triptych (the restorations are in restored/<system>/wav/), for the demo page
        write_wav(trip / f"{r['deg_id']}_raw.wav", panels["raw"], sr)
    timings["total"] = time.perf_counter() - start
    result["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    result["markdown"] = _markdown(result, labels, infos, non_intrusive)
    from gensr.storage import atomic_path

    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(result["markdown"] + "\n")
    write_json({k: v for k, v in result.items() if k != "markdown"}, out / "evaluation.json")
    result["path"] = str(out)
    return result


def _target(test: dict | None, infos) -> dict:
    """The issue's target, read off the CIs: fine-tuned-on-aligned beats the initial Voicefixer on DNSMOS OVRL
    and on every intrusive metric, and beats the base-label control."""
    from gensr.metrics.registry import get as metric_spec

    if test is None:
        return {"met": False, "reason": "no test clips"}
    vs_initial = test["comparisons"]["finetuned_aligned-initial"]["metrics"]
    vs_control = test["comparisons"]["finetuned_aligned-finetuned_base"]["metrics"]
    intrusive = [m.name for m in infos if metric_spec(m.name).needs_reference]
    checks = {"ovrl_beats_initial": vs_initial.get("dnsmos_ovrl", {}).get("significant") == "better",
              "intrusive_beat_initial": {m: vs_initial[m]["significant"] == "better" for m in intrusive},
              "vs_control": {m: v["significant"] for m, v in vs_control.items()}}
    beats_control = any(v == "better" for v in checks["vs_control"].values()) and \
        not any(v == "worse" for v in checks["vs_control"].values())
    checks["beats_control"] = beats_control
    checks["met"] = bool(checks["ovrl_beats_initial"] and all(checks["intrusive_beat_initial"].values()) and beats_control)
    return checks


def _markdown(result: dict, labels: dict, infos, non_intrusive) -> str:
    from gensr.pseudo.report import comparison_markdown, means_markdown

    conf = round(result["confidence"] * 100)
    annotator = result["annotator"]
    intro = (f"Annotator: {annotator['paradigm'].upper()} aligned with `{annotator['strategy']}` pairs. {conf}% "
             f"paired-bootstrap CIs ({result['n_bootstrap']} resamples). `*` significantly better, `!` significantly "
             "worse than the initial Voicefixer.")
    lines = ["# Singing restoration: pseudo-label fine-tuning of Voicefixer", "", intro, ""]
    if result["dropped_metrics"]:
        lines += [f"Dropped: {', '.join(result['dropped_metrics'])}: {result['content_check']['reason']}.", ""]
    real_title = ("Real recordings (no reference: non-intrusive only; these are the fine-tuning inputs, "
                  "not held out)")
    for split, split_infos, title in (("test", infos, "Test split (synthetic singing, references held back)"),
                                      ("real", non_intrusive, real_title)):
        section = result.get(split)
        if section is None:
            continue
        flags = {c["a"]: {m: v["significant"] for m, v in c["metrics"].items()}
                 for c in section["comparisons"].values() if c["b"] == "initial"}
        table = means_markdown(section["means"], labels, split_infos, flags)
        lines += [f"## {title}: {section['n_clips']} clips", "", table, ""]
        for c in section["comparisons"].values():
            lines += [comparison_markdown(c, labels), ""]
    t = result["target"]
    if "ovrl_beats_initial" in t:
        intrusive = ", ".join(f"{m}: {v}" for m, v in t["intrusive_beat_initial"].items())
        lines += ["## Target", "",
                  f"- fine-tuned (aligned labels) beats the initial Voicefixer on DNSMOS OVRL: {t['ovrl_beats_initial']}",
                  f"- ... on every intrusive metric: {all(t['intrusive_beat_initial'].values())} ({intrusive})",
                  f"- beats the base-label control (some metric better, none worse): {t['beats_control']}",
                  f"- target met: **{t['met']}**", ""]
    if result["triptychs"]:
        lines += ["## Spectrograms (raw / initial / fine-tuned on aligned labels)", ""]
        lines += [f"- `{p}` (audio: `{p[:-len('.png')]}_raw.wav`, `restored/<system>/wav/{Path(p).stem}.wav`)"
                  for p in result["triptychs"]]
    return "\n".join(lines)
