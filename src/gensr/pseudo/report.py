"""The singing evaluation's numbers and pictures: paired-bootstrap comparisons between systems, the
markdown table, and spectrogram triptychs (raw / initial / fine-tuned) as on the paper's demo page.

A comparison `a - b` over the clips both systems scored: per metric the mean difference, its percentile
CI from gensr.evaluate.bootstrap.paired_bootstrap (the same resamples for every metric of a comparison),
the p-value and a verdict in the metric's own direction (better / worse / ns). NaN never counts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from gensr.evaluate.bootstrap import paired_bootstrap
from gensr.preference.suite import MetricInfo

FLAGS = {"better": "*", "worse": "!", "ns": ""}


def compare_systems(wide: dict[str, pd.DataFrame], a: str, b: str, metrics: list[MetricInfo], *,
                    n_bootstrap: int, confidence: float, seed: int) -> dict:
    """System `a` minus system `b` (wide tables indexed by clip_id) on their common clips."""
    common = sorted(set(wide[a].index) & set(wide[b].index))
    if not common:
        raise ValueError(f"systems {a} and {b} share no scored clip")
    names = [m.name for m in metrics]
    av = wide[a].reindex(columns=names).loc[common].to_numpy(np.float64)
    bv = wide[b].reindex(columns=names).loc[common].to_numpy(np.float64)
    diff = av - bv
    ci = paired_bootstrap(diff, n_bootstrap, confidence, seed)
    out = {}
    for j, m in enumerate(metrics):
        lo, hi = float(ci.ci_low[j]), float(ci.ci_high[j])
        verdict = "ns"
        if lo > 0 or hi < 0:
            verdict = "better" if (lo > 0) == m.higher_is_better else "worse"
        valid = np.isfinite(diff[:, j])
        out[m.name] = {"dimension": m.dimension, "higher_is_better": m.higher_is_better, "n": int(ci.n[j]),
                       a: float(np.mean(av[valid, j])) if valid.any() else math.nan,
                       b: float(np.mean(bv[valid, j])) if valid.any() else math.nan,
                       "diff": float(ci.mean[j]), "ci_low": lo, "ci_high": hi, "p_value": float(ci.p_value[j]),
                       "significant": verdict}
    return {"a": a, "b": b, "n_clips": len(common), "metrics": out}


def _fmt(x) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3f}"


def means_markdown(means: dict[str, dict[str, float]], labels: dict[str, str], metrics: list[MetricInfo],
                   flags: dict[str, dict[str, str]] | None = None) -> str:
    """Rows = systems, columns = metric means (arrows give the direction); flags[system][metric] in FLAGS."""
    head = ["system"] + [f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system, row in means.items():
        cells = [_fmt(row.get(m.name)) + FLAGS.get((flags or {}).get(system, {}).get(m.name, "ns"), "")
                 for m in metrics]
        lines.append(f"| {labels.get(system, system)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_markdown(comparison: dict, labels: dict[str, str]) -> str:
    a, b = comparison["a"], comparison["b"]
    lines = [f"**{labels.get(a, a)} − {labels.get(b, b)}** ({comparison['n_clips']} clips)", "",
             "| metric | n | " + f"{labels.get(a, a)} | {labels.get(b, b)} | diff | CI | p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in comparison["metrics"].items():
        diff = "nan" if not np.isfinite(v["diff"]) else f"{v['diff']:+.3f}"
        lines.append(f"| {name} {'↑' if v['higher_is_better'] else '↓'} | {v['n']} | {_fmt(v[a])} | {_fmt(v[b])} | "
                     f"{diff} | [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}] | {_fmt(v['p_value'])} | "
                     f"{v['significant']} |")
    return "\n".join(lines)


def triptych_png(path: Path, panels: dict[str, np.ndarray], sample_rate: int, title: str) -> Path:
    """Side-by-side log spectrograms on one colour scale (dB re full scale), one panel per named wave."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import stft

    from gensr.storage import atomic_path

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.0, 3.4), sharey=True, layout="constrained")
    mesh = None
    for ax, (name, audio) in zip(np.atleast_1d(axes), panels.items()):
        f, t, z = stft(np.asarray(audio, np.float64), fs=sample_rate, nperseg=512, noverlap=384)
        mesh = ax.pcolormesh(t, f / 1000, 20 * np.log10(np.abs(z) + 1e-6), vmin=-100, vmax=-10, shading="auto",
                             cmap="magma")
        ax.set_title(name)
        ax.set_xlabel("s")
    np.atleast_1d(axes)[0].set_ylabel("kHz")
    fig.suptitle(title)
    fig.colorbar(mesh, ax=list(np.atleast_1d(axes)), label="dB", shrink=0.9, pad=0.01)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png", metadata={"Software": None})
    plt.close(fig)
    return Path(path)
