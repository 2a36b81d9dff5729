"""Metric names -> metadata and scorers. A scorer may compute several metrics (DNSMOS gives
four); only the requested ones are kept. `SPECS` is the single source of each metric's
dimension, direction, inputs, rate and range: scorers build their MetricInfo from it and
add the backend and version, and the preference rule reads it through `get()`."""

from __future__ import annotations

from gensr.config.metrics import MetricsParams
from gensr.metrics.base import MetricInfo, MetricSpec, Scorer

INF = float("inf")


SPECS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("dnsmos_sig", "quality", True, False, False, 16000, (1.0, 5.0)),
        MetricSpec("dnsmos_bak", "quality", True, False, False, 16000, (1.0, 5.0)),
        MetricSpec("dnsmos_ovrl", "quality", True, False, False, 16000, (1.0, 5.0)),
        MetricSpec("dnsmos_p808", "quality", True, False, False, 16000, (1.0, 5.0)),
        MetricSpec("pesq_wb", "fidelity", True, True, False, 16000, (1.04, 4.64)),
        MetricSpec("estoi", "fidelity", True, True, False, 16000, (-1.0, 1.0)),
        MetricSpec("si_sdr", "fidelity", True, True, False, 16000, (-INF, INF)),
        MetricSpec("mel_distance", "fidelity", False, True, False, 16000, (0.0, INF)),
        MetricSpec("wer", "content", False, False, True, 16000, (0.0, INF)),
        MetricSpec("cer", "content", False, False, True, 16000, (0.0, INF)),
        MetricSpec("speaker_cosine", "timbre", True, True, False, 16000, (-1.0, 1.0)),
    )
}


def get(name: str) -> MetricSpec:
    """Metadata of one metric; KeyError names the known metrics."""
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {list(SPECS)}") from None


# metric name -> scorer group; the order here is the order of columns in wide tables
METRIC_GROUPS: dict[str, str] = {
    "dnsmos_sig": "dnsmos",
    "dnsmos_bak": "dnsmos",
    "dnsmos_ovrl": "dnsmos",
    "dnsmos_p808": "dnsmos",
    "pesq_wb": "pesq",
    "estoi": "estoi",
    "si_sdr": "si_sdr",
    "mel_distance": "mel_distance",
    "wer": "asr",
    "cer": "asr",
    "speaker_cosine": "speaker",
}
METRIC_NAMES: tuple[str, ...] = tuple(METRIC_GROUPS)


def _make(group: str, params: MetricsParams, threads: int) -> Scorer:
    if group == "dnsmos":
        from gensr.metrics.dnsmos import Dnsmos

        return Dnsmos(params.dnsmos, threads=threads)
    if group == "pesq":
        from gensr.metrics.pesq_wb import PesqWB

        return PesqWB()
    if group == "estoi":
        from gensr.metrics.estoi import Estoi

        return Estoi()
    if group == "si_sdr":
        from gensr.metrics.si_sdr import SiSdr

        return SiSdr()
    if group == "mel_distance":
        from gensr.metrics.mel_distance import MelDistance

        return MelDistance(params.mel_distance)
    if group == "asr":
        from gensr.metrics.asr import WordErrorRate

        return WordErrorRate(params.content)
    if group == "speaker":
        from gensr.metrics.speaker import SpeakerCosine

        return SpeakerCosine(params.speaker)
    raise KeyError(group)


def check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in METRIC_GROUPS]
    if unknown:
        raise ValueError(f"metrics.names: unknown metric(s) {unknown}; choose from {list(METRIC_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"metrics.names: duplicates in {names}")


def build_scorers(params: MetricsParams, threads: int = 1) -> list[Scorer]:
    """One scorer per group needed by params.names (models are not loaded yet: call setup())."""
    check_names(params.names)
    groups = list(dict.fromkeys(METRIC_GROUPS[n] for n in params.names))
    return [_make(group, params, threads) for group in groups]


def metric_infos(params: MetricsParams) -> dict[str, MetricInfo]:
    """name -> MetricInfo of every requested metric, in params order."""
    infos = {info.name: info for scorer in build_scorers(params) for info in scorer.infos}
    return {name: infos[name] for name in params.names}
