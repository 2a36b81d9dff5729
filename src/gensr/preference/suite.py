"""What the pair rule and the evaluation need to know about each metric: direction and dimension.

The metric suite's registry (gensr.metrics) is the single source of truth; this module only
reads it, so a metric added there votes here without any other change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str
    dimension: str  # quality | fidelity | content | timbre
    higher_is_better: bool


def metric_info(names: list[str]) -> list[MetricInfo]:
    """Registry entries for `names`, in that order; an unknown name is an error naming the registry."""
    from gensr.metrics import registry

    out = []
    for name in names:
        try:
            spec = registry.get(name)
        except KeyError:
            raise KeyError(f"metric '{name}' is in the metric table but not in gensr.metrics' registry; "
                           "fix pairs.metrics in params.yaml or register the metric") from None
        out.append(MetricInfo(name, spec.dimension, bool(spec.higher_is_better)))
    return out
