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

`gensr pair-learning-curve` (`learning_curve`) asks whether that increment grows with the number of clips DPO trains
on: DPO and its SFT-only control on nested subsets of one pair set's clips, judged on the same held-out clips, with
the verdict rule `LEARNING_CURVE_RULE` fixed before its first run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gensr.config import Params
from gensr.evaluate.bootstrap import clustered_mean
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
    policies = {s: reference if s == BASE else load_restorer(paths[s]) for s in strategies}
    for policy in policies.values():
        if hasattr(policy, "score_temperature"):
            policy.score_temperature = reference.score_temperature
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
        for strategy, policy in policies.items():
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


# --- does the DPO term's held-out ranking grow with the number of clips it trains on? ---------------------------------
LEARNING_CURVE_RULE = (
    "Pre-registered (2026-12-06, before the first run): the DPO term's increment is delta(n) = held-out accuracy of "
    "DPO minus that of the SFT-only control trained on the same n clips, both on the same held-out pairs. 'More clips "
    "help' when delta(largest n) - delta(smallest n) has its 95% CI (clips resampled, paired by pair) above 0: a "
    "one-sided false-positive rate of 2.5% when the number of clips changes nothing.")


def learning_curve(params: Params, paradigm: str, pair_set: str = "multi", fractions: tuple[float, ...] = (0.25, 0.5, 1.0),
                   heldout_fraction: float = 1 / 3) -> dict:
    """DPO (ablation budget, `multi`'s settings) and its SFT-only control (`sft_clean`'s) trained on nested subsets of a
    pair set's clips, each judged on the same held-out clips by its held-out reward accuracy (`reward_margins`).

    The pair set's clips (train and held-out roles pooled) are shuffled with `seed`; the first `heldout_fraction` are
    held out for every run, and run k trains on the first `fractions[k]` of the rest, with the same budget (steps,
    batch, lr) whatever its size, so a small subset is seen for more epochs. Checkpoints and the derived pair tables
    (absolute audio paths) go to <paths.models>/pair_diagnostics/<paradigm>/learning_curve/; the report to
    <paths.reports>/pair_diagnostics/<paradigm>_learning_curve.{json,md}. Verdict: LEARNING_CURVE_RULE.
    """
    import torch

    from gensr.align.data import PairTensors, longest_pair_seconds
    from gensr.align.train import run_dpo
    from gensr.evaluate.pair_diagnostics import reward_margins
    from gensr.layout import base_checkpoint
    from gensr.models import load_restorer
    from gensr.stages.ablation import strategy_settings
    from gensr.stages.pairs import _write_text, pairs_dir

    start = time.perf_counter()
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction {heldout_fraction}: must be in (0, 1)")
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions {list(fractions)}: each must be in (0, 1]")
    torch.set_num_threads(int(params.restorers.threads))
    pdir = pairs_dir(params, paradigm, pair_set)
    pairs = pd.read_parquet(require_path(pdir / "pairs.parquet", "pair table",
                                         f"run `gensr pairs --paradigm {paradigm}` with '{pair_set}' in pairs.strategies"))
    base = require_path(base_checkpoint(params, paradigm), "base checkpoint", f"run `gensr train-base --paradigm {paradigm}`")
    for column in [c for c in pairs if c.endswith("_path")]:  # the derived tables live elsewhere: absolute paths
        pairs[column] = [None if v is None or pd.isna(v) else str((pdir / v).resolve()) for v in pairs[column]]
    clips = np.array(sorted(pairs["deg_id"].unique()))
    order = clips[np.random.default_rng(params.seed).permutation(len(clips))]
    n_held = int(round(len(clips) * heldout_fraction))
    if n_held < 1 or n_held >= len(clips):
        raise ValueError(f"{pdir}: {len(clips)} clips cannot be split with heldout_fraction {heldout_fraction}")
    held, pool = order[:n_held], order[n_held:]
    heldout = pairs[pairs["deg_id"].isin(held)].assign(role="heldout").sort_values("pair_id").reset_index(drop=True)
    held_clips = heldout["deg_id"].to_numpy()

    def ci(values) -> tuple[float, float, float]:  # mean and CI over the held-out pairs, clips resampled
        return clustered_mean(values, held_clips, params.evaluate.n_bootstrap, params.evaluate.confidence, params.seed)

    root = Path(params.paths.models) / "pair_diagnostics" / paradigm / "learning_curve"
    dpo_settings, sft_settings = (strategy_settings(params, paradigm, s) for s in ("multi", CONTROL))
    reference = load_restorer(base)
    if dpo_settings.score_temperature == "sampling" and hasattr(reference, "score_temperature"):
        reference.score_temperature = float(reference.sampling["temperature"])
    # one crop length for every run and the held-out scoring (null segment_seconds: the longest pair of the set)
    segment = dpo_settings.segment_seconds or longest_pair_seconds(pairs, pdir, dpo_settings.sample_rate)
    dpo_settings, sft_settings = (dataclasses.replace(s, segment_seconds=segment) for s in (dpo_settings, sft_settings))
    held_data = PairTensors(heldout, pdir, dpo_settings.sample_rate, segment, reference.stft_cfg.hop)
    hits, rows = {}, []
    for frac in sorted(set(fractions)):  # nested subsets: the first n clips of one shuffled pool
        n = max(1, int(round(len(pool) * frac)))
        train = pairs[pairs["deg_id"].isin(pool[:n])].assign(role="train")
        table = pd.concat([train, heldout], ignore_index=True)
        out = root / f"clips_{n}"
        out.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out / "pairs.parquet")
        row = {"fraction": frac, "n_clips": n, "n_train_pairs": len(train)}
        for name, settings in (("dpo", dpo_settings), ("sft", sft_settings)):
            policy = load_restorer(base)
            summary = run_dpo(policy, load_restorer(base), table, out / "pairs.parquet", base, settings, out / name)
            policy = load_restorer(out / name / "restorer.pt")
            policy.score_temperature = reference.score_temperature
            hit = reward_margins(policy, reference, held_data, settings.ref_batch_size)["score"] > 0
            hits[(n, name)] = hit
            acc, lo, hi = ci(hit)
            row |= {f"{name}_accuracy": acc, f"{name}_ci": [lo, hi], f"{name}_train_seconds": summary["seconds"]}
        mean, lo, hi = ci(hits[(n, "dpo")].astype(float) - hits[(n, "sft")])
        row |= {"delta": mean, "delta_ci": [lo, hi]}
        rows.append(row)
    small, large = rows[0]["n_clips"], rows[-1]["n_clips"]
    change = ((hits[(large, "dpo")].astype(float) - hits[(large, "sft")]) -
              (hits[(small, "dpo")].astype(float) - hits[(small, "sft")]))
    growth = ci(change) if large != small else (float("nan"),) * 3
    out = {"paradigm": paradigm, "pair_set": pair_set, "heldout_fraction": heldout_fraction,
           "n_heldout_clips": int(n_held), "n_heldout_pairs": len(heldout), "n_pool_clips": int(len(pool)),
           "budget": {"steps": dpo_settings.steps, "batch_size": dpo_settings.batch_size, "lr": dpo_settings.lr,
                      "beta": dpo_settings.beta, "sft_weight": dpo_settings.sft_weight},
           "rows": rows, "growth": {"clips": [small, large], "mean": growth[0], "ci": list(growth[1:]),
                                    "more_clips_help": bool(growth[1] > 0)},
           "rule": LEARNING_CURVE_RULE, "confidence": params.evaluate.confidence,
           "seconds": round(time.perf_counter() - start, 1)}
    out["markdown"] = learning_curve_markdown(out)
    report = Path(params.paths.reports) / "pair_diagnostics"
    report.mkdir(parents=True, exist_ok=True)
    write_json(out, report / f"{paradigm}_learning_curve.json")
    _write_text(report / f"{paradigm}_learning_curve.md", out["markdown"] + "\n")
    return out


