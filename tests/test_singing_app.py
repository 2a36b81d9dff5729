"""The singing application after the corpus: pseudo-labels and their quality gate, Voicefixer fine-tuning that
cannot reach a clean singing reference, and a tiny end-to-end run (corpus -> labels from a tiny random MGM saved
with the real code -> initial + fine-tuned Voicefixer -> evaluation table with CIs)."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from gensr.audio.io import read_wav, write_wav

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
TINY_VF = [
    "voicefixer.model.n_mels=32", "voicefixer.model.denoiser_hidden=32", "voicefixer.model.unet_channels=[8, 8]",
    "voicefixer.model.vocoder_channels=32", "voicefixer.model.vocoder_cond_channels=16",
    "voicefixer.model.vocoder_resstack_depth=[1, 1, 1, 1]", "voicefixer.model.vocoder_mel_weight=false",
    "voicefixer.train.stft_resolutions=[[256, 64, 256]]", "voicefixer.finetune.stft_resolutions=[[256, 64, 256]]",
    "voicefixer.log_examples=1", "voicefixer.restore_batch=4",
] + [f"voicefixer.{run}.{phase}={{steps: {steps}, batch_size: 2, lr: 3.0e-3, warmup_steps: 0, weight_decay: 0.0, "
     f"grad_clip: 1.0, crop_seconds: 0.3}}"
     # 10 fine-tuning steps: Lightning logs every 10th, so the MLflow run gets a loss curve
     for run, steps in (("train", 3), ("finetune", 10)) for phase in ("analysis", "vocoder")]
# The tiny random MGM makes junk: the end-to-end run lets every label through (the gate has its own test).
OPEN_GATE = [("pseudo_labels.gate={silence_dbfs: -300.0, max_level_drop_db: 300.0, max_length_diff_s: 0.01, "
             "min_pitch_agreement: null, pitch_tolerance_cents: 100.0, "
             "min_dnsmos_sig: 1.0, min_dnsmos_bak: 1.0, min_dnsmos_ovrl: 1.0}"), "pseudo_labels.min_kept=1"]


def speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 + 40 * rng.random()
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.random() * 6) / k for k in range(1, 8))
    return (0.2 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def tiny_mgm(seed: int):
    """A real MGM restorer with tiny dims and random weights (as tests/test_align.py builds them)."""
    from gensr.models.codec import SpectralCodec
    from gensr.models.registry import restorer_class

    torch.manual_seed(seed)
    codec = SpectralCodec({"stft": {"n_fft": 128, "hop": 64, "log_floor": 1e-4},
                           "model": {"n_codebooks": 2, "codebook_size": 8, "hidden": 16, "layers": 1, "kernel": 3,
                                     "latent_dim": 4}})
    codec.codebooks.copy_(torch.randn_like(codec.codebooks))
    model = {"d_model": 16, "heads": 2, "layers": 1, "cond_layers": 1, "cond_kernel": 3}
    sampling = {"temperature": 1.0, "top_k": 4, "steps": 2, "confidence_noise": 1.0}
    return restorer_class("mgm").from_codec(codec, model, sampling)


def _speech_corpus(data: Path) -> None:
    """data/degraded: a manifest with train and test (degraded, clean) speech-like pairs."""
    rows = []
    for i in range(6):
        clean = speech_like(1.0, i)
        noisy = clean + np.random.default_rng(50 + i).normal(0, 0.05, clean.shape).astype(np.float32)
        write_wav(data / "degraded" / "clean" / f"u{i}.wav", clean, SR)
        write_wav(data / "degraded" / "wav" / f"u{i}.wav", noisy, SR)
        rows.append({"deg_id": f"u{i}__d0", "utt_id": f"u{i}", "split": "train" if i < 4 else "test",
                     "path": f"wav/u{i}.wav", "clean_path": f"clean/u{i}.wav", "text": "a b", "speaker": "s"})
    pq.write_table(pa.Table.from_pylist(rows), data / "degraded" / "manifest.parquet")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project: singing corpus (4 finetune + 2 test + 1 real), speech pairs, tiny MGM checkpoints."""
    from gensr.config import load_params
    from gensr.stages.singing_corpus import build_singing_corpus

    base = tmp_path_factory.mktemp("singing_app")
    user = base / "user"
    user.mkdir()
    t = np.arange(int(1.2 * SR)) / SR
    sf.write(user / "aria.wav", 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))), SR)
    overrides = [f"paths.data={base / 'data'}", f"paths.models={base / 'models'}", f"paths.reports={base / 'reports'}",
                 f"paths.mlruns={base / 'mlruns'}", "singing.n_clips=6", "singing.voices=[en-us+m1, en-us+f2]",
                 "singing.workers=1", "singing.degrade.workers=1", f"singing.user_dir={user}", "restorers.threads=1",
                 "metrics.workers=1", "evaluate.n_bootstrap=200", "singing_eval.triptychs=2",
                 "singing_eval.content_check_clips=2",
                 "metrics.names=[dnsmos_sig, dnsmos_bak, dnsmos_ovrl, pesq_wb, si_sdr, mel_distance, wer, cer]",
                 *TINY_VF, *OPEN_GATE]
    params = load_params(ROOT / "params.yaml", overrides)
    build_singing_corpus(params, progress=False)
    _speech_corpus(base / "data")
    from gensr.layout import base_checkpoint
    from gensr.stages.singing import annotator_checkpoint

    tiny_mgm(0).save(base_checkpoint(params, "mgm"))
    tiny_mgm(1).save(annotator_checkpoint(params, "aligned"))
    return params, overrides, base


