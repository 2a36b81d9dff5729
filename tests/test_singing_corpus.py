"""The embedded singing corpus: it sings (held notes on target, vibrato), it keeps finetune references away
from training, it is reproducible, and it admits a user's real recordings next to a quarantine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

from gensr.audio.io import read_wav

ROOT = Path(__file__).resolve().parents[1]
FRAME_S = 0.005


def tiny_params(data: Path, user_dir: Path):
    """Six clips (4 finetune + 2 test) of two singers, so babble has another singer in each split."""
    from gensr.config import load_params

    return load_params(ROOT / "params.yaml", [
        f"paths.data={data}", "singing.n_clips=6", "singing.voices=[en-us+m1, en-us+f2]", "singing.workers=1",
        "singing.degrade.workers=1", f"singing.user_dir={user_dir}",
    ])


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user_singing")
    t = np.arange(int(1.5 * 44100)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * t))
    sf.write(folder / "aria.wav", np.stack([tone, tone], axis=1), 44100)  # stereo 44.1 kHz
    (folder / "broken.wav").write_bytes(b"this is not audio")
    return folder


@pytest.fixture(scope="module")
def builds(tmp_path_factory, user_dir):
    """Two builds of the same params in different folders."""
    from gensr.stages.singing_corpus import build_singing_corpus

    out = []
    for name in ("a", "b"):
        data = tmp_path_factory.mktemp(name)
        summary = build_singing_corpus(tiny_params(data, user_dir), progress=False)
        out.append((data / "singing", summary))
    return out


def _midi(f0: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f0 > 0, 69 + 12 * np.log2(f0 / 440.0), np.nan)


def held_notes(pitch: np.ndarray, min_seconds: float = 0.2, tolerance: float = 0.75) -> list[tuple[int, int]]:
    """Frame spans [a, b) where voiced pitch stays within `tolerance` semitones of the span's median."""
    spans, a = [], 0
    while a < len(pitch):
        if np.isnan(pitch[a]):
            a += 1
            continue
        b = a + 1
        while b < len(pitch) and not np.isnan(pitch[b]) and abs(pitch[b] - np.median(pitch[a:b])) < tolerance:
            b += 1
        if (b - a) * FRAME_S >= min_seconds:
            spans.append((a, b))
        a = b
    return spans


def vibrato_peak_hz(pitch: np.ndarray, spans: list[tuple[int, int]]) -> float | None:
    """Frequency of the largest peak (0.5-20 Hz) of the detrended pitch, averaged over held notes >= 0.4 s."""
    n_fft, power = 1024, 0.0
    for a, b in spans:
        if (b - a) * FRAME_S < 0.4:
            continue
        seg = pitch[a:b]
        x = np.arange(seg.size)
        seg = (seg - np.polyval(np.polyfit(x, seg, 1), x)) * np.hanning(seg.size)
        power = power + np.abs(np.fft.rfft(seg, n_fft)) ** 2
    if np.isscalar(power):
        return None  # no note long enough
    freqs = np.fft.rfftfreq(n_fft, FRAME_S)
    band = (freqs >= 0.5) & (freqs <= 20)
    return float(freqs[band][np.argmax(power[band])])


def test_the_clean_corpus_sings_its_melody(builds):
    import pyworld as pw

    out, _ = builds[0]
    errors, covered, peaks = [], 0, []
    melody = pq.read_table(out / "melody.parquet").to_pylist()
    assert {r["split"] for r in melody} == {"finetune", "test"}
    for row in melody:
        notes = json.loads(row["notes"])
        assert all(0.2 - 1e-6 <= e - s <= 1.0 + 1e-6 for s, e, _ in notes), notes
        audio, sr = read_wav(out / "clean" / "wav" / f"{row['utt_id']}.wav")
        assert sr == 16000 and np.isclose(np.abs(audio).max(), 10 ** (-3 / 20), atol=1e-3)
        f0, times = pw.harvest(audio.astype(np.float64), sr, f0_floor=60.0, f0_ceil=800.0, frame_period=FRAME_S * 1000)
        pitch = _midi(f0)
        spans = held_notes(pitch)
        assert spans, f"{row['utt_id']}: no held note"
        for a, b in spans:
            mid = (times[a] + times[b - 1]) / 2
            target = next(n for s, e, n in notes if s <= mid < e) if any(s <= mid < e for s, e, _ in notes) else None
            assert target is not None, f"{row['utt_id']}: held note at {mid:.2f} s outside every target note"
            errors.append(100 * (np.median(pitch[a:b]) - target))
        covered += len({next(i for i, (s, e, _) in enumerate(notes) if s <= (times[a] + times[b - 1]) / 2 < e)
                        for a, b in spans})
        peaks.append(vibrato_peak_hz(pitch, spans))
    errors = np.abs(errors)
    n_notes = sum(len(json.loads(r["notes"])) for r in melody)
    print(f"held notes {len(errors)} covering {covered}/{n_notes} target notes; |cents| median "
          f"{np.median(errors):.1f}, p90 {np.percentile(errors, 90):.1f}, max {errors.max():.1f}; vibrato peaks {peaks}")
    assert errors.max() < 50, errors
    assert covered >= 0.7 * n_notes
    measured = [p for p in peaks if p is not None]
    assert len(measured) >= len(peaks) / 2 and all(4.0 <= p <= 7.0 for p in measured), peaks


