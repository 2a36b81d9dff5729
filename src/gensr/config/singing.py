"""Params of the embedded singing corpus (`gensr singing-corpus`, data/singing).

eSpeak NG speech is resynthesised with the WORLD vocoder so that each syllable holds one note
of a seeded melody. The clips are degraded with their own degradation params and seed: split
`finetune` goes to pseudo-labelling/fine-tuning without references, split `test` keeps its
clean references in a table of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gensr.config.base import Block
from gensr.config.cores import CoreCount
from gensr.config.degrade import DegradeParams

Scale = Literal["major", "minor", "pentatonic", "dorian"]


class SingingSplitParams(Block):
    finetune: float = Field(gt=0, lt=1, description="Degraded clips handed to fine-tuning, never with their references.")
    test: float = Field(gt=0, lt=1, description="Degraded clips whose clean references are kept for evaluation.")

    @model_validator(mode="after")
    def _sums_to_one(self):
        if abs(self.finetune + self.test - 1.0) > 1e-6:
            raise ValueError(f"singing.split: finetune + test must be 1.0, got {self.finetune + self.test}")
        return self


class MelodyParams(Block):
    """How the tunes are drawn and sung (gensr.singing.melody, gensr.singing.synth)."""

    scales: list[Scale] = Field(min_length=1, description="Scales drawn per clip; the key (tonic) is drawn per clip too.")
    range_semitones: float = Field(ge=5, le=36, description="Width of each singer's range (speech spans a few semitones).")
    center_offset_semitones: float = Field(
        ge=-12, le=12, description="Range centre relative to the singer's speaking pitch (median F0 of a fixed phrase).")
    note_seconds: tuple[float, float] = Field(description="[low, high] length of a held note (one per syllable).")
    glide_ms: float = Field(ge=0, le=200, description="Pitch glide between consecutive notes, centred on the boundary.")
    vibrato_hz: float = Field(ge=0, le=12, description="Vibrato rate.")
    vibrato_semitones: float = Field(ge=0, le=2, description="Vibrato depth: peak deviation from the note.")

    @model_validator(mode="after")
    def _check(self):
        low, high = self.note_seconds
        if not 0.05 <= low <= high:
            raise ValueError(f"singing.melody.note_seconds must be [low, high] with 0.05 <= low <= high, got {list(self.note_seconds)}")
        return self


class SingingParams(Block):
    """The singing corpus: several singers (eSpeak voices), a melody per clip, degraded copies."""

    n_clips: int = Field(ge=2, description="Synthetic sung clips, split into finetune and test.")
    voices: list[str] | None = Field(min_length=1, description="eSpeak voices, one singer each; null = corpus.voices.")
    split: SingingSplitParams
    seed: int = Field(description="Seed of lyrics, melodies and degradations; must differ from the top-level seed.")
    min_seconds: float = Field(gt=0, description="Clip length bounds: lyrics and note lengths are re-drawn to fit.")
    max_seconds: float = Field(gt=0, description="See min_seconds.")
    words_per_minute: int = Field(ge=80, le=450, description="eSpeak speaking rate of the lyrics before stretching.")
    margin_seconds: float = Field(ge=0, description="Silence before and after the singing.")
    peak_dbfs: float = Field(le=0, description="Every clean clip is scaled to this peak level.")
    workers: CoreCount = Field(description="Processes for the WORLD resynthesis (`auto`: one per available core); "
                               "the output does not depend on it.")
    melody: MelodyParams
    user_dir: Path | None = Field(description="Folder of real singing recordings (no references): split `real`.")
    degrade: DegradeParams = Field(description="Degradations of the sung clips (same shape as the top-level degrade).")

    @model_validator(mode="after")
    def _check(self):
        if self.max_seconds <= self.min_seconds:
            raise ValueError(f"singing.max_seconds ({self.max_seconds}) must exceed singing.min_seconds ({self.min_seconds})")
        if self.melody.note_seconds[0] * 2 > self.max_seconds:
            raise ValueError("two of the shortest notes (singing.melody.note_seconds[0]) must fit in singing.max_seconds")
        return self
