"""Multi-metric scoring suite: quality (DNSMOS), fidelity (PESQ, ESTOI, SI-SDR, mel distance),
content (WER/CER) and timbre (speaker cosine), batched, offline by default, NaN-safe."""

from gensr.metrics.base import Clip, MetricInfo, Score, Scorer
from gensr.metrics.registry import METRIC_NAMES, build_scorers, metric_infos
from gensr.metrics.suite import LONG_SCHEMA, score_manifest, summarize, to_wide

__all__ = [
    "Clip", "MetricInfo", "Score", "Scorer", "METRIC_NAMES", "build_scorers", "metric_infos",
    "LONG_SCHEMA", "score_manifest", "summarize", "to_wide",
]
