"""Log-mel spectral distance: mean |dB difference| of the mel power spectra, candidate vs reference.

Both spectra are floored at (reference peak + floor_db), so near-silent bins, where a dB
difference is meaningless, cannot dominate the mean.
"""

from __future__ import annotations

import numpy as np

from gensr.config.metrics import MelDistanceParams
from gensr.metrics.registry import get
from gensr.metrics.base import Clip, MetricFailure, Scorer, library_version

SAMPLE_RATE = 16000


class MelDistance(Scorer):
    def __init__(self, params: MelDistanceParams):
        self.params = params
        self.infos = (
            get("mel_distance").info(
                "librosa",
                f"{library_version('librosa')} n_fft={params.n_fft} hop={params.hop} n_mels={params.n_mels} floor={params.floor_db}",
            ),
        )
        self._mel_basis = None

    def setup(self) -> None:
        import librosa

        self._mel_basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=self.params.n_fft, n_mels=self.params.n_mels)

    def _mel_power(self, audio: np.ndarray) -> np.ndarray:
        n_fft, hop = self.params.n_fft, self.params.hop
        padded = np.pad(np.asarray(audio, np.float64), n_fft // 2)
        frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
        spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1)) ** 2
        return spec @ self._mel_basis.T

    def score_clip(self, clip: Clip) -> dict[str, float]:
        if self._mel_basis is None:
            self.setup()
        ref, cand = clip.pair_at(SAMPLE_RATE)
        if len(ref) < self.params.n_fft:
            raise MetricFailure(f"mel_distance: clip shorter than n_fft={self.params.n_fft} samples")
        ref_db = 10 * np.log10(np.maximum(self._mel_power(ref), 1e-20))
        cand_db = 10 * np.log10(np.maximum(self._mel_power(cand), 1e-20))
        floor = ref_db.max() + self.params.floor_db
        return {"mel_distance": float(np.mean(np.abs(np.maximum(ref_db, floor) - np.maximum(cand_db, floor))))}
