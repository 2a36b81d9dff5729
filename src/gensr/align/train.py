"""One DPO run: reference scores (cached for AR/MGM), Lightning fit, held-out pair accuracy, artifacts.

Outputs in `out_dir`: restorer.pt (the aligned policy, loadable with Restorer.load), dpo.ckpt
(Lightning checkpoint: policy + optimizer, no reference), reference_scores.parquet (the cache)
and summary.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pandas as pd
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from gensr.align.data import PairTensors, longest_pair_seconds, score_pairs
from gensr.align.loss import dpo_loss
from gensr.align.module import DPOModule, under_prefix
from gensr.config.scaleout import TrainerParams
from gensr.storage import file_sha256, write_json, write_parquet

CACHED_PARADIGMS = ("ar", "mgm")  # their reference score needs no fresh randomness per step


@dataclass(frozen=True)
class DPOSettings:
    paradigm: str
    beta: float
    lr: float
    steps: int
    batch_size: int
    sft_weight: float
    sft_target: str  # chosen | clean
    score_draws: int | None
    weight_decay: float
    grad_clip: float
    val_every_steps: int
    ref_batch_size: int
    segment_seconds: float | None  # None = the longest pair: whole clips, no crop
    audio_examples: int
    sample_rate: int
    seed: int
    score_temperature: str = "model"  # model | sampling (AR/MGM)
    trainable: tuple[str, ...] | None = None  # parameter-name prefixes DPO may change; None = all
    objective: str = "dpo"  # dpo | sft (the ablation's SFT-only controls: no preference score is ever computed)

    @property
    def reference_mode(self) -> str:
        return "cached" if self.paradigm in CACHED_PARADIGMS else "live"


def trains_heads_only(policy, reference, settings: DPOSettings) -> bool:
    """True when the fit changes only parameters after the policy's frozen trunk (`Restorer.head_prefixes`), so the
    trunk can run once per pair instead of every step (the same loss up to float rounding; the ablation's `multi` run
    on the demo took 50 s instead of 73 s, 25 s of it the one trunk pass, docs/alignment.md).

    Needs `settings.trainable` inside the head prefixes, a cached reference (its scores come from the same trunk
    outputs) and, for DPO, a reference whose trunk is the policy's, parameter for parameter.
    """
    prefixes = getattr(policy, "head_prefixes", None)
    if prefixes is None or settings.trainable is None:
        return False
    if settings.objective == "dpo" and settings.reference_mode != "cached":
        return False
    if not all(any(under_prefix(t, p) for p in prefixes) for t in settings.trainable):
        return False
    return reference is None or same_trunk(policy, reference)


def same_trunk(policy, reference) -> bool:
    """True when every parameter outside the policy's `head_prefixes` equals the reference's: the trunk outputs
    (`Restorer.head_inputs`) of one serve both."""
    prefixes = getattr(policy, "head_prefixes", None)
    if prefixes is None:
        return False
    ref = dict(reference.named_parameters())
    return all(any(under_prefix(n, p) for p in prefixes) or torch.equal(value, ref[n])
               for n, value in policy.named_parameters())


def reference_cache(reference, data: PairTensors, settings: DPOSettings, cache_path: Path, key: dict) -> None:
    """Attach reference scores to `data`, reusing `cache_path` when it was made under the same key."""
    key_path = cache_path.with_suffix(".key.json")
    ids = data.pairs["pair_id"].tolist()
    if cache_path.exists() and key_path.exists() and json.loads(key_path.read_text()) == key:
        cached = pd.read_parquet(cache_path).set_index("pair_id")
        if set(ids) <= set(cached.index):
            rows = cached.loc[ids]
            data.set_reference_scores(torch.tensor(rows["ref_chosen"].to_numpy()), torch.tensor(rows["ref_rejected"].to_numpy()))
            return
    chosen, rejected = score_pairs(reference, data, settings.ref_batch_size)
    data.set_reference_scores(chosen, rejected)
    table = pa.table({"pair_id": pa.array(ids, pa.string()), "ref_chosen": pa.array(chosen.double().numpy()),
                      "ref_rejected": pa.array(rejected.double().numpy())})
    write_parquet(table, cache_path)
    write_json(key, key_path)


def pair_accuracy(policy, reference, data: PairTensors, settings: DPOSettings) -> dict:
    """DPO diagnostics of `policy` on fixed-seed pairs (the held-out pair accuracy)."""
    if len(data) == 0:
        return {}
    pc, pr = score_pairs(policy, data, settings.ref_batch_size, desc="policy scores")
    if data.ref_chosen is not None:
        rc, rr = data.ref_chosen, data.ref_rejected
    else:
        rc, rr = score_pairs(reference, data, settings.ref_batch_size)
    loss, diag = dpo_loss(pc, pr, rc, rr, settings.beta)
    out = {k: float(v) for k, v in diag.items()}
    out["loss"] = float(loss)
    out["reference_prefers_chosen"] = float((rc > rr).float().mean())  # the base model's own pair accuracy
    out["n_pairs"] = len(data)
    return out


class PairBatches(L.LightningDataModule):
    """Seeded shuffled batches of the train pairs, and the held-out pairs in order.

    With several processes each rank takes its rows of every global batch (RankBatches): the
    batches one process would draw, split, so the ranks' averaged gradient is the one-process one.
    """

    def __init__(self, train: PairTensors, heldout: PairTensors, settings: DPOSettings):
        super().__init__()
        self.train, self.heldout, self.settings = train, heldout, settings

    def train_dataloader(self) -> DataLoader:
        from torch.utils.data import BatchSampler, RandomSampler

        from gensr.train.distributed import RankBatches

        s, world = self.settings, self.trainer.world_size
        drop_last = len(self.train) > s.batch_size
        generator = torch.Generator().manual_seed(s.seed)
        if world == 1:
            return DataLoader(self.train, batch_size=s.batch_size, shuffle=True, drop_last=drop_last, generator=generator)
        # the same sampler chain as shuffle=True above; the loader draws its base seed from the same generator
        batches = BatchSampler(RandomSampler(self.train, generator=generator), s.batch_size, drop_last)
        return DataLoader(self.train, batch_sampler=RankBatches(batches, self.trainer.global_rank, world),
                          generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.heldout, batch_size=self.settings.ref_batch_size)


class SaveAtTrainEnd(L.Callback):
    """The Lightning checkpoint (policy + optimizer) written from inside the fit: with spawned processes the caller
    gets the weights back but not the optimizer state."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # every rank calls it; rank 0 writes