def learning_curve_markdown(out: dict) -> str:
    pct = int(round(out["confidence"] * 100))
    b = out["budget"]
    lines = [f"### {out['paradigm']}: held-out reward accuracy vs training clips ({out['pair_set']} pairs; "
             f"{out['n_heldout_pairs']} held-out pairs on {out['n_heldout_clips']} clips; budget {b['steps']} steps x "
             f"{b['batch_size']}, lr {b['lr']:g}, beta {b['beta']:g}, sft_weight {b['sft_weight']:g})", "",
             f"| training clips | train pairs | DPO accuracy [{pct}% CI] | SFT-only control | DPO minus control |",
             "|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['n_clips']} | {r['n_train_pairs']} | {r['dpo_accuracy']:.3f} [{r['dpo_ci'][0]:.3f}, "
                     f"{r['dpo_ci'][1]:.3f}] | {r['sft_accuracy']:.3f} [{r['sft_ci'][0]:.3f}, {r['sft_ci'][1]:.3f}] | "
                     f"{r['delta']:+.3f} [{r['delta_ci'][0]:+.3f}, {r['delta_ci'][1]:+.3f}] |")
    g = out["growth"]
    lines += ["", f"Change of the DPO increment from {g['clips'][0]} to {g['clips'][1]} clips: {g['mean']:+.3f} "
                  f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]: more clips help: **{'yes' if g['more_clips_help'] else 'no'}**.",
              "", out["rule"]]
    return "\n".join(lines)
