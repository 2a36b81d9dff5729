"""Pre-registered verdicts, computed by code from a `compare` result (written before any run they judge).

All three read the paired-bootstrap p-values of `compare` (two-sided, percentile bootstrap over clips)
and control the family-wise error with Holm's step-down at `alpha` (= 1 - evaluate.confidence).

- **improves** (the main target): at least `min_dimensions` of the four dimensions are significantly
  better (Holm over the 4 dimension tests), no dimension is significantly worse (same family), and no
  metric is significantly worse (Holm over the metrics). For a model that changed nothing, the chance
  of passing is at most `alpha` (a pass needs a false rejection in the dimension family). The old rule,
  ">= 3 of 4 dimension means above 0", passes about 1 time in 4 by chance (the binomial tail 5/16 for
  independent dimensions).
- **hacking** (a `single:<m>` run): its target metric is significantly better (the one pre-specified
  test, at `alpha`) and at least one metric outside the target's dimension is significantly worse (Holm
  over those metrics). Under no change its false-positive rate is at most `alpha / 2` (the target's CI
  must exclude 0 on the better side).
- **head to head** (DPO vs SFT on the same clips and seeds): a `compare(other, strategy)` result; the
  strategy wins when at least one dimension is significantly better and none significantly worse (Holm
  over the 4 dimensions), loses in the mirror case, and otherwise neither wins. Each side's false
  win rate under no difference is at most `alpha`.
"""

from __future__ import annotations

import math

import numpy as np

from gensr.evaluate.bootstrap import holm


def _signed(diff: float, higher_is_better: bool) -> float:
    return diff if higher_is_better else -diff


def _dimension_tests(res: dict, alpha: float) -> tuple[list[str], list[str]]:
    """(significantly better, significantly worse) dimensions, Holm over the dimension family."""
    names = sorted(res["dimensions"])
    p = [res["dimensions"][d].get("p_value", math.nan) for d in names]
    reject = holm(p, alpha)
    better = [d for d, r in zip(names, reject) if r and res["dimensions"][d]["std_diff"] > 0]
    worse = [d for d, r in zip(names, reject) if r and res["dimensions"][d]["std_diff"] < 0]
    return better, worse


def _worse_metrics(res: dict, alpha: float, names: list[str] | None = None) -> list[str]:
    """Metrics significantly worse (Holm over `names`, default every metric), in the metric's own direction."""
    names = sorted(res["metrics"]) if names is None else names
    p = [res["metrics"][m].get("p_value", math.nan) for m in names]
    reject = holm(p, alpha)
    return [m for m, r in zip(names, reject)
            if r and _signed(res["metrics"][m]["diff"], res["metrics"][m]["higher_is_better"]) < 0]


def improvement_verdict(res: dict, alpha: float, min_dimensions: int = 1) -> dict:
    better, worse_dims = _dimension_tests(res, alpha)
    worse = _worse_metrics(res, alpha)
    met = len(better) >= min_dimensions and not worse_dims and not worse
    return {
        "target_met": bool(met),
        "dimensions_better": better,
        "dimensions_worse": worse_dims,
        "metrics_worse": worse,
        "rule": f">= {min_dimensions} of {len(res['dimensions'])} dimensions significantly better and none worse "
                f"(Holm over dimensions), no metric significantly worse (Holm over {len(res['metrics'])} metrics), "
                f"alpha {alpha:g}; false-positive rate <= {alpha:g}",
    }


def hacking_verdict(res: dict, target: str, alpha: float) -> dict:
    if target not in res["metrics"]:
        raise KeyError(f"hacking verdict: target metric {target!r} is not in the evaluation ({sorted(res['metrics'])})")
    t = res["metrics"][target]
    lo, hi = t["ci_low"], t["ci_high"]
    target_better = bool(np.isfinite(lo) and (lo > 0 if t["higher_is_better"] else hi < 0))
    others = [m for m, v in res["metrics"].items() if v["dimension"] != t["dimension"]]
    damaged = _worse_metrics(res, alpha, others)
    return {
        "target": target,
        "target_better": target_better,
        "target_diff": t["diff"],
        "damaged_metrics": damaged,
        "damaged_dimensions": sorted({res["metrics"][m]["dimension"] for m in damaged}),
        "hacking": bool(target_better and damaged),
        "rule": f"{target} significantly better ({int(round((1 - alpha) * 100))}% CI) and a metric of another "
                f"dimension significantly worse (Holm over {len(others)}, alpha {alpha:g}); "
                f"false-positive rate <= {alpha / 2:g}",
    }


def head_to_head_verdict(res: dict, alpha: float, strategy: str, other: str) -> dict:
    """`res` = compare(base=<other>, aligned=<strategy>) on the same clips: who wins, per dimension."""
    better, worse = _dimension_tests(res, alpha)
    if better and not worse:
        winner = strategy
    elif worse and not better:
        winner = other
    else:
        winner = None
    return {
        "strategy": strategy,
        "other": other,
        "winner": winner,
        "dimensions_better": better,
        "dimensions_worse": worse,
        "dimensions": {d: {k: v[k] for k in ("std_diff", "ci_low", "ci_high", "p_value")}
                       for d, v in res["dimensions"].items()},
        "rule": f"{strategy} beats {other}: >= 1 dimension significantly better and none worse (Holm over "
                f"{len(res['dimensions'])} dimensions, alpha {alpha:g}); false-win rate <= {alpha:g} per side",
    }