def fit(policy, reference, train: PairTensors, heldout: PairTensors, settings: DPOSettings, logger=None,
        trainer: TrainerParams | None = None, checkpoint: Path | None = None) -> DPOModule:
    """DPO (or the SFT control) on `trainer`'s devices (None = one CPU process); with several devices, `checkpoint`
    is where the Lightning checkpoint is written (one process: the caller saves it with module.trainer_ref)."""
    import warnings

    from gensr.train.distributed import quiet_lightning, rank_callbacks, trainer_kwargs

    # the policy is in eval mode on purpose (no dropout in DPO); Lightning warns about it
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    quiet_lightning()
    L.seed_everything(settings.seed, workers=True, verbose=False)
    module = DPOModule(policy, reference if settings.objective == "dpo" else None, paradigm=settings.paradigm,
                       beta=settings.beta, lr=settings.lr, weight_decay=settings.weight_decay,
                       sft_weight=settings.sft_weight, sft_target=settings.sft_target,
                       reference_mode=settings.reference_mode, trainable=settings.trainable,
                       objective=settings.objective)
    devices = trainer_kwargs(trainer)
    callbacks = rank_callbacks(trainer, settings.seed)
    if checkpoint is not None and devices["devices"] > 1:
        callbacks.append(SaveAtTrainEnd(checkpoint))
    trainer = L.Trainer(
        **devices, max_steps=settings.steps, logger=logger if logger is not None else False,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        gradient_clip_val=settings.grad_clip, log_every_n_steps=max(1, min(5, settings.steps)),
        check_val_every_n_epoch=None, val_check_interval=min(settings.val_every_steps, settings.steps),
        limit_val_batches=1.0 if len(heldout) else 0, enable_progress_bar=True, callbacks=callbacks,
    )
    trainer.fit(module, datamodule=PairBatches(train, heldout, settings))
    module.trainer_ref = trainer  # kept for save_checkpoint; not an nn.Module attribute
    return module


