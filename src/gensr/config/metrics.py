"""Params of the metric suite: which metrics run, their backends, and how the suite batches.

`names` picks metrics from the registry (gensr.metrics.registry.METRIC_NAMES), like VERSA's
metric list. The content and timbre blocks switch between the offline defaults (pocketsphinx,
resemblyzer) and the paper-scale backends (whisper, ecapa) by params alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from gensr.config.base import Block
from gensr.config.cores import CoreCount

# The metric names params may use (metrics.names, pairs.metrics/margins, single:<metric>). The config sits below
# the metrics package, so it keeps the names only; gensr.metrics.registry implements exactly these, in this order
# (tests/test_hostile_inputs.py checks that they agree).
KNOWN_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808", "pesq_wb", "estoi", "si_sdr",
                 "mel_distance", "wer", "cer", "speaker_cosine")


def check_metric_names(names) -> list[str]:
    """`names` if every one is a known metric, listed once; else ValueError naming the offenders."""
    names = list(names)
    unknown = [n for n in names if n not in KNOWN_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(KNOWN_METRICS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"metric(s) {repeated} listed twice")
    return names


class DnsmosParams(Block):
    personalized: bool = Field(
        description="Use the personalized DNSMOS model and its calibration (speechmos model_type='dnsmos_personalized')."
    )
    windows_per_run: int = Field(gt=0, description="9 s windows stacked into one onnxruntime call.")


class MelDistanceParams(Block):
    """Mean absolute difference of log-mel spectra (dB), candidate vs reference."""

    n_fft: int = Field(gt=0)
    hop: int = Field(gt=0)
    n_mels: int = Field(gt=0)
    floor_db: float = Field(lt=0, description="Log-mel floor relative to the reference's peak, so silence can't dominate.")


class ContentParams(Block):
    """Recognizer behind WER/CER."""

    backend: Literal["pocketsphinx", "whisper"]
    grammar: str | None = Field(
        description="pocketsphinx: 'corpus_templates' (JSGF from gensr.corpus.templates), a path to a .jsgf file, "
        "or null for the default en-us language model."
    )
    non_rhotic_variants: bool = Field(
        description="pocketsphinx + grammar: add British (non-rhotic) pronunciations of the grammar's words."
    )
    dither: float = Field(ge=0, description="Uniform noise amplitude added before decoding: digital silence breaks pocketsphinx.")
    pocketsphinx_options: dict[str, float | int | bool | str] = Field(
        description="Extra pocketsphinx Decoder config (e.g. wip, fsgusefiller), tuned on the embedded corpus' valid split."
    )
    whisper_model: str = Field(description="whisper: model name (needs the download cache) or a local .pt checkpoint path.")
    whisper_language: str


class SpeakerParams(Block):
    """Speaker embedder behind speaker_cosine."""

    backend: Literal["resemblyzer", "ecapa"]
    ecapa_source: str = Field(description="ecapa: a local folder with hyperparams.yaml + checkpoint, or a hub id.")
    ecapa_savedir: Path = Field(description="ecapa: where speechbrain links/copies the model files.")


class MetricsParams(Block):
    names: list[str] = Field(min_length=1, description="Metrics to compute, from gensr.metrics.registry.METRIC_NAMES.")
    min_seconds: float = Field(gt=0, description="Shorter candidates get NaN for every metric (shorter references: "
                               "NaN for the reference metrics).")
    silence_dbfs: float = Field(lt=0, description="Candidates whose peak is below this get NaN for every metric (references: NaN "
                                "for the reference metrics).")
    max_length_diff_s: float = Field(
        ge=0, description="Largest |candidate - reference| duration (s) the reference metrics accept; beyond it they "
        "are NaN with the reason (they would trim both to the shorter one and score a part of the candidate).")
    workers: CoreCount = Field(description="Worker processes, each loads the models once (`auto`: one per available "
                               "core); the table does not depend on it.")
    shard_size: int = Field(gt=0, description="Clips per resumable shard.")
    max_nan_rate: float = Field(ge=0, le=1, description="Asset check: highest tolerated NaN fraction per metric.")
    score_inputs_split: Literal["train", "pref", "valid", "test", "dev"] = Field(
        description="Split of the degraded corpus scored against clean by `gensr score-inputs`; "
                    "`dev` is valid plus the held-out pref clips (gensr.corpus.splits)."
    )
    dnsmos: DnsmosParams
    mel_distance: MelDistanceParams
    content: ContentParams
    speaker: SpeakerParams

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return check_metric_names(v)
