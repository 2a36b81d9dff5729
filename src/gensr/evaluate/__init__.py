"""Held-out evaluation: base vs aligned on the test split, paired-bootstrap CIs, win rate, Table 1."""

from gensr.evaluate.compare import MetricInfo, compare

__all__ = ["MetricInfo", "compare"]
