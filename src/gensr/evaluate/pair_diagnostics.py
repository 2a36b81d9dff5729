"""Why DPO adds nothing over SFT here: does the model's own likelihood see what the metrics see in a pair?

For DPO to move a metric, the policy's preference score (AR: log-prob of the sampled tokens) must be
able to tell the pair's winner from its loser in a way tied to the metric margin. Two numbers answer it
from data the ablation already has (the base's cached reference scores and the pairs' metric vectors):
- `reference_prefers_chosen`: how often the base already gives the winner the higher score;
- the Spearman correlation, over pairs, between the base's score margin (chosen - rejected) and each
  metric's margin (signed so that positive = chosen better). Near 0 means a win is, to the model, the luck
  of one draw: nothing in its input-conditioned likelihood separates winners, so DPO has little to learn
  that generalises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from gensr.preference.suite import metric_info


def margin_agreement(pairs: pd.DataFrame, ref_scores: pd.DataFrame, metrics: list[str]) -> dict:
    """Per metric: Spearman rho of the base's score margin vs the metric margin, with its p-value and n."""
    joined = pairs.merge(ref_scores, on="pair_id", how="inner")
    score_margin = (joined["ref_chosen"] - joined["ref_rejected"]).to_numpy(float)
    out = {"n_pairs": len(joined), "reference_prefers_chosen": float(np.mean(score_margin > 0)) if len(joined) else
           float("nan"), "metrics": {}}
    for info in metric_info(metrics):
        c, r = f"chosen_{info.name}", f"rejected_{info.name}"
        if c not in joined or r not in joined:
            continue
        margin = (joined[c] - joined[r]).to_numpy(float) * (1 if info.higher_is_better else -1)
        ok = np.isfinite(margin) & np.isfinite(score_margin)
        if ok.sum() < 3:
            out["metrics"][info.name] = {"rho": float("nan"), "p_value": float("nan"), "n": int(ok.sum()),
                                         "median_margin": float("nan")}
            continue
        rho, p = spearmanr(score_margin[ok], margin[ok])
        out["metrics"][info.name] = {"rho": float(rho), "p_value": float(p), "n": int(ok.sum()),
                                     "median_margin": float(np.median(margin[ok]))}
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