@pytest.fixture(scope="module")
def labelled(project):
    from gensr.stages.singing import build_pseudo_labels

    params, _, _ = project
    return build_pseudo_labels(params, progress=False)


@pytest.fixture(scope="module")
def trained(project, labelled):
    from gensr.stages.singing import finetune_voicefixer, train_initial_voicefixer

    params, _, _ = project
    initial = train_initial_voicefixer(params, track=True)
    tuned = {s: finetune_voicefixer(params, s, track=True) for s in ("aligned", "base")}
    return initial, tuned


# --- the quality gate --------------------------------------------------------------------------------------
def test_the_gate_drops_labels_made_bad_on_purpose_with_their_reason(project, tmp_path):
    from gensr.config.pseudo import LabelGate
    from gensr.pseudo.gate import gate_labels

    params, _, base = project
    singing = base / "data" / "singing"
    refs = pq.read_table(singing / "references.parquet").to_pylist()
    source = singing / pq.read_table(singing / "test.parquet").to_pylist()[0]["path"]
    good = read_wav(singing / refs[0]["clean_path"])[0]
    n = read_wav(source)[0].size
    good = np.pad(good, (0, max(0, n - good.size)))[:n]  # the clean clip of this input: same length
    rng = np.random.default_rng(0)
    bad = {
        "good": good,
        "silence": np.zeros(n, np.float32),
        "noise": rng.normal(0, 0.1, n).astype(np.float32),
        "nan": np.where(np.arange(n) % 100 == 0, np.nan, good).astype(np.float32),
        "short": good[: n // 2],
        "quiet": good * np.float32(10 ** (-40 / 20)),
    }
    items = []
    for name, wave in bad.items():
        path = tmp_path / f"{name}.wav"
        sf.write(path, wave, SR, subtype="FLOAT")
        items.append({"clip_id": name, "label": path, "input": source})
    gate = LabelGate(silence_dbfs=-60.0, max_level_drop_db=20.0, max_length_diff_s=0.01, min_pitch_agreement=None,
                     pitch_tolerance_cents=100.0, min_dnsmos_sig=1.8, min_dnsmos_bak=1.8, min_dnsmos_ovrl=1.4)
    out = {r["clip_id"]: r for r in gate_labels(items, gate, params.metrics, tmp_path / "scores.parquet", SR,
                                                progress=False)}
    print({k: (v["reason"], round(v["dnsmos_bak"], 2)) for k, v in out.items()})
    assert out["good"]["kept"] and out["good"]["reason"] is None
    assert out["silence"]["reason_code"] == "silent" and "pseudo_labels.gate.silence_dbfs" in out["silence"]["reason"]
    assert out["noise"]["reason_code"].startswith("low_dnsmos_") and not out["noise"]["kept"]
    assert out["nan"]["reason_code"] == "non_finite"
    assert out["short"]["reason_code"] == "length" and "max_length_diff_s" in out["short"]["reason"]
    assert out["quiet"]["reason_code"] == "too_quiet"
    assert all(np.isnan(out[k]["dnsmos_ovrl"]) for k in ("silence", "nan", "short", "quiet"))  # not scored
    assert all(np.isnan(r["pitch_agreement"]) for r in out.values())  # the pitch check is off in this gate


def test_the_pitch_check_drops_labels_that_lost_the_melody(project):
    """Brown noise (which DNSMOS scores as high as singing) and the same singing an octave up are dropped as
    off_pitch; the clean singing of the input is kept; an input without a voiced frame cannot judge a label."""
    import pyworld as pw

    from gensr.config import load_params
    from gensr.config.pseudo import LabelGate
    from gensr.pseudo.gate import pitch_agreement, signal_check

    _params, _, base = project
    singing = base / "data" / "singing"
    clean = read_wav(singing / pq.read_table(singing / "references.parquet").to_pylist()[0]["clean_path"])[0]
    rng = np.random.default_rng(1)
    noisy_input = (clean + rng.normal(0, 0.1 * np.sqrt(np.mean(clean**2)), clean.size)).astype(np.float32)  # 20 dB SNR
    x = clean.astype(np.float64)
    f0, sp, ap = pw.wav2world(x, SR)
    octave_up = pw.synthesize(f0 * 2, sp, ap, SR)[: clean.size]
    octave_up = np.pad(octave_up, (0, clean.size - octave_up.size)).astype(np.float32)
    brown = np.cumsum(rng.normal(size=clean.size))
    brown -= np.linspace(brown[0], brown[-1], clean.size)
    brown = (brown / np.abs(brown).max() * 10 ** (-6 / 20)).astype(np.float32)
    gate = load_params(ROOT / "params.yaml").pseudo_labels.gate  # the default gate (the project's is opened)
    assert gate.min_pitch_agreement is not None

    assert pitch_agreement(clean, clean, SR, 100.0) == 1.0
    reason, stats = signal_check(clean, noisy_input, SR, gate)
    assert reason is None and stats["pitch_agreement"] >= 0.8, stats
    for label in (brown, octave_up):
        reason, stats = signal_check(label, noisy_input, SR, gate)
        assert reason is not None and reason.startswith("off_pitch:"), (reason, stats)
        assert "pseudo_labels.gate.min_pitch_agreement" in reason and stats["pitch_agreement"] < 0.1
    reason, stats = signal_check(brown, np.zeros_like(clean), SR, gate)
    assert np.isnan(stats["pitch_agreement"]) and reason is None
    off = LabelGate(**{**gate.model_dump(), "min_pitch_agreement": None})
    assert signal_check(brown, noisy_input, SR, off)[0] is None  # null turns the check off


def test_label_tables_say_kept_or_dropped_and_why_for_every_clip(project, labelled):
    _params, _, base = project
    n = pq.read_table(base / "data" / "singing" / "finetune.parquet").num_rows
    assert labelled["splits"] == {"finetune": 4, "real": 1}
    for source in ("aligned", "base"):
        table = pd.read_parquet(base / "data" / "singing_labels" / source / "labels.parquet")
        assert len(table) == n and set(table["split"]) == {"finetune", "real"}
        assert (table["kept"] == table["reason"].isna()).all()
        s = labelled["sources"][source]
        assert s["n_kept"] + sum(s["dropped"].values()) == n
        assert all((base / "data" / "singing_labels" / source / p).is_file() for p in table["path"])
    a = pd.read_parquet(base / "data" / "singing_labels" / "aligned" / "labels.parquet")
    b = pd.read_parquet(base / "data" / "singing_labels" / "base" / "labels.parquet")
    assert (a["seed"] == b["seed"]).all() and a["checkpoint_sha256"].iloc[0] != b["checkpoint_sha256"].iloc[0]


# --- fine-tuning cannot read a clean singing reference ----------------------------------------------------
def test_finetuning_takes_no_path_to_a_reference_and_refuses_reference_columns(project, labelled, tmp_path):
    from gensr.pseudo.finetune import (
        check_no_reference,
        finetune_on_labels,
        training_pairs,
    )

    _params, _, base = project
    signature = inspect.signature(finetune_on_labels)
    assert not [p for p in signature.parameters if "ref" in p or "clean" in p]
    singing = base / "data" / "singing"
    finetune = pq.read_table(singing / "finetune.parquet")
    check_no_reference(finetune, "finetune.parquet")  # the corpus hands training no reference column
    labels = pq.read_table(base / "data" / "singing_labels" / "aligned" / "labels.parquet")
    check_no_reference(labels, "labels.parquet")
    refs = pq.read_table(singing / "references.parquet")
    with_ref = finetune.append_column("clean_path", pa.array([None] * finetune.num_rows, pa.string()))
    label_root = base / "data" / "singing_labels" / "aligned"
    with pytest.raises(ValueError, match="reference column"):
        training_pairs(with_ref, singing, labels, label_root, SR)
    with pytest.raises(ValueError, match="reference column"):
        training_pairs(finetune, singing, refs, label_root, SR)
    test_rows = pq.read_table(singing / "test.parquet")
    with pytest.raises(ValueError, match="split"):
        training_pairs(pa.concat_tables([finetune, test_rows]), singing, labels, label_root, SR)
    sneaky = finetune.set_column(finetune.schema.get_field_index("path"), "path",
                                 pa.array([f"clean/wav/{u}.wav" for u in finetune.column("utt_id").to_pylist()]))
    with pytest.raises(ValueError, match="outside its clean/ folder"):
        training_pairs(sneaky, singing, labels, label_root, SR)


def test_finetuned_weights_do_not_change_without_the_clean_singing(project, trained, tmp_path):
    """Fine-tune again after deleting references.parquet and clean/: byte-identical weights."""
    from gensr.config import load_params
    from gensr.stages.singing import finetune_voicefixer

    _params, overrides, base = project
    _, tuned = trained
    copy = tmp_path / "data"
    shutil.copytree(base / "data", copy)
    shutil.rmtree(copy / "singing" / "clean")
    (copy / "singing" / "references.parquet").unlink()
    models = tmp_path / "models"
    shutil.copytree(base / "models" / "voicefixer" / "initial", models / "voicefixer" / "initial")
    again = finetune_voicefixer(load_params(ROOT / "params.yaml", overrides + [f"paths.data={copy}",
                                                                               f"paths.models={models}"]),
                                "aligned", track=False)
    assert again["checkpoint_sha256"] == tuned["aligned"]["checkpoint_sha256"]


# --- end to end -----------------------------------------------------------------------------------------
def test_finetuning_is_an_mlflow_run_with_params_curves_and_examples(project, trained):
    import mlflow

    from gensr.tracking import tracking_uri

    _params, _, base = project
    initial, tuned = trained
    assert initial["train"]["analysis"]["steps"] == 3
    assert initial["train"]["vocoder"] is None  # synthesis input_phase (params.yaml): no vocoder to train
    client = mlflow.tracking.MlflowClient(tracking_uri(base / "mlruns"))
    for source, s in tuned.items():
        run = client.get_run(s["mlflow_run_id"])
        assert client.get_experiment(run.info.experiment_id).name == "gensr-voicefixer"
        assert run.data.params["labels"] == source and "finetune.analysis.steps" in run.data.params
        assert client.get_metric_history(run.info.run_id, "voicefixer/analysis_loss")
        assert s["train"]["vocoder"] is None  # voicefixer.finetune.freeze_vocoder
        files = [f.path for f in client.list_artifacts(run.info.run_id, "examples")]
        assert len(files) == 1
        inner = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, files[0])}
        assert {"degraded.wav", f"{source}_label.wav", "initial.wav", "finetuned.wav", "spectrogram.png"} <= inner
        assert "clean.wav" not in inner


