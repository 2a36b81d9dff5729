"""Hostile input (issue 21): a clear refusal (exit 2, one line naming the file/param/flag) or a quarantine with
a reason, never a misleading number or a stale file. Every hostile input is built here, in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import PARAMS, ROOT


def gensr(*args):
    """The CLI in-process, as a user calls it: exit code, stdout and stderr apart, and any uncaught exception."""
    from typer.testing import CliRunner

    from gensr.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(result, *names: str) -> None:
    """Exit 2, one line on stderr naming every one of `names`, no traceback (no exception but the exit)."""
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:], result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for name in names:
        assert name in lines[0], (name, lines[0])


# --- 5. strict params --------------------------------------------------------------------------------------------
def _params_text_with(old: str, new: str) -> str:
    text = PARAMS.read_text()
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize("name, content, expected", [
    ("binary.yaml", bytes(range(256)) * 4, "not a YAML params file"),
    ("broken.yaml", b"seed: [1, 2\npaths: {data: x\n", "not valid YAML"),
    ("tabs.yaml", b"seed:\t1\n\t- x: {\n", "not valid YAML"),
    ("list.yaml", b"- seed\n- paths\n", "top level must be a mapping"),
])
def test_a_params_file_that_is_not_yaml_params_is_refused_naming_it(tmp_path, name, content, expected):
    from gensr.config import ConfigError, load_params

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as err:
        load_params(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_key_given_twice_is_refused_with_its_dotted_name(tmp_path):
    from gensr.config import ConfigError, load_params

    path = tmp_path / "params.yaml"
    path.write_text(_params_text_with("  min_seconds: 0.25        # shorter",
                                      "  min_seconds: 0.25\n  min_seconds: 0.5        # shorter"))
    with pytest.raises(ConfigError, match=r"metrics\.min_seconds .*given twice"):
        load_params(path)
    with pytest.raises(ConfigError, match=r"pairs\.margins\.pesq_wb .*given twice"):
        load_params(PARAMS, ["pairs.margins={pesq_wb: 0.1, pesq_wb: 0.2}"])


@pytest.mark.parametrize("override, key", [
    ("degrade.noise.snr_db=[0, 5", "degrade.noise.snr_db"),       # unclosed list
    ("pairs.margins={pesq_wb: 0.1", "pairs.margins"),              # unclosed mapping
    ("seed", "seed"),                                              # no '='
    ("=3", "=3"),                                                  # no key
    ("dpo.ar.lr=.nan", "dpo.ar.lr"),
    ("dpo.ar.lr=nan", "dpo.ar.lr"),
    ("metrics.min_seconds=.inf", "metrics.min_seconds"),
    ("degrade.noise.snr_db=[0, .inf]", "degrade.noise.snr_db"),
    ("pairs.margins={pesq_wb: .nan}", "pairs.margins.pesq_wb"),
    ("corpus.n_utterances=true", "corpus.n_utterances"),
    ("seed=true", "seed"),
    ("degrade.noise.snr_db=[0, true]", "degrade.noise.snr_db"),
    ("pairs.margins={pesq_wb: true}", "pairs.margins"),
    ("metrics.names=[pesq, estoi]", "metrics.names"),
    ("metrics.names=[estoi, estoi]", "metrics.names"),
    ("pairs.metrics=[pesq_wb, pesqwb]", "pairs.metrics"),
    ("pairs.margins={pesqwb: 0.1}", "pairs.margins"),
    ("pairs.strategies=[multi, single:pesq]", "pairs.strategies"),
    ("dpo.strategy=single:nosuch", "dpo.strategy"),
    ("evaluate.strategy=single:nosuch", "evaluate.strategy"),
    ("ablation.strategies=[multi, single:nosuch]", "ablation.strategies"),
])
def test_a_hostile_override_is_refused_at_load_naming_the_key(override, key):
    from gensr.config import ConfigError, load_params

    with pytest.raises(ConfigError) as err:
        load_params(PARAMS, [override])
    assert key in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_booleans_and_finite_numbers_stay_valid_where_they_belong():
    from gensr.config import load_params, with_overrides

    params = load_params(PARAMS, ["metrics.dnsmos.personalized=true", "pairs.margins={pesq_wb: 0.05}",
                                  "metrics.content.pocketsphinx_options={wip: 0.1, fsgusefiller: true}"])
    assert params.metrics.dnsmos.personalized is True and params.pairs.margins == {"pesq_wb": 0.05}
    assert params.metrics.content.pocketsphinx_options["fsgusefiller"] is True
    assert with_overrides(load_params(PARAMS), {}) == load_params(PARAMS)  # a dump of valid params reloads


def test_the_config_metric_vocabulary_is_the_registry():
    from gensr.config.metrics import KNOWN_METRICS
    from gensr.metrics.registry import METRIC_NAMES, SPECS

    assert METRIC_NAMES == KNOWN_METRICS and tuple(SPECS) == KNOWN_METRICS


@pytest.mark.parametrize("args, names", [
    (["-S", "degrade.noise.snr_db=[0, 5"], ["-S", "degrade.noise.snr_db"]),
    (["-S", "corpus.n_utterances=true"], ["corpus.n_utterances"]),
    (["-S", "metrics.names=[pesq]"], ["metrics.names"]),
])
def test_cli_refuses_hostile_params_with_exit_2_and_one_line(tmp_path, args, names):
    assert_refused(gensr("params", "-p", PARAMS, *args), *names)


def test_cli_refuses_a_binary_params_file_with_exit_2_and_one_line_in_a_real_process(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    result = subprocess.run([sys.executable, "-c", "from gensr.cli import main; main()", "params", "-p", str(path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {path}: not a YAML params file (not UTF-8 text: byte 0x89 "
                                                  "at offset 0)"]


# --- 3. references: matched by relative path, and checked --------------------------------------------------------
SR = 16000
FAST_METRICS = ["metrics.names=[si_sdr, estoi, mel_distance]", "metrics.workers=1"]


def voiced(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A speech-like test signal: harmonics of f0 under a 3 Hz syllable envelope, peak 0.3."""
    t = np.arange(int(seconds * SR)) / SR
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, 8)
    x = sum(np.sin(2 * np.pi * f0 * k * t + phases[k]) / k for k in range(1, 8))
    x = x * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t + seed))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


