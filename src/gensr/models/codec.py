"""A small spectral codec: conv encoder -> residual VQ -> conv decoder over log-magnitude frames.

The token paradigms (AR, MGM) predict its codes. It is trained in three deterministic
phases (see gensr.train.codec): a continuous autoencoder, k-means codebooks fitted level by
level on the encoder's residuals, then decoder fine-tuning on quantised latents. No
straight-through estimator is needed, so a few CPU minutes train it reliably.
Waveforms come back through the degraded (or, for the ceiling, the clean) phase.

The decoder also reads the degraded input's log-magnitude ("side" input), like a vocoder
conditioned on the noisy features: the tokens carry what the degraded signal lost (the clean
spectral envelope, voicing, what is speech and what is noise) and the decoder takes fine detail
from the input where it is still reliable. The side branch is zero at initialisation and is
trained in phase 3 only, on (degraded, clean) pairs, with a fraction of the codes replaced by
random ones (`code_noise`) so that the decoder tolerates the token errors a sampler makes.
With the side input, a restorer's tokens need to be right only at the coarse levels, so the
token models learn in minutes on a CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gensr.models import features as feats
from gensr.models.blocks import ConvStack


class SpectralCodec(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.stft_cfg = feats.StftConfig(**config["stft"])
        n_bins = self.stft_cfg.n_bins
        c = config["model"]
        self.n_codebooks = c["n_codebooks"]
        self.codebook_size = c["codebook_size"]
        self.norm = feats.FeatureNorm(n_bins)
        self.encoder = ConvStack(n_bins, c["hidden"], c["layers"], c["kernel"])
        self.to_latent = nn.Linear(c["hidden"], c["latent_dim"])
        self.decoder = ConvStack(c["latent_dim"], c["hidden"], c["layers"], c["kernel"])
        self.side = nn.Linear(n_bins, c["hidden"])  # degraded log-magnitude into the decoder
        nn.init.zeros_(self.side.weight)
        nn.init.zeros_(self.side.bias)
        self.to_bins = nn.Linear(c["hidden"], n_bins)
        self.register_buffer("codebooks", torch.zeros(c["n_codebooks"], c["codebook_size"], c["latent_dim"]))

    # --- continuous path (autoencoder phase) -----------------------------------------
    def latents(self, normed: Tensor, mask: Tensor) -> Tensor:
        return self.to_latent(self.encoder(normed, mask))

    def decode_latents(self, z: Tensor, mask: Tensor, side: Tensor | None = None) -> Tensor:
        """Latents [B, frames, D] (+ normalised degraded log-magnitude) -> normalised log-magnitude."""
        extra = None if side is None else self.side(side)
        return self.to_bins(self.decoder(z, mask, extra=extra))

    # --- discrete path ---------------------------------------------------------------
    def quantize(self, z: Tensor) -> Tensor:
        """Residual VQ: [B, frames, D] -> codes [B, frames, K] (nearest code per level)."""
        residual = z
        codes = []
        for book in self.codebooks:
            dist = (residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ book.T + book.pow(2).sum(-1))
            idx = dist.argmin(-1)
            codes.append(idx)
            residual = residual - book[idx]
        return torch.stack(codes, dim=-1)

    def embed_codes(self, codes: Tensor) -> Tensor:
        """Codes [B, frames, K] -> summed codebook vectors [B, frames, D]."""
        return sum(self.codebooks[k][codes[..., k]] for k in range(self.n_codebooks))

    def encode_log_mag(self, log_mag: Tensor, mask: Tensor) -> Tensor:
        return self.quantize(self.latents(self.norm(log_mag), mask))

    def decode_codes(self, codes: Tensor, mask: Tensor, degraded_log_mag: Tensor) -> Tensor:
        """Codes + the degraded log-magnitude -> log-magnitude (denormalised) [B, frames, bins]."""
        side = self.norm(degraded_log_mag) * mask.unsqueeze(-1)
        return self.norm.inverse(self.decode_latents(self.embed_codes(codes), mask, side))

    @torch.no_grad()
    def encode(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        spec = feats.stft(wave, self.stft_cfg)
        mask = feats.frame_mask(lengths, spec.shape[0], spec.shape[1], self.stft_cfg.hop, wave.device)
        return self.encode_log_mag(feats.log_magnitude(spec, self.stft_cfg), mask)

    @torch.no_grad()
    def resynthesize(self, wave: Tensor, degraded: Tensor, phase_from: Tensor | None = None) -> Tensor:
        """The codec ceiling path: codes of `wave` decoded with `degraded` as side input, written
        back with the phase of `phase_from` (default: `degraded`, as a token restorer does)."""
        cfg = self.stft_cfg
        log_mag = feats.log_magnitude(feats.stft(wave, cfg), cfg)
        side = feats.log_magnitude(feats.stft(degraded, cfg), cfg)
        mask = torch.ones(log_mag.shape[:2], dtype=torch.bool)
        out = self.decode_codes(self.encode_log_mag(log_mag, mask), mask, side)
        phasor = feats.phase_reference(degraded if phase_from is None else phase_from, cfg)
        return feats.to_waveform(out, phasor, wave.shape[-1], cfg)


def kmeans(x: Tensor, k: int, iters: int, generator: torch.Generator) -> Tensor:
    """Lloyd's k-means on [N, D] with seeded init; empty clusters restart on random points."""
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least codec.codebook_size={k} frames, got {x.shape[0]}; add data or shrink it")
    centers = x[torch.randperm(x.shape[0], generator=generator)[:k]].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centers).argmin(-1)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        centers = sums / counts.clamp_min(1).unsqueeze(-1)
        if empty.any():
            centers[empty] = x[torch.randint(0, x.shape[0], (int(empty.sum()),), generator=generator)]
    return centers


def fit_residual_codebooks(z: Tensor, n_codebooks: int, size: int, iters: int, generator: torch.Generator) -> Tensor:
    """Level-by-level k-means on residuals: [N, D] -> codebooks [K, size, D]."""
    residual = z.clone()
    books = []
    for _ in range(n_codebooks):
        book = kmeans(residual, size, iters, generator)
        residual = residual - book[torch.cdist(residual, book).argmin(-1)]
        books.append(book)
    return torch.stack(books)
