"""Speech -> singing: one held note per syllable, by WORLD analysis and resynthesis.

WORLD (dio + stonemask for F0, cheaptrick for the spectral envelope, d4c for aperiodicity)
splits speech into per-frame parameters. The frame sequence is re-timed so each syllable lasts
its note (consonants keep their length, the vowel is stretched), and F0 is replaced by the
melody: the note's pitch held over the syllable, `glide_ms` glides between notes and a sine
vibrato. Vowel frames are always voiced, so a held note never drops out where dio hesitated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gensr.config.singing import MelodyParams
from gensr.singing.espeak_events import Phoneme
from gensr.singing.melody import Note, midi_to_hz

FRAME_MS = 5.0
MIN_VOWEL_MS = 40.0   # a vowel never gets shorter than this, even under a short note
F0_FLOOR, F0_CEIL = 60.0, 800.0


@dataclass(frozen=True)
class Syllable:
    """Sample spans of one syllable and of its vowel (the part that is stretched)."""

    start: int
    vowel_start: int
    vowel_end: int
    end: int


def syllables(phonemes: tuple[Phoneme, ...] | list[Phoneme]) -> list[Syllable]:
    """One syllable per vowel. A consonant joins the next vowel of its word (onset), else the
    previous one (coda), else the nearest vowel. Pauses between syllables fall to the earlier one."""
    items = [p for p in phonemes if not p.is_pause and p.end > p.start]
    vowels = [i for i, p in enumerate(items) if p.is_vowel]
    if not vowels:
        return []
    owner = []
    for i, p in enumerate(items):
        if p.is_vowel:
            owner.append(vowels.index(i))
            continue
        after = [k for k, v in enumerate(vowels) if v > i]
        before = [k for k, v in enumerate(vowels) if v < i]
        same_after = [k for k in after if items[vowels[k]].word == p.word]
        same_before = [k for k in before if items[vowels[k]].word == p.word]
        owner.append(same_after[0] if same_after else same_before[-1] if same_before else after[0] if after else before[-1])
    owner = np.maximum.accumulate(owner)  # syllables never interleave
    starts = [min(p.start for p, o in zip(items, owner) if o == k) for k in range(len(vowels))]
    out = []
    for k, v in enumerate(vowels):
        end = starts[k + 1] if k + 1 < len(vowels) else max(p.end for p in items)
        out.append(Syllable(starts[k], items[v].start, items[v].end, end))
    return out


def frame_plan(sylls: list[Syllable], durations, sample_rate: int) -> list[tuple[int, int, int]]:
    """Per syllable: output frames of (onset consonants, stretched vowel, coda) for its note length."""
    to_frames = 1000.0 / FRAME_MS / sample_rate
    plan = []
    for s, seconds in zip(sylls, durations):
        n_on = round((s.vowel_start - s.start) * to_frames)
        n_off = round((s.end - s.vowel_end) * to_frames)
        n_total = round(seconds * 1000.0 / FRAME_MS)
        plan.append((n_on, max(n_total - n_on - n_off, round(MIN_VOWEL_MS / FRAME_MS)), n_off))
    return plan


def sung_seconds(sylls: list[Syllable], durations, sample_rate: int) -> float:
    """Length of the singing (without margins) that `sing` will produce."""
    return sum(sum(p) for p in frame_plan(sylls, durations, sample_rate)) * FRAME_MS / 1000.0


def _interp_rows(matrix: np.ndarray, positions: np.ndarray) -> np.ndarray:
    lo = np.clip(np.floor(positions).astype(int), 0, len(matrix) - 1)
    hi = np.clip(lo + 1, 0, len(matrix) - 1)
    w = np.clip(positions - lo, 0.0, 1.0)[:, None]
    return np.ascontiguousarray((1 - w) * matrix[lo] + w * matrix[hi])


def pitch_contour(note_frames: np.ndarray, midis, melody: MelodyParams) -> np.ndarray:
    """MIDI pitch per output frame: held notes, linear glides across each boundary, then vibrato."""
    contour = np.asarray(midis, dtype=np.float64)[note_frames]
    half = round(melody.glide_ms / FRAME_MS / 2)
    if half > 0:
        midis = np.asarray(midis, dtype=np.float64)
        for b in np.flatnonzero(np.diff(note_frames)) + 1:  # first frame of the next note
            before, after = midis[note_frames[b - 1]], midis[note_frames[b]]
            j = np.arange(max(b - half, 0), min(b + half, len(contour)))
            contour[j] = before + (after - before) * (j - (b - half) + 0.5) / (2 * half)
    t = np.arange(len(contour)) * FRAME_MS / 1000.0
    return contour + melody.vibrato_semitones * np.sin(2 * np.pi * melody.vibrato_hz * t)


def f0_track(audio: np.ndarray, sample_rate: int, frame_ms: float = FRAME_MS) -> tuple[np.ndarray, np.ndarray]:
    """WORLD F0 (dio refined by stonemask) in Hz per `frame_ms` frame, 0 where unvoiced, and the frame times (s),
    searched between F0_FLOOR and F0_CEIL (the singers' range)."""
    import pyworld as pw

    x = np.asarray(audio, dtype=np.float64)
    f0, times = pw.dio(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=frame_ms)
    return pw.stonemask(x, f0, times, sample_rate), times


def sing(speech: np.ndarray, sample_rate: int, sylls: list[Syllable], midis, durations,
         melody: MelodyParams) -> tuple[np.ndarray, list[Note]]:
    """Float32 singing of `speech` (one note per syllable) and the notes it holds (seconds from 0)."""
    import pyworld as pw

    x = np.asarray(speech, dtype=np.float64)
    f0, times = f0_track(x, sample_rate)
    sp = pw.cheaptrick(x, f0, times, sample_rate, f0_floor=F0_FLOOR)
    ap = pw.d4c(x, f0, times, sample_rate)

    to_frames = 1000.0 / FRAME_MS / sample_rate
    positions, note_frames, vowel, notes, cursor = [], [], [], [], 0
    for k, (s, (n_on, n_vowel, n_off)) in enumerate(zip(sylls, frame_plan(sylls, durations, sample_rate))):
        a, vs, ve = s.start * to_frames, s.vowel_start * to_frames, s.vowel_end * to_frames
        positions += [a + np.arange(n_on) * (vs - a) / max(n_on, 1),
                      vs + np.arange(n_vowel) * (ve - vs) / n_vowel,
                      ve + np.arange(n_off) * (s.end * to_frames - ve) / max(n_off, 1)]
        n = n_on + n_vowel + n_off
        note_frames.append(np.full(n, k))
        vowel.append(np.r_[np.zeros(n_on, bool), np.ones(n_vowel, bool), np.zeros(n_off, bool)])
        notes.append(Note(cursor * FRAME_MS / 1000.0, (cursor + n) * FRAME_MS / 1000.0, int(midis[k])))
        cursor += n
    positions = np.concatenate(positions)
    note_frames, vowel = np.concatenate(note_frames), np.concatenate(vowel)

    voiced = vowel | (f0[np.clip(np.round(positions).astype(int), 0, len(f0) - 1)] > 0)
    f0_out = np.where(voiced, midi_to_hz(pitch_contour(note_frames, midis, melody)), 0.0)
    ap_out = _interp_rows(ap, positions)
    ap_out[vowel] = np.minimum(ap_out[vowel], 0.5)  # a stretched vowel stays mostly periodic
    y = pw.synthesize(np.ascontiguousarray(f0_out), _interp_rows(sp, positions), ap_out, sample_rate, FRAME_MS)
    return y.astype(np.float32), notes
