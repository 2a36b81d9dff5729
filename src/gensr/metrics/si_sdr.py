"""Scale-invariant SDR (Le Roux et al. 2019), zero-mean, in dB, computed in float64.

The epsilon keeps a perfect estimate finite (about 150-180 dB) instead of +inf, so
clean-vs-itself is a number, not a NaN.
"""

from __future__ import annotations

import numpy as np

from gensr.metrics.registry import get
from gensr.metrics.base import Clip, MetricFailure, Scorer

SAMPLE_RATE = 16000
EPS = np.finfo(np.float64).eps


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    ref = np.asarray(reference, np.float64)
    est = np.asarray(estimate, np.float64)
    ref = ref - ref.mean()
    est = est - est.mean()
    energy = float(np.dot(ref, ref))
    if energy <= EPS:
        raise MetricFailure("si_sdr: reference has no energy")
    target = (np.dot(est, ref) / energy) * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + EPS) / (np.dot(noise, noise) + EPS)))


class SiSdr(Scorer):
    def __init__(self):
        self.infos = (
            get("si_sdr").info("numpy", "1"),
        )

    def score_clip(self, clip: Clip) -> dict[str, float]:
        ref, cand = clip.pair_at(SAMPLE_RATE)
        return {"si_sdr": si_sdr(ref, cand)}
