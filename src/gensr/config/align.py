"""Params of preference pairs, DPO alignment and the held-out evaluation (blocks pairs, dpo, evaluate)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gensr.config.base import Block
from gensr.config.metrics import check_metric_names

PARADIGMS = ("ar", "mgm", "fm")


def check_strategy(strategy: str) -> str:
    """`multi`, `gt_as_chosen` or `single:<metric>`; anything else is a typo."""
    if strategy in ("multi", "gt_as_chosen"):
        return strategy
    if strategy.startswith("single:") and len(strategy) > len("single:"):
        try:
            check_metric_names([strategy.split(":", 1)[1]])
        except ValueError as err:
            raise ValueError(f"strategy '{strategy}': {err}") from None
        return strategy
    raise ValueError(f"strategy '{strategy}' must be 'multi', 'gt_as_chosen' or 'single:<metric>'")


class PairsParams(Block):
    """How (chosen, rejected) pairs are formed from the scored candidates of each clip."""

    strategies: list[str] = Field(
        min_length=1, description="Pair sets built by `gensr pairs`: multi, gt_as_chosen, single:<metric>."
    )
    metrics: list[str] | None = Field(
        description="Metrics that must all agree (strategy multi); null means every metric in the metric table."
    )
    margins: dict[str, float] = Field(
        description="Per-metric minimum advantage (in the metric's own units) the chosen must exceed; "
        "a metric not listed needs only a strict advantage."
    )
    max_pairs_per_clip: int = Field(ge=1, description="K: at most this many pairs per degraded clip.")
    heldout_fraction: float = Field(
        ge=0, lt=1, description="Share of train utterances (by hashed utt_id) whose pairs are held out for "
        "DPO validation (pair accuracy); candidates from the valid split are always held out."
    )

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: list[str]) -> list[str]:
        return [check_strategy(s) for s in v]

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else check_metric_names(v)

    @field_validator("margins")
    @classmethod
    def _margins(cls, v: dict[str, float]) -> dict[str, float]:
        check_metric_names(v)
        bad = {k: m for k, m in v.items() if m < 0}
        if bad:
            raise ValueError(f"margins must be >= 0, got {bad}")
        return v


class ParadigmDPOParams(Block):
    """DPO hyperparameters of one paradigm. FM's beta lives on another scale (Diffusion-DPO uses thousands)."""

    beta: float = Field(gt=0, description="Inverse temperature of the sigmoid DPO loss.")
    lr: float = Field(gt=0, description="AdamW learning rate of the policy.")
    steps: int = Field(ge=1, description="Optimizer steps.")
    batch_size: int = Field(ge=1, description="Pairs per step (the policy scores 2x this many clips).")
    sft_weight: float = Field(ge=0, description="Weight of the SFT term (0 = pure DPO).")
    sft_target: Literal["chosen", "clean"] = Field(
        description="What the SFT term fits: the chosen candidate (its own sampled tokens for AR/MGM) or the clean "
        "reference of the pair's clip (the base model's own SFT objective).")
    score_draws: int | None = Field(
        ge=1, description="FM only: (t, noise) draws per preference score while training (null = the model's own). "
        "The live reference re-draws every step, so 1 draw is unbiased and the cheapest."
    )
    score_temperature: Literal["model", "sampling"] = Field(
        description="AR/MGM only: token log-probs of the preference score from the model's own distribution (model) "
        "or at the checkpoint's sampling temperature (sampling: logits / restorers.<p>.sampling.temperature, the "
        "distribution the candidates were drawn from, as TRL scores generations).")
    trainable: list[str] | None = Field(
        default=None, min_length=1,
        description="Name prefixes of the policy parameters DPO may change (e.g. [heads]); null = every parameter.")


class DPOParams(Block):
    """DPO training: per-paradigm hyperparameters plus shared data and logging settings."""

    strategy: str = Field(description="Pair set trained by `gensr dpo` without --strategy (multi by default).")
    segment_seconds: float | None = Field(
        gt=0, description="Each pair is cropped (seeded) / zero-padded to this length; null = the longest pair of the "
                          "set, so that DPO scores whole clips (memory grows with it).")
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(gt=0, description="Gradient-norm clip of the policy.")
    val_every_steps: int = Field(ge=1, description="Held-out pair accuracy is measured every this many steps.")
    ref_batch_size: int = Field(ge=1, description="Batch size when precomputing reference scores (AR/MGM).")
    audio_examples: int = Field(ge=0, description="Held-out clips logged to MLflow before/after alignment.")
    ar: ParadigmDPOParams
    mgm: ParadigmDPOParams
    fm: ParadigmDPOParams

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return check_strategy(v)

    def for_paradigm(self, paradigm: str) -> ParadigmDPOParams:
        if paradigm not in PARADIGMS:
            raise ValueError(f"paradigm '{paradigm}' must be one of {PARADIGMS}")
        return getattr(self, paradigm)


class EvaluateParams(Block):
    """Held-out evaluation of base vs aligned (test, or dev/valid for tuning, or the confirmation set)."""

    paradigms: list[Literal["ar", "mgm", "fm"]] = Field(min_length=1, description="Rows of the Table-1 report.")
    strategy: str = Field(description="Which aligned checkpoint (pair strategy) is evaluated against base.")
    n_bootstrap: int = Field(ge=100, description="Paired-bootstrap resamples for each CI.")
    confidence: float = Field(gt=0.5, lt=1, description="Two-sided CI level.")
    max_clips: int | None = Field(ge=1, description="Evaluate at most this many test clips (null = all).")
    samples_per_clip: int = Field(
        ge=1, description="Seeded restorations per test clip (the same seeds for base and aligned); every metric is "
        "averaged over them per clip before the paired bootstrap, so the CIs measure the models, not one draw.")
    min_dimensions: int = Field(
        ge=1, le=4, description="Dimensions that must be significantly better (Holm) for the pre-registered "
        "'improves' verdict (gensr.evaluate.verdicts); false-positive rate <= 1 - confidence.")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return check_strategy(v)
