"""Speaker-embedding cosine between candidate and clean reference (timbre preservation).

Backends:
- `resemblyzer` (default): the GE2E encoder whose weights ship in the wheel. Same numbers as
  `VoiceEncoder.embed_utterance(preprocess_wav(x))` (to ~1e-7), but the partial windows of a
  whole batch of clips go through the LSTM in one call, and reference embeddings are shared by
  path within a batch, so N candidates of one clip embed their reference once.
- `ecapa`: speechbrain's `EncoderClassifier.from_hparams(source=metrics.speaker.ecapa_source)`,
  a local folder (hyperparams.yaml + checkpoints) or a hub id (needs the HF cache offline).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from gensr.config.metrics import SpeakerParams
from gensr.metrics.asr import MissingBackend, MissingWeights, offline
from gensr.metrics.registry import get
from gensr.metrics.base import Clip, MetricFailure, Score, Scorer, library_version

SAMPLE_RATE = 16000
REFERENCE_CACHE = 4096


class ResemblyzerEmbedder:
    name = "resemblyzer"

    def load(self) -> None:
        import warnings

        import torch

        with warnings.catch_warnings():  # resemblyzer imports webrtcvad, which imports the deprecated pkg_resources
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            from resemblyzer import VoiceEncoder

        self.torch = torch
        self.encoder = VoiceEncoder(device="cpu", verbose=False)
        self.version = library_version("resemblyzer")

    def embed(self, audios: Sequence[np.ndarray]) -> list[np.ndarray | str]:
        """One L2-normalized embedding per clip, or a failure reason."""
        from resemblyzer import preprocess_wav
        from resemblyzer.audio import wav_to_mel_spectrogram

        out = []
        for audio in audios:
            wav = preprocess_wav(np.array(audio, np.float32), source_sr=SAMPLE_RATE)
            if len(wav) == 0:
                out.append("resemblyzer: no voiced audio after its silence trimming")
                continue
            wav_slices, mel_slices = self.encoder.compute_partial_slices(len(wav), rate=1.3, min_coverage=0.75)
            if wav_slices[-1].stop >= len(wav):
                wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)), "constant")
            mel = wav_to_mel_spectrogram(wav)
            # one encoder call per clip: a batch of several clips' partials rounds differently with the batch's size
            # on some CPUs (6e-8 on an AMD EPYC), and a clip's score must not depend on the shard it was scored in
            with self.torch.no_grad():
                embeds = self.encoder(self.torch.from_numpy(np.array([mel[s] for s in mel_slices]))).numpy()
            raw = np.mean(embeds, axis=0)
            out.append(raw / np.linalg.norm(raw, 2))
        return out


def load_ecapa(params: SpeakerParams):
    param = "metrics.speaker.ecapa_source"
    source = params.ecapa_source
    local = Path(source).expanduser()
    if not local.is_dir() and offline():
        raise MissingWeights(
            f"{param}={source!r}: not a local folder and HF_HUB_OFFLINE is set, so the hub can't be reached; "
            f"point {param} at a folder with hyperparams.yaml and the checkpoint files"
        )
    try:
        from speechbrain.inference.speaker import EncoderClassifier
    except ImportError as err:
        raise MissingBackend(
            f"metrics.speaker.backend=ecapa: speechbrain is not installed ({err}). The default install is CPU-only "
            "and leaves it out (speechbrain needs torchaudio, whose compiled files need the CUDA build of torch): "
            "`make setup STACK=cuda` builds .venv-cuda with it (about 7 GB), or pip install '.[ecapa]'"
        ) from None
    try:
        return EncoderClassifier.from_hparams(
            source=str(local.resolve()) if local.is_dir() else source,
            savedir=str(Path(params.ecapa_savedir).resolve()),
            run_opts={"device": "cpu"},
        )
    except Exception as err:
        raise MissingWeights(f"{param}={source!r}: could not load the ECAPA model ({type(err).__name__}: {err})") from None


class EcapaEmbedder:
    name = "ecapa"

    def __init__(self, params: SpeakerParams):
        self.params = params

    def load(self) -> None:
        import torch

        self.torch = torch
        self.model = load_ecapa(self.params)
        self.version = f"{library_version('speechbrain')} source={self.params.ecapa_source}"

    def embed(self, audios: Sequence[np.ndarray]) -> list[np.ndarray | str]:
        torch = self.torch
        lengths = [len(a) for a in audios]
        batch = torch.zeros(len(audios), max(lengths))
        for i, audio in enumerate(audios):
            batch[i, : len(audio)] = torch.from_numpy(np.array(audio, np.float32))
        with torch.no_grad():
            embeds = self.model.encode_batch(batch, torch.tensor(lengths, dtype=torch.float32) / max(lengths))
        embeds = embeds.reshape(len(audios), -1).numpy().astype(np.float64)
        return [e / np.linalg.norm(e) for e in embeds]


class SpeakerCosine(Scorer):
    def __init__(self, params: SpeakerParams):
        self.params = params
        self.embedder = ResemblyzerEmbedder() if params.backend == "resemblyzer" else EcapaEmbedder(params)
        version = library_version("resemblyzer" if params.backend == "resemblyzer" else "speechbrain")
        if params.backend == "ecapa":
            version += f" source={params.ecapa_source}"
        self.infos = (get("speaker_cosine").info(params.backend, version),)
        self._references: OrderedDict[str, np.ndarray | str] = OrderedDict()

    def setup(self) -> None:
        self.embedder.load()

    def _reference_embeddings(self, clips: Sequence[Clip]) -> list[np.ndarray | str]:
        todo = {}
        for clip in clips:
            key = clip.reference_key or f"clip:{clip.clip_id}"
            if key not in self._references and key not in todo:
                todo[key] = clip.reference_at(SAMPLE_RATE)
        for key, embedding in zip(todo, self.embedder.embed(list(todo.values())) if todo else []):
            self._references[key] = embedding
            if len(self._references) > REFERENCE_CACHE:
                self._references.popitem(last=False)
        return [self._references[clip.reference_key or f"clip:{clip.clip_id}"] for clip in clips]

    def score_batch(self, clips: Sequence[Clip]) -> list[dict[str, Score]]:
        if not hasattr(self.embedder, "version"):
            self.setup()
        results: list[dict[str, Score] | None] = [None] * len(clips)
        usable = []
        for i, clip in enumerate(clips):
            missing = self.missing_inputs(clip)
            if missing:
                results[i] = self.all_nan(missing)
            else:
                usable.append(i)
        if not usable:
            return results
        # References are cached for this batch (a shard) only: the batch a reference is embedded
        # in then never depends on which worker scored which shard before, so tables stay
        # byte-identical; candidates of one clip share a shard because rows are sorted by id.
        self._references.clear()
        try:
            subset = [clips[i] for i in usable]
            references = self._reference_embeddings(subset)
            candidates = self.embedder.embed([clip.audio_at(SAMPLE_RATE) for clip in subset])
        except MissingWeights:
            raise
        except Exception:  # fall back to clip-by-clip so one bad clip only fails itself
            return [results[i] or self.guarded(clips[i], lambda c: self._one(c)) for i in range(len(clips))]
        for i, ref, cand in zip(usable, references, candidates):
            if isinstance(ref, str):
                results[i] = self.all_nan(f"reference: {ref}")
            elif isinstance(cand, str):
                results[i] = self.all_nan(cand)
            else:
                results[i] = self.checked({"speaker_cosine": float(np.dot(ref, cand))})
        return results

    def _one(self, clip: Clip) -> dict[str, float]:
        ref = self._reference_embeddings([clip])[0]
        cand = self.embedder.embed([clip.audio_at(SAMPLE_RATE)])[0]
        for item in (ref, cand):
            if isinstance(item, str):
                raise MetricFailure(item)
        return {"speaker_cosine": float(np.dot(ref, cand))}
