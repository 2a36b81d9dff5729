"""Stages `train_codec` and `train_base`: the spectral codec and one SFT restorer per paradigm.

Outputs
    <paths.models>/codec/codec.pt, summary.json, ceiling/ (clean -> codec -> WAV, scored),
        degraded_test.parquet (the degraded test inputs scored once, shared by every paradigm)
    <paths.models>/base/<paradigm>/restorer.pt, summary.json, restored_test/ (scored)
Each is an MLflow run with params, loss curves and its checkpoint as an artifact: the codec in its own experiment
(kind "codec": its phases' losses and its ceiling), the restorers in "sft" (audio + spectrogram examples and the
test-split metrics: restored vs degraded with paired-bootstrap CIs).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from gensr.config import Params
from gensr.evaluate.bootstrap import paired_bootstrap
from gensr.layout import base_checkpoint, degraded_manifest
from gensr.sampling.restore import relative_path, restore_split, split_rows
from gensr.storage import file_sha256, write_json, write_parquet

HEADLINE_METRICS = ("dnsmos_ovrl", "pesq_wb")


# --- layout ---------------------------------------------------------------------------------------
def codec_dir(params: Params) -> Path:
    return Path(params.paths.models) / "codec"


def codec_checkpoint(params: Params) -> Path:
    return codec_dir(params) / "codec.pt"


def degraded_test_scores(params: Params) -> Path:
    return codec_dir(params) / "degraded_test.parquet"


# --- scoring ----------------------------------------------------------------------------------------
def score_wide(params: Params, manifest: Path, out: Path) -> pd.DataFrame:
    from gensr.metrics import to_wide
    from gensr.metrics.suite import score_manifest

    return to_wide(score_manifest(params, manifest, out)).set_index("clip_id").sort_index()


def degraded_inputs_wide(params: Params) -> pd.DataFrame:
    from gensr.metrics import to_wide
    from gensr.metrics.suite import score_inputs

    return to_wide(score_inputs(params, "test", out=degraded_test_scores(params))).set_index("clip_id").sort_index()


def compare_to_degraded(params: Params, restored: pd.DataFrame, degraded: pd.DataFrame) -> dict:
    """Per metric: means, mean difference (restored - degraded) and its paired-bootstrap CI."""
    common = restored.index.intersection(degraded.index)
    out = {}
    for metric in sorted(set(restored.columns) & set(degraded.columns)):
        r = restored.loc[common, metric].to_numpy(float)
        d = degraded.loc[common, metric].to_numpy(float)
        ci = paired_bootstrap(r - d, params.evaluate.n_bootstrap, params.evaluate.confidence, params.seed)
        out[metric] = {"degraded": float(np.nanmean(d)), "restored": float(np.nanmean(r)),
                       "diff": float(ci.mean), "ci_low": float(ci.ci_low), "ci_high": float(ci.ci_high),
                       "n": int(ci.n)}
    return out


def _log_comparison(mlflow, comparison: dict, prefix: str) -> None:
    for metric, row in comparison.items():
        for key in ("restored", "degraded", "diff", "ci_low", "ci_high"):
            if np.isfinite(row[key]):
                mlflow.log_metric(f"{prefix}/{metric}/{key}", row[key])


# --- codec ------------------------------------------------------------------------------------------
def _write_ceiling(params: Params, codec, out_dir: Path, phase: str, max_clips: int | None) -> Path:
    """Test clips: clean -> codec -> waveform with the `phase` ('degraded' or 'clean') phase."""
    import torch

    from gensr.audio.io import read_wav, write_wav
    deg_root, rows = split_rows(params, "test")
    rows = sorted(rows, key=lambda r: r["deg_id"])[:max_clips]
    records = []
    for r in rows:
        clean, _ = read_wav(deg_root / r["clean_path"])
        degraded, _ = read_wav(deg_root / r["path"])
        phase_from = degraded if phase == "degraded" else clean
        wave = codec.resynthesize(torch.from_numpy(clean)[None], torch.from_numpy(degraded)[None],
                                  torch.from_numpy(phase_from)[None])[0].numpy()
        write_wav(out_dir / "wav" / f"{r['deg_id']}.wav", wave, params.audio.sample_rate)
        records.append({"deg_id": r["deg_id"], "path": f"wav/{r['deg_id']}.wav",
                        "clean_path": relative_path(deg_root / r["clean_path"], out_dir), "text": r["text"]})
    return write_parquet(pa.Table.from_pylist(records), out_dir / "manifest.parquet")


def codec_ceiling(params: Params, codec, mlflow=None) -> dict:
    """Clean test codes through the decoder (degraded side input), written with the degraded phase (what
    a token restorer can reach at best) and with the clean phase, scored and compared to the degraded inputs."""
    out = codec_dir(params)
    degraded = degraded_inputs_wide(params)
    ceiling = {}
    for phase in ("degraded", "clean"):
        manifest = _write_ceiling(params, codec, out / f"ceiling_{phase}_phase", phase, params.codec.eval_clips)
        wide = score_wide(params, manifest, manifest.parent / "metrics.parquet")
        ceiling[f"{phase}_phase"] = compare_to_degraded(params, wide, degraded)
        if mlflow is not None:
            _log_comparison(mlflow, ceiling[f"{phase}_phase"], f"ceiling_{phase}_phase")
    return ceiling


def _devices(params: Params):
    """scaleout.trainer, or None (one CPU process) when params have no scaleout block."""
    return params.scaleout.trainer if params.scaleout is not None else None


def train_codec(params: Params, *, track: bool = True, dagster_run_id: str | None = None) -> dict:
    """Train the codec on the train split (clean; the decoder also reads the degraded side), save it and
    measure its ceiling on the test split: clean codes decoded with the degraded input as side input."""
    import torch

    from gensr.train.codec import save_codec, train_codec_model
    from gensr.train.data import load_paired_clips

    torch.set_num_threads(params.restorers.threads)
    out = codec_dir(params)
    clips = load_paired_clips(degraded_manifest(params), "train", params.audio.sample_rate)
    log_params = {"codec": params.codec.model_dump(mode="json"), "features": params.restorers.features.model_dump(),
                  "seed": params.seed, "n_train_clips": len(clips)}

    def run_all(run=None, mlflow=None) -> dict:
        from gensr.tracking import lightning_logger

        logger = lightning_logger(params.paths.mlruns, run) if run is not None else None
        codec, fit_summary = train_codec_model(params.codec, params.restorers.features, clips,
                                               params.audio.sample_rate, params.seed, logger, _devices(params))
        ckpt = save_codec(codec, codec_checkpoint(params))
        ceiling = codec_ceiling(params, codec, mlflow)
        summary = {**fit_summary, "checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt),
                   "n_params": sum(p.numel() for p in codec.parameters()), "ceiling": ceiling}
        if mlflow is not None:
            mlflow.log_metrics({"final_loss": fit_summary["final_loss"], "train_seconds": fit_summary["train_seconds"]})
        return summary

    return _run_and_record(params, out, "codec", "codec", "codec", log_params, degraded_manifest(params), run_all,
                           track=track, dagster_run_id=dagster_run_id)


# --- SFT restorers ------------------------------------------------------------------------------------
def build_restorer(params: Params, paradigm: str, clips):
    """A fresh restorer of `paradigm` sized by params (token paradigms wrap the trained codec)."""
    from gensr.models.ar import ARRestorer
    from gensr.models.fm import FMRestorer
    from gensr.models.mgm import MGMRestorer
    from gensr.train.codec import fit_norm, load_codec

    p = getattr(params.restorers, paradigm)
    if paradigm in ("ar", "mgm"):
        codec = load_codec(codec_checkpoint(params))
        if codec.config["stft"] != params.restorers.features.model_dump():
            raise ValueError(f"{codec_checkpoint(params)}: trained with other restorers.features; rerun `gensr train-codec`")
        cls = ARRestorer if paradigm == "ar" else MGMRestorer
        return cls.from_codec(codec, p.model.model_dump(), p.sampling.model_dump())
    restorer = FMRestorer.build(params.restorers.features.model_dump(), p.model.model_dump(), p.sampling.model_dump())
    fit_norm(restorer.norm, clips, restorer.stft_cfg)
    return restorer


def train_base(params: Params, paradigm: str, *, track: bool = True, dagster_run_id: str | None = None) -> dict:
    """SFT of one paradigm on the degraded train split, then restore + score the test split."""
    import torch

    from gensr.train.data import load_paired_clips
    from gensr.train.loop import fit

    torch.set_num_threads(params.restorers.threads)
    torch.manual_seed(params.seed)
    p = getattr(params.restorers, paradigm)
    ckpt = base_checkpoint(params, paradigm)
    out = ckpt.parent
    clips = load_paired_clips(degraded_manifest(params), "train", params.audio.sample_rate)
    restorer = build_restorer(params, paradigm, clips)
    n_params = sum(x.numel() for x in restorer.trainable_parameters())
    codec_sha = file_sha256(codec_checkpoint(params)) if paradigm in ("ar", "mgm") else None
    log_params = {"paradigm": paradigm, **p.model_dump(mode="json"), "features": params.restorers.features.model_dump(),
                  "seed": params.seed, "n_train_clips": len(clips), "n_trainable_params": n_params,
                  "codec_sha256": codec_sha}

    def run_all(run=None, mlflow=None) -> dict:
        from gensr.tracking import lightning_logger

        logger = lightning_logger(params.paths.mlruns, run) if run is not None else None
        fit_summary = fit(restorer, restorer.sft_loss, restorer.trainable_parameters(), clips, p.train,
                          params.audio.sample_rate, params.seed, logger, trainer=_devices(params))
        restorer.save(ckpt, extra={"codec_sha256": codec_sha, "final_loss": fit_summary["final_loss"]})
        manifest = restore_split(params, paradigm, ckpt, "test", out_dir=out / "restored_test",
                                 max_clips=params.restorers.eval_clips)
        t0 = time.perf_counter()
        comparison = compare_to_degraded(params, score_wide(params, manifest, manifest.parent / "metrics.parquet"),
                                         degraded_inputs_wide(params))
        summary = {"paradigm": paradigm, "train_seconds": fit_summary["seconds"], "final_loss": fit_summary["final_loss"],
                   "steps": fit_summary["steps"], "n_trainable_params": n_params, "checkpoint": str(ckpt),
                   "checkpoint_sha256": file_sha256(ckpt), "codec_sha256": codec_sha, "test": comparison,
                   "score_seconds": time.perf_counter() - t0,
                   "beats_degraded": {m: bool(comparison.get(m, {}).get("ci_low", float("nan")) > 0) for m in HEADLINE_METRICS}}
        codec_summary = codec_dir(params) / "summary.json"
        if paradigm in ("ar", "mgm") and codec_summary.is_file():
            import json

            summary["codec_ceiling"] = json.loads(codec_summary.read_text()).get("ceiling")
        if mlflow is not None:
            mlflow.log_metrics({"final_loss": fit_summary["final_loss"], "train_seconds": fit_summary["seconds"]})
            _log_comparison(mlflow, comparison, "test")
            _log_restored_examples(params, mlflow, manifest)
        return summary

    return _run_and_record(params, out, "sft", f"sft-{paradigm}", paradigm, log_params, degraded_manifest(params),
                           run_all, track=track, dagster_run_id=dagster_run_id)


def _log_restored_examples(params: Params, mlflow, manifest: Path) -> None:
    from gensr.audio.io import read_wav
    from gensr.train.examples import log_examples

    rows = pd.read_parquet(manifest).head(params.restorers.log_examples).to_dict("records")
    root = manifest.parent
    examples = [(r["deg_id"], {"degraded": read_wav(root / r["degraded_path"])[0],
                               "restored": read_wav(root / r["path"])[0],
                               "clean": read_wav(root / r["clean_path"])[0]}) for r in rows]
    log_examples(mlflow, examples, params.audio.sample_rate)


def _run_and_record(params: Params, out: Path, kind: str, run_name: str, paradigm: str, log_params: dict,
                    data_path: Path, run_all, *, track: bool, dagster_run_id: str | None) -> dict:
    """Run `run_all(run, mlflow)` inside an MLflow run of experiment `kind` (or `run_all()` untracked), log the
    checkpoint it wrote as an artifact; write summary.json."""
    if track:
        from gensr.tracking import run_with_checkpoint

        summary = run_with_checkpoint(params.paths.mlruns, kind, run_name, run_all, params=log_params,
                                      data_paths=(data_path,), dagster_run_id=dagster_run_id,
                                      tags={"gensr.paradigm": paradigm})
    else:
        summary = run_all()
    write_json(summary, out / "summary.json")
    return summary
