"""Shared base for every params block: strict (unknown keys are errors) and immutable.

Strict beyond pydantic's defaults, so that a typo can't turn into a plausible number:
- NaN and +-Inf are refused wherever a float is read (`allow_inf_nan=False`);
- `true`/`false` is refused wherever the field's type has no bool in it (pydantic would read
  `n_utterances: true` as 1).
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _admits_bool(annotation) -> bool:
    return annotation is bool or annotation is Any or any(_admits_bool(a) for a in get_args(annotation))


def _has_block(annotation) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_has_block(a) for a in get_args(annotation))


def _holds_bool(value, walk_mappings: bool) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_bool(v, walk_mappings) for v in value)
    if isinstance(value, dict) and walk_mappings:  # a nested block checks its own fields
        return any(_holds_bool(v, walk_mappings) for v in value.values())
    return False


class Block(BaseModel):
    """A params.yaml block. Unknown keys are rejected so that typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value, info: ValidationInfo):
        annotation = cls.model_fields[info.field_name].annotation
        if not _admits_bool(annotation) and _holds_bool(value, walk_mappings=not _has_block(annotation)):
            raise ValueError("true/false is not a value of this key (it takes a number or a name)")
        return value
