"""The single audio door: what it admits, converts, and rejects with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from gensr.audio.io import AudioRejected, load_audio, resample, write_wav


def _tone(sr, seconds=1.0, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_int16_44k_becomes_mono_float_16k(tmp_path):
    x = _tone(44100)
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([x, x], axis=1), 44100, subtype="PCM_16")
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1
    assert np.max(np.abs(y)) == pytest.approx(0.3, abs=0.01)


def test_resample_keeps_a_tone_in_band():
    y = resample(_tone(8000, freq=1000.0), 8000, 16000)
    spec = np.abs(np.fft.rfft(y))
    peak_hz = np.argmax(spec) * 16000 / len(y)
    assert abs(peak_hz - 1000.0) < 5


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty_file"),
        (lambda p: p.write_text("hello, not audio"), "unreadable"),
        (lambda p: sf.write(p, np.zeros(16000, np.float32), 16000), "silent"),
        (lambda p: sf.write(p, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT"), "non_finite"),
        (lambda p: sf.write(p, _tone(16000, 0.1), 16000), "too_short"),
    ],
)
def test_bad_files_are_rejected_with_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioRejected) as err:
        load_audio(path, 16000, min_seconds=0.25)
    assert err.value.reason.startswith(reason)
    assert err.value.path == str(path)


def test_write_is_atomic_and_round_trips(tmp_path):
    x = _tone(16000)
    path = write_wav(tmp_path / "sub" / "x.wav", x, 16000)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.wav"]
    y, sr = sf.read(path, dtype="float32")
    assert sr == 16000 and np.array_equal(x, y)


def test_write_rejects_multichannel(tmp_path):
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "x.wav", np.zeros((2, 10), np.float32), 16000)
