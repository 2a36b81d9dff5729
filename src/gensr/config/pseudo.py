"""Params of the singing application after the corpus: pseudo-labels (block `pseudo_labels`) and the singing
evaluation (block `singing_eval`).

A generative restorer (by default the DPO-aligned MGM; the paper's annotator AnyEnhance is an MGM) restores
every clip of the singing `finetune` table; the base restorer of the same paradigm does the same as the
control. Each label passes a quality gate built from non-intrusive measures only (there is no reference):
silence, non-finite samples, length, level, pitch agreement with its own input, and DNSMOS SIG/BAK/OVRL thresholds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gensr.config.align import check_strategy
from gensr.config.base import Block

LABEL_SOURCES = ("aligned", "base")


class LabelGate(Block):
    """When a pseudo-label is kept for fine-tuning; each failed test drops the label with its reason."""

    silence_dbfs: float = Field(le=0, description="A label whose peak is at or below this level (dBFS) is silent.")
    max_level_drop_db: float = Field(gt=0, description="A label whose RMS lies more than this many dB below its "
                                     "input's RMS lost the singing (it is dropped as 'too_quiet').")
    max_length_diff_s: float = Field(ge=0, description="Largest |label - input| length difference (seconds).")
    min_pitch_agreement: float | None = Field(ge=0, le=1, description="Lowest share of the input's voiced frames "
                                              "at which the label is voiced within pitch_tolerance_cents of the "
                                              "input's F0 (WORLD, 10 ms frames); below it the label lost the melody "
                                              "('off_pitch': noise scores 0). Skipped when the input has no voiced "
                                              "frame; null turns the check off.")
    pitch_tolerance_cents: float = Field(gt=0, description="How far (cents) the label's F0 may lie from the input's "
                                         "on a frame that counts as agreeing.")
    min_dnsmos_sig: float = Field(ge=1, le=5, description="Lowest DNSMOS SIG (clean singing here: 2.3-3.4; "
                                  "white noise ~1.1-1.3).")
    min_dnsmos_bak: float = Field(ge=1, le=5, description="Lowest DNSMOS BAK (clean singing 2.3-4.0; noise ~1.1-1.5).")
    min_dnsmos_ovrl: float = Field(ge=1, le=5, description="Lowest DNSMOS OVRL (clean singing 1.7-3.0; noise ~1.1).")


class PseudoLabelParams(Block):
    """`gensr singing-labels`: which restorer annotates, its seeds, and the gate."""

    paradigm: Literal["ar", "mgm", "fm"] = Field(description="Paradigm of the annotator; the paper's AnyEnhance is an MGM.")
    strategy: str = Field(description="Pair strategy of the aligned annotator: models/aligned/<paradigm>/<strategy>/"
                          "restorer.pt. The control is models/base/<paradigm>/restorer.pt.")
    seed: int = Field(description="Restoration seeds: one per clip, clip_seed(seed, deg_id, 0, 'label').")
    shard_clips: int = Field(ge=1, description="Clips per batched restore call = one resumable shard.")
    gate: LabelGate
    min_kept: int = Field(ge=1, description="Fine-tuning refuses a label set with fewer kept labels than this.")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        return check_strategy(value)


class SingingEvalParams(Block):
    """`gensr singing-evaluation`: the singing test split (and real recordings), every system, CIs."""

    max_clips: int | None = Field(ge=1, description="Test clips evaluated (first by deg_id); null = all.")
    triptychs: int = Field(ge=0, description="Spectrogram triptychs (raw / initial / fine-tuned) written, first test "
                           "clips by deg_id.")
    content_check_clips: int = Field(ge=0, description="WER/CER are kept only if the content backend transcribes "
                                     "the clean sung references: this many are checked (0 = drop WER/CER unchecked).")
    max_reference_wer: float = Field(ge=0, description="Mean WER of the checked clean references above which WER/CER "
                                     "are dropped from the singing table (the backend cannot score the lyrics).")