def scored(params, candidates, references, tmp_path) -> pd.DataFrame:
    from gensr.stages.score import score_files

    out = tmp_path / "scores.parquet"
    score_files(params, candidates, out, references)
    return pd.read_parquet(out).set_index(["clip_id", "metric"])


def test_references_are_matched_by_relative_path_never_by_base_name(tmp_path, project_params):
    a, b = voiced(1.0, 140, 1), voiced(1.0, 220, 2)
    write(tmp_path / "cands" / "sub1" / "x.wav", a)
    write(tmp_path / "cands" / "sub2" / "x.wav", b)
    write(tmp_path / "refs" / "sub1" / "x.wav", a)  # no refs/sub2/x.wav: sub2/x must not borrow sub1's
    long = scored(project_params(FAST_METRICS), tmp_path / "cands", tmp_path / "refs", tmp_path)
    assert long.loc[("sub1/x", "si_sdr"), "value"] > 100  # itself
    for metric in ("si_sdr", "estoi", "mel_distance"):
        row = long.loc[("sub2/x", metric)]
        assert np.isnan(row["value"]) and str(tmp_path / "refs" / "sub2" / "x.wav") in row["reason"]
        assert "missing" in row["reason"]


def test_a_length_mismatch_beyond_the_tolerance_blanks_the_reference_metrics(tmp_path, project_params):
    params = project_params(FAST_METRICS)
    tolerance = params.metrics.max_length_diff_s
    ref = voiced(1.5, 150, 3)
    pad = int(round(tolerance * SR / 2))  # within the tolerance: scored (trimmed) as before
    extra = voiced(2.0, 260, 4)
    cases = {"long": np.concatenate([ref, extra]), "short": ref[: len(ref) // 2],
             "within": np.concatenate([ref, np.zeros(pad, np.float32)])}
    for name, audio in cases.items():
        write(tmp_path / "cands" / f"{name}.wav", audio)
        write(tmp_path / "refs" / f"{name}.wav", ref)
    long = scored(params, tmp_path / "cands", tmp_path / "refs", tmp_path)
    for name in ("long", "short"):
        for metric in ("si_sdr", "estoi", "mel_distance"):
            row = long.loc[(name, metric)]
            assert np.isnan(row["value"]) and "length mismatch" in row["reason"], row
            assert "metrics.max_length_diff_s" in row["reason"]
    assert long.loc[("within", "si_sdr"), "value"] > 100 and long.loc["within"]["reason"].isna().all()


def test_a_reference_gets_the_candidates_checks(tmp_path, project_params):
    params = project_params(FAST_METRICS)
    cand = voiced(1.0, 150, 5)
    write(tmp_path / "refs" / "silent.wav", np.zeros_like(cand))
    write(tmp_path / "refs" / "nan.wav", np.where(np.arange(len(cand)) == 100, np.nan, cand).astype(np.float32))
    (tmp_path / "refs" / "junk.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)
    write(tmp_path / "refs" / "short.wav", cand[: int(params.metrics.min_seconds * SR) // 2])
    for name in ("silent", "nan", "junk", "short"):
        write(tmp_path / "cands" / f"{name}.wav", cand if name != "short" else cand[: int(params.metrics.min_seconds * SR)])
    long = scored(params, tmp_path / "cands", tmp_path / "refs", tmp_path)
    expect = {"silent": "silent", "nan": "non_finite", "junk": "unreadable", "short": "too_short"}
    for name, code in expect.items():
        for metric in ("si_sdr", "estoi", "mel_distance"):
            row = long.loc[(name, metric)]
            assert np.isnan(row["value"]) and code in row["reason"] and "reference unavailable" in row["reason"], row


def test_cli_score_refuses_what_a_user_got_wrong_with_exit_2(tmp_path):
    write(tmp_path / "cands" / "x.wav", voiced(0.5, 150, 6))
    write(tmp_path / "dupes" / "x.wav", voiced(0.5, 150, 6))
    write(tmp_path / "dupes" / "x.flac", voiced(0.5, 150, 6))
    (tmp_path / "out_dir").mkdir()
    (tmp_path / "empty").mkdir()
    common = ["-p", PARAMS, "-S", "metrics.names=[si_sdr]", "-S", "metrics.workers=1"]
    out = tmp_path / "scores.parquet"
    cases = [
        (["--candidates", tmp_path / "cands", "--references", tmp_path / "nope", "--out", out], ["--references", "nope"]),
        (["--candidates", tmp_path / "nope", "--out", out], ["--candidates", "nope"]),
        (["--candidates", tmp_path / "cands", "--out", tmp_path / "out_dir"], ["--out", "out_dir"]),
        (["--candidates", tmp_path / "cands", "--references", tmp_path / "empty", "--out", out], ["--references"]),
        (["--candidates", tmp_path / "cands", "--transcripts", tmp_path / "t.csv", "--out", out], ["--transcripts"]),
        (["--candidates", tmp_path / "dupes", "--out", out], ["--candidates", "x.flac", "x.wav"]),
        (["--candidates", tmp_path / "cands", "--workers", "0", "--out", out], ["--workers"]),
    ]
    for args, names in cases:
        assert_refused(gensr("score", *args, *common), *names)
    assert not out.exists()


# --- 8. every checkpoint load is weights_only --------------------------------------------------------------------
class _NotATensor:
    """An arbitrary object: unpickling it would run code a checkpoint must not carry."""


def test_torch_load_defaults_to_weights_only_here(tmp_path):
    """Library loads that pass no weights_only (resemblyzer, speechbrain) rely on torch's default being True."""
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _NotATensor()}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        torch.load(path)


@pytest.mark.slow
def test_a_dpo_run_logs_no_weights_only_default_and_its_checkpoint_loads_weights_only(tmp_path):
    import logging
    import warnings

    import torch

    from gensr.align.train import DPOSettings, run_dpo
    from gensr.models import Restorer
    from test_align import _write_pairs, tiny_restorer

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    pairs = _write_pairs(tmp_path, codebooks=2)
    base_path = tiny_restorer("ar").save(tmp_path / "base.pt")
    settings = DPOSettings(paradigm="ar", beta=0.5, lr=1e-3, steps=2, batch_size=2, sft_weight=0.1,
                           sft_target="chosen", score_draws=1, weight_decay=0.0, grad_clip=1.0, val_every_steps=2,
                           ref_batch_size=4, segment_seconds=0.2, audio_examples=0, sample_rate=16000, seed=3,
                           score_temperature="model", trainable=None)
    collect, lightning_log = Collect(), logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.addHandler(collect)
    lightning_log.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_dpo(Restorer.load(base_path), Restorer.load(base_path), pairs, tmp_path / "pairs.parquet", base_path,
                    settings, tmp_path / "out")
    finally:
        lightning_log.removeHandler(collect)
        lightning_log.setLevel(level)
    assert any("max_steps=2" in m for m in collect.messages), collect.messages  # the handler does see Lightning
    assert not [m for m in collect.messages if "weights_only" in m]
    assert not [str(w.message) for w in caught if "weights_only" in str(w.message)]
    ckpt = torch.load(tmp_path / "out" / "dpo.ckpt", weights_only=True)
    assert ckpt["state_dict"] and ckpt["optimizer_states"]  # the full training state, loadable weights-only


# --- a hostile user corpus through the pipeline ------------------------------------------------------------------
GOOD = {  # relative path -> (speaker, rate, channels, subtype): rates and formats the pipeline must admit
    "alice/a1.wav": ("alice", 16000, 1, "FLOAT"), "alice/a2.wav": ("alice", 8000, 1, "PCM_16"),
    "alice/a3.flac": ("alice", 44100, 2, "PCM_16"), "alice/a4.wav": ("alice", 22050, 1, "PCM_24"),
    "bob/b1.wav": ("bob", 16000, 1, "FLOAT"), "bob/b2.wav": ("bob", 48000, 2, "PCM_16"),
    "bob/b3.flac": ("bob", 16000, 1, "PCM_16"), "bob/b4.wav": ("bob", 32000, 1, "FLOAT"),
}
BAD = {  # relative path -> the reason code the corpus quarantine must give
    "bad/cut_in_header.wav": "unreadable", "bad/silence.wav": "silent", "bad/not_audio.wav": "unreadable",
    "bad/wrong_rate.wav": "too_long", "bad/too_short.wav": "too_short", "bad/empty.wav": "empty_file",
    "bad/nan.wav": "non_finite", "bad/absent.wav": "missing",
}


def _hostile_user_corpus(root: Path) -> Path:
    """Good recordings of two speakers at many rates and formats, and one file of every bad kind."""
    import io

    from gensr.audio.io import resample

    rows = []
    for i, (rel, (speaker, rate, channels, subtype)) in enumerate(sorted(GOOD.items())):
        audio = resample(voiced(1.0, 120 + 25 * i, i), SR, rate)
        data = np.stack([audio, 0.8 * audio], axis=1) if channels == 2 else audio
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, data, rate, subtype=subtype)
        rows.append((rel, f"utterance number {i}", speaker))
    bad = root / "bad"
    bad.mkdir()
    buffer = io.BytesIO()
    sf.write(buffer, voiced(1.0, 150, 20), SR, format="WAV", subtype="PCM_16")
    (bad / "cut_in_header.wav").write_bytes(buffer.getvalue()[:30])  # the download stopped in the header
    sf.write(bad / "silence.wav", np.zeros(SR, np.float32), SR, subtype="FLOAT")
    (bad / "not_audio.wav").write_bytes(b"<html><body>404 Not Found</body></html>\n" * 50)
    # 16 kHz samples under a 1 kHz header: 32 s to the reader, beyond ingest.max_seconds
    sf.write(bad / "wrong_rate.wav", voiced(2.0, 150, 21), 1000, subtype="PCM_16")
    sf.write(bad / "too_short.wav", voiced(0.1, 150, 22), SR, subtype="FLOAT")
    (bad / "empty.wav").write_bytes(b"")
    nan = voiced(1.0, 150, 23)
    nan[500] = np.nan
    sf.write(bad / "nan.wav", nan, SR, subtype="FLOAT")
    rows += [(rel, "a bad file", "carol") for rel in sorted(BAD)]
    manifest = root / "manifest.csv"
    manifest.write_text("path,text,speaker\n" + "".join(f"{p},{t},{s}\n" for p, t, s in rows))
    return manifest


@pytest.mark.slow
def test_a_hostile_user_corpus_runs_through_the_pipeline_quarantining_every_bad_file(tmp_path):
    import torch

    from gensr.corpus.user import utt_id_for
    from gensr.models.fm import FMRestorer
    from gensr.stages.corpus import build_clean_corpus
    from gensr.stages.degrade import build_degraded_corpus
    from gensr.stages.pairs import build_pairs
    from gensr.stages.sample import sample_candidates
    from gensr.stages.score import score_candidates
    from test_models import tiny_params

    manifest = _hostile_user_corpus(tmp_path / "user")
    data = tmp_path / "data"
    params = tiny_params([
        f"paths.data={data}", f"paths.models={tmp_path / 'models'}", f"paths.reports={tmp_path / 'reports'}",
        "corpus.source=user", f"corpus.user_dir={tmp_path / 'user'}", f"corpus.user_manifest={manifest}",
        "corpus.split={train: 0.25, pref: 0.5, valid: 0.0, test: 0.25}",
        "degrade.workers=1", "degrade.noise.kinds=[white, pink]",
        "sample.n_candidates=2", "sample.shard_clips=2", "sample.n_clips=null",
        "metrics.names=[si_sdr, estoi, mel_distance]", "metrics.workers=1",
        "pairs.metrics=[si_sdr, estoi, mel_distance]", "pairs.strategies=[multi]",
    ])
    good_ids = {utt_id_for(rel) for rel in GOOD}

    corpus = build_clean_corpus(params)
    clean = pd.read_parquet(data / "clean" / "manifest.parquet")
    quarantine = pd.read_parquet(data / "clean" / "quarantine.parquet")
    assert set(clean.utt_id) == good_ids and corpus["n_quarantined"] == len(BAD)  # no good row lost
    reasons = {Path(p).name: r for p, r in zip(quarantine.path, quarantine.reason)}
    for rel, code in BAD.items():
        assert reasons[Path(rel).name].startswith(code), (rel, reasons.get(Path(rel).name))

    build_degraded_corpus(params, data / "clean", data / "degraded", progress=False)
    degraded = pd.read_parquet(data / "degraded" / "manifest.parquet")
    assert set(degraded.utt_id) == good_ids and pd.read_parquet(data / "degraded" / "quarantine.parquet").empty

    torch.manual_seed(0)
    p = params.restorers.fm
    model = FMRestorer.build(params.restorers.features.model_dump(), p.model.model_dump(), p.sampling.model_dump())
    model.save(tmp_path / "models" / "base" / "fm" / "restorer.pt")
    sample_candidates(params, "fm")
    candidates = pd.read_parquet(data / "candidates" / "fm" / "manifest.parquet")
    pref = set(clean.loc[clean.split == "pref", "utt_id"])
    assert len(pref) == 4 and set(candidates.utt_id) == pref and len(candidates) == 2 * len(pref)

    score_candidates(params, "fm")
    long = pd.read_parquet(data / "metrics" / "fm" / "metrics.parquet")
    assert set(long.clip_id) == set(candidates.cand_id) and len(long) == 3 * len(candidates)
    assert long.loc[long.value.isna(), "reason"].notna().all()  # a NaN always says why

    build_pairs(params, "fm")
    pairs = pd.read_parquet(data / "pairs" / "fm" / "multi" / "pairs.parquet")
    assert set(pairs.utt_id) <= pref


def test_a_wav_cut_inside_its_data_is_quarantined(tmp_path):
    import io

    from gensr.audio.io import AudioRejected
    from gensr.corpus.ingest import admit_audio
    from gensr.config import load_params

    buffer = io.BytesIO()
    sf.write(buffer, voiced(1.0, 150, 30), SR, format="WAV", subtype="PCM_16")
    path = tmp_path / "cut.wav"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # the header still says 1 s
    with pytest.raises(AudioRejected):
        admit_audio(path, load_params(PARAMS).ingest, SR)