def test_voicefixer_runs_keep_their_checkpoints_and_the_finetuned_ones_name_the_initial_run(project, trained):
    """Each Voicefixer checkpoint is an artifact of the run that wrote it (checkpoint/voicefixer.pt, sha256 tag);
    a fine-tuned run names the initial run it starts from (tag and summary)."""
    import mlflow

    from gensr import tracking

    _params, _, base = project
    initial, tuned = trained
    client = mlflow.tracking.MlflowClient(tracking.tracking_uri(base / "mlruns"))
    for s in (initial, *tuned.values()):
        run = client.get_run(s["mlflow_run_id"])
        assert client.get_experiment(run.info.experiment_id).name == "gensr-voicefixer"
        assert run.data.tags[tracking.TAG_CHECKPOINT] == s["checkpoint_sha256"]
        (artifact,) = client.list_artifacts(run.info.run_id, tracking.CHECKPOINT_ARTIFACTS)
        assert artifact.path == f"{tracking.CHECKPOINT_ARTIFACTS}/voicefixer.pt"
        local = client.download_artifacts(run.info.run_id, artifact.path, str(base / run.info.run_id))
        assert Path(local).read_bytes() == Path(s["checkpoint"]).read_bytes()
    for s in tuned.values():
        assert s["base_mlflow_run_id"] == initial["mlflow_run_id"]
        assert client.get_run(s["mlflow_run_id"]).data.tags[tracking.TAG_BASE_RUN] == initial["mlflow_run_id"]


