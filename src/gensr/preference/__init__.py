"""Preference pairs from scored candidates: the unanimous rule, single-metric and ground-truth controls."""

from gensr.preference.pairs import build_pair_table, rules_for_strategy, strategy_slug, violations
from gensr.preference.rules import MetricRule, dominance_matrix, dominates, select_pairs
from gensr.preference.stats import pair_stats

__all__ = [
    "MetricRule",
    "build_pair_table",
    "dominance_matrix",
    "dominates",
    "pair_stats",
    "rules_for_strategy",
    "select_pairs",
    "strategy_slug",
    "violations",
]
