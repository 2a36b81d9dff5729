"""The clips of a singing build: lyrics, singers, melodies, splits; speech in one process, WORLD in many.

Planning runs in one freshly spawned process: eSpeak's global state carries over between
utterances, so only a fixed order in a fresh process gives the same speech for the same params.
It measures each singer's speaking pitch (the centre of their range) on a fixed phrase, then
draws per clip a lyric, its speech and syllables, a melody and note lengths, re-drawing until the
clip fits [min_seconds, max_seconds]. Rendering (WORLD) is a pure function of a plan, so it runs
in any number of workers with the same result.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gensr.audio.io import resample, write_wav
from gensr.config.singing import SingingParams
from gensr.corpus.templates import template_slots
from gensr.singing.melody import Note, draw_durations, draw_melody, hz_to_midi
from gensr.singing.synth import Syllable, sing, sung_seconds, syllables

SPLITS = ("finetune", "test")
CALIBRATION_TEXT = "the singer walked along the river in the morning"
_LYRIC_PATTERNS = (
    ("thing_adjective", "thing"),
    ("person_adjective", "person"),
    ("the", "person_adjective", "person"),
    ("verb", "the", "thing"),
    ("tail",),
    ("thing_adjective", "thing", "tail"),
    ("person", "verb", "the", "thing"),
)
_MAX_LYRICS, _MAX_RHYTHMS = 50, 20
_FADE_S = 0.005


@dataclass(frozen=True)
class ClipPlan:
    index: int
    utt_id: str
    split: str
    voice: str
    speaker: str
    text: str
    key: str
    midis: tuple[int, ...]
    durations: tuple[float, ...]
    speech: np.ndarray              # float32 at the corpus rate
    syllables: tuple[Syllable, ...]  # sample spans at the corpus rate


def lyric_for(seed: int, index: int, attempt: int) -> str:
    """A short lyric (a few words from the corpus vocabulary): a pure function of its arguments."""
    rng = np.random.default_rng([seed % 2**32, index, attempt, 7])
    slots = template_slots()
    pattern = _LYRIC_PATTERNS[int(rng.integers(len(_LYRIC_PATTERNS)))]
    return " ".join(slots[s][int(rng.integers(len(slots[s])))] if s in slots else s for s in pattern)


def speaker_of(voice: str) -> str:
    from gensr.corpus.tts import speaker_id  # importing tts does not initialise eSpeak

    return speaker_id(voice)


def clip_layout(n_clips: int, test_fraction: float, voices: list[str]) -> list[tuple[str, str]]:
    """(split, voice) per clip: finetune clips first, then test; voices round-robin within each split."""
    n_test = min(max(1, round(n_clips * test_fraction)), n_clips - 1)
    counts = {"finetune": n_clips - n_test, "test": n_test}
    return [(split, voices[j % len(voices)]) for split in SPLITS for j in range(counts[split])]


def _speech(engine, text: str, voice: str, params: SingingParams, sample_rate: int):
    from gensr.singing.espeak_events import Phoneme

    speech = engine.synthesize(text, voice, params.words_per_minute)
    audio = resample(speech.samples.astype(np.float32) / 32768.0, speech.sample_rate, sample_rate)
    scale = sample_rate / speech.sample_rate
    phonemes = [Phoneme(p.name, round(p.start * scale), min(round(p.end * scale), audio.size), p.word)
                for p in speech.phonemes]
    return audio, syllables(phonemes)


def _speaking_midi(audio: np.ndarray, sample_rate: int) -> float:
    import pyworld as pw

    x = audio.astype(np.float64)
    f0, t = pw.dio(x, sample_rate, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, sample_rate)
    return float(np.median(hz_to_midi(f0[f0 > 0])))


def _plan_here(params: SingingParams, voices: list[str], sample_rate: int) -> tuple[dict[str, float], list[ClipPlan]]:
    from gensr.singing.espeak_events import PhonemeEngine

    engine = PhonemeEngine.get()
    engine.seed(params.seed)
    centers = {v: _speaking_midi(_speech(engine, CALIBRATION_TEXT, v, params, sample_rate)[0], sample_rate) for v in voices}
    plans, used = [], set()
    for index, (split, voice) in enumerate(clip_layout(params.n_clips, params.split.test, voices)):
        speaker = speaker_of(voice)
        for attempt in range(_MAX_LYRICS):
            text = lyric_for(params.seed, index, attempt)
            if text in used:
                continue
            audio, sylls = _speech(engine, text, voice, params, sample_rate)
            if len(sylls) < 2:
                continue
            rng = np.random.default_rng([params.seed % 2**32, index, attempt])
            for _ in range(_MAX_RHYTHMS):
                durations = draw_durations(rng, len(sylls), params.melody)
                seconds = sung_seconds(sylls, durations, sample_rate) + 2 * params.margin_seconds
                if params.min_seconds <= seconds <= params.max_seconds:
                    break
            else:
                continue
            key, midis = draw_melody(rng, len(sylls), centers[voice], params.melody)
            break
        else:
            raise RuntimeError(
                f"singing: no lyric for clip {index} ({voice}) fits singing.min_seconds={params.min_seconds} .. "
                f"singing.max_seconds={params.max_seconds} with notes of singing.melody.note_seconds="
                f"{list(params.melody.note_seconds)} in {_MAX_LYRICS} tries; widen those bounds")
        used.add(text)
        plans.append(ClipPlan(index, f"sing-{speaker}-{index:05d}", split, voice, speaker, text, key,
                              tuple(midis), tuple(float(d) for d in durations), audio, tuple(sylls)))
    return centers, plans


def plan_corpus(params: SingingParams, voices: list[str], sample_rate: int) -> tuple[dict[str, float], list[ClipPlan]]:
    """Singers' speaking pitches (MIDI) and one plan per clip; runs in a fresh spawned process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_plan_here, params, voices, sample_rate).result()