def test_evaluation_table_has_every_system_with_cis_and_triptychs(project, trained):
    from gensr.stages.singing import SYSTEMS, evaluate_singing

    params, _, base = project
    res = evaluate_singing(params, progress=False)
    out = base / "reports" / "singing"
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["dropped_metrics"] == ["wer", "cer"] and "cannot score the lyrics" in saved["content_check"]["reason"]
    assert saved["test"]["n_clips"] == 2 and saved["real"]["n_clips"] == 1
    assert set(saved["test"]["means"]) == set(SYSTEMS)
    comp = saved["test"]["comparisons"]
    assert set(comp) == {"finetuned_aligned-initial", "finetuned_base-initial", "annotator-initial", "raw-initial",
                         "finetuned_aligned-finetuned_base"}
    pesq = comp["finetuned_aligned-finetuned_base"]["metrics"]["pesq_wb"]
    assert pesq["ci_low"] <= pesq["diff"] <= pesq["ci_high"] and pesq["significant"] in ("better", "worse", "ns")
    assert set(saved["real"]["means"]["raw"]) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}  # non-intrusive only
    per_clip = pd.read_parquet(out / "per_clip.parquet")
    real = per_clip[per_clip["split"] == "real"]
    assert len(real) == len(SYSTEMS) and real["pesq_wb"].isna().all()
    assert len(saved["triptychs"]) == 2 and all((out / p).is_file() for p in saved["triptychs"])
    table = (out / "table.md").read_text()
    for label in ("raw input", "initial Voicefixer", "fine-tuned on aligned labels", "base labels (control)",
                  "the annotator", "CI"):
        assert label in table
    assert res["target"]["met"] in (True, False)


