"""Clean corpus: templates, eSpeak NG synthesis, splits, user corpora, the stage and its Dagster asset."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import PARAMS
from gensr.corpus.splits import assign_splits
from gensr.corpus.templates import TEMPLATE, jsgf_grammar, sentence_for, template_slots, vocabulary
from gensr.stages.corpus import build_clean_corpus

N_SMALL = 24  # three utterances per voice


@pytest.fixture(scope="module")
def small_params():
    from gensr.config import load_params

    # a preference pool, so the TTS build deals all four splits
    pool = ["corpus.split.train=0.6", "corpus.split.pref=0.2", "corpus.split.valid=0.1", "corpus.split.test=0.1"]
    return load_params(PARAMS, [f"corpus.n_utterances={N_SMALL}", *pool])


@pytest.fixture(scope="module")
def built(small_params, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    summary = build_clean_corpus(small_params, out)
    return out, summary, pd.read_parquet(out / "manifest.parquet")


# --- templates -------------------------------------------------------------------------------


def test_vocabulary_is_in_pocketsphinx_dictionary():
    import pocketsphinx

    dictionary = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    known = {line.split()[0] for line in dictionary.read_text().splitlines() if line.strip()}
    missing = [w for w in vocabulary() if w not in known]
    assert not missing, f"words missing from pocketsphinx's dictionary: {missing}"


def test_jsgf_grammar_accepts_generated_sentences_only(tmp_path):
    import pocketsphinx

    grammar = tmp_path / "corpus.gram"
    grammar.write_text(jsgf_grammar())
    jsgf = pocketsphinx.Jsgf(str(grammar))
    fsg = jsgf.build_fsg(jsgf.get_rule("gensr_corpus.sentence"), pocketsphinx.LogMath(), 7.5)
    for i in range(50):
        assert fsg.accept(sentence_for(7, i, 0))
    assert not fsg.accept("the young man found a red box")  # tail missing
    assert set(template_slots()) == set(TEMPLATE)


def test_sentences_are_seeded():
    assert sentence_for(1, 5, 0) == sentence_for(1, 5, 0)
    assert len({sentence_for(1, i, 0) for i in range(200)}) > 190
    assert [sentence_for(1, i, 0) for i in range(20)] != [sentence_for(2, i, 0) for i in range(20)]


# --- splits ----------------------------------------------------------------------------------


def test_splits_are_stratified_deterministic_and_sized():
    from gensr.config.corpus import SplitParams

    fractions = SplitParams(train=0.8, valid=0.1, test=0.1)
    speakers = [f"spk{i % 8}" for i in range(600)]
    ids = [f"u{i:04d}" for i in range(600)]
    splits = assign_splits(ids, speakers, fractions, seed=3)
    assert splits == assign_splits(ids, speakers, fractions, seed=3)
    assert splits != assign_splits(ids, speakers, fractions, seed=4)
    assert Counter(splits) == {"train": 480, "valid": 60, "test": 60}
    for split in ("train", "valid", "test"):
        assert len({s for s, sp in zip(speakers, splits) if sp == split}) == 8
    # unbalanced speakers: the lone utterance stays in train, valid/test still get several speakers
    speakers = ["solo"] + [f"spk{i % 4}" for i in range(99)]
    splits = assign_splits([f"v{i}" for i in range(100)], speakers, fractions, seed=0)
    assert splits[0] == "train"
    assert len({s for s, sp in zip(speakers, splits) if sp == "test"}) >= 3


def test_pref_split_is_a_stratified_pool_between_train_and_valid():
    from gensr.config.corpus import SplitParams

    speakers = [f"spk{i % 8}" for i in range(750)]
    ids = [f"u{i:04d}" for i in range(750)]
    fractions = SplitParams(train=0.64, pref=0.2, valid=0.08, test=0.08)
    splits = assign_splits(ids, speakers, fractions, seed=3)
    assert Counter(splits) == {"train": 480, "pref": 150, "valid": 60, "test": 60}
    for split in ("train", "pref", "valid", "test"):
        assert len({s for s, sp in zip(speakers, splits) if sp == split}) == 8
    # without a pool the same ids deal out as train/valid/test only, and the pool fraction is part of the sum
    without = assign_splits(ids, speakers, SplitParams(train=0.84, valid=0.08, test=0.08), seed=3)
    assert Counter(without) == {"train": 630, "valid": 60, "test": 60}
    held = {u: s for u, s in zip(ids, splits) if s in ("valid", "test")}
    assert held == {u: s for u, s in zip(ids, without) if s != "train"}  # the pool comes out of train only
    with pytest.raises(ValueError, match="train \\+ pref \\+ valid \\+ test must be 1.0"):
        SplitParams(train=0.8, pref=0.2, valid=0.1, test=0.1)


# --- the bundled TTS corpus ------------------------------------------------------------------


def test_tts_corpus_contents(built, small_params):
    out, summary, manifest = built
    assert list(manifest.columns) == ["utt_id", "path", "text", "speaker", "split", "duration_s", "sample_rate"]
    assert len(manifest) == N_SMALL == summary["n_utterances"]
    assert manifest["speaker"].nunique() >= 8 == summary["n_speakers"]
    assert (manifest["text"].str.split().str.len() >= len(TEMPLATE)).all()
    assert manifest["utt_id"].is_unique and manifest["text"].is_unique
    # disjoint splits, every split with several speakers
    groups = {s: set(g["utt_id"]) for s, g in manifest.groupby("split")}
    assert set(groups) == {"train", "pref", "valid", "test"}
    assert sum(len(g) for g in groups.values()) == len(set().union(*groups.values()))
    assert all(manifest[manifest["split"] == s]["speaker"].nunique() >= 2 for s in groups)
    lo, hi = small_params.corpus.min_seconds, small_params.corpus.max_seconds
    for row in manifest.itertuples():
        info = sf.info(str(out / row.path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "FLOAT")
        assert info.frames == round(row.duration_s * 16000)
        assert lo <= row.duration_s <= hi
    audio, _ = sf.read(str(out / manifest["path"][0]), dtype="float32")
    margin = int(small_params.corpus.trim_margin_seconds * 16000)
    assert np.abs(audio[:margin]).max() == 0 and np.abs(audio[margin : margin + 1600]).max() > 0.01
    assert np.isclose(np.abs(audio).max(), 10 ** (small_params.corpus.peak_dbfs / 20), atol=1e-4)
    assert pd.read_parquet(out / "quarantine.parquet").columns.tolist() == ["path", "reason"]


def test_voices_sound_different(built):
    """Speakers differ in pitch: the median F0 proxy (autocorrelation peak) spans a wide range."""
    out, _, manifest = built
    pitches = {}
    for speaker, group in manifest.groupby("speaker"):
        audio, sr = sf.read(str(out / group["path"].iloc[0]), dtype="float32")
        frame = audio[int(0.5 * sr) : int(0.5 * sr) + 2048]
        ac = np.correlate(frame, frame, "full")[2047:]
        lag = np.argmax(ac[sr // 400 : sr // 60]) + sr // 400
        pitches[speaker] = sr / lag
    assert max(pitches.values()) > 1.4 * min(pitches.values()), pitches


def test_same_seed_gives_byte_identical_corpus(built, small_params, tmp_path):
    from gensr.corpus.tts import render_utterance

    out, _, _ = built
    # Disturb eSpeak's in-process state first: the corpus must not depend on it.
    render_utterance("something else entirely", "en+f3", small_params.corpus, 16000)
    build_clean_corpus(small_params, tmp_path)
    assert (tmp_path / "manifest.parquet").read_bytes() == (out / "manifest.parquet").read_bytes()
    for wav in sorted((out / "wav").glob("*.wav")):
        assert (tmp_path / "wav" / wav.name).read_bytes() == wav.read_bytes(), wav.name


def test_rerun_resumes_and_cleans_up(small_params, built, tmp_path):
    out, _, manifest = built
    shutil.copytree(out, tmp_path / "c")
    corpus = tmp_path / "c"
    (corpus / manifest["path"][0]).unlink()  # as if killed before this file
    (corpus / "wav" / "stale-00999.wav").write_bytes(b"old")  # from a bigger earlier run
    (corpus / "wav" / ".x.wav.abc.tmp.wav").write_bytes(b"partial")  # a killed atomic write
    kept = corpus / manifest["path"][1]
    mtime = kept.stat().st_mtime_ns
    build_clean_corpus(small_params, corpus)
    assert (corpus / "manifest.parquet").read_bytes() == (out / "manifest.parquet").read_bytes()
    assert sorted(p.name for p in (corpus / "wav").iterdir()) == sorted(p.name for p in (out / "wav").iterdir())
    assert kept.stat().st_mtime_ns == mtime  # identical files are reused, not rewritten


def test_seed_changes_the_corpus(small_params, built, tmp_path):
    from gensr.config import with_overrides

    _, _, manifest = built
    other = with_overrides(small_params, ["seed=99", "corpus.n_utterances=8"])
    build_clean_corpus(other, tmp_path)
    texts = pd.read_parquet(tmp_path / "manifest.parquet")["text"]
    assert not set(texts) & set(manifest["text"])


# --- a user corpus ---------------------------------------------------------------------------


def _tone(seconds: float, sr: int, freq: float = 220.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("manifest_format", ["csv", "jsonl"])
def test_user_corpus(project_params, tmp_path, manifest_format):
    root = tmp_path / "my_corpus"
    (root / "alice").mkdir(parents=True)
    (root / "bob").mkdir()
    good = {
        "alice/a1.flac": ("the cat sat", "alice", _tone(1.5, 44100, channels=2), 44100),
        "alice/a2.wav": ("on the mat", "alice", _tone(1.2, 16000, 330), 16000),
        "alice/a3.wav": ("a third line", "alice", _tone(1.0, 22050, 300), 22050),
        "bob/b1.wav": ("hello there", "bob", _tone(2.0, 8000, 180), 8000),
        "bob/b2.wav": ("how are you", "bob", _tone(1.1, 48000, 200), 48000),
        "bob/b3.wav": ("fine thanks", "bob", _tone(1.3, 16000, 250), 16000),
    }
    for rel, (_, _, audio, sr) in good.items():
        sf.write(str(root / rel), audio, sr)
    sf.write(str(tmp_path / "outside.wav"), _tone(1.0, 16000), 16000)  # exists, but outside the root
    sf.write(str(root / "bob" / "silent.wav"), np.zeros(16000, np.float32), 16000)
    sf.write(str(root / "bob" / "long.wav"), _tone(6.0, 16000), 16000)
    rows = [{"path": p, "text": t, "speaker": s} for p, (t, s, _, _) in good.items()] + [
        {"path": "../outside.wav", "text": "escape", "speaker": "eve"},
        {"path": str(tmp_path / "outside.wav"), "text": "absolute escape", "speaker": "eve"},
        {"path": "alice/../../outside.wav", "text": "sneaky", "speaker": "eve"},
        {"path": "bob/silent.wav", "text": "nothing", "speaker": "bob"},
        {"path": "bob/long.wav", "text": "too long to keep", "speaker": "bob"},
        {"path": "bob/missing.wav", "text": "not there", "speaker": "bob"},
        {"path": "alice/a2.wav", "text": "", "speaker": "alice"},
    ]
    manifest = tmp_path / f"manifest.{manifest_format}"
    if manifest_format == "csv":
        pd.DataFrame(rows).to_csv(manifest, index=False)
    else:
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = project_params(
        ["corpus.source=user", f"corpus.user_dir={root}", f"corpus.user_manifest={manifest}", "ingest.max_seconds=5.0"]
    )
    out = tmp_path / "clean"
    summary = build_clean_corpus(params, out)
    table = pd.read_parquet(out / "manifest.parquet")
    assert sorted(table["text"]) == sorted(t for t, _, _, _ in good.values())
    assert set(table["speaker"]) == {"alice", "bob"} and summary["n_speakers"] == 2
    assert set(table["split"]) == {"train", "pref", "valid", "test"}  # params.yaml has a preference pool
    for row in table.itertuples():
        audio, sr = sf.read(str(out / row.path), dtype="float32", always_2d=True)
        assert (sr, audio.shape[1]) == (16000, 1)
        assert abs(audio.shape[0] / 16000 - row.duration_s) < 1e-9
    assert table.set_index("utt_id").loc["alice_a1", "duration_s"] == pytest.approx(1.5, abs=1e-3)

    quarantine = pd.read_parquet(out / "quarantine.parquet")
    reasons = {Path(p).name: r.split(":")[0] for p, r in zip(quarantine["path"], quarantine["reason"])}
    assert reasons["outside.wav"] == "path_escapes_root"
    assert (quarantine["reason"].str.startswith("path_escapes_root")).sum() == 3
    assert reasons["silent.wav"] == "silent"
    assert reasons["long.wav"] == "too_long"
    assert reasons["missing.wav"] == "missing"
    assert reasons["a2.wav"] == "no_transcript"
    assert summary["n_quarantined"] == len(quarantine) == 7
    # paths are relative to the table's folder
    assert all((out / p).resolve().exists() for p in quarantine["path"] if "missing" not in p)


def test_user_manifest_without_columns_names_the_file(project_params, tmp_path):
    from gensr.corpus.user import ManifestError

    (tmp_path / "c").mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,transcript\nx.wav,hi\n")
    params = project_params(["corpus.source=user", f"corpus.user_dir={tmp_path / 'c'}", f"corpus.user_manifest={manifest}"])
    with pytest.raises(ManifestError, match=r"m\.csv.*path,text,speaker"):
        build_clean_corpus(params, tmp_path / "out")


# --- shells ----------------------------------------------------------------------------------


def test_corpus_cli(tmp_path):
    from typer.testing import CliRunner

    from gensr.cli import app

    out = tmp_path / "clean"
    result = CliRunner().invoke(app, ["corpus", "--out", str(out), "-p", str(PARAMS), "-S", "corpus.n_utterances=8"])
    assert result.exit_code == 0, result.output
    assert "8 utterances" in result.output and len(pd.read_parquet(out / "manifest.parquet")) == 8


@pytest.mark.slow
def test_dagster_materializes_clean_corpus(tmp_path, monkeypatch):
    import dagster as dg

    from gensr_dagster.assets.corpus import clean_corpus, clean_corpus_integrity
    from gensr_dagster.definitions import defs
    from gensr_dagster.resources import ParamsResource

    assert defs.resolve_assets_def("clean_corpus") is not None
    monkeypatch.chdir(tmp_path)
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    result = dg.materialize(
        [clean_corpus, clean_corpus_integrity],
        resources={"params": ParamsResource(overrides=["corpus.n_utterances=16"])},
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("clean_corpus")
    meta = materialization.metadata
    assert meta["n_utterances"].value == 16 and meta["n_speakers"].value == 8
    assert sum(meta[f"n_{s}"].value for s in ("train", "pref", "valid", "test")) == 16
    assert meta["n_quarantined"].value == 0 and meta["total_hours"].value > 0
    assert Path(meta["path"].value) == (tmp_path / "data" / "clean").resolve()
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.description
    assert (tmp_path / "data" / "clean" / "manifest.parquet").is_file()
