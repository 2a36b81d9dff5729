"""The metric protocol: metadata up front, models loaded once, NaN-with-reason on failure.

A `Scorer` computes one or more metrics that share a model or a front end (DNSMOS gives four,
the recognizer gives WER and CER). Every metric declares a `MetricInfo`. Scorers receive
read-only `Clip`s and resample to their own rate from the clip's own audio, so no scorer can
change what another one sees. A failure on one clip becomes NaN plus a reason for that
scorer's metrics only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Literal, Sequence

import numpy as np

from gensr.audio.io import resample

Dimension = Literal["quality", "fidelity", "content", "timbre"]


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is, whatever computes it: the registry holds one per metric name."""

    name: str
    dimension: Dimension
    higher_is_better: bool
    needs_reference: bool
    needs_text: bool
    sample_rate: int
    valid_range: tuple[float, float]

    def info(self, backend: str, version: str) -> "MetricInfo":
        return MetricInfo(**{f.name: getattr(self, f.name) for f in fields(MetricSpec)}, backend=backend, version=version)


@dataclass(frozen=True)
class MetricInfo(MetricSpec):
    """A spec plus the backend and version that computed it (recorded in every table row)."""

    backend: str
    version: str


@dataclass(frozen=True)
class Score:
    value: float
    reason: str | None = None

    @classmethod
    def nan(cls, reason: str) -> "Score":
        return cls(float("nan"), reason)


class MetricFailure(Exception):
    """A metric cannot be computed for this clip; the message becomes the row's reason."""


def _frozen(audio: np.ndarray | None) -> np.ndarray | None:
    if audio is None:
        return None
    audio = np.array(audio, dtype=np.float32)  # private copy, then lock it
    audio.flags.writeable = False
    return audio


@dataclass(frozen=True)
class Clip:
    """One row to score. Audio arrays are read-only; `reference_key` identifies the reference
    (its path) so scorers may cache reference-side features across candidates."""

    clip_id: str
    audio: np.ndarray
    sample_rate: int
    reference: np.ndarray | None = None
    reference_rate: int | None = None
    reference_key: str | None = None
    reference_error: str | None = None
    text: str | None = None
    _resampled: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "audio", _frozen(self.audio))
        object.__setattr__(self, "reference", _frozen(self.reference))

    def audio_at(self, sample_rate: int) -> np.ndarray:
        return self._at("audio", self.audio, self.sample_rate, sample_rate)

    def reference_at(self, sample_rate: int) -> np.ndarray:
        if self.reference is None:
            raise MetricFailure(self.reference_error or "no reference")
        return self._at("reference", self.reference, self.reference_rate, sample_rate)

    def _at(self, which: str, audio: np.ndarray, rate: int, target: int) -> np.ndarray:
        if rate == target:
            return audio
        key = (which, target)
        if key not in self._resampled:  # memo of derived copies; the originals never change
            self._resampled[key] = _frozen(resample(audio, rate, target))
        return self._resampled[key]

    def pair_at(self, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """(reference, candidate) at `sample_rate`, trimmed to the shorter of the two (the suite blanks the
        reference of a candidate whose length differs by more than metrics.max_length_diff_s)."""
        ref, cand = self.reference_at(sample_rate), self.audio_at(sample_rate)
        n = min(len(ref), len(cand))
        return ref[:n], cand[:n]


def library_version(*packages: str) -> str:
    return " ".join(f"{p}=={_installed_version(p)}" for p in packages)


def _installed_version(package: str) -> str:
    """The installed version, or "(not installed)": a missing non-default backend (speechbrain, whisper)
    then fails at setup with MissingBackend and its install hint, not here with PackageNotFoundError."""
    try:
        return package_version(package)
    except PackageNotFoundError:
        return "(not installed)"


class Scorer:
    """Base for every metric module. Subclasses set `infos` and implement `score_clip`
    (or override `score_batch` when the backend batches across clips)."""

    infos: tuple[MetricInfo, ...] = ()

    def setup(self) -> None:
        """Load models. Called once per process before the first batch."""

    def score_clip(self, clip: Clip) -> dict[str, float]:
        raise NotImplementedError

    def score_batch(self, clips: Sequence[Clip]) -> list[dict[str, Score]]:
        return [self.guarded(clip, self.score_clip) for clip in clips]

    # helpers shared by every scorer -------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [info.name for info in self.infos]

    def missing_inputs(self, clip: Clip) -> str | None:
        """Why this clip can't be scored by this scorer at all (no reference / no text), or None."""
        if any(i.needs_reference for i in self.infos) and clip.reference is None:
            return f"reference unavailable: {clip.reference_error or 'no reference given'}"
        if any(i.needs_text for i in self.infos) and not (clip.text and clip.text.strip()):
            return "transcript unavailable: no text given for this clip"
        return None

    def all_nan(self, reason: str) -> dict[str, Score]:
        return {name: Score.nan(reason) for name in self.names}

    def checked(self, values: dict[str, float]) -> dict[str, Score]:
        """Turn raw values into Scores; non-finite values become NaN with a reason."""
        out = {}
        for info in self.infos:
            value = float(values[info.name])
            out[info.name] = Score(value) if np.isfinite(value) else Score.nan(f"non-finite {info.name} ({value})")
        return out

    def guarded(self, clip: Clip, fn) -> dict[str, Score]:
        missing = self.missing_inputs(clip)
        if missing:
            return self.all_nan(missing)
        try:
            return self.checked(fn(clip))
        except MetricFailure as err:
            return self.all_nan(str(err))
        except Exception as err:  # a library error on one clip must not kill the batch
            return self.all_nan(f"{type(err).__name__}: {err}".replace("\n", " ")[:300])