def test_initial_voicefixer_is_reproducible(project, trained):
    """Seeded weights: a second run, after the global RNG has moved on, writes the same checkpoint bytes."""
    from gensr.stages.singing import train_initial_voicefixer

    params, _, _ = project
    torch.manual_seed(987)
    torch.rand(1000)
    again = train_initial_voicefixer(params, track=False)
    assert again["checkpoint_sha256"] == trained[0]["checkpoint_sha256"]


def test_cli_commands_explain_themselves():
    from gensr.cli import app

    runner = CliRunner()
    for command, phrase in (("singing-labels", "quality gate"), ("initial-voicefixer", "train split"),
                            ("finetune-voicefixer", "never a clean singing reference"),
                            ("singing-evaluation", "paired-bootstrap"),
                            ("singing-annotators", "never the singing test split"),
                            ("singing-probe", "oracle")):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
        text = " ".join(result.output.replace("│", " ").split()).lower()
        assert result.exit_code == 0 and phrase in text, (command, result.output)


def test_missing_checkpoint_is_an_error_naming_the_fix(project, tmp_path):
    from gensr.config import load_params
    from gensr.stages.singing import build_pseudo_labels

    _, overrides, _ = project
    params = load_params(ROOT / "params.yaml", overrides + [f"paths.models={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="gensr dpo --paradigm mgm"):
        build_pseudo_labels(params, progress=False)


# --- choosing the annotator on dev -------------------------------------------------------------------------
DEV = ["singing_dev.n_clips=8", "singing_dev.annotators=[aligned:mgm, base:mgm]",
       "singing_dev.metrics=[pesq_wb, si_sdr, mel_distance]"]


def test_annotators_are_compared_on_a_dev_build_of_their_own_and_never_on_the_test_split(project, trained):
    from gensr.config import load_params
    from gensr.stages.singing_dev import compare_annotators, dev_reports_dir

    _, overrides, base = project
    params = load_params(ROOT / "params.yaml", overrides + DEV)
    result = compare_annotators(params, progress=False)
    dev_root = base / "data" / "singing_dev" / "singing"
    assert result["build"] == str(dev_root) and result["n_clips"] == 6  # 8 x singing_dev.reference_fraction 0.75
    # the candidates, the codec's ceiling, and the student the labels are to teach (singing_dev.student)
    assert set(result["vs_raw"]) == {"aligned:mgm", "base:mgm", "codec_ceiling", "initial_voicefixer"}
    assert result["ceiling_codec_of"] == "aligned:mgm"
    for comparison in result["vs_raw"].values():
        assert comparison["b"] == "raw" and comparison["n_clips"] == 6
        assert set(comparison["metrics"]) == {"pesq_wb", "si_sdr", "mel_distance"}
        for v in comparison["metrics"].values():
            assert v["ci_low"] <= v["diff"] <= v["ci_high"] and v["significant"] in ("better", "worse", "ns")
    # its own draws: no clean sung clip of the dev build is one of the corpus' (audio compared, not names)
    corpus = {read_wav(p)[0].tobytes() for p in (base / "data" / "singing" / "clean" / "wav").glob("*.wav")}
    dev = [read_wav(p)[0].tobytes() for p in (dev_root / "clean" / "wav").glob("*.wav")]
    assert len(dev) == 8 and not corpus & set(dev)
    # the three restorations differ from each other and from the input (the table compares real outputs)
    some = sorted((base / "data" / "singing_dev" / "aligned_mgm" / "wav").glob("*.wav"))[0].name
    waves = [read_wav(base / "data" / "singing_dev" / name / "wav" / some)[0]
             for name in ("aligned_mgm", "base_mgm", "codec_ceiling", "initial_voicefixer")]
    assert all(not np.array_equal(waves[0], w) for w in waves[1:])
    table = (dev_reports_dir(params) / "annotators.md").read_text()
    assert "| aligned:mgm |" in table and "| codec_ceiling |" in table and "| initial_voicefixer |" in table
    # a rerun keeps the build and writes the same comparisons
    built = (dev_root / "summary.json").stat().st_mtime_ns
    again = compare_annotators(params, progress=False)
    assert (dev_root / "summary.json").stat().st_mtime_ns == built and again["vs_raw"] == result["vs_raw"]


def test_dev_builds_follow_the_generator_code_as_dvc_follows_the_singing_corpus_stage(project, monkeypatch):
    """The dev builds are keyed by the code the singing_corpus stage depends on in dvc.yaml: the same list, and a
    change of that code's digest rebuilds a build that its params alone would reuse."""
    import yaml

    import gensr.stages.singing_corpus as corpus
    from gensr.config import load_params
    from gensr.stages.singing_dev import build_key, dev_build_params

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["singing_corpus"]["deps"]
    code = sorted(d.removeprefix("src/gensr/") for d in deps if d.startswith("src/gensr/"))
    assert sorted(corpus.GENERATOR_SOURCES) == code
    digest = corpus.generator_digest()
    assert len(digest) == 64 and corpus.generator_digest() == digest

    _, overrides, _ = project
    build = dev_build_params(load_params(ROOT / "params.yaml", overrides + DEV))
    key = build_key(build)
    assert key["code"] == digest
    monkeypatch.setattr(corpus, "generator_digest", lambda: "an edited melody generator")
    assert build_key(build) != key and build_key(build)["code"] == "an edited melody generator"


def test_a_missing_candidate_annotator_is_named_with_its_fix_before_any_build(project, tmp_path):
    from gensr.config import load_params
    from gensr.stages.singing_dev import compare_annotators

    _, overrides, _ = project
    params = load_params(ROOT / "params.yaml", overrides + DEV + ["singing_dev.annotators=[base:mgm, aligned:fm]",
                                                                 f"paths.data={tmp_path / 'data'}"])
    with pytest.raises(FileNotFoundError, match=r"aligned:fm .*gensr dpo --paradigm fm"):
        compare_annotators(params, progress=False)
    assert not (tmp_path / "data").exists()
    with pytest.raises(Exception, match="singing_dev.seed"):
        load_params(ROOT / "params.yaml", overrides + [f"singing_dev.seed={params.singing.seed}"])


def test_labels_of_inputs_that_have_since_changed_are_not_resumed(tmp_path):
    """A labelling run that stopped after its first shard (here: the next input went missing), rerun after the
    inputs were re-made under the same names (a rebuilt singing set: new seed, same deg_ids), restores the new
    inputs instead of resuming the old labels."""
    from gensr.pseudo.restore import restore_clips

    restorer = tiny_mgm(0)
    rows = [{"deg_id": f"sing-{i}__d0", "path": f"degraded/sing-{i}__d0.wav"} for i in range(4)]

    def make_inputs(root: Path, seed: int) -> None:
        for i, r in enumerate(rows):
            write_wav(root / r["path"], speech_like(0.5, seed + i), SR)

    def run(root: Path) -> dict:
        return restore_clips(restorer, rows, root, root / "labels", lambda d: 7, shard_clips=2, sample_rate=SR,
                             checkpoint_sha256="the same annotator", progress=False)

    stopped, fresh = tmp_path / "stopped", tmp_path / "fresh"
    make_inputs(stopped, 0)
    (stopped / rows[2]["path"]).unlink()
    with pytest.raises(Exception, match="sing-2__d0.wav"):  # the second shard's first input
        run(stopped)
    assert len(list((stopped / "labels" / "shards").glob("shard-*.parquet"))) == 1
    make_inputs(stopped, 100)
    make_inputs(fresh, 100)
    resumed, clean_run = run(stopped), run(fresh)
    assert resumed["shards_resumed"] == 0
    for r in rows:
        name = f"wav/{r['deg_id']}.wav"
        assert np.array_equal(read_wav(stopped / "labels" / name)[0], read_wav(fresh / "labels" / name)[0])
    assert resumed["records"] == clean_run["records"]


# --- what each label source can teach the student, on dev ------------------------------------------------------
PROBE = ["singing_dev.probe.n_clips=8", "singing_dev.probe.test_fraction=0.25",
         "singing_dev.probe.sources=[oracle, aligned:mgm, base:mgm]",
         "singing_dev.metrics=[pesq_wb, si_sdr, mel_distance]"]


def test_the_probe_finetunes_the_student_on_each_label_source_and_scores_it_on_a_build_of_its_own(project, trained):
    import pyarrow.parquet as pq

    from gensr.config import load_params
    from gensr.stages.singing_probe import probe_dir, run_probe
    from gensr.voicefixer import load_voicefixer

    _, overrides, base = project
    params = load_params(ROOT / "params.yaml", overrides + PROBE)
    result = run_probe(params, progress=False)
    root = probe_dir(params) / "singing"
    assert result["build"] == str(root) and (result["n_train_clips"], result["n_test_clips"]) == (6, 2)
    assert set(result["vs_student"]) == {"finetuned_oracle", "finetuned_aligned_mgm", "finetuned_base_mgm", "raw"}
    for comparison in result["vs_student"].values():
        assert comparison["b"] == "initial_voicefixer" and comparison["n_clips"] == 2
        for v in comparison["metrics"].values():
            assert v["ci_low"] <= v["diff"] <= v["ci_high"] and v["significant"] in ("better", "worse", "ns")
    assert set(result["improves_student"]) == {"finetuned_oracle", "finetuned_aligned_mgm", "finetuned_base_mgm"}
    # the target's control: aligned-label fine-tuning minus base-label fine-tuning, paired on the same clips
    control = result["vs_base_labels"]["aligned:mgm"]
    assert set(result["vs_base_labels"]) == {"aligned:mgm"}
    assert (control["a"], control["b"], control["n_clips"]) == ("finetuned_aligned_mgm", "finetuned_base_mgm", 2)
    # the oracle's labels are the clean sung references of the probe's finetune clips, and only of those
    finetune = {r["deg_id"]: r for r in pq.read_table(root / "finetune.parquet").to_pylist()}
    test_ids = {r["deg_id"] for r in pq.read_table(root / "test.parquet").to_pylist()}
    oracle = pq.read_table(probe_dir(params) / "labels" / "oracle" / "labels.parquet").to_pylist()
    assert {r["deg_id"] for r in oracle} == set(finetune) and not set(finetune) & test_ids
    for r in oracle:
        clean = read_wav(root / "clean" / "wav" / f"{finetune[r['deg_id']]['utt_id']}.wav")[0]
        assert np.array_equal(read_wav(probe_dir(params) / "labels" / "oracle" / r["path"])[0], clean)
    assert result["labels"]["oracle"]["n_kept"] == 6 and result["labels"]["aligned:mgm"]["n_labels"] == 6
    # every label source trained its own copy of the student: the weights differ from it and from each other
    student = load_voicefixer(base / "models" / "voicefixer" / "initial" / "voicefixer.pt").state_dict()
    copies = [load_voicefixer(probe_dir(params) / "models" / name / "voicefixer.pt").state_dict()
              for name in ("oracle", "aligned_mgm", "base_mgm")]
    for a, b in ((student, copies[0]), (student, copies[1]), (copies[0], copies[1]), (copies[1], copies[2])):
        assert any(not torch.equal(a[k], b[k]) for k in a)
    # its own draws: no clean clip of the probe's build is one of the corpus' or the annotator comparison's
    others = {read_wav(p)[0].tobytes() for folder in (base / "data" / "singing", base / "data" / "singing_dev" / "singing")
              for p in (folder / "clean" / "wav").glob("*.wav")}
    mine = [read_wav(p)[0].tobytes() for p in (root / "clean" / "wav").glob("*.wav")]
    assert len(mine) == 8 and not others & set(mine)
    table = (base / "reports" / "singing_dev" / "probe.md").read_text()
    assert "| 6/6 | finetuned_oracle |" in table and "| raw input |" in table and "| aligned:mgm - base:mgm |" in table
    # a rerun keeps the build and gives the same numbers
    built = (root / "summary.json").stat().st_mtime_ns
    again = run_probe(params, progress=False)
    assert (root / "summary.json").stat().st_mtime_ns == built and again["vs_student"] == result["vs_student"]
    assert again["vs_base_labels"] == result["vs_base_labels"]


def test_the_probe_names_a_missing_label_source_before_any_build_and_needs_a_seed_of_its_own(project, tmp_path):
    from gensr.config import load_params
    from gensr.stages.singing_probe import run_probe

    _, overrides, _ = project
    params = load_params(ROOT / "params.yaml", overrides + PROBE + ["singing_dev.probe.sources=[oracle, aligned:fm]",
                                                                   f"paths.data={tmp_path / 'data'}"])
    with pytest.raises(FileNotFoundError, match=r"aligned:fm .*gensr dpo --paradigm fm"):
        run_probe(params, progress=False)
    assert not (tmp_path / "data").exists()
    for seed in ("singing.seed", "singing_dev.seed"):
        value = params.singing.seed if seed == "singing.seed" else params.singing_dev.seed
        with pytest.raises(Exception, match="singing_dev.probe.seed"):
            load_params(ROOT / "params.yaml", overrides + [f"singing_dev.probe.seed={value}"])
    with pytest.raises(Exception, match="oracle.*each source once|each source once"):
        load_params(ROOT / "params.yaml", overrides + ["singing_dev.probe.sources=[oracle, oracle]"])


def test_dagster_evaluation_asset_shows_table_triptychs_and_mlflow(project, trained):
    import dagster as dg

    from gensr_dagster.assets.singing import singing_evaluation
    from gensr_dagster.resources import MlflowResource, ParamsResource

    _, overrides, base = project
    result = dg.materialize([singing_evaluation], resources={
        "params": ParamsResource(params_path=str(ROOT / "params.yaml"), overrides=overrides),
        "mlflow": MlflowResource(mlruns_dir=str(base / "mlruns"))})
    assert result.success
    meta = result.asset_materializations_for_node("singing_evaluation")[0].metadata
    assert "initial Voicefixer" in meta["table"].value
    assert meta["triptychs"].value.count("data:image/png;base64,") == 2
    assert meta["mlflow"].value.startswith("http://127.0.0.1:")
