"""MLflow artifacts of a restorer run: audio examples and degraded/restored/clean spectrograms."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from gensr.audio.io import write_wav


def spectrogram_png(path: Path, panels: dict[str, np.ndarray], sample_rate: int, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import stft

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), sharex=True)
    for ax, (name, audio) in zip(np.atleast_1d(axes), panels.items()):
        f, t, z = stft(audio, fs=sample_rate, nperseg=512, noverlap=384)
        ax.pcolormesh(t, f / 1000, 20 * np.log10(np.abs(z) + 1e-6), vmin=-100, vmax=-10, shading="auto", cmap="magma")
        ax.set_ylabel(f"{name}\nkHz")
    np.atleast_1d(axes)[0].set_title(title)
    np.atleast_1d(axes)[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def log_examples(mlflow, examples: list[tuple[str, dict[str, np.ndarray]]], sample_rate: int,
                 artifact_dir: str = "examples") -> None:
    """examples: [(clip_id, {"degraded": x, "restored": y, "clean": z}), ...] -> WAVs + PNG per clip."""
    with tempfile.TemporaryDirectory() as tmp:
        for clip_id, panels in examples:
            folder = Path(tmp) / clip_id
            folder.mkdir()
            for name, audio in panels.items():
                write_wav(folder / f"{name}.wav", audio, sample_rate)
            spectrogram_png(folder / "spectrogram.png", panels, sample_rate, clip_id)
            mlflow.log_artifacts(str(folder), f"{artifact_dir}/{clip_id}")
