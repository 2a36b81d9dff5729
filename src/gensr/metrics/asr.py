"""WER and CER against the transcript, from an offline recognizer chosen in params.

Backends:
- `pocketsphinx` (default, weights ship in the wheel). With the default en-us LM it is
  useless on eSpeak's male voices (WER ~0.8), so by default it decodes with a JSGF grammar
  of the corpus' own sentence templates (`metrics.content.grammar: corpus_templates`), which
  keeps it discriminative: clean WER ~0.14, rising with degradation. Three of the eight
  eSpeak voices speak British English, so non-rhotic pronunciation variants of the grammar's
  words are added to the dictionary. A seeded tiny dither is added first because exact
  digital silence derails its noise estimate.
- `whisper` (openai-whisper): a model name (needs the download cache) or a local .pt
  checkpoint path in `metrics.content.whisper_model`. Audio goes in as arrays (no ffmpeg).
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np

from gensr.config.metrics import ContentParams
from gensr.metrics.registry import get
from gensr.metrics.base import Clip, Scorer, library_version

SAMPLE_RATE = 16000
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "GENSR_OFFLINE")


class MissingWeights(RuntimeError):
    """A backend's weights are not available offline; the message names the param to change."""


class MissingBackend(MissingWeights):
    """A non-default backend's package is not installed; the message names the param and the install."""


