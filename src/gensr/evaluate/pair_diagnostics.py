"""Why DPO adds nothing over SFT here: does the model's own likelihood see what the metrics see in a pair?

For DPO to move a metric, the policy's preference score (AR: log-prob of the sampled tokens) must be
able to tell the pair's winner from its loser in a way tied to the metric margin. Two numbers answer it
from data the ablation already has (the base's cached reference scores and the pairs' metric vectors):
- `reference_prefers_chosen`: how often the base already gives the winner the higher score;
- the Spearman correlation, over pairs, between the base's score margin (chosen - rejected) and each
  metric's margin (signed so that positive = chosen better). Near 0 means a win is, to the model, the luck
  of one draw: nothing in its input-conditioned likelihood separates winners, so DPO has little to learn
  that generalises.

And for a trained policy (`reward_margins`, `gensr pair-diagnostics`): does its DPO reward margin against the
base, [log pi(chosen) - log pi_ref(chosen)] - [log pi(rejected) - log pi_ref(rejected)], rank pairs it never
trained on, and does that margin follow the metric margins? Measured for the SFT-only controls too, whose
margins move only because the SFT term moved the model: that is the level a DPO run has to beat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from gensr.align.data import PairTensors
from gensr.preference.suite import metric_info


def margin_agreement(pairs: pd.DataFrame, ref_scores: pd.DataFrame, metrics: list[str]) -> dict:
    """Per metric: Spearman rho of the base's score margin vs the metric margin, with its p-value and n."""
    joined = pairs.merge(ref_scores, on="pair_id", how="inner")
    out = score_agreement(joined, (joined["ref_chosen"] - joined["ref_rejected"]).to_numpy(float), metrics)
    out["reference_prefers_chosen"] = out.pop("accuracy")
    return out


def score_agreement(pairs: pd.DataFrame, score_margin: np.ndarray, metrics: list[str]) -> dict:
    """How a per-pair score margin (one per row of `pairs`, positive = the model favours the winner) agrees with the
    pairs: `accuracy`, the share of pairs with a positive margin (NaN margins excluded), and per metric the Spearman
    rho of the score margin vs the metric margin (signed so that positive = the winner is better), its p-value and n.
    """
    score_margin = np.asarray(score_margin, dtype=float)
    if len(score_margin) != len(pairs):
        raise ValueError(f"{len(score_margin)} score margins for {len(pairs)} pairs")
    finite = np.isfinite(score_margin)
    out = {"n_pairs": len(pairs), "accuracy": float(np.mean(score_margin[finite] > 0)) if finite.any() else
           float("nan"), "metrics": {}}
    for info in metric_info(metrics):
        c, r = f"chosen_{info.name}", f"rejected_{info.name}"
        if c not in pairs or r not in pairs:
            continue
        margin = (pairs[c] - pairs[r]).to_numpy(float) * (1 if info.higher_is_better else -1)
        ok = np.isfinite(margin) & finite
        if ok.sum() < 3 or np.ptp(score_margin[ok]) == 0 or np.ptp(margin[ok]) == 0:  # no rank order: undefined
            out["metrics"][info.name] = {"rho": float("nan"), "p_value": float("nan"), "n": int(ok.sum()),
                                         "median_margin": float("nan")}
            continue
        rho, p = spearmanr(score_margin[ok], margin[ok])
        out["metrics"][info.name] = {"rho": float(rho), "p_value": float(p), "n": int(ok.sum()),
                                     "median_margin": float(np.median(margin[ok]))}
    return out


