"""The ablation's verdicts, Table-3-style rows and figure, from per-strategy evaluations (pure functions).

Inputs, per (paradigm, split): `results[strategy]` = a `compare(base, strategy)` result, and
`per_clip[strategy]` = the strategy's per-clip scores (the same clips and restoration seeds for all).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from gensr.evaluate.compare import compare
from gensr.evaluate.verdicts import hacking_verdict, head_to_head_verdict, improvement_verdict
from gensr.preference.suite import MetricInfo

FLAGS = {"better": "*", "worse": "!", "ns": ""}


def _infos(res: dict) -> list[MetricInfo]:
    from gensr.metrics.registry import METRIC_NAMES

    order = {n: i for i, n in enumerate(METRIC_NAMES)}
    return sorted((MetricInfo(n, v["dimension"], v["higher_is_better"]) for n, v in res["metrics"].items()),
                  key=lambda m: (order.get(m.name, len(order)), m.name))


def ablation_verdicts(results: dict[str, dict], per_clip: dict[str, pd.DataFrame], alpha: float, n_bootstrap: int,
                      confidence: float, seed: int, min_dimensions: int = 1) -> dict:
    """Every pre-registered verdict of one (paradigm, split): improves (each strategy vs base), hacking (each
    single-metric strategy), and the head-to-heads of multi against each other strategy, multi vs sft_clean
    being the primary one."""
    out = {"improves": {s: improvement_verdict(r, alpha, min_dimensions) for s, r in results.items()},
           "hacking": {s: hacking_verdict(r, s.split(":", 1)[1], alpha)
                       for s, r in results.items() if s.startswith("single:")},
           "head_to_head": {}}
    if "multi" in per_clip:
        infos = _infos(results["multi"])
        for other in per_clip:
            if other == "multi":
                continue
            res = compare(per_clip[other], per_clip["multi"], infos, n_bootstrap=n_bootstrap, confidence=confidence,
                          seed=seed, min_dimensions=min_dimensions)
            h2h = head_to_head_verdict(res, alpha, "multi", other)
            h2h["metrics"] = {m: {k: v[k] for k in ("diff", "ci_low", "ci_high", "p_value", "significant")}
                              for m, v in res["metrics"].items()}
            out["head_to_head"][f"multi_vs_{other}"] = h2h
    return out


def ablation_rows(results: dict[tuple[str, str], dict[str, dict]]) -> pd.DataFrame:
    """One row per paradigm x split x strategy x metric: base, strategy, difference, CI, p-value, verdict."""
    rows = []
    for (paradigm, split), by_strategy in results.items():
        for strategy, res in by_strategy.items():
            for name, v in res["metrics"].items():
                rows.append({"paradigm": paradigm, "split": split, "strategy": strategy, "metric": name,
                             "dimension": v["dimension"], "n": v["n"], "base": v["base"], "aligned": v["aligned"],
                             "diff": v["diff"], "ci_low": v["ci_low"], "ci_high": v["ci_high"],
                             "p_value": v.get("p_value", math.nan), "significant": v["significant"]})
    return pd.DataFrame(rows)


def _cell(v: dict) -> str:
    if not math.isfinite(v["diff"]):
        return "nan"
    return f"{v['diff']:+.3f}{FLAGS[v['significant']]} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"


def table_markdown(results: dict, verdicts: dict, confidence: float) -> str:
    """Per (paradigm, split): rows = strategies, columns = every metric (change vs base, CI), then the verdicts."""
    pct = int(round(confidence * 100))
    lines = []
    for (paradigm, split), by_strategy in results.items():
        infos = _infos(next(iter(by_strategy.values())))
        n = next(iter(by_strategy.values()))["n_clips"]
        v = verdicts[(paradigm, split)]
        lines += [f"### {paradigm}, {split} ({n} clips): change vs base, mean [{pct}% CI]", ""]
        head = ["strategy"] + [f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in infos] + ["improves"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for strategy, res in by_strategy.items():
            imp = v["improves"][strategy]
            cells = [_cell(res["metrics"][m.name]) for m in infos]
            lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {'yes' if imp['target_met'] else 'no'} |")
        lines += ["", f"`*` / `!`: the {pct}% paired-bootstrap CI excludes 0 on the better / worse side "
                  "(per metric, uncorrected).", ""]
        if v["hacking"]:
            lines += ["| single-metric strategy | target better | metrics of other dimensions worse (Holm) | hacking |",
                      "|---|---|---|---|"]
            for strategy, h in v["hacking"].items():
                lines.append(f"| {strategy} | {'yes' if h['target_better'] else 'no'} ({h['target_diff']:+.3f}) | "
                             f"{', '.join(h['damaged_metrics']) or '-'} | **{'yes' if h['hacking'] else 'no'}** |")
            lines.append("")
        if v["head_to_head"]:
            lines += ["| head to head | dims better (Holm) | dims worse (Holm) | winner | per-dimension std diff [CI] |",
                      "|---|---|---|---|---|"]
            for name, h in v["head_to_head"].items():
                dims = "; ".join(f"{d} {x['std_diff']:+.3f} [{x['ci_low']:+.3f}, {x['ci_high']:+.3f}]"
                                 for d, x in sorted(h["dimensions"].items()))
                lines.append(f"| {h['strategy']} vs {h['other']} | {', '.join(h['dimensions_better']) or '-'} | "
                             f"{', '.join(h['dimensions_worse']) or '-'} | **{h['winner'] or 'neither'}** | {dims} |")
            lines.append("")
    lines.append(side_by_side_markdown(results))
    rules = next(iter(verdicts.values()))
    lines += ["Verdict rules (pre-registered, gensr.evaluate.verdicts):", ""]
    if rules["improves"]:
        lines.append(f"- improves: {next(iter(rules['improves'].values()))['rule']}")
    if rules["hacking"]:
        lines.append(f"- hacking: {next(iter(rules['hacking'].values()))['rule']}")
    if rules["head_to_head"]:
        lines.append(f"- head to head: {next(iter(rules['head_to_head'].values()))['rule']}")
    return "\n".join(lines) + "\n"


def side_by_side_markdown(results: dict) -> str:
    """Per paradigm: one row per strategy, each metric's change vs base on every split next to each other."""
    lines = []
    for paradigm in dict.fromkeys(p for p, _ in results):
        splits = [s for p, s in results if p == paradigm]
        if len(splits) < 2:
            continue
        first = results[(paradigm, splits[0])]
        infos = _infos(next(iter(first.values())))
        lines += [f"### {paradigm}: change vs base, {' / '.join(splits)} side by side", ""]
        head = ["strategy"] + [f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in infos]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for strategy in first:
            cells = []
            for m in infos:
                vals = []
                for split in splits:
                    v = results[(paradigm, split)][strategy]["metrics"][m.name]
                    vals.append("nan" if not math.isfinite(v["diff"]) else f"{v['diff']:+.3f}{FLAGS[v['significant']]}")
                cells.append(" / ".join(vals))
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + ("\n" if lines else "")


