"""The one door for audio in and out of the pipeline.

`load_audio` admits any file soundfile can decode: it mixes down channels, converts any
sample format to float32 and resamples to the target rate. Anything unusable raises
`AudioRejected` with a short machine-readable reason, which callers put in a quarantine
table instead of failing the batch.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from gensr.storage import atomic_path


class AudioRejected(Exception):
    """A file that cannot be used; `reason` is a short stable code plus detail."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (deterministic, no phase shift)."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    frac = Fraction(sr_out, sr_in)
    y = resample_poly(np.asarray(x, dtype=np.float64), frac.numerator, frac.denominator, axis=-1)
    return y.astype(np.float32)


def load_audio(
    path: str | Path,
    sample_rate: int = 16000,
    *,
    min_seconds: float = 0.0,
    silence_dbfs: float | None = -70.0,
) -> np.ndarray:
    """Read `path` as mono float32 at `sample_rate`, or raise AudioRejected(reason).

    Reasons: missing, empty_file, unreadable (not audio / truncated), no_samples,
    non_finite (NaN/Inf samples), silent (peak below silence_dbfs), too_short.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioRejected(path, "missing: file does not exist")
    if path.stat().st_size == 0:
        raise AudioRejected(path, "empty_file: 0 bytes")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad headers and non-audio
        # the file name, not its absolute path, so quarantine tables stay relocatable and reproducible
        detail = str(err).replace(str(path), path.name).replace("\n", " ")
        raise AudioRejected(path, f"unreadable: {type(err).__name__}: {detail}"[:300]) from None
    if data.shape[0] == 0:
        raise AudioRejected(path, "no_samples: header is valid but holds no audio")
    if not np.isfinite(data).all():
        raise AudioRejected(path, "non_finite: NaN or Inf samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono = resample(mono, sr, sample_rate)
    if silence_dbfs is not None:
        peak = float(np.max(np.abs(mono))) if mono.size else 0.0
        if peak <= 10 ** (silence_dbfs / 20):
            raise AudioRejected(path, f"silent: peak below {silence_dbfs} dBFS")
    if mono.size < min_seconds * sample_rate:
        raise AudioRejected(path, f"too_short: {mono.size / sample_rate:.3f} s < {min_seconds} s")
    return mono.astype(np.float32, copy=False)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Plain read of a pipeline WAV (already mono float at the pipeline rate)."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=False)
    if data.ndim > 1:
        data = data.mean(axis=1)
    return data.astype(np.float32, copy=False), sr


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono float32 WAV atomically (temp file, then rename)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"{path}: expected mono 1-D audio, got shape {audio.shape}")
    with atomic_path(path) as tmp:
        with sf.SoundFile(str(tmp), "w", sample_rate, 1, subtype="FLOAT", format="WAV") as f:
            # libsndfile's PEAK chunk stores the wall-clock time: turn it off so that the same
            # audio always gives byte-identical files (SFC_SET_ADD_PEAK_CHUNK = 0x1050, SF_FALSE).
            sf._snd.sf_command(f._file, 0x1050, sf._ffi.NULL, 0)
            f.write(audio)
    return Path(path)


def write_wav_if_changed(path: str | Path, audio: np.ndarray, sample_rate: int) -> bool:
    """Like write_wav, but keep an existing file that already holds exactly these samples.

    Lets a rerun after a crash reuse finished files; returns True when it wrote.
    """
    path = Path(path)
    if path.is_file():
        try:
            old, old_sr = read_wav(path)
            if old_sr == sample_rate and np.array_equal(old, np.asarray(audio, dtype=np.float32)):
                return False
        except Exception:  # damaged or foreign file: overwrite it
            pass
    write_wav(path, audio, sample_rate)
    return True