def render(plan: ClipPlan, params: SingingParams, sample_rate: int) -> tuple[np.ndarray, list[Note]]:
    """The clean sung clip (peak-normalised, with margins) and its notes in clip time."""
    y, notes = sing(plan.speech, sample_rate, list(plan.syllables), plan.midis, plan.durations, params.melody)
    fade = min(int(_FADE_S * sample_rate), y.size // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        y[:fade] *= ramp
        y[-fade:] *= ramp[::-1]
    peak = float(np.max(np.abs(y)))
    if peak > 0:
        y = y * np.float32(10 ** (params.peak_dbfs / 20) / peak)
    margin = round(params.margin_seconds * sample_rate)
    pad = np.zeros(margin, dtype=np.float32)
    shift = margin / sample_rate
    notes = [Note(n.start + shift, n.end + shift, n.midi) for n in notes]
    return np.concatenate([pad, y.astype(np.float32), pad]), notes


def _render_and_write(plan: ClipPlan, params: SingingParams, sample_rate: int, path: str) -> tuple[float, list[Note]]:
    audio, notes = render(plan, params, sample_rate)
    write_wav(path, audio, sample_rate)
    return audio.size / sample_rate, notes


def render_corpus(plans: list[ClipPlan], params: SingingParams, sample_rate: int, wav_dir: str | Path,
                  progress: bool = True) -> list[tuple[float, list[Note]]]:
    """Write <wav_dir>/<utt_id>.wav per plan; returns (seconds, notes) per plan, in order."""
    from tqdm import tqdm

    wav_dir = Path(wav_dir)
    args = [(p, params, sample_rate, str(wav_dir / f"{p.utt_id}.wav")) for p in plans]
    bar = tqdm(total=len(plans), desc="singing", unit="clip", disable=not progress)
    results = []
    if params.workers > 1 and len(plans) > 1:
        with ProcessPoolExecutor(min(params.workers, len(plans)), mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(_render_and_write, *zip(*args), chunksize=4):
                results.append(result)
                bar.update()
    else:
        for a in args:
            results.append(_render_and_write(*a))
            bar.update()
    bar.close()
    return results
