"""eSpeak NG speech with its phoneme timings, through a ctypes wrapper of its own.

gensr.corpus.tts drives the same library but ignores the events its synth callback receives.
Singing needs them: a note is held per syllable, and splitting on silence merges a word's
syllables into one note. With `espeakINITIALIZE_PHONEME_EVENTS` (plus `_IPA`, so vowels can be
told from consonants by their IPA letters) every phoneme arrives as an `espeak_EVENT` of type
`espeakEVENT_PHONEME` whose `sample` field is its first sample.

libespeak-ng is a process-wide singleton initialised once with fixed options, so this engine
must not share a process with tts.EspeakLibrary: gensr.singing.corpus runs it in a freshly
spawned process, which also makes its output independent of what ran before.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

import numpy as np

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_ESPEAK_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7

# IPA vowel letters (eSpeak's English also writes syllabic consonants as ə + consonant, e.g. 'əl').
_VOWELS = set("aeiouyæɑɒɔəɛɜɪʊʌɐɚɝɵøœɨʉɯɤᵻɘʏɶɞ")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phoneme:
    name: str     # IPA, stress marks included ('ˈaɪə'); '' for a pause
    start: int    # first sample
    end: int      # one past the last sample
    word: int     # index of the word it belongs to (-1 before the first word)

    @property
    def is_vowel(self) -> bool:
        return any(ch in _VOWELS for ch in self.name)

    @property
    def is_pause(self) -> bool:
        return not any(ch.isalpha() for ch in self.name)


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray   # int16
    sample_rate: int
    phonemes: tuple[Phoneme, ...]


class PhonemeEngine:
    """In-process eSpeak NG that reports phonemes; use `PhonemeEngine.get()` once per process."""

    _instance: PhonemeEngine | None = None

    def __init__(self) -> None:
        import espeakng_loader

        tts = sys.modules.get("gensr.corpus.tts")
        if tts is not None and tts.EspeakLibrary._instance is not None:
            raise RuntimeError("eSpeak NG was already initialised without phoneme events in this process; "
                               "run gensr.singing in a spawned process")
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        options = _INITIALIZE_DONT_EXIT | _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), options)
        if rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise (reinstall espeakng-loader)")
        self._lib, self.sample_rate = lib, int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback = _Callback(self._collect)  # C keeps a raw pointer: hold a reference
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> PhonemeEngine:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def seed(self, seed: int) -> None:
        """Seed eSpeak's own noise generator (klatt voices), where the library has it (1.51+)."""
        fn = getattr(self._lib, "espeak_ng_SetRandSeed", None)
        if fn is not None:
            fn(ctypes.c_long(seed % 2**31))

    def _collect(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                self._events.append((_EVENT_WORD, e.sample, ""))
            elif e.type == _EVENT_PHONEME:
                self._events.append((_EVENT_PHONEME, e.sample, bytes(e.id.string).split(b"\0")[0].decode("utf-8", "ignore")))
            i += 1
        return 0

    def synthesize(self, text: str, voice: str, words_per_minute: int) -> Speech:
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice '{voice}' (fix singing.voices or corpus.voices in params.yaml)")
        self._lib.espeak_SetParameter(_ESPEAK_RATE, int(words_per_minute), 0)
        self._chunks, self._events = [], []
        encoded = text.encode("utf-8")
        status = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0:
            raise RuntimeError(f"eSpeak NG synthesis failed (status {status}) for voice '{voice}': {text!r}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return Speech(samples, self.sample_rate, _phonemes(self._events, samples.size))


def _phonemes(events: list[tuple[int, int, str]], n_samples: int) -> tuple[Phoneme, ...]:
    """Phoneme spans from the event stream: each lasts until the next phoneme starts."""
    word, starts = -1, []
    for kind, sample, name in events:
        if kind == _EVENT_WORD:
            word += 1
        else:
            starts.append((min(max(sample, 0), n_samples), name, word))
    out = []
    for i, (start, name, w) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else n_samples
        out.append(Phoneme(name, start, max(end, start), w))
    return tuple(out)
