"""Extended STOI (Jensen & Taal 2016) through `pystoi`, at the library's 10 kHz internal rate.

pystoi removes silent frames using the reference, then needs 30 STFT frames (384 ms of
speech); with fewer it warns and returns 1e-5. That sentinel becomes NaN with a reason.
"""

from __future__ import annotations

import warnings

import numpy as np

from gensr.metrics.registry import get
from gensr.metrics.base import Clip, MetricFailure, Scorer, library_version

SAMPLE_RATE = 16000  # pystoi resamples internally to 10 kHz; we hand it the corpus rate


class Estoi(Scorer):
    def __init__(self):
        self.infos = (
            get("estoi").info("pystoi", library_version("pystoi")),
        )

    def score_clip(self, clip: Clip) -> dict[str, float]:
        from pystoi import stoi

        ref, cand = clip.pair_at(SAMPLE_RATE)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = stoi(np.asarray(ref, np.float64), np.asarray(cand, np.float64), SAMPLE_RATE, extended=True)
        for w in caught:
            if "Not enough STFT frames" in str(w.message):
                raise MetricFailure("estoi: too little speech in the reference (pystoi needs 30 frames after silence removal)")
        return {"estoi": value}