@torch.no_grad()
def reward_margins(policy, reference, data: PairTensors, batch_size: int) -> dict:
    """Per pair of `data`, the DPO reward margin of `policy` against `reference`, as numpy arrays:

    - `score`: under the score DPO trains on (`preference_score` at each model's `score_temperature`), i.e. the
      margin whose sign is the held-out reward accuracy of the DPO run;
    - `sampler` (token restorers with `head_logits`, i.e. AR, on pairs whose both sides are sampled candidates; else
      None: a clean reference as the winner, `gt_as_chosen`, was never drawn): under the distribution the candidates
      were drawn from, each token's log-prob renormalised over the reference's top-k at its sampling temperature
      (`support_log_probs_at`). A policy can raise the winners' full-softmax log-probs by taking mass from tokens the
      sampler never draws; this view counts only what changes among the tokens it does draw. Tokens outside the
      reference's top-k (a near-tie decided otherwise when the candidate was sampled in another batch) are skipped
      for both models; `outside_support` is their share of the valid tokens.

    With `policy is reference`, the margins are the reference's own score margins (chosen - rejected).
    """
    from gensr.align.data import score_pairs
    from gensr.align.train import same_trunk
    from gensr.models.token_restorer import support_log_probs_at

    own = policy is reference
    sampled = all(codes is not None and bool((codes >= 0).flatten(1).any(1).all())
                  for codes in (data.chosen_codes, data.rejected_codes))
    if not hasattr(policy, "head_logits"):
        pc, pr = score_pairs(policy, data, batch_size, desc="policy scores")
        if own:
            return {"score": (pc - pr).numpy().astype(float), "sampler": None, "outside_support": float("nan")}
        rc, rr = score_pairs(reference, data, batch_size)
        return {"score": ((pc - rc) - (pr - rr)).numpy().astype(float), "sampler": None,
                "outside_support": float("nan")}
    was = policy.training, reference.training
    policy.eval()
    reference.eval()
    shared = own or same_trunk(policy, reference)
    temperature = float(reference.sampling["temperature"])
    top_k = int(reference.sampling.get("top_k") or 0) or reference.codebook_size
    totals = {kind: {"score": [], "sampler": []} for kind in ("chosen", "rejected")}
    outside = valid = 0
    for kind in ("chosen", "rejected"):
        codes_all = getattr(data, f"{kind}_codes", None)
        for start in tqdm(range(0, len(data), batch_size), desc=f"reward margins ({kind})", leave=False):
            sl = slice(start, start + batch_size)
            codes = None if codes_all is None else codes_all[sl]
            ref_in = reference.head_inputs(data.degraded[sl], getattr(data, kind)[sl], None, codes)
            pol_in = ref_in if shared else policy.head_inputs(data.degraded[sl], getattr(data, kind)[sl], None, codes)
            ref_logits = reference.head_logits(ref_in)
            mask = ref_in["mask"].unsqueeze(-1).expand(ref_in["codes"].shape)
            ref_lp, inside = support_log_probs_at(ref_logits, ref_logits, ref_in["codes"], temperature, top_k)
            keep = inside & mask
            outside += int((mask & ~inside).sum())
            valid += int(mask.sum())
            pol_score = policy.preference_from_heads(pol_in)
            if own:
                totals[kind]["score"].append(pol_score)
                totals[kind]["sampler"].append((ref_lp * keep).sum(dim=(1, 2)))
            else:
                pol_lp, _ = support_log_probs_at(policy.head_logits(pol_in), ref_logits, ref_in["codes"], temperature,
                                                 top_k)
                totals[kind]["score"].append(pol_score - reference.preference_from_heads(ref_in))
                totals[kind]["sampler"].append(((pol_lp - ref_lp) * keep).sum(dim=(1, 2)))
    policy.train(was[0])
    reference.train(was[1])
    out = {view: (torch.cat(totals["chosen"][view]) - torch.cat(totals["rejected"][view])).numpy().astype(float)
           if len(data) else np.zeros(0) for view in ("score", "sampler")}
    out["outside_support"] = outside / valid if valid and sampled else float("nan")
    if not sampled:
        out["sampler"] = None
    return out


def run_agreement(run_dir: str | Path, pairs_path: str | Path, metrics: list[str]) -> dict:
    """`margin_agreement` for the train and held-out pairs of one DPO run folder (its reference-score caches)."""
    pairs = pd.read_parquet(pairs_path)
    out = {}
    for part in ("train", "heldout"):
        cache = Path(run_dir) / f"reference_scores_{part}.parquet"
        if cache.is_file():
            out[part] = margin_agreement(pairs, pd.read_parquet(cache), metrics)
    return out
