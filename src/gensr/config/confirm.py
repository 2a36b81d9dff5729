"""Params of the confirmation set: new sentences, with a seed of its own, read only by the final report."""

from __future__ import annotations

from pydantic import Field

from gensr.config.base import Block


class ConfirmParams(Block):
    """A held-out set built after the fact (`gensr confirm-corpus`, data/confirm).

    Same voices, speaking rate, duration bounds and degradation params as the main corpus, but
    sentences that appear nowhere in it and a seed of its own, so neither the bases, the pairs nor
    any tuning run has seen anything of it. Only `gensr evaluate --split confirm` and the ablation
    report read it.
    """

    n_utterances: int = Field(ge=8, description="Utterances of the confirmation set (spread over corpus.voices).")
    seed: int = Field(description="Seed of its sentences and degradations; must differ from the top-level seed.")
