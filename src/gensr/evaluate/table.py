"""The paper's Table 1: rows are the degraded input and each paradigm before/after, columns metrics.

An aligned cell carries a flag when its paired-bootstrap CI excludes zero:
`*` significantly better, `!` significantly worse (in the metric's own direction).
"""

from __future__ import annotations

import math

import pandas as pd

from gensr.evaluate.compare import MetricInfo

FLAGS = {"better": "*", "worse": "!", "ns": ""}


def table_rows(degraded_means: dict[str, float], results: dict[str, dict], metrics: list[MetricInfo], strategy: str) -> pd.DataFrame:
    """Numeric Table 1 (one row per model), in the order degraded, then paradigm base/aligned."""
    rows = [{"paradigm": "-", "model": "degraded input", **{m.name: degraded_means.get(m.name, math.nan) for m in metrics}}]
    for paradigm, res in results.items():
        per = res["metrics"]
        rows.append({"paradigm": paradigm, "model": "base", **{m.name: per[m.name]["base"] for m in metrics}})
        rows.append({"paradigm": paradigm, "model": f"aligned ({strategy})",
                     **{m.name: per[m.name]["aligned"] for m in metrics}})
    return pd.DataFrame(rows)


def diff_rows(results: dict[str, dict]) -> pd.DataFrame:
    """One row per paradigm x metric: mean difference, CI and verdict."""
    rows = []
    for paradigm, res in results.items():
        for name, v in res["metrics"].items():
            rows.append({"paradigm": paradigm, "metric": name, "dimension": v["dimension"], "n": v["n"],
                         "base": v["base"], "aligned": v["aligned"], "diff": v["diff"],
                         "ci_low": v["ci_low"], "ci_high": v["ci_high"], "significant": v["significant"]})
    return pd.DataFrame(rows)


def _names(items) -> str:
    return ", ".join(items) or "-"


def summary_markdown(results: dict[str, dict], confidence: float) -> list[str]:
    """One row per paradigm: the verdict first, then the tests it is made of, then the descriptive counts.

    The verdict (`gensr.evaluate.verdicts`) corrects for multiple tests (Holm); the per-metric flags of the table
    above and "worse by its own CI" do not, so a paradigm can have a metric flagged `!` and still meet the
    target. The columns say which is which.
    """
    pct = int(confidence * 100)
    lines = ["| paradigm | target met | dimensions better (Holm) | dimensions worse (Holm) | metrics worse (Holm) "
             f"| metrics worse by their own {pct}% CI (uncorrected) | dimension means above 0 (descriptive) "
             "| win rate | loss rate |", "|---|---|---|---|---|---|---|---|---|"]
    rule = None
    for paradigm, res in results.items():
        verdict = res.get("verdict") or {}
        rule = rule or verdict.get("rule")
        holm = [_names(verdict[k]) if k in verdict else "n/a" for k in ("dimensions_better", "dimensions_worse",
                                                                          "metrics_worse")]
        lines.append(
            f"| {paradigm} | **{'yes' if res['target_met'] else 'NO'}** | {' | '.join(holm)} "
            f"| {_names(res['significantly_worse'])} "
            f"| {len(res['improved_dimensions'])}/{len(res['dimensions'])} ({_names(res['improved_dimensions'])}) "
            f"| {res['win_rate']:.3f} | {res['loss_rate']:.3f} |")
    if rule:
        lines += ["", f"Target (pre-registered, `gensr.evaluate.verdicts`): {rule}. The uncorrected and descriptive "
                  "columns are not part of it."]
    return lines


def _fmt(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3f}"


def table_markdown(degraded_means: dict[str, float], results: dict[str, dict], metrics: list[MetricInfo],
                   strategy: str, confidence: float) -> str:
    head = ["paradigm", "model"] + [f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| - | degraded input | " + " | ".join(_fmt(degraded_means.get(m.name, math.nan)) for m in metrics) + " |")
    for paradigm, res in results.items():
        per = res["metrics"]
        lines.append(f"| {paradigm} | base | " + " | ".join(_fmt(per[m.name]["base"]) for m in metrics) + " |")
        cells = [_fmt(per[m.name]["aligned"]) + FLAGS[per[m.name]["significant"]] for m in metrics]
        lines.append(f"| {paradigm} | aligned ({strategy}) | " + " | ".join(cells) + " |")
    lines += ["", f"`*` significantly better, `!` significantly worse than base ({int(confidence * 100)}% paired "
              "bootstrap CI of the difference excludes 0).", ""]
    lines += summary_markdown(results, confidence)
    lines += ["", "Differences (aligned - base), mean and CI:", "",
              "| paradigm | metric | diff | CI | verdict |", "|---|---|---|---|---|"]
    for paradigm, res in results.items():
        for name, v in res["metrics"].items():
            lines.append(f"| {paradigm} | {name} | {v['diff']:+.4f} | [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}] "
                         f"| {v['significant']} |")
    return "\n".join(lines) + "\n"