def test_training_table_has_no_reference(builds):
    out, _ = builds[0]
    finetune = pq.read_table(out / "finetune.parquet")
    assert not [c for c in finetune.column_names if "clean" in c or "ref" in c], finetune.column_names
    assert set(finetune.column("split").to_pylist()) == {"finetune", "real"}
    clean_files = {p.resolve() for p in (out / "clean").rglob("*") if p.is_file()}
    for rel in finetune.column("path").to_pylist():
        target = (out / rel).resolve()
        assert target.is_file() and target not in clean_files and not target.is_relative_to((out / "clean").resolve())
    # The one table that points at clean audio is references.parquet, and it holds the test split only.
    references = pq.read_table(out / "references.parquet")
    test = pq.read_table(out / "test.parquet")
    assert sorted(references.column("deg_id").to_pylist()) == sorted(test.column("deg_id").to_pylist())
    assert all((out / p).is_file() for p in references.column("clean_path").to_pylist())
    finetune_ids = set(finetune.column("utt_id").to_pylist())
    assert not finetune_ids & set(references.column("utt_id").to_pylist())
    for table in out.rglob("*.parquet"):
        if table.name != "references.parquet":
            assert not [c for c in pq.read_schema(table).names if "clean" in c], table


def test_same_params_give_identical_tables(builds):
    (a, _), (b, _) = builds
    tables = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert {"finetune.parquet", "test.parquet", "references.parquet", "melody.parquet"} <= {str(t) for t in tables}
    assert tables == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    for rel in tables:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    wavs = sorted(p.relative_to(a) for p in a.rglob("*.wav"))
    assert wavs and wavs == sorted(p.relative_to(b) for p in b.rglob("*.wav"))
    for rel in wavs:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_user_recordings_become_real_rows_or_quarantine(builds):
    out, summary = builds[0]
    finetune = pq.read_table(out / "finetune.parquet").to_pylist()
    real = [r for r in finetune if r["split"] == "real"]
    assert len(real) == 1 and real[0]["path"] == "real/aria.wav" and real[0]["text"] is None
    audio, sr = read_wav(out / real[0]["path"])
    assert sr == 16000 and audio.ndim == 1 and np.isclose(audio.size / sr, 1.5, atol=0.01)
    assert real[0]["utt_id"] not in pq.read_table(out / "references.parquet").column("utt_id").to_pylist()
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert [(q["source"], q["path"]) for q in quarantine] == [("singing.user_dir", "broken.wav")]
    assert quarantine[0]["reason"].startswith("unreadable")
    assert summary["splits"] == {"finetune": 4, "test": 2, "real": 1}


def test_cli_errors_name_the_param(tmp_path):
    from gensr.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["singing-corpus", "-p", str(ROOT / "params.yaml"), "-S", "singing.melody.note_seconds=[1.0, 0.2]"])
    assert bad.exit_code == 2 and "singing.melody.note_seconds" in bad.output
    one_singer = runner.invoke(app, ["singing-corpus", "-p", str(ROOT / "params.yaml"), "-S", f"paths.data={tmp_path}",
                                     "-S", "singing.voices=[en-us+m1]"])
    assert one_singer.exit_code == 2 and "singing.voices" in one_singer.output
    assert len(one_singer.output.strip().splitlines()) == 1


def test_syllables_follow_vowels_and_words():
    from gensr.singing.espeak_events import Phoneme
    from gensr.singing.synth import Syllable, syllables

    # "heavy basket": h ˈɛ v i | b ˈæ s k ɪ t, then a pause
    names = [("h", 0), ("ˈɛ", 0), ("v", 0), ("i", 0), ("b", 1), ("ˈæ", 1), ("s", 1), ("k", 1), ("ɪ", 1), ("t", 1), ("", 1)]
    phonemes = [Phoneme(n, 10 * i, 10 * (i + 1), w) for i, (n, w) in enumerate(names)]
    assert syllables(phonemes) == [
        Syllable(0, 10, 20, 20),     # h-ɛ
        Syllable(20, 30, 40, 40),    # v-i (onset of its own vowel in the same word)
        Syllable(40, 50, 60, 60),    # b-æ
        Syllable(60, 80, 90, 100),   # s k-ɪ-t: the word-final t is a coda; the pause is not part of it
    ]


def test_singing_seed_must_differ_from_the_seed():
    from gensr.cli import app

    result = CliRunner().invoke(app, ["singing-corpus", "-p", str(ROOT / "params.yaml"), "-S", "singing.seed=1234",
                                      "-S", "seed=1234"])
    assert result.exit_code == 2 and "singing.seed must differ" in result.output
