"""Seeded melodies: a key per clip, notes of its scale within the singer's range, one per syllable.

A singer's range is `range_semitones` wide (speech moves within a few semitones), centred
`center_offset_semitones` above the singer's speaking pitch, so a low voice sings low and a high
voice high. The tune moves mostly by a scale step or two, sometimes repeats or leaps a fourth or
so, reflects off the range's edges, and ends on the tonic nearest to where it got to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gensr.config.singing import MelodyParams

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
}
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Scale-degree steps between consecutive notes and their probabilities.
_STEPS = np.array([-3, -2, -1, 0, 1, 2, 3])
_STEP_P = np.array([0.06, 0.17, 0.22, 0.10, 0.22, 0.17, 0.06])


@dataclass(frozen=True)
class Note:
    """One held note in the output clip (seconds), at `midi` (69 = A4 = 440 Hz)."""

    start: float
    end: float
    midi: int


def hz_to_midi(hz):
    return 69.0 + 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / 440.0)


def midi_to_hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def scale_pitches(tonic: int, scale: str, low: float, high: float) -> list[int]:
    """Every MIDI note of `scale` on pitch class `tonic` within [low, high]."""
    degrees = set(SCALES[scale])
    return [m for m in range(int(np.ceil(low)), int(np.floor(high)) + 1) if (m - tonic) % 12 in degrees]


def draw_melody(rng: np.random.Generator, n_notes: int, speaking_midi: float, params: MelodyParams) -> tuple[str, list[int]]:
    """A key name ('D minor') and `n_notes` MIDI pitches for a singer who speaks at `speaking_midi`."""
    tonic = int(rng.integers(12))
    scale = params.scales[int(rng.integers(len(params.scales)))]
    center = speaking_midi + params.center_offset_semitones
    pool = scale_pitches(tonic, scale, center - params.range_semitones / 2, center + params.range_semitones / 2)
    index = int(np.argmin(np.abs(np.array(pool) - center))) + int(rng.integers(-2, 3))
    index = min(max(index, 0), len(pool) - 1)
    notes = [pool[index]]
    for _ in range(n_notes - 1):
        index += int(rng.choice(_STEPS, p=_STEP_P))
        if index < 0 or index >= len(pool):  # reflect off the edge of the range
            index = -index if index < 0 else 2 * (len(pool) - 1) - index
            index = min(max(index, 0), len(pool) - 1)
        notes.append(pool[index])
    if n_notes > 1:
        tonics = [m for m in pool if (m - tonic) % 12 == 0]
        if tonics:
            notes[-1] = min(tonics, key=lambda m: (abs(m - notes[-2]), m))
    return f"{PITCH_CLASSES[tonic]} {scale}", notes


def draw_durations(rng: np.random.Generator, n_notes: int, params: MelodyParams) -> np.ndarray:
    """Held-note lengths in seconds, uniform in params.note_seconds."""
    low, high = params.note_seconds
    return rng.uniform(low, high, size=n_notes)