def normalize_text(text: str) -> str:
    """Lowercase words only, so punctuation and casing never count as errors."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def offline() -> bool:
    return any(os.environ.get(flag, "").lower() in ("1", "true", "yes") for flag in OFFLINE_FLAGS)


VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def grammar_words(jsgf: str) -> list[str]:
    """The words a JSGF grammar can emit (rule names, header and punctuation removed)."""
    body = "\n".join(line for line in jsgf.splitlines() if not line.lstrip().startswith(("#", "grammar", "import")))
    body = re.sub(r"<[^>]*>", " ", body.replace("public", " "))
    return sorted(set(re.findall(r"[A-Za-z']+", body.lower())))


def non_rhotic(phones: list[str]) -> list[str]:
    """A British-English (non-rhotic) variant of a CMUdict pronunciation: ER -> AH, and an R
    that is not followed by a vowel is dropped ('teacher' T IY CH ER -> T IY CH AH)."""
    out = []
    for i, phone in enumerate(phones):
        following = phones[i + 1] if i + 1 < len(phones) else None
        if phone == "ER":
            out.append("AH")
        elif phone == "R" and following not in VOWELS:
            continue
        else:
            out.append(phone)
    return out


def add_non_rhotic_variants(decoder, words: list[str]) -> int:
    """Add word(N) alternates so British eSpeak voices ('en', 'en+f3', ...) match the US dictionary."""
    added = 0
    for word in words:
        prons, index = [], 1
        while (phones := decoder.lookup_word(word if index == 1 else f"{word}({index})")) is not None:
            prons.append(phones.split())
            index += 1
        for phones in list(prons):
            variant = non_rhotic(phones)
            if variant not in prons:
                decoder.add_word(f"{word}({index})", " ".join(variant), False)
                prons.append(variant)
                index += 1
                added += 1
    return added


class PocketsphinxRecognizer:
    name = "pocketsphinx"

    def __init__(self, params: ContentParams):
        self.params = params
        self.version = library_version("pocketsphinx")
        self.detail = (f"grammar={params.grammar} non_rhotic={params.non_rhotic_variants} dither={params.dither} "
                       f"options={dict(sorted(params.pocketsphinx_options.items()))}")

    def _grammar_text(self) -> str | None:
        grammar = self.params.grammar
        if grammar is None:
            return None
        if grammar == "corpus_templates":
            from gensr.corpus.templates import jsgf_grammar

            return jsgf_grammar()
        path = Path(grammar)
        if not path.is_file():
            raise FileNotFoundError(
                f"metrics.content.grammar={grammar}: no such JSGF file; use 'corpus_templates', a .jsgf path, or null"
            )
        return path.read_text()

    def load(self) -> None:
        from pocketsphinx import Decoder

        grammar = self._grammar_text()
        options = dict(self.params.pocketsphinx_options, loglevel="FATAL")
        if grammar is None:
            self.decoder = Decoder(**options)
            return
        self.decoder = Decoder(lm=None, **options)
        if self.params.non_rhotic_variants:
            add_non_rhotic_variants(self.decoder, grammar_words(grammar))
        self.decoder.add_jsgf_string("grammar", grammar)
        self.decoder.activate_search("grammar")

    def transcribe(self, audio: np.ndarray, clip_id: str) -> str:
        rng = np.random.default_rng(zlib.crc32(clip_id.encode()))
        dithered = audio + rng.uniform(-self.params.dither, self.params.dither, len(audio)).astype(np.float32)
        pcm = (np.clip(dithered, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        # fresh feature state (noise floor, CMN) per utterance: otherwise a transcript depends on
        # which clips this process decoded before (10 of 60 clips changed with the order)
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def load_whisper_model(spec: str):
    """whisper.load_model for a local checkpoint or a cached model name; fails fast offline."""
    try:
        import whisper
    except ImportError as err:
        raise MissingBackend(f"metrics.content.backend=whisper: openai-whisper is not installed ({err}); "
                             "`make setup` installs it, or pip install '.[whisper]'") from None

    param = "metrics.content.whisper_model"
    if Path(spec).expanduser().is_file():
        return whisper.load_model(str(Path(spec).expanduser()), device="cpu")
    if spec not in whisper._MODELS:
        raise MissingWeights(
            f"{param}={spec!r}: neither a checkpoint file nor a whisper model name ({', '.join(whisper.available_models())})"
        )
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
    cached = root / os.path.basename(whisper._MODELS[spec])
    if not cached.is_file() and offline():
        raise MissingWeights(
            f"{param}={spec!r}: weights not in {root} and the network is off; set {param} to a local .pt checkpoint"
        )
    try:
        return whisper.load_model(spec, device="cpu", download_root=str(root))
    except Exception as err:  # urllib errors when the download CDN is unreachable
        raise MissingWeights(f"{param}={spec!r}: could not load or download ({type(err).__name__}: {err}); "
                             f"set {param} to a local .pt checkpoint") from None


class WhisperRecognizer:
    name = "whisper"

    def __init__(self, params: ContentParams):
        self.params = params
        self.version = library_version("openai-whisper")
        self.detail = f"model={params.whisper_model} language={params.whisper_language}"

    def load(self) -> None:
        self.model = load_whisper_model(self.params.whisper_model)

    def transcribe(self, audio: np.ndarray, clip_id: str) -> str:
        result = self.model.transcribe(
            np.array(audio, np.float32),  # a writable copy: whisper wraps it with torch.from_numpy
            language=self.params.whisper_language,
            fp16=False,
            temperature=0.0,
            condition_on_previous_text=False,
            verbose=None,
        )
        return result["text"]


RECOGNIZERS = {"pocketsphinx": PocketsphinxRecognizer, "whisper": WhisperRecognizer}


class WordErrorRate(Scorer):
    """WER and CER of the recognizer's transcript of the candidate against the clip's text."""

    def __init__(self, params: ContentParams):
        self.recognizer = RECOGNIZERS[params.backend](params)
        version = f"{self.recognizer.version} {library_version('jiwer')} {self.recognizer.detail}"
        self.infos = tuple(
get(name).info(params.backend, version) for name in ("wer", "cer")
        )

    def setup(self) -> None:
        self.recognizer.load()

    def transcript(self, clip: Clip) -> str:
        if not hasattr(self.recognizer, "decoder") and not hasattr(self.recognizer, "model"):
            self.setup()
        return normalize_text(self.recognizer.transcribe(clip.audio_at(SAMPLE_RATE), clip.clip_id))

    def score_clip(self, clip: Clip) -> dict[str, float]:
        import jiwer

        reference, hypothesis = normalize_text(clip.text), self.transcript(clip)
        return {"wer": jiwer.wer(reference, hypothesis), "cer": jiwer.cer(reference, hypothesis)}
