"""Shared base for every params block: strict (unknown keys are errors) and immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Block(BaseModel):
    """A params.yaml block. Unknown keys are rejected so that typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
