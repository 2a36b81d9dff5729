"""Shared base of the two token paradigms (AR, MGM): a frozen codec plus a conditioning encoder.

The codec turns clean speech into the token targets and decodes sampled tokens back to
log-magnitude; the conditioning encoder reads the degraded log-magnitude (normalised with
the codec's statistics), which is what makes a token model act as a restorer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gensr.models import features as feats
from gensr.models.blocks import ConvStack
from gensr.models.codec import SpectralCodec
from gensr.models.restorer import Restorer


class TokenRestorer(Restorer):
    def __init__(self, config: dict):
        super().__init__(config)
        if config["codec"]["stft"] != config["stft"]:
            raise ValueError("restorer and codec STFT settings differ; retrain the codec with restorers.features")
        self.codec = SpectralCodec(config["codec"])
        self.codec.requires_grad_(False)  # the codec is fixed: only the token model is trained or aligned
        m = config["model"]
        self.n_codebooks = self.codec.n_codebooks
        self.codebook_size = self.codec.codebook_size
        self.cond_encoder = ConvStack(self.stft_cfg.n_bins, m["d_model"], m["cond_layers"], m["cond_kernel"])
        # Temperature of the preference score's token log-probs (logits / T). 1 = the model's own distribution;
        # DPO may set the sampling temperature (dpo.<p>.score_temperature: sampling). Not saved in checkpoints.
        self.score_temperature = 1.0

    @classmethod
    def from_codec(cls, codec: SpectralCodec, model: dict, sampling: dict) -> "TokenRestorer":
        config = {"stft": codec.config["stft"], "codec": codec.config, "model": model, "sampling": sampling}
        restorer = cls(config)
        restorer.codec.load_state_dict(codec.state_dict())
        return restorer

    def condition(self, degraded_log_mag: Tensor, mask: Tensor) -> Tensor:
        return self.cond_encoder(self.codec.norm(degraded_log_mag), mask)

    def context(self, cond_log_mag: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The encoded conditioning (shared by a clip's candidates) and the degraded log-magnitude
        the codec decoder reads."""
        return {"cond": self.condition(cond_log_mag, mask), "log_mag": cond_log_mag}

    def targets(self, wave: Tensor, mask: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Codec tokens of a (clean or candidate) waveform: [B, frames, K]."""
        with torch.no_grad():
            return self.codec.encode_log_mag(self.log_magnitude(wave, lengths), mask)

    def paired_inputs(self, degraded: Tensor, target: Tensor, lengths: Tensor | None, codes: Tensor | None = None):
        """Conditioning features, target tokens and the frame mask for a (degraded, target) batch.

        `codes` [B, frames, K]: the target's own tokens (those the restorer sampled); entries < 0 (unknown,
        e.g. padding) are taken from the codec encoding of `target`, which is skipped when none is unknown.
        """
        deg_log_mag = self.log_magnitude(degraded, lengths)
        mask = feats.frame_mask(lengths, deg_log_mag.shape[0], deg_log_mag.shape[1], self.stft_cfg.hop, degraded.device)
        if codes is None:
            tokens = self.targets(target, mask, lengths)
        else:
            expected = (*mask.shape, self.n_codebooks)
            if tuple(codes.shape) != expected:
                raise ValueError(f"codes have shape {tuple(codes.shape)}, expected {expected} (frames of the target)")
            codes = codes.to(torch.long)
            unknown = codes < 0
            tokens = torch.where(unknown, self.targets(target, mask, lengths), codes) if unknown.any() else codes
        return self.condition(deg_log_mag, mask), tokens, mask

    def decode(self, codes: Tensor, mask: Tensor, degraded_log_mag: Tensor) -> Tensor:
        """Sampled codes -> log-magnitude, through the codec decoder that also reads the degraded input."""
        return self.codec.decode_codes(codes, mask, degraded_log_mag)

    def generate_codes(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator], n_candidates: int) -> Tensor:
        """Sampled tokens [B * N, frames, K] (row r = candidate r % N of clip r // N)."""
        raise NotImplementedError

    def generate_with_codes(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator],
                            n_candidates: int) -> tuple[Tensor, Tensor]:
        codes = self.generate_codes(ctx, mask, gens, n_candidates)
        row_mask = mask.repeat_interleave(n_candidates, 0)
        return self.decode(codes, row_mask, ctx["log_mag"].repeat_interleave(n_candidates, 0)), codes

    def generate(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator], n_candidates: int) -> Tensor:
        return self.generate_with_codes(ctx, mask, gens, n_candidates)[0]


def token_log_probs_at(logits: Tensor, codes: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-prob of each code under softmax(logits / temperature): logits [..., V], codes [...] -> [...]."""
    log_probs = torch.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
    return log_probs.gather(-1, codes.unsqueeze(-1)).squeeze(-1)


def support_log_probs_at(logits: Tensor, support_logits: Tensor, codes: Tensor, temperature: float,
                         top_k: int) -> tuple[Tensor, Tensor]:
    """Log-prob of each code among the `top_k` largest of `support_logits`, the tokens a top-k sampler of that model
    draws from: softmax(logits / temperature) renormalised over that support (what `sample_from_logits` draws with,
    when `logits` and `support_logits` are the same).

    logits, support_logits [..., V], codes [...] -> (log-probs [...], inside [...]): `inside` is False where the code
    is not in the support (its log-prob is then 0, so that sums can skip it).
    """
    index = support_logits.topk(min(top_k, logits.shape[-1]), dim=-1).indices
    scaled = logits.gather(-1, index)
    log_probs = torch.log_softmax(scaled if temperature == 1.0 else scaled / temperature, dim=-1)
    hit = index == codes.unsqueeze(-1)
    return log_probs.masked_fill(~hit, 0.0).sum(-1), hit.any(-1)


def sample_from_logits(logits: Tensor, uniform: Tensor, temperature: float, top_k: int) -> tuple[Tensor, Tensor]:
    """Inverse-CDF sampling with pre-drawn uniforms, so each row's draw depends only on its seed.

    logits [..., V] and uniform [...] -> (token [...], log-prob of the token under the model [...]).
    A uniform [..., n] (one more dim than the distributions) draws n tokens from each distribution,
    e.g. n candidates that share their logits, without copying the logits n times.
    """
    many = uniform.ndim == logits.ndim
    u = uniform if many else uniform.unsqueeze(-1)
    scaled = logits / max(temperature, 1e-5) if temperature != 1.0 else logits
    if 0 < top_k < logits.shape[-1]:
        # sample among the k largest only: the CDF runs over k entries (in descending order), not V
        scaled, index = scaled.topk(top_k, dim=-1)
    else:
        index = None
    probs = torch.softmax(scaled, dim=-1)
    cdf = probs.cumsum(-1)
    # the first index whose cdf reaches u * total (= the count of cdf entries below it)
    pick = torch.searchsorted(cdf, (u * cdf[..., -1:]).contiguous()).clamp_max(probs.shape[-1] - 1)
    # never pick an underflowed (zero-probability) entry because of rounding at the top of the CDF
    bad = probs.gather(-1, pick) <= 0
    if bad.any():
        pick = torch.where(bad, probs.argmax(-1, keepdim=True), pick)
    token = pick if index is None else index.gather(-1, pick)
    # log-prob under the unfiltered model: the logit minus the log-partition, without a full log_softmax
    log_p = logits.gather(-1, token) - torch.logsumexp(logits, dim=-1, keepdim=True)
    return (token, log_p) if many else (token.squeeze(-1), log_p.squeeze(-1))
