"""Spectrogram images for the demo page: log-magnitude STFT, one colour scale shared by a row of clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gensr.storage import atomic_path


def log_spectrogram(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[n_fft // 2 + 1, frames] magnitude in dB (re 1.0), Hann window, zero-padded to at least one frame."""
    x = np.asarray(audio, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)).T
    return 20 * np.log10(np.maximum(mag, 1e-10))


def row_ceiling(spectrograms: list[np.ndarray]) -> float:
    """The loudest finite bin over a row: its images share [ceiling - db_range, ceiling]."""
    peaks = [float(np.max(s)) for s in spectrograms if s.size and np.isfinite(s).any()]
    return max(peaks) if peaks else 0.0


def save_spectrogram_png(db: np.ndarray, path: str | Path, vmax: float, db_range: float, cmap: str) -> Path:
    """One pixel per STFT bin and frame, low frequencies at the bottom; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        plt.imsave(tmp, db, cmap=cmap, vmin=vmax - db_range, vmax=vmax, origin="lower", format="png",
                   metadata={"Software": None})
    return path
