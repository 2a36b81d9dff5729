"""Stage `dpo`: align the base restorer of one paradigm on one pair set (Lightning + MLflow).

    models/aligned/<paradigm>/<strategy>/restorer.pt (the aligned policy), dpo.ckpt (Lightning, no
    reference inside), reference_scores_*.parquet (AR/MGM cache), summary.json
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gensr.config import Params
from gensr.layout import base_checkpoint
from gensr.preference.pairs import strategy_slug
from gensr.stages.pairs import pairs_dir
from gensr.storage import file_sha256, require_path, write_json


def aligned_dir(params: Params, paradigm: str, strategy: str) -> Path:
    return Path(params.paths.models) / "aligned" / paradigm / strategy_slug(strategy)


def dpo_settings(params: Params, paradigm: str):
    from gensr.align.train import DPOSettings

    hp, d = params.dpo.for_paradigm(paradigm), params.dpo
    return DPOSettings(paradigm=paradigm, beta=hp.beta, lr=hp.lr, steps=hp.steps, batch_size=hp.batch_size,
                       sft_weight=hp.sft_weight, sft_target=hp.sft_target, score_draws=hp.score_draws,
                       score_temperature=hp.score_temperature,
                       trainable=None if hp.trainable is None else tuple(hp.trainable),
                       weight_decay=d.weight_decay, grad_clip=d.grad_clip, val_every_steps=d.val_every_steps,
                       ref_batch_size=d.ref_batch_size, segment_seconds=d.segment_seconds,
                       audio_examples=d.audio_examples, sample_rate=params.audio.sample_rate, seed=params.seed)


def dpo_inputs(params: Params, paradigm: str, strategy: str) -> tuple[Path, Path]:
    """The pair table and the base checkpoint a DPO run of `strategy` reads; FileNotFoundError naming the one missing."""
    pairs_path = require_path(pairs_dir(params, paradigm, strategy) / "pairs.parquet", "pair table",
                              f"run `gensr pairs --paradigm {paradigm}` with '{strategy}' in pairs.strategies")
    base = require_path(base_checkpoint(params, paradigm), "base checkpoint",
                        f"run `gensr train-base --paradigm {paradigm}`")
    return pairs_path, base


def train_dpo(params: Params, paradigm: str, strategy: str | None = None, *, track: bool = True,
              dagster_run_id: str | None = None, settings=None, out_dir: Path | None = None, kind: str = "dpo",
              parent_run_id: str | None = None, tags: dict | None = None) -> dict:
    """Align the base restorer of `paradigm` on the pairs of `strategy` (default dpo.strategy).

    The ablation passes its own `settings` (its shared budget, and objective 'sft' for the SFT-only
    controls), `out_dir`, MLflow `kind` and the parent run it nests under."""
    import torch

    from gensr.models import load_restorer
    from gensr.tracking import run_with_checkpoint

    strategy = strategy or params.dpo.strategy
    pairs_path, base = dpo_inputs(params, paradigm, strategy)
    torch.set_num_threads(int(params.restorers.threads))
    pairs = pd.read_parquet(pairs_path)
    policy, reference = load_restorer(base), load_restorer(base)
    settings = settings or dpo_settings(params, paradigm)
    out_dir = out_dir or aligned_dir(params, paradigm, strategy)
    from gensr.align.train import run_dpo

    devices = params.scaleout.trainer if params.scaleout is not None else None
    if not track:
        return run_dpo(policy, reference, pairs, pairs_path, base, settings, out_dir, trainer=devices)
    mlruns = Path(params.paths.mlruns)
    log_params = {"paradigm": paradigm, "strategy": strategy, "base_checkpoint": str(base),
                  "pairs_sha256": file_sha256(pairs_path), "n_pairs": len(pairs), **settings.__dict__,
                  "pairs": params.pairs.model_dump(mode="json")}
    all_tags = {"gensr.paradigm": paradigm, "gensr.strategy": strategy, "gensr.base_checkpoint": str(base),
                **(tags or {})}
    name = f"{paradigm} {strategy}" if parent_run_id else f"{kind}-{paradigm}-{strategy_slug(strategy)}"
    summary = run_with_checkpoint(
        mlruns, kind, name, lambda run, _: run_dpo(policy, reference, pairs, pairs_path, base, settings, out_dir,
                                                   run=run, mlruns_dir=mlruns, trainer=devices),
        starts_from=base, params=log_params, tags=all_tags, data_paths=(pairs_path,), dagster_run_id=dagster_run_id,
        parent_run_id=parent_run_id)
    write_json(summary, out_dir / "summary.json")
    return summary