def ablation_figure(results: dict, verdicts: dict, path: Path) -> Path:
    """One panel per metric: each strategy's change vs base with its CI, per split; hacking runs marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gensr.storage import atomic_path

    keys = list(results)
    first = next(iter(results[keys[0]].values()))
    infos = _infos(first)
    strategies = list(results[keys[0]])
    cols = 4
    rows = math.ceil(len(infos) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 0.35 * len(strategies) * rows + 1.5 * rows),
                             squeeze=False)
    colors = {"better": "tab:green", "worse": "tab:red", "ns": "tab:gray"}
    for ax, m in zip(axes.flat, infos):
        for k, key in enumerate(keys):
            hack = verdicts[key]["hacking"]
            for i, s in enumerate(strategies):
                v = results[key][s]["metrics"][m.name]
                y = i + (k - (len(keys) - 1) / 2) * 0.25
                if math.isfinite(v["diff"]):
                    ax.errorbar(v["diff"], y, xerr=[[v["diff"] - v["ci_low"]], [v["ci_high"] - v["diff"]]],
                                fmt="o" if k == 0 else "s", color=colors[v["significant"]], ms=4, capsize=2)
                if s in hack and hack[s]["hacking"] and k == 0:
                    ax.annotate("hack", (v["diff"], y), textcoords="offset points", xytext=(4, 3), fontsize=7,
                                color="tab:red")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(strategies)), strategies if ax in axes[:, 0] else [""] * len(strategies),
                      fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{m.name} ({'higher' if m.higher_is_better else 'lower'} is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(infos):]:
        ax.axis("off")
    split_names = ", ".join(f"{'o' if k == 0 else 's'} = {p} {s}" for k, (p, s) in enumerate(keys))
    fig.suptitle(f"Change vs base per strategy, with CIs ({split_names}); green better, red worse", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
