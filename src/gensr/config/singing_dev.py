"""Params of `gensr singing-annotators` (block `singing_dev`): the singing annotator is chosen on a dev build of
the singing corpus with a seed of its own, never on the singing test split. A module of its own, so that no DVC
stage depends on it: the command is a dev tool, not a stage.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from gensr.config.align import PARADIGMS
from gensr.config.base import Block
from gensr.config.pseudo import LABEL_SOURCES

ORACLE = "oracle"


def _check_annotator(spec: str) -> None:
    source, _, paradigm = spec.partition(":")
    if source not in LABEL_SOURCES or paradigm not in PARADIGMS:
        raise ValueError(f"annotator {spec!r}: write <source>:<paradigm>, source one of {list(LABEL_SOURCES)}, "
                         f"paradigm one of {list(PARADIGMS)}")


class SingingProbeParams(Block):
    """`gensr singing-probe`: what a label set can teach the initial Voicefixer, measured on a dev build."""

    seed: int = Field(description="Seed of the probe's build; must differ from seed, singing.seed, confirm.seed and "
                      "singing_dev.seed.")
    n_clips: int = Field(ge=4, description="Sung clips of the probe's build: a finetune split (labelled by each "
                         "source, then trained on) and a test split (references kept, scored).")
    test_fraction: float = Field(gt=0, lt=1, description="Share of the probe's clips in its test split.")
    sources: list[str] = Field(min_length=1, description="Label sources: `oracle` (the clean sung reference as the "
                               "label: the best any annotator could give) or <aligned|base>:<paradigm> (that "
                               "checkpoint's restorations, through pseudo_labels.gate as in `gensr singing-labels`).")

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        for spec in value:
            if spec != ORACLE:
                _check_annotator(spec)
        if len(set(value)) != len(value):
            raise ValueError(f"sources {value}: each source once")
        return value


class SingingDevParams(Block):
    """`gensr singing-annotators`: choose the singing annotator on a dev build, never on the singing test split."""

    seed: int = Field(description="Seed of the dev build (lyrics, melodies, degradations); must differ from "
                      "seed, singing.seed and confirm.seed, so that no clip of data/singing is drawn again.")
    n_clips: int = Field(ge=4, description="Sung clips of the dev build.")
    reference_fraction: float = Field(gt=0, lt=1, description="Share of the dev clips that keep a reference and are "
                                      "scored (the build's test split; the rest is built as a finetune split and "
                                      "not read).")
    annotators: list[str] = Field(min_length=1, description="Candidates as <source>:<paradigm>, source aligned "
                                  "(models/aligned/<paradigm>/<pseudo_labels.strategy>) or base (models/base/<paradigm>).")
    student: bool = Field(description="Also score the initial Voicefixer (models/voicefixer/initial), the model the "
                          "labels are to teach: an annotator that does not beat it cannot improve it.")
    metrics: list[str] = Field(min_length=1, description="Metrics scored against the clean sung references (WER/CER "
                               "are left out by default: the content backend cannot transcribe singing, see "
                               "singing_eval.max_reference_wer).")
    probe: SingingProbeParams | None = Field(None, description="`gensr singing-probe` (fine-tuning the student on each "
                                             "label source, on a build of its own).")

    @field_validator("annotators")
    @classmethod
    def _annotators(cls, value: list[str]) -> list[str]:
        for spec in value:
            _check_annotator(spec)
        if len(set(value)) != len(value):
            raise ValueError(f"annotators {value}: each candidate once")
        return value

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str]) -> list[str]:
        from gensr.metrics.registry import METRIC_NAMES

        unknown = [n for n in value if n not in METRIC_NAMES]
        if unknown or len(set(value)) != len(value):
            raise ValueError(f"{value}: unknown ({unknown}) or repeated metrics; choose from {list(METRIC_NAMES)}")
        return value
