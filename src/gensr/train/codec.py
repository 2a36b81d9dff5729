"""Codec training in three deterministic phases (see gensr.models.codec).

1. a continuous conv autoencoder on clean normalised log-magnitude (L1);
2. residual k-means codebooks fitted level by level on the encoder's latents;
3. the decoder fine-tuned on quantised latents of the clean side plus the degraded
   log-magnitude (side input), with a `code_noise` fraction of the codes replaced at random, so
   it learns to undo the quantisation error and to lean on the input where a code is wrong.

Phases 1 and 2 read only the clean side of the (degraded, clean) training pairs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from gensr.config.models import SpectralCodecParams, StftFeatures
from gensr.config.scaleout import TrainerParams
from gensr.models import features as feats
from gensr.models.codec import SpectralCodec, fit_residual_codebooks
from gensr.storage import save_torch
from gensr.train.data import Clip, pad_batch
from gensr.train.loop import fit

CODEC_FORMAT = "gensr-codec/1"


def fit_norm(norm: feats.FeatureNorm, clips: list[Clip], cfg: feats.StftConfig, max_clips: int = 200) -> None:
    """Per-bin statistics of clean log-magnitude over (up to max_clips of) the training clips."""
    frames = [feats.log_magnitude(feats.stft(torch.from_numpy(c.clean)[None], cfg), cfg)[0] for c in clips[:max_clips]]
    norm.fit(torch.cat(frames))


def _codec_latents(codec: SpectralCodec, clips: list[Clip], n_frames: int, seed: int) -> torch.Tensor:
    with torch.no_grad():
        z = []
        for i in range(0, len(clips), 16):
            wave, lengths = pad_batch([c.clean for c in clips[i : i + 16]])
            spec = feats.clipwise_stft(wave, lengths, codec.stft_cfg)
            mask = feats.frame_mask(lengths, spec.shape[0], spec.shape[1], codec.stft_cfg.hop)
            lat = codec.latents(codec.norm(feats.log_magnitude(spec, codec.stft_cfg)), mask)
            z.append(lat[mask])
        z = torch.cat(z)
    rng = np.random.default_rng(seed)
    keep = rng.choice(z.shape[0], size=min(n_frames, z.shape[0]), replace=False)
    return z[torch.from_numpy(np.sort(keep))]


class CodecObjective:
    """The L1 loss of phase 1 (`autoencoder`) or phase 3 (`decoder`) on normalised clean log-magnitude.

    A plain callable rather than a closure, so that spawned DDP processes can unpickle it with the codec.
    """

    def __init__(self, codec: SpectralCodec, phase: str, code_noise: float = 0.0):
        if phase not in ("autoencoder", "decoder"):
            raise ValueError(f"codec phase must be 'autoencoder' or 'decoder', got {phase!r}")
        self.codec, self.phase, self.code_noise = codec, phase, code_noise

    def spectra(self, wave, lengths):
        codec = self.codec
        log_mag = feats.log_magnitude(feats.clipwise_stft(wave, lengths, codec.stft_cfg), codec.stft_cfg)
        mask = feats.frame_mask(lengths, log_mag.shape[0], log_mag.shape[1], codec.stft_cfg.hop)
        return codec.norm(log_mag) * mask.unsqueeze(-1), mask

    def __call__(self, degraded, clean, lengths):
        codec = self.codec
        x, mask = self.spectra(clean, lengths)
        if self.phase == "autoencoder":
            err = (codec.decode_latents(codec.latents(x, mask), mask) - x).abs() * mask.unsqueeze(-1)
            return err.sum() / (mask.sum() * x.shape[-1])
        side, _ = self.spectra(degraded, lengths)
        with torch.no_grad():
            codes = codec.quantize(codec.latents(x, mask))
            if self.code_noise > 0:  # global RNG: seeded by fit() through seed_everything (per rank with DDP)
                swap = torch.rand(codes.shape) < self.code_noise
                codes = torch.where(swap, torch.randint(0, codec.codebook_size, codes.shape), codes)
            z_q = codec.embed_codes(codes)
        err = (codec.decode_latents(z_q, mask, side) - x).abs() * mask.unsqueeze(-1)
        return err.sum() / (mask.sum() * x.shape[-1])


def train_codec_model(p: SpectralCodecParams, stft: StftFeatures, clips: list[Clip], sample_rate: int,
                      seed: int, logger=None, trainer: TrainerParams | None = None) -> tuple[SpectralCodec, dict]:
    """`clips`: (degraded, clean) training pairs; `trainer`: the devices of both fits (None = one CPU process)."""
    if any(c.degraded is None for c in clips):
        raise ValueError("codec training needs (degraded, clean) pairs: the decoder learns to read the degraded input")
    torch.manual_seed(seed)
    codec = SpectralCodec({"stft": stft.model_dump(), "model": p.model.model_dump()})
    fit_norm(codec.norm, clips, codec.stft_cfg)
    autoencoder_loss = CodecObjective(codec, "autoencoder")
    decoder_loss = CodecObjective(codec, "decoder", p.code_noise)

    start = time.perf_counter()
    ae = fit(codec, autoencoder_loss, [p for p in codec.parameters()], clips, p.autoencoder, sample_rate,
             seed, logger, "codec/autoencoder_loss", trainer)
    t0 = time.perf_counter()
    z = _codec_latents(codec, clips, p.kmeans_frames, seed)
    books = fit_residual_codebooks(z, p.model.n_codebooks, p.model.codebook_size, p.kmeans_iters,
                                   torch.Generator().manual_seed(seed))
    codec.codebooks.copy_(books)
    kmeans_seconds = time.perf_counter() - t0
    decoder_params = [*codec.decoder.parameters(), *codec.side.parameters(), *codec.to_bins.parameters()]
    dec = fit(codec, decoder_loss, decoder_params, clips, p.decoder_finetune, sample_rate, seed + 1, logger,
              "codec/decoder_loss", trainer)
    codec.eval()
    return codec, {
        "autoencoder_loss": ae["final_loss"],
        "final_loss": dec["final_loss"],
        "kmeans_seconds": kmeans_seconds,
        "train_seconds": time.perf_counter() - start,
    }


def save_codec(codec: SpectralCodec, path: str | Path) -> Path:
    payload = {"format": CODEC_FORMAT, "config": codec.config,
               "state_dict": {k: v.detach().cpu() for k, v in codec.state_dict().items()}}
    return save_torch(payload, path)


def load_codec(path: str | Path) -> SpectralCodec:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: codec checkpoint not found; run `gensr train-codec` first")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CODEC_FORMAT:
        raise ValueError(f"{path}: not a gensr codec checkpoint (expected format {CODEC_FORMAT})")
    codec = SpectralCodec(payload["config"])
    codec.load_state_dict(payload["state_dict"])
    return codec.eval()
