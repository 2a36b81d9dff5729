"""`gensr ingest` on a hostile folder: every good file kept at 16 kHz mono, every bad one quarantined."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import PARAMS
from gensr.corpus.ingest import ingest_directory

MAX_SECONDS = 3.0  # shrunk from params.yaml so the long file stays small


def _speechlike(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics plus a little noise: audible, finite, deterministic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 900), start=1))
    x = 0.2 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(t.size)
    x = x.astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (0.5 + 0.1 * c) for c in range(channels)], axis=1)


def _expected_frames(seconds: float, sr: int) -> int:
    """Length after polyphase resampling to 16 kHz: ceil(n * 16000 / sr)."""
    return math.ceil(int(round(seconds * sr)) * 16000 / sr)


GOOD = {  # name: (seconds, rate, channels, subtype)
    "clean_16k.wav": (1.0, 16000, 1, "FLOAT"),
    "pcm16_22k.wav": (1.2, 22050, 1, "PCM_16"),
    "rate8k.wav": (1.5, 8000, 1, "PCM_16"),
    "rate48k.wav": (1.0, 48000, 1, "PCM_24"),
    "six_channel.wav": (1.0, 44100, 6, "PCM_16"),
    "stereo.flac": (0.8, 32000, 2, "PCM_16"),
    "nested/deeper/take.flac": (1.0, 24000, 1, "PCM_16"),
}
BAD = {  # name: reason code
    "empty.wav": "empty_file",
    "nan.wav": "non_finite",
    "inf.wav": "non_finite",
    "silent.wav": "silent",
    "too_short.wav": "too_short",
    "truncated_header.wav": "unreadable",
    "notes.wav": "unreadable",
    "random_bytes.flac": "unreadable",
    "no_samples.wav": "no_samples",
    ".hidden.wav": "hidden",  # not read, but listed: no entry of the folder vanishes
}


@pytest.fixture
def hostile_dir(tmp_path):
    root = tmp_path / "incoming"
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, (name, (seconds, sr, channels, subtype)) in enumerate(GOOD.items()):
        sf.write(str(root / name), _speechlike(seconds, sr, channels, seed=i), sr, subtype=subtype)
    sf.write(str(root / "long.wav"), _speechlike(7.0, 16000), 16000, subtype="FLOAT")  # 7 s -> 3 parts of 2.33 s

    (root / "empty.wav").write_bytes(b"")
    nan = _speechlike(1.0, 16000)
    nan[100:200] = np.nan
    sf.write(str(root / "nan.wav"), nan, 16000, subtype="FLOAT")
    inf = _speechlike(1.0, 16000)
    inf[5000] = np.inf
    sf.write(str(root / "inf.wav"), inf, 16000, subtype="FLOAT")
    sf.write(str(root / "silent.wav"), np.zeros(16000, np.float32), 16000)
    sf.write(str(root / "too_short.wav"), _speechlike(0.1, 16000), 16000)
    buf = io.BytesIO()
    sf.write(buf, _speechlike(1.0, 16000), 16000, format="WAV", subtype="PCM_16")
    (root / "truncated_header.wav").write_bytes(buf.getvalue()[:30])
    (root / "notes.wav").write_text("this is a text file, not audio\n")
    (root / "random_bytes.flac").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    sf.write(str(root / "no_samples.wav"), np.zeros(0, np.float32), 16000)
    (root / ".hidden.wav").write_bytes(b"ignored: hidden files are not inputs")
    return root


def _ingest_params(project_params, *extra):
    return project_params([f"ingest.max_seconds={MAX_SECONDS}", *extra])


def test_hostile_directory(hostile_dir, tmp_path, project_params):
    out = tmp_path / "out"
    params = _ingest_params(project_params)
    summary = ingest_directory(hostile_dir, out, params.ingest, params.audio.sample_rate)

    for name, (seconds, sr, _, _) in GOOD.items():
        target = out / name.rsplit(".", 1)[0]
        audio, out_sr = sf.read(str(target) + ".wav", dtype="float32", always_2d=True)
        assert (out_sr, audio.shape[1]) == (16000, 1), name
        assert audio.shape[0] == _expected_frames(seconds, sr), name
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.05, name
        assert sf.info(str(target) + ".wav").subtype == "FLOAT"
    # the 6-channel file is the mean of its channels (scaled 0.5 .. 1.0), resampled
    six, _ = sf.read(str(out / "six_channel.wav"), dtype="float32")
    mono = _speechlike(1.0, 44100, 1, seed=list(GOOD).index("six_channel.wav")) * np.mean([0.5 + 0.1 * c for c in range(6)])
    from gensr.audio.io import resample

    np.testing.assert_allclose(six, resample(mono, 44100, 16000), atol=2e-4)  # PCM_16 rounding

    parts = sorted(p.name for p in out.glob("long_part*.wav"))
    assert parts == ["long_part000.wav", "long_part001.wav", "long_part002.wav"]
    lengths = [sf.info(str(out / p)).frames for p in parts]
    assert sum(lengths) == 7 * 16000 and max(lengths) <= MAX_SECONDS * 16000

    quarantine = pd.read_parquet(out / "quarantine.parquet")
    assert quarantine.columns.tolist() == ["path", "reason"]
    got = {p.split("/")[-1]: r.split(":")[0] for p, r in zip(quarantine["path"], quarantine["reason"])}
    assert got == BAD
    assert not quarantine["reason"].str.contains(str(tmp_path), regex=False).any()  # relocatable table
    assert all((out / p).resolve() == (hostile_dir / n).resolve() for p, n in zip(quarantine["path"], got))
    for name in BAD:
        assert not (out / name.rsplit(".", 1)[0]).with_suffix(".wav").exists()
    assert not (out / ".hidden.wav").exists()
    assert summary["n_kept"] == len(GOOD) + 1 and summary["n_quarantined"] == len(BAD) and summary["n_split"] == 1


def test_rerun_resumes_and_settings_change_redoes(hostile_dir, tmp_path, project_params):
    out = tmp_path / "out"
    params = _ingest_params(project_params)
    ingest_directory(hostile_dir, out, params.ingest, 16000)
    (out / "rate8k.wav").unlink()  # as if the first run died here
    again = ingest_directory(hostile_dir, out, params.ingest, 16000)
    assert again["n_written"] == 1 and again["n_reused"] == len(GOOD)
    assert sf.info(str(out / "rate8k.wav")).samplerate == 16000

    reject = _ingest_params(project_params, "ingest.long_files=reject")
    third = ingest_directory(hostile_dir, out, reject.ingest, 16000)
    assert third["n_reused"] == 0  # settings changed: nothing old is trusted
    reasons = pd.read_parquet(out / "quarantine.parquet").set_index("path")["reason"]
    assert reasons[[p for p in reasons.index if p.endswith("long.wav")][0]].startswith("too_long")


def test_name_collision_and_output_inside_input(tmp_path, project_params):
    root = tmp_path / "in"
    root.mkdir()
    sf.write(str(root / "a.wav"), _speechlike(1.0, 16000), 16000)
    sf.write(str(root / "a.flac"), _speechlike(1.0, 16000, seed=1), 16000)
    params = _ingest_params(project_params)
    out = root / "converted"  # inside the input folder: its files must not be re-ingested
    ingest_directory(root, out, params.ingest, 16000)
    summary = ingest_directory(root, out, params.ingest, 16000)
    assert summary["n_files"] == 2
    reasons = pd.read_parquet(out / "quarantine.parquet")["reason"].tolist()
    assert len(reasons) == 1 and reasons[0].startswith("name_collision")
    assert sorted(p.name for p in out.glob("*.wav")) == ["a.wav"]


def test_ingest_cli_exits_zero(hostile_dir, tmp_path):
    from typer.testing import CliRunner

    from gensr.cli import app

    out = tmp_path / "cli_out"
    args = ["ingest", str(hostile_dir), "--out", str(out), "-p", str(PARAMS), "-S", f"ingest.max_seconds={MAX_SECONDS}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"quarantined {len(BAD)}" in result.output
    assert len(pd.read_parquet(out / "quarantine.parquet")) == len(BAD)

    missing = CliRunner().invoke(app, ["ingest", str(tmp_path / "nope"), "--out", str(out), "-p", str(PARAMS)])
    assert missing.exit_code == 2 and "not a folder" in missing.output
