"""`gensr pair-diagnostics`: does a trained policy's DPO reward rank pairs it never trained on, beyond the SFT control?

For each checkpoint (`base` and the ablation strategies' `models/ablation/<paradigm>/<strategy>/restorer.pt`) and each
pair set (default `multi`), on the set's held-out pairs (clips no run trained on) and on a seeded sample of its train
pairs, it computes the DPO reward margin of the checkpoint against the base (`gensr.evaluate.pair_diagnostics.
reward_margins`): the share of pairs whose winner it favours (the held-out reward accuracy of a DPO run), with a CI
from resampling whole clips (the pairs of one clip share candidates), and the Spearman correlation of that margin with
each `pairs.metrics` margin. For AR it adds the same accuracy under the sampler's view (tokens renormalised over the
base's top-k). `base` reports the base's own score margin instead (how often the base already prefers the winner).

The SFT-only controls never see a pair, so their margins show what the SFT term alone does to the pairs' ranking;
each DPO strategy minus `sft_clean` on the same held-out pairs (paired by pair, clips resampled) is the margin the DPO
term adds. A dev tool, not a DVC stage: it reads pair sets of the pref pool and the ablation checkpoints, never a test
or confirm clip. Writes <paths.reports>/pair_diagnostics/<paradigm>.{json,md}.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from gensr.config import Params
from gensr.storage import require_path, write_json

BASE = "base"
CONTROL = "sft_clean"


def checkpoint_path(params: Params, paradigm: str, strategy: str) -> Path:
    from gensr.layout import base_checkpoint
    from gensr.stages.ablation import model_dir

    if strategy == BASE:
        return base_checkpoint(params, paradigm)
    return model_dir(params, paradigm, strategy) / "restorer.pt"


def default_strategies(params: Params, paradigm: str) -> list[str]:
    """`base` and every strategy of ablation.strategies whose checkpoint exists."""
    return [BASE] + [s for s in params.ablation.strategies if checkpoint_path(params, paradigm, s).is_file()]


def clustered_mean(values: np.ndarray, clusters: np.ndarray, n_bootstrap: int, confidence: float,
                   seed: int) -> tuple[float, float, float]:
    """Mean of `values` over pairs, with a percentile CI from resampling whole clusters (clips) with replacement."""
    from gensr.evaluate.bootstrap import resample_indices

    values = np.asarray(values, dtype=float)
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    sums, counts = np.bincount(inverse, weights=values), np.bincount(inverse)
    idx = resample_indices(len(counts), n_bootstrap, seed)
    boot = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(values.mean()), float(lo), float(hi)


def _pair_frames(params: Params, paradigm: str, pair_set: str, train_pairs: int) -> dict[str, pd.DataFrame]:
    from gensr.stages.pairs import pairs_dir

    path = require_path(pairs_dir(params, paradigm, pair_set) / "pairs.parquet", "pair table",
                        f"run `gensr pairs --paradigm {paradigm}` with '{pair_set}' in pairs.strategies")
    pairs = pd.read_parquet(path)
    train = pairs[pairs["role"] == "train"]
    if len(train) > train_pairs:
        train = train.sample(n=train_pairs, random_state=params.seed)
    frames = {"heldout": pairs[pairs["role"] == "heldout"], "train": train}
    return {role: f.sort_values("pair_id").reset_index(drop=True) for role, f in frames.items() if len(f)}


def run_pair_diagnostics(params: Params, paradigm: str, strategies: list[str] | None = None,
                         pair_sets: list[str] | None = None, train_pairs: int = 300) -> dict:
    """Reward margins of every checkpoint on every pair set (see the module doc); writes the JSON and Markdown."""
    import torch

    from gensr.align.data import PairTensors, longest_pair_seconds
    from gensr.evaluate.pair_diagnostics import reward_margins, score_agreement
    from gensr.models import load_restorer
    from gensr.stages.ablation import strategy_settings
    from gensr.stages.pairs import _write_text, pair_strategy, pairs_dir

    start = time.perf_counter()
    torch.set_num_threads(int(params.restorers.threads))
    strategies = strategies or default_strategies(params, paradigm)
    pair_sets = pair_sets or ["multi"]
    paths = {s: require_path(checkpoint_path(params, paradigm, s), f"checkpoint of '{s}'",
                             f"run `gensr ablation --paradigm {paradigm} --strategy {s}`" if s != BASE else
                             f"run `gensr train-base --paradigm {paradigm}`") for s in strategies}
    settings = strategy_settings(params, paradigm, "multi")
    conf, n_boot = params.evaluate.confidence, params.evaluate.n_bootstrap
    reference = load_restorer(paths.get(BASE) or require_path(checkpoint_path(params, paradigm, BASE),
                                                              "base checkpoint",
                                                              f"run `gensr train-base --paradigm {paradigm}`"))
    if settings.score_temperature == "sampling" and hasattr(reference, "score_temperature"):
        reference.score_temperature = float(reference.sampling["temperature"])
    rows, hits, heldout_clips = [], {}, {}
    for pair_set in pair_sets:
        frames = _pair_frames(params, paradigm, pair_set, train_pairs)
        if "heldout" in frames:
            heldout_clips[pair_set] = frames["heldout"]["deg_id"].to_numpy()
        pdir = pairs_dir(params, paradigm, pair_set)
        segment = settings.segment_seconds or longest_pair_seconds(pd.concat(frames.values()), pdir,
                                                                   settings.sample_rate)
        data = {role: PairTensors(f, pdir, settings.sample_rate, segment, reference.stft_cfg.hop)
                for role, f in frames.items()}
        for strategy in strategies:
            policy = reference if strategy == BASE else load_restorer(paths[strategy])
            if policy is not reference and hasattr(policy, "score_temperature"):
                policy.score_temperature = reference.score_temperature
            for role, d in data.items():
                margins = reward_margins(policy, reference, d, settings.ref_batch_size)
                clips = frames[role]["deg_id"].to_numpy()
                agree = score_agreement(frames[role], margins["score"], list(params.pairs.metrics))
                acc, lo, hi = clustered_mean(margins["score"] > 0, clips, n_boot, conf, params.seed)
                row = {"strategy": strategy, "pairs": pair_set, "role": role, "n_pairs": len(d),
                       "n_clips": int(len(np.unique(clips))), "accuracy": acc, "accuracy_ci": [lo, hi],
                       "rho": {m: v["rho"] for m, v in agree["metrics"].items()},
                       "rho_p_value": {m: v["p_value"] for m, v in agree["metrics"].items()},
                       "mean_margin": float(np.mean(margins["score"])), "sampler_accuracy": None,
                       "outside_support": margins["outside_support"]}
                if margins["sampler"] is not None:
                    s_acc, s_lo, s_hi = clustered_mean(margins["sampler"] > 0, clips, n_boot, conf, params.seed)
                    row |= {"sampler_accuracy": s_acc, "sampler_accuracy_ci": [s_lo, s_hi]}
                    hits[(strategy, pair_set, role, "sampler")] = margins["sampler"] > 0
                hits[(strategy, pair_set, role, "score")] = margins["score"] > 0
                rows.append(row)
    versus = []  # each strategy on the held-out pairs of the set it trained on (the controls: multi's)
    for strategy in strategies:
        pair_set = pair_strategy(strategy)
        for view in ("score", "sampler"):
            mine, control = hits.get((strategy, pair_set, "heldout", view)), hits.get(
                (CONTROL, pair_set, "heldout", view))
            if strategy not in (BASE, CONTROL) and mine is not None and control is not None:
                diff, lo, hi = clustered_mean(mine.astype(float) - control.astype(float), heldout_clips[pair_set],
                                              n_boot, conf, params.seed)
                versus.append({"strategy": strategy, "pairs": pair_set, "view": view, "accuracy_minus_control": diff,
                               "ci": [lo, hi]})
    out = {"paradigm": paradigm, "strategies": strategies, "pair_sets": pair_sets, "train_pairs": train_pairs,
           "confidence": conf, "score_temperature": float(getattr(reference, "score_temperature", 1.0)),
           "rows": rows, "versus_control": versus, "seconds": round(time.perf_counter() - start, 1)}
    out["markdown"] = markdown(out, list(params.pairs.metrics))
    report = Path(params.paths.reports) / "pair_diagnostics"
    report.mkdir(parents=True, exist_ok=True)
    write_json(out, report / f"{paradigm}.json")
    _write_text(report / f"{paradigm}.md", out["markdown"] + "\n")
    return out


def markdown(out: dict, metrics: list[str]) -> str:
    pct = int(round(out["confidence"] * 100))
    sampler = any(r["sampler_accuracy"] is not None for r in out["rows"])
    head = ["checkpoint", "pairs", "role", "pairs (clips)", f"accuracy [{pct}% CI]"]
    head += [f"sampler accuracy [{pct}% CI]"] if sampler else []
    head += [f"rho {m}" for m in metrics]
    lines = [f"### {out['paradigm']}: DPO reward margin vs the base on the pairs (score temperature "
             f"{out['score_temperature']:g})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in out["rows"]:
        cells = [r["strategy"] + (" (own score)" if r["strategy"] == BASE else ""), r["pairs"], r["role"],
                 f"{r['n_pairs']} ({r['n_clips']})",
                 f"{r['accuracy']:.3f} [{r['accuracy_ci'][0]:.3f}, {r['accuracy_ci'][1]:.3f}]"]
        if sampler:
            cells.append("-" if r["sampler_accuracy"] is None else
                         f"{r['sampler_accuracy']:.3f} [{r['sampler_accuracy_ci'][0]:.3f}, "
                         f"{r['sampler_accuracy_ci'][1]:.3f}]")
        cells += [_signed(r["rho"].get(m, float("nan"))) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if out["versus_control"]:
        lines += ["", f"Held-out accuracy minus the SFT-only control `{CONTROL}`'s on the same pairs (each strategy on "
                      f"the set it trained on), mean [{pct}% CI], clips resampled:", ""]
        lines += [f"- {v['strategy']} on {v['pairs']} ({v['view']}): {v['accuracy_minus_control']:+.3f} "
                  f"[{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]" for v in out["versus_control"]]
    return "\n".join(lines)


def _signed(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:+.3f}"
