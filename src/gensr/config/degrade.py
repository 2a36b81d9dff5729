"""Params of the degradation simulator. Each type has a probability and its own ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gensr.config.base import Block

Range = tuple[float, float]


def _ordered(r: Range, name: str) -> None:
    if r[0] > r[1]:
        raise ValueError(f"{name} range must be [low, high], got {list(r)}")


class NoiseParams(Block):
    prob: float = Field(ge=0, le=1)
    snr_db: Range
    kinds: list[Literal["white", "pink", "brown", "babble", "user"]] = Field(min_length=1)
    babble_talkers: int = Field(ge=1)
    user_dir: Path | None

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.snr_db, "snr_db")
        if "user" in self.kinds and self.user_dir is None:
            raise ValueError("kinds includes 'user' but user_dir is not set")
        return self


class ReverbParams(Block):
    prob: float = Field(ge=0, le=1)
    rt60_s: Range
    user_rir_dir: Path | None

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.rt60_s, "rt60_s")
        if self.rt60_s[0] <= 0:
            raise ValueError("rt60_s must be positive")
        return self


class ClippingParams(Block):
    prob: float = Field(ge=0, le=1)
    threshold: Range = Field(description="Clip level as a fraction of the clip's peak.")

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.threshold, "threshold")
        if not 0 < self.threshold[0] <= self.threshold[1] <= 1:
            raise ValueError("threshold must lie in (0, 1]")
        return self


class BandlimitParams(Block):
    prob: float = Field(ge=0, le=1)
    rates_hz: list[int] = Field(min_length=1, description="Downsample to one of these rates and back.")


class PacketLossParams(Block):
    prob: float = Field(ge=0, le=1)
    frame_ms: float = Field(gt=0)
    loss_rate: Range

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.loss_rate, "loss_rate")
        if not 0 <= self.loss_rate[0] <= self.loss_rate[1] < 1:
            raise ValueError("loss_rate must lie in [0, 1)")
        return self


class CodecParams(Block):
    prob: float = Field(ge=0, le=1)
    kinds: list[Literal["mulaw", "quantize"]] = Field(min_length=1)
    bits: tuple[int, int] = Field(description="Bit depth range, inclusive.")

    @model_validator(mode="after")
    def _check(self):
        if not 2 <= self.bits[0] <= self.bits[1] <= 16:
            raise ValueError("bits must satisfy 2 <= low <= high <= 16")
        return self


class DegradeParams(Block):
    """Degradations are applied in the order of `order`; each fires with its own `prob`."""

    copies: int = Field(ge=1, description="Degraded versions per clean utterance.")
    order: list[Literal["reverb", "noise", "bandlimit", "clipping", "codec", "packet_loss"]]
    min_degradations: int = Field(ge=0, description="At least this many types fire per clip.")
    noise: NoiseParams
    reverb: ReverbParams
    clipping: ClippingParams
    bandlimit: BandlimitParams
    packet_loss: PacketLossParams
    codec: CodecParams
