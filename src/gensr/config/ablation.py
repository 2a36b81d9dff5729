"""Params of the ablation: one budget shared by every strategy, the strategies, and where they are evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gensr.config.base import Block

SFT_STRATEGIES = ("sft_clean", "sft_chosen")


def check_ablation_strategy(strategy: str) -> str:
    """A pair strategy (multi, gt_as_chosen, single:<metric>) or an SFT-only control (sft_clean, sft_chosen)."""
    from gensr.config.align import check_strategy

    return strategy if strategy in SFT_STRATEGIES else check_strategy(strategy)


class AblationBudget(Block):
    """The training budget every strategy gets (the rest of dpo.<paradigm> stays as it is)."""

    beta: float = Field(gt=0, description="DPO inverse temperature (ignored by the SFT-only controls).")
    lr: float = Field(gt=0, description="AdamW learning rate.")
    steps: int = Field(ge=1, description="Optimizer steps.")
    batch_size: int = Field(ge=1, description="Pairs per step (the SFT controls see the same batches).")
    sft_weight: float = Field(gt=0, description="Weight of the SFT term; the SFT-only controls train this term alone.")


class AblationParams(Block):
    """Multi- vs single-metric DPO vs SFT-only controls, from the same base, pairs source, seeds and budget."""

    paradigms: list[Literal["ar", "mgm", "fm"]] = Field(min_length=1, description="Paradigms the ablation runs on.")
    strategies: list[str] = Field(
        min_length=1, description="multi, gt_as_chosen, single:<metric> (DPO on that pair set), sft_clean (the SFT "
        "term alone, on the clean references of multi's pair clips) or sft_chosen (SFT on multi's winners).")
    budget: AblationBudget
    splits: list[Literal["test", "confirm", "dev", "valid"]] = Field(
        min_length=1, description="Splits every strategy is evaluated on; dev for tuning, test + confirm for the "
        "report (confirm is never read by a tuning run).")
    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: list[str]) -> list[str]:
        v = [check_ablation_strategy(s) for s in v]
        if len(set(v)) != len(v):
            raise ValueError(f"ablation.strategies lists a strategy twice: {v}")
        return v
