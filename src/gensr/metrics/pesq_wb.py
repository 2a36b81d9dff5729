"""PESQ wide-band (ITU-T P.862.2) through the `pesq` package, at 16 kHz.

The library raises on clips with no detectable utterance or too little audio; those become
NaN with the library's message, never 0 (VERSA's 0.0 made failures look like scores).
"""

from __future__ import annotations

import numpy as np

from gensr.metrics.registry import get
from gensr.metrics.base import Clip, MetricFailure, Scorer, library_version

SAMPLE_RATE = 16000


class PesqWB(Scorer):
    def __init__(self):
        self.infos = (
            get("pesq_wb").info("pesq", library_version("pesq")),
        )

    def score_clip(self, clip: Clip) -> dict[str, float]:
        from pesq import PesqError, pesq

        ref, cand = clip.pair_at(SAMPLE_RATE)
        try:
            value = pesq(SAMPLE_RATE, np.asarray(ref, np.float64), np.asarray(cand, np.float64), "wb")
        except PesqError as err:
            raise MetricFailure(f"pesq: {type(err).__name__}: {err}") from None
        return {"pesq_wb": value}