def run_dpo(policy, reference, pairs: pd.DataFrame, pairs_path: Path, base_checkpoint: Path,
            settings: DPOSettings, out_dir: Path, run=None, mlruns_dir: Path | None = None,
            trainer: TrainerParams | None = None) -> dict:
    """Train (on `trainer`'s devices; None = one CPU process), save and (when `run` is an active MLflow run) log one
    DPO run; returns the summary."""
    start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(pairs) == 0:
        raise ValueError(f"{pairs_path}: no pairs to train on; loosen pairs.margins or sample more candidates")
    pairs_dir = pairs_path.parent
    hop = policy.stft_cfg.hop
    with_clean = settings.sft_weight > 0 and settings.sft_target == "clean"  # the validation loss has the SFT term too
    segment = settings.segment_seconds
    if segment is None:  # one length for train and held-out, so both score whole clips alike
        segment = longest_pair_seconds(pairs, pairs_dir, settings.sample_rate)
    train, heldout = (PairTensors(pairs[pairs["role"] == role], pairs_dir, settings.sample_rate, segment,
                                  hop, with_clean=with_clean) for role in ("train", "heldout"))
    if len(train) == 0:
        raise ValueError(f"{pairs_path}: every pair is held out; lower pairs.heldout_fraction")
    dpo = settings.objective == "dpo"
    if dpo and settings.score_temperature == "sampling" and hasattr(policy, "score_temperature"):
        policy.score_temperature = reference.score_temperature = float(policy.sampling["temperature"])
    heads_only = trains_heads_only(policy, reference if dpo else None, settings)
    if heads_only:
        kinds = (["chosen", "rejected"] if dpo else []) + ([settings.sft_target] if settings.sft_weight > 0 else [])
        for data in (train, heldout):
            if len(data):
                data.attach_head_inputs(policy, settings.ref_batch_size, tuple(dict.fromkeys(kinds)))
    if dpo and settings.reference_mode == "cached":
        key = {"base_sha256": file_sha256(base_checkpoint), "pairs_sha256": file_sha256(pairs_path),
               "segment_seconds": segment, "sample_rate": settings.sample_rate,
               "score_temperature": float(getattr(reference, "score_temperature", 1.0))}
        for part, data in (("train", train), ("heldout", heldout)):
            if len(data):
                reference_cache(reference, data, settings, out_dir / f"reference_scores_{part}.parquet", key)
    # the SFT-only control computes no preference score at all, not even as a diagnostic
    before = pair_accuracy(reference, reference, heldout, settings) if dpo else {}
    logger = None
    if run is not None:
        from gensr.tracking import lightning_logger

        logger = lightning_logger(mlruns_dir, run)
    draws = dpo and settings.score_draws is not None and hasattr(policy, "score_draws")
    if draws:
        # fewer draws while training only; the held-out accuracy below uses the model's own setting
        own_draws = policy.score_draws
        policy.score_draws = reference.score_draws = settings.score_draws
    module = fit(policy, reference, train, heldout, settings, logger, trainer, out_dir / "dpo.ckpt")
    if draws:
        policy.score_draws = reference.score_draws = own_draws
    policy.eval()
    after = pair_accuracy(policy, reference, heldout, settings) if dpo else {}
    train_diag = {k: float(v) for k, v in module.trainer_ref.callback_metrics.items() if k.startswith("train/")}
    if module.trainer_ref.world_size == 1:  # several processes: SaveAtTrainEnd wrote it inside the fit
        # weights_only=False saves the optimiser and loop state too (the file still loads with torch.load(weights_only=True);
        # tests/test_align.py reads it so); left unset, Lightning logs "`weights_only` was not set, defaulting to `False`"
        module.trainer_ref.save_checkpoint(out_dir / "dpo.ckpt", weights_only=False)
    policy.save(out_dir / "restorer.pt", extra={"aligned_from": str(base_checkpoint), "pairs": str(pairs_path),
                                                "pairs_sha256": file_sha256(pairs_path),
                                                "dpo": settings.__dict__})
    summary = {
        "paradigm": settings.paradigm, "objective": settings.objective,
        "reference_mode": settings.reference_mode if dpo else None, "trunk_once": heads_only,
        "n_train_pairs": len(train), "n_heldout_pairs": len(heldout), "settings": settings.__dict__,
        "segment_seconds": segment,
        "trainable_params": sum(p.numel() for p in policy.trainable_parameters()),
        "train_final": train_diag, "heldout_before": before, "heldout_after": after,
        "seconds": round(time.time() - start, 1), "checkpoint": str(out_dir / "restorer.pt"),
    }
    if run is not None:
        _log_run(run, summary, policy, reference, heldout if len(heldout) else train, settings)
        summary["mlflow_run_id"] = run.info.run_id
    write_json(summary, out_dir / "summary.json")
    return summary


def _log_run(run, summary: dict, policy, reference, data: PairTensors, settings: DPOSettings) -> None:
    import mlflow

    from gensr.audio.io import write_wav

    client = mlflow.tracking.MlflowClient()
    rid = run.info.run_id
    for k, v in summary["heldout_after"].items():
        client.log_metric(rid, f"heldout/{k}", float(v), step=settings.steps)
    for k, v in summary["heldout_before"].items():
        client.log_metric(rid, f"heldout_before/{k}", float(v), step=0)
    n = min(settings.audio_examples, len(data))
    if not n:
        return
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        deg, seeds = data.degraded[:n], data.seeds[:n]
        before = reference.restore(deg, 1, seeds[:, None])[:, 0]
        after = policy.restore(deg, 1, seeds[:, None])[:, 0]
        for i in range(n):
            pid = str(data.pairs["deg_id"].iloc[i])
            for name, wave in (("degraded", deg[i]), ("base", before[i]), ("aligned", after[i]),
                               ("chosen", data.chosen[i]), ("rejected", data.rejected[i])):
                path = Path(tmp) / pid / f"{name}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_wav(path, wave.numpy(), settings.sample_rate)
            client.log_artifacts(rid, str(Path(tmp) / pid), f"audio/{pid}")
