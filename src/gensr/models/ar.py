"""Autoregressive (AR) restorer: a causal Transformer over codec frames.

Frame t's input is the (non-causal) conditioning of the degraded frame t plus the embedded
clean tokens of frame t-1. Within a frame, the K residual codes are predicted coarse to fine
by small depth heads that see the codes already chosen at that frame, so the sequence
log-probability factorises exactly: log p(codes) = sum_t sum_k log p(c_tk | c_<t, c_t,<k, y).
Sampling uses temperature and top-k; every row's uniforms come from its own seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gensr.models.blocks import Transformer
from gensr.models.restorer import draw_padded, repeat_rows
from gensr.models.token_restorer import TokenRestorer, sample_from_logits, token_log_probs_at


class ARRestorer(TokenRestorer):
    paradigm = "ar"

    def __init__(self, config: dict):
        super().__init__(config)
        m = config["model"]
        d, k, v = m["d_model"], self.n_codebooks, self.codebook_size
        self.bos = v  # extra index: "no previous frame"
        self.frame_embed = nn.ModuleList(nn.Embedding(v + 1, d) for _ in range(k))
        self.transformer = Transformer(d, m["heads"], m["layers"], causal=True)
        self.depth_embed = nn.ModuleList(nn.Embedding(v, d) for _ in range(k - 1))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, v)) for _ in range(k)
        )

    def _frame_inputs(self, cond: Tensor, codes: Tensor) -> Tensor:
        """Teacher forcing: frame t sees cond[t] and the codes of frame t-1 (BOS at t=0)."""
        prev = F.pad(codes[:, :-1], (0, 0, 1, 0), value=self.bos)
        return cond + sum(emb(prev[..., i]) for i, emb in enumerate(self.frame_embed))

    def _logits(self, hidden: Tensor, codes: Tensor) -> Tensor:
        """Depth heads with teacher forcing: [B, T, d], codes [B, T, K] -> logits [B, T, K, V]."""
        out, z = [], hidden
        for i, head in enumerate(self.heads):
            out.append(head(z))
            if i < len(self.depth_embed):
                z = z + self.depth_embed[i](codes[..., i])
        return torch.stack(out, dim=2)

    # The trunk (conditioning encoder, frame embeddings, transformer) ends at `hidden`; the depth embeddings and heads
    # turn it into token log-probs. `dpo.ar.trainable: [heads]` trains only the latter.
    head_prefixes = ("heads", "depth_embed")

    def head_inputs(self, degraded: Tensor, target: Tensor, lengths: Tensor | None = None,
                    codes: Tensor | None = None) -> dict[str, Tensor]:
        cond, codes, mask = self.paired_inputs(degraded, target, lengths, codes)
        return {"hidden": self.transformer(self._frame_inputs(cond, codes), mask), "codes": codes, "mask": mask}

    def head_logits(self, inputs: dict[str, Tensor]) -> Tensor:
        """Logits [B, T, K, V] of every token of `inputs["codes"]` (teacher forced), at temperature 1."""
        return self._logits(inputs["hidden"], inputs["codes"])

    def _head_log_probs(self, inputs: dict[str, Tensor], temperature: float = 1.0) -> Tensor:
        """Per-token log-probs [B, T, K], zero on invalid frames."""
        codes, mask = inputs["codes"], inputs["mask"]
        return token_log_probs_at(self.head_logits(inputs), codes, temperature) * mask.unsqueeze(-1)

    def sft_from_heads(self, inputs: dict[str, Tensor]) -> Tensor:
        return -self._head_log_probs(inputs).sum() / (inputs["mask"].sum() * self.n_codebooks)

    def preference_from_heads(self, inputs: dict[str, Tensor]) -> Tensor:
        return self._head_log_probs(inputs, self.score_temperature).sum(dim=(1, 2))

    def sft_loss(self, degraded: Tensor, clean: Tensor, lengths: Tensor | None = None,
                 codes: Tensor | None = None) -> Tensor:
        return self.sft_from_heads(self.head_inputs(degraded, clean, lengths, codes))

    def preference_score(self, degraded: Tensor, target: Tensor, seeds: Tensor | None = None,
                         lengths: Tensor | None = None, codes: Tensor | None = None) -> Tensor:
        """Summed log-probability of the target's token sequence at `score_temperature` (no randomness: seeds unused)."""
        return self.preference_from_heads(self.head_inputs(degraded, target, lengths, codes))

    def generate_codes(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator], n_candidates: int) -> Tensor:
        ctx, mask = repeat_rows({"cond": ctx["cond"]}, mask, n_candidates)  # the conditioning encoder ran once per clip
        rows, frames = mask.shape
        cond = ctx["cond"]
        uniforms = draw_padded(gens, mask.sum(1), (self.n_codebooks,), frames, kind="uniform")
        temperature, top_k = float(self.sampling["temperature"]), int(self.sampling["top_k"])
        cache = self.transformer.new_cache(rows, frames, cond.device)
        codes = torch.zeros(rows, frames, self.n_codebooks, dtype=torch.long)
        prev = torch.full((rows, self.n_codebooks), self.bos, dtype=torch.long)
        for t in range(frames):
            x = cond[:, t] + sum(emb(prev[:, i]) for i, emb in enumerate(self.frame_embed))
            z = self.transformer.step(x.unsqueeze(1), cache, t).squeeze(1)
            for i, head in enumerate(self.heads):
                token, _ = sample_from_logits(head(z), uniforms[:, t, i], temperature, top_k)
                codes[:, t, i] = token
                if i < len(self.depth_embed):
                    z = z + self.depth_embed[i](token)
            prev = codes[:, t]
        return codes
