"""The bundled speech source: eSpeak NG (from the espeakng-loader wheel) driven through ctypes.

libespeak-ng is a process-wide singleton with global state, so `EspeakLibrary.get()` initialises
it once per process and a lock serialises synthesis. That state also carries over between
utterances (pitch-flutter phase, wave phase, sample counters), so an utterance's exact samples
depend on everything synthesised before it in the same process. `synthesize_corpus` therefore
runs the whole corpus in a freshly spawned process, in a fixed order: the same params then give
byte-identical WAVs, whatever the calling process did before.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gensr.audio.io import resample, write_wav_if_changed
from gensr.config.corpus import CorpusParams
from gensr.corpus.templates import sentence_for

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return errors instead of calling exit()
_ESPEAK_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1

# Retries per utterance before giving up on the duration bounds (a sentence is re-drawn each time).
_MAX_ATTEMPTS = 50

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakLibrary:
    """In-process eSpeak NG; use `EspeakLibrary.get()`, never the constructor twice."""

    _instance: EspeakLibrary | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialise with data at {data_path.decode()} (reinstall espeakng-loader)")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # keep a reference: C holds a raw pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> EspeakLibrary:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        """int16 samples at `self.sample_rate` for `text` spoken by `voice` (e.g. 'en-us+f2')."""
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice '{voice}' (fix corpus.voices in params.yaml)")
            self._lib.espeak_SetParameter(_ESPEAK_RATE, int(words_per_minute), 0)
            self._chunks = []
            encoded = text.encode("utf-8")
            status = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            if status != 0:
                raise RuntimeError(f"eSpeak NG synthesis failed (status {status}) for voice '{voice}': {text!r}")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def speaker_id(voice: str) -> str:
    """Voice name as a file-safe speaker id: 'en-us+m1' -> 'en_us_m1'."""
    return re.sub(r"[^A-Za-z0-9]+", "_", voice).strip("_")


def trim_and_normalize(audio: np.ndarray, sample_rate: int, params: CorpusParams) -> np.ndarray:
    """Cut leading/trailing silence to exactly `trim_margin_seconds` each side, then set the peak."""
    audio = np.asarray(audio, dtype=np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (params.trim_threshold_db / 20))
    margin = np.zeros(int(round(params.trim_margin_seconds * sample_rate)), dtype=np.float32)
    speech = audio[loud[0] : loud[-1] + 1]
    out = np.concatenate([margin, speech, margin])
    return (out * (10 ** (params.peak_dbfs / 20) / peak)).astype(np.float32)


def render_utterance(text: str, voice: str, params: CorpusParams, sample_rate: int) -> np.ndarray:
    """One utterance as mono float32 at `sample_rate`, trimmed and peak-normalised."""
    engine = EspeakLibrary.get()
    pcm = engine.synthesize(text, voice, params.words_per_minute)
    audio = resample(pcm.astype(np.float32) / 32768.0, engine.sample_rate, sample_rate)
    return trim_and_normalize(audio, sample_rate, params)


def _synthesize_corpus_here(params: CorpusParams, seed: int, sample_rate: int, corpus_dir: Path,
                            exclude_texts: frozenset[str] = frozenset(), id_prefix: str = "") -> list[dict]:
    from tqdm import tqdm

    voices = list(params.voices)
    speakers = [speaker_id(v) for v in voices]
    if len(set(speakers)) != len(speakers):
        raise ValueError(f"corpus.voices {voices} give duplicate speaker ids {speakers}; list each voice once")
    engine = EspeakLibrary.get()
    seed_rand = getattr(engine._lib, "espeak_ng_SetRandSeed", None)
    if seed_rand is not None:  # espeak's own noise generator (klatt voices); present since 1.51
        seed_rand(ctypes.c_long(seed % 2**31))
    rows, used_texts = [], set(exclude_texts)
    for index in tqdm(range(params.n_utterances), desc="synthesizing corpus", unit="utt"):
        voice, speaker = voices[index % len(voices)], speakers[index % len(voices)]
        for attempt in range(_MAX_ATTEMPTS):
            text = sentence_for(seed, index, attempt)
            if text in used_texts:
                continue
            audio = render_utterance(text, voice, params, sample_rate)
            duration = audio.size / sample_rate
            if params.min_seconds <= duration <= params.max_seconds:
                break
        else:
            raise RuntimeError(
                f"voice '{voice}' gave no sentence within corpus.min_seconds={params.min_seconds} .. "
                f"corpus.max_seconds={params.max_seconds} in {_MAX_ATTEMPTS} tries (last {duration:.2f} s); "
                "widen those bounds or change corpus.words_per_minute in params.yaml"
            )
        used_texts.add(text)
        utt_id = f"{id_prefix}{speaker}-{index:05d}"
        rel_path = f"wav/{utt_id}.wav"
        write_wav_if_changed(corpus_dir / rel_path, audio, sample_rate)
        rows.append(
            {"utt_id": utt_id, "path": rel_path, "text": text, "speaker": speaker,
             "duration_s": duration, "sample_rate": sample_rate}
        )
    return rows


def synthesize_corpus(params: CorpusParams, seed: int, sample_rate: int, corpus_dir: str | Path,
                      exclude_texts=frozenset(), id_prefix: str = "") -> list[dict]:
    """Synthesise `params.n_utterances` utterances as <corpus_dir>/wav/<utt_id>.wav.

    Utterance i is spoken by voice i mod len(voices), so every voice gets an equal share. Its
    sentence is drawn from (seed, i, attempt) and re-drawn while the trimmed audio falls outside
    [min_seconds, max_seconds] or repeats an earlier sentence or one of `exclude_texts` (the
    confirmation set excludes every sentence of the main corpus). Utterance ids are
    `<id_prefix><speaker>-<i>`. Returns one manifest row per utterance (no split yet). Runs in
    a fresh process; see the module docstring.
    """
    corpus_dir = Path(corpus_dir)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_synthesize_corpus_here, params, seed, sample_rate, corpus_dir,
                           frozenset(exclude_texts), id_prefix).result()
