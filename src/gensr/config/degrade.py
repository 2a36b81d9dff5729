"""Params of the degradation simulator. Each type has a probability and its own ranges.

Ranges are [low, high] and are sampled uniformly per degraded clip. Which types fire is
drawn per clip from each type's `prob`, topped up to `min_degradations` (see
gensr.corpus.degrade.degrade).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from gensr.config.base import Block
from gensr.config.cores import CoreCount

Range = tuple[float, float]
DegradationType = Literal["reverb", "noise", "bandlimit", "clipping", "codec", "packet_loss"]


def _ordered(r: Range, name: str) -> None:
    if r[0] > r[1]:
        raise ValueError(f"{name} range must be [low, high], got {list(r)}")


class NoiseParams(Block):
    """Additive noise scaled to an exact SNR measured over the whole clip (against the step's input)."""

    prob: float = Field(ge=0, le=1)
    snr_db: Range
    kinds: list[Literal["white", "pink", "brown", "babble", "user"]] = Field(min_length=1)
    babble_talkers: int = Field(ge=1, description="Other-speaker clips (same split) summed into one babble.")
    colored_min_hz: float = Field(
        gt=0, description="Pink/brown spectra are flat below this, so the noise is not all sub-audible rumble."
    )
    user_dir: Path | None = Field(description="Folder of noise recordings (any format load_audio reads).")

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.snr_db, "snr_db")
        if "user" in self.kinds and self.user_dir is None:
            raise ValueError("kinds includes 'user' but user_dir is not set: set degrade.noise.user_dir")
        return self


class ReverbParams(Block):
    """Simulated RIRs (`tail`: a unit direct path then exponentially decaying noise; `image_source`: a
    shoebox room by the image method, absorption calibrated to the drawn RT60), or user RIRs."""

    prob: float = Field(ge=0, le=1)
    methods: list[Literal["tail", "image_source"]] = Field(min_length=1, description="Drawn uniformly per clip.")
    rt60_s: Range
    drr_db: Range = Field(description="tail only: direct-to-reverberant energy ratio.")
    room_length_m: Range = Field(description="image_source only: length and width of the room.")
    room_height_m: Range = Field(description="image_source only.")
    wall_margin_m: float = Field(gt=0, description="image_source only: source and mic keep this far from walls.")
    distance_m: Range = Field(description="image_source only: source-mic distance (sets the DRR with the room).")
    user_rir_dir: Path | None = Field(description="If set, RIRs are drawn from this folder instead of simulated.")

    @model_validator(mode="after")
    def _check(self):
        for name in ("rt60_s", "drr_db", "room_length_m", "room_height_m", "distance_m"):
            _ordered(getattr(self, name), name)
        if self.rt60_s[0] <= 0:
            raise ValueError("rt60_s must be positive")
        inner = np.array([self.room_length_m[0], self.room_length_m[0], self.room_height_m[0]]) - 2 * self.wall_margin_m
        if inner.min() <= 0:
            raise ValueError("the smallest room must exceed twice wall_margin_m, or no position fits")
        if not 0 < self.distance_m[0] < np.linalg.norm(inner):
            raise ValueError("distance_m must be positive and fit in the smallest room (minus wall margins)")
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

    @model_validator(mode="after")
    def _check(self):
        if any(r <= 0 for r in self.rates_hz):
            raise ValueError(f"rates_hz must be positive, got {self.rates_hz}")
        return self


class PacketLossParams(Block):
    prob: float = Field(ge=0, le=1)
    frame_ms: float = Field(gt=0)
    loss_rate: Range = Field(description="Fraction of frames dropped (at least one frame when the type fires).")

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.loss_rate, "loss_rate")
        if not 0 <= self.loss_rate[0] <= self.loss_rate[1] < 1:
            raise ValueError("loss_rate must lie in [0, 1)")
        return self


class CodecParams(Block):
    """mulaw/quantize use `bits`; mp3/opus (libsndfile, bundled with soundfile) use `level`."""

    prob: float = Field(ge=0, le=1)
    kinds: list[Literal["mulaw", "quantize", "mp3", "opus"]] = Field(min_length=1)
    bits: tuple[int, int] = Field(description="Bit depth range, inclusive.")
    level: Range = Field(description="libsndfile compression level in [0, 1); higher means a lower bitrate.")

    @model_validator(mode="after")
    def _check(self):
        if not 2 <= self.bits[0] <= self.bits[1] <= 16:
            raise ValueError("bits must satisfy 2 <= low <= high <= 16")
        _ordered(self.level, "level")
        if not 0 <= self.level[0] <= self.level[1] < 1:
            raise ValueError("level must lie in [0, 1) (libsndfile's MP3 encoder rejects 1.0)")
        return self


class DegradeParams(Block):
    """Degradations are applied in the order of `order`; each fires with its own `prob`."""

    copies: int = Field(ge=1, description="Degraded versions per clean utterance.")
    order: list[DegradationType] = Field(min_length=1)
    min_degradations: int = Field(ge=0, description="At least this many types fire per clip.")
    workers: CoreCount = Field(description="Processes (`auto`: one per available core); the output does not depend on it.")
    shard_size: int = Field(ge=1, description="Clips per resumable shard; the output does not depend on it.")
    noise: NoiseParams
    reverb: ReverbParams
    clipping: ClippingParams
    bandlimit: BandlimitParams
    packet_loss: PacketLossParams
    codec: CodecParams

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.order)) != len(self.order):
            raise ValueError(f"order lists a type twice: {self.order}")
        can_fire = [t for t in self.order if getattr(self, t).prob > 0]
        if self.min_degradations > len(can_fire):
            raise ValueError(
                f"min_degradations={self.min_degradations} but only {len(can_fire)} types in `order` have prob > 0 "
                f"({can_fire}); lower min_degradations or raise a prob"
            )
        return self
