"""Params of the clean corpus (bundled TTS or a user directory) and of audio ingestion."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gensr.config.base import Block


class IngestParams(Block):
    """How user audio is admitted. Files outside these bounds are quarantined, not fatal."""

    min_seconds: float = Field(gt=0, description="Shorter files are rejected.")
    max_seconds: float = Field(gt=0, description="Longer files are split or rejected, per long_files.")
    long_files: Literal["split", "reject"]
    silence_dbfs: float = Field(lt=0, description="A file whose peak is below this level is 'all silent'.")
    # Plausibility of a header, checked before a sample is decoded (gensr.corpus.admit).
    min_sample_rate: int = Field(gt=0, description="A header claiming a lower rate (Hz) is implausible.")
    max_sample_rate: int = Field(gt=0, description="A header claiming a higher rate (Hz) is implausible.")
    max_channels: int = Field(ge=1, description="A header claiming more channels is implausible.")
    max_resample_terms: int = Field(
        ge=1, description="A rate whose ratio to audio.sample_rate reduces to a larger term is implausible: "
        "resampling it needs a filter of 20 x that term taps (44100 Hz: 160/441; 383999 Hz: 16000/383999).")
    max_decoded_ratio: float = Field(
        ge=1, description="Compressed audio may decode to at most this many times its file size as 16-bit PCM "
        "(Opus at 6 kbit/s is ~128); uncompressed audio must fit its file exactly.")

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_seconds <= self.min_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds}) must exceed min_seconds ({self.min_seconds})")
        if self.max_sample_rate < self.min_sample_rate:
            raise ValueError(f"max_sample_rate ({self.max_sample_rate}) must be at least min_sample_rate "
                             f"({self.min_sample_rate})")
        return self


class SplitParams(Block):
    train: float = Field(gt=0, lt=1, description="SFT training (codec and base restorers).")
    pref: float = Field(
        default=0.0, ge=0, lt=1,
        description="Preference pool: utterances no SFT stage trains on, from which candidates and pairs are made "
        "(sample.split: pref). 0 = no pool.")
    valid: float = Field(ge=0, lt=1, description="Tuning (pocketsphinx options, `gensr evaluate --split valid`).")
    test: float = Field(gt=0, lt=1, description="Held out for the final evaluation only.")

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.train + self.pref + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"corpus.split: train + pref + valid + test must be 1.0, got {total}")
        return self


class CorpusParams(Block):
    """`source: tts` synthesizes speech with the bundled eSpeak NG; `source: user` reads user_dir."""

    source: Literal["tts", "user"]
    n_utterances: int = Field(gt=0, description="TTS only: number of utterances to synthesize.")
    voices: list[str] = Field(min_length=1, description="TTS only: eSpeak NG voice names, one speaker each.")
    words_per_minute: int = Field(ge=80, le=450)
    min_seconds: float = Field(gt=0, description="TTS only: utterances outside [min, max] are re-drawn.")
    max_seconds: float = Field(gt=0)
    trim_margin_seconds: float = Field(ge=0, description="TTS only: silence kept before and after the speech.")
    trim_threshold_db: float = Field(lt=0, description="TTS only: samples this far below the peak count as silence.")
    peak_dbfs: float = Field(le=0, description="TTS only: every utterance is scaled to this peak level.")
    split: SplitParams
    user_dir: Path | None = Field(description="source=user: root folder of the audio files.")
    user_manifest: Path | None = Field(description="source=user: CSV or JSONL with path,text,speaker.")

    @model_validator(mode="after")
    def _check(self):
        if self.max_seconds <= self.min_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds}) must exceed min_seconds ({self.min_seconds})")
        if self.source == "user" and (self.user_dir is None or self.user_manifest is None):
            raise ValueError("source 'user' needs corpus.user_dir and corpus.user_manifest")
        return self
