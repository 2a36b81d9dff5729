"""Masked generative (MGM) restorer: a bidirectional Transformer over codec tokens, MaskGIT style.

Training masks a cosine-scheduled fraction of the K x frames tokens and predicts them from
the unmasked ones and the degraded conditioning. Decoding starts fully masked and, over
`steps` parallel iterations, samples every masked token and keeps the most confident ones
(confidence = log-prob + annealed Gumbel noise), following the same cosine schedule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gensr.models.blocks import Transformer
from gensr.models.restorer import draw_padded, generators
from gensr.models.token_restorer import TokenRestorer, sample_from_logits, token_log_probs_at


def cosine_mask_ratio(r: Tensor) -> Tensor:
    return torch.cos(0.5 * math.pi * r)


class MGMRestorer(TokenRestorer):
    paradigm = "mgm"

    def __init__(self, config: dict):
        super().__init__(config)
        m = config["model"]
        d, k, v = m["d_model"], self.n_codebooks, self.codebook_size
        self.mask_id = v
        self.token_embed = nn.ModuleList(nn.Embedding(v + 1, d) for _ in range(k))
        self.transformer = Transformer(d, m["heads"], m["layers"], causal=False)
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, v)) for _ in range(k))

    def hidden_states(self, cond: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """cond [B, T, d], tokens [B, T, K] (mask_id where hidden) -> [B, T, d]."""
        x = cond + sum(emb(tokens[..., i]) for i, emb in enumerate(self.token_embed))
        return self.transformer(x, mask)

    def logits(self, cond: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """cond [B, T, d], tokens [B, T, K] (mask_id where hidden) -> logits [B, T, K, V]."""
        hidden = self.hidden_states(cond, tokens, mask)
        return torch.stack([head(hidden) for head in self.heads], dim=2)

    def _masked_log_probs(self, cond, codes, mask, hidden_tokens, temperature: float = 1.0) -> Tensor:
        tokens = codes.masked_fill(hidden_tokens, self.mask_id)
        return token_log_probs_at(self.logits(cond, tokens, mask), codes, temperature) * hidden_tokens

    def _draw_mask(self, ratio: Tensor, uniform: Tensor, mask: Tensor) -> Tensor:
        """Hide tokens whose uniform < ratio; at least one valid token per row is hidden."""
        valid = mask.unsqueeze(-1).expand_as(uniform)
        u = uniform.masked_fill(~valid, 2.0)
        hidden = (u < ratio[:, None, None]) & valid
        first = u.flatten(1).argmin(1)
        hidden.view(hidden.shape[0], -1)[torch.arange(hidden.shape[0]), first] = True
        return hidden

    def sft_loss(self, degraded: Tensor, clean: Tensor, lengths: Tensor | None = None,
                 codes: Tensor | None = None) -> Tensor:
        cond, codes, mask = self.paired_inputs(degraded, clean, lengths, codes)
        ratio = cosine_mask_ratio(torch.rand(codes.shape[0], device=codes.device))
        hidden = self._draw_mask(ratio, torch.rand(codes.shape, device=codes.device), mask)
        token_lp = self._masked_log_probs(cond, codes, mask, hidden)
        return -token_lp.sum() / hidden.sum()

    def preference_score(self, degraded: Tensor, target: Tensor, seeds: Tensor,
                         lengths: Tensor | None = None, codes: Tensor | None = None) -> Tensor:
        """Summed log-prob (at `score_temperature`) of the target's hidden tokens under a mask drawn from seeds[b]."""
        cond, codes, mask = self.paired_inputs(degraded, target, lengths, codes)
        gens = generators(torch.as_tensor(seeds, dtype=torch.int64))
        ratio = cosine_mask_ratio(torch.stack([torch.rand((), generator=g) for g in gens]))
        uniform = draw_padded(gens, mask.sum(1), (self.n_codebooks,), mask.shape[1], kind="uniform")
        hidden = self._draw_mask(ratio, uniform, mask)
        return self._masked_log_probs(cond, codes, mask, hidden, self.score_temperature).sum(dim=(1, 2))

    def _still_hidden(self, confidence: Tensor, hidden: Tensor, n_valid: Tensor, s: int, steps: int) -> Tensor:
        """The cosine schedule after step s: the least confident hidden tokens stay hidden."""
        rows, frames, k = hidden.shape
        confidence = confidence.masked_fill(~hidden, float("inf"))  # fixed tokens never re-mask
        still_hidden = torch.floor(n_valid * cosine_mask_ratio(torch.tensor((s + 1) / steps))).long()
        rank = confidence.flatten(1).argsort(1).argsort(1).view(rows, frames, k)
        return (rank < still_hidden[:, None, None]) & hidden

    def generate_codes(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator], n_candidates: int) -> Tensor:
        """MaskGIT decoding of n_candidates per clip, computing once per clip what the candidates share.

        - The first `sampling.shared_steps` steps decode greedily (each hidden token's most likely
          code, kept by its log-prob) once per clip: every candidate starts from the same confident
          tokens. They involve no randomness, so a candidate does not depend on the others.
        - The next step sees the same tokens in every candidate of a clip, so its logits are the
          same: the network runs once per clip and each candidate draws its own tokens from them
          (with shared_steps = 0 this is the all-hidden first step of plain MaskGIT).
        - Every later step runs the network per candidate; heads and sampler see hidden tokens only.
        """
        n, (clips, frames), k = n_candidates, mask.shape, self.n_codebooks
        rows = clips * n
        steps = int(self.sampling["steps"])
        shared = int(self.sampling.get("shared_steps", 0))
        if not 0 <= shared < steps:
            raise ValueError(f"restorers.mgm.sampling.shared_steps={shared} must be in [0, steps={steps})")
        temperature, top_k = float(self.sampling["temperature"]), int(self.sampling["top_k"])
        gumbel_scale = float(self.sampling["confidence_noise"])
        clip_valid = mask.unsqueeze(-1).expand(clips, frames, k)
        clip_tokens = torch.full((clips, frames, k), self.mask_id, dtype=torch.long).masked_fill(~clip_valid, 0)
        clip_hidden = clip_valid.clone()
        clip_n_valid = clip_valid.flatten(1).sum(1)
        for s in range(shared):  # greedy, once per clip
            logits = self.logits(ctx["cond"], clip_tokens, mask)
            log_p, best = torch.log_softmax(logits, dim=-1).max(dim=-1)
            next_hidden = self._still_hidden(log_p, clip_hidden, clip_n_valid, s, steps)
            clip_tokens = torch.where(clip_hidden & ~next_hidden, best, clip_tokens)
            clip_hidden = next_hidden

        row_mask = mask.repeat_interleave(n, 0)
        valid_frames = row_mask.sum(1)
        uniforms = draw_padded(gens, valid_frames, (k,), frames, kind="uniform", lead=(steps,))
        gumbel_u = draw_padded(gens, valid_frames, (k,), frames, kind="uniform", lead=(steps,))
        n_valid = clip_n_valid.repeat_interleave(n, 0)
        tokens = clip_tokens.repeat_interleave(n, 0)
        hidden = clip_hidden.repeat_interleave(n, 0)
        sampled = torch.zeros(rows, frames, k, dtype=torch.long)
        log_p = torch.zeros(rows, frames, k)
        row_cond = None
        for s in range(shared, steps):
            if s == shared:  # the candidates of a clip hold the same tokens: one pass per clip
                h = self.hidden_states(ctx["cond"], clip_tokens, mask)  # [clips, T, d]
                for i, head in enumerate(self.heads):
                    u = uniforms[:, s, :, i].reshape(clips, n, frames).transpose(1, 2)  # [clips, T, n]
                    tok, lp = sample_from_logits(head(h), u, temperature, top_k)
                    sampled[..., i] = tok.transpose(1, 2).reshape(rows, frames)
                    log_p[..., i] = lp.transpose(1, 2).reshape(rows, frames)
            else:
                if row_cond is None:
                    row_cond = ctx["cond"].repeat_interleave(n, 0)
                h = self.hidden_states(row_cond, tokens, row_mask)  # [rows, T, d]
                for i, head in enumerate(self.heads):
                    sel = hidden[..., i]
                    tok, lp = sample_from_logits(head(h[sel]), uniforms[:, s, :, i][sel], temperature, top_k)
                    sampled[..., i][sel] = tok
                    log_p[..., i][sel] = lp
            if s == steps - 1:  # the schedule hides nothing after the last step: reveal every hidden token
                tokens = torch.where(hidden, sampled, tokens)
                break
            gumbel = -torch.log(-torch.log(gumbel_u[:, s].clamp(1e-9, 1 - 1e-9)))
            confidence = log_p + gumbel_scale * (1 - (s + 1) / steps) * gumbel
            next_hidden = self._still_hidden(confidence, hidden, n_valid, s, steps)
            tokens = torch.where(hidden & ~next_hidden, sampled, tokens)
            hidden = next_hidden
        return tokens
