"""Network building blocks shared by the codec and the restorers.

- `ConvStack`: non-causal residual 1-D convolutions over frames (conditioning encoders, codec).
- `Transformer`: pre-norm blocks with ALiBi position bias, so that models trained on short
  crops run on longer clips; supports causal decoding with a key/value cache.
All blocks take [B, frames, channels] and a [B, frames] validity mask and never let padded
frames influence valid ones, so a clip's output does not depend on what it is batched with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ResConvBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int, film_dim: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        pad = dilation * (kernel // 2)
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 1)
        # FiLM from a conditioning vector (the flow time) scales and shifts the normalised input.
        self.film = nn.Linear(film_dim, 2 * channels) if film_dim else None

    def forward(self, x: Tensor, mask: Tensor, film: Tensor | None = None) -> Tensor:
        h = self.norm(x)
        if self.film is not None:
            scale, shift = self.film(film).unsqueeze(1).chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        h = h * mask.unsqueeze(-1)  # padded frames enter the convolution as zeros
        h = self.conv2(F.gelu(self.conv1(F.gelu(h).transpose(1, 2)))).transpose(1, 2)
        return (x + h) * mask.unsqueeze(-1)


class ConvStack(nn.Module):
    """Linear in, residual dilated convolutions (dilation cycles 1, 2, 4, ...), final norm."""

    def __init__(self, n_in: int, channels: int, layers: int, kernel: int, film_dim: int | None = None):
        super().__init__()
        self.inp = nn.Linear(n_in, channels)
        self.blocks = nn.ModuleList(
            ResConvBlock(channels, kernel, 2 ** (i % 4), film_dim) for i in range(layers)
        )
        self.out_norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor, mask: Tensor, film: Tensor | None = None, extra: Tensor | None = None) -> Tensor:
        """`extra` [B, frames, channels] is added to the input projection (a second input stream)."""
        h = self.inp(x)
        if extra is not None:
            h = h + extra
        h = h * mask.unsqueeze(-1)
        for block in self.blocks:
            h = block(h, mask, film)
        return self.out_norm(h) * mask.unsqueeze(-1)


def alibi_slopes(heads: int) -> Tensor:
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])


class AttentionBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, mlp_mult: int = 4):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads} (restorers.*.d_model/heads)")
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_mult * d_model), nn.GELU(), nn.Linear(mlp_mult * d_model, d_model)
        )

    def forward(self, x: Tensor, bias: Tensor, cache: dict | None = None, pos: int = 0) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:  # incremental decoding: write this step's keys into the cache
            cache["k"][:, :, pos : pos + t] = k
            cache["v"][:, :, pos : pos + t] = v
            k, v = cache["k"][:, :, : pos + t], cache["v"][:, :, : pos + t]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, d_model: int, heads: int, layers: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.heads = heads
        self.blocks = nn.ModuleList(AttentionBlock(d_model, heads) for _ in range(layers))
        self.out_norm = nn.LayerNorm(d_model)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)

    def _bias(self, q_pos: Tensor, k_pos: Tensor, key_mask: Tensor | None) -> Tensor:
        rel = q_pos[:, None] - k_pos[None, :]  # [Tq, Tk]
        bias = -self.slopes[:, None, None] * rel.abs().to(self.slopes.dtype)
        if self.causal:
            bias = bias.masked_fill(rel < 0, float("-inf"))
        bias = bias.unsqueeze(0)  # [1, H, Tq, Tk]
        if key_mask is not None:
            bias = bias.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return bias

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        pos = torch.arange(x.shape[1], device=x.device)
        bias = self._bias(pos, pos, None if self.causal else mask)
        if not self.causal:  # fully padded query rows would be all -inf: let them see themselves
            bias = bias.masked_fill(torch.eye(x.shape[1], dtype=torch.bool, device=x.device), 0.0)
        for block in self.blocks:
            x = block(x, bias)
        return self.out_norm(x) * mask.unsqueeze(-1)

    def new_cache(self, batch: int, max_len: int, device=None) -> list[dict]:
        d_head = self.blocks[0].qkv.in_features // self.heads
        shape = (batch, self.heads, max_len, d_head)
        return [{"k": torch.zeros(shape, device=device), "v": torch.zeros(shape, device=device)} for _ in self.blocks]

    def step(self, x: Tensor, cache: list[dict], pos: int) -> Tensor:
        """Causal decoding of one frame at position `pos`: x [B, 1, d] -> [B, 1, d]."""
        q_pos = torch.tensor([pos], device=x.device)
        bias = self._bias(q_pos, torch.arange(pos + 1, device=x.device), None)
        for block, c in zip(self.blocks, cache):
            x = block(x, bias, c, pos)
        return self.out_norm(x)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of flow time t in [0, 1]: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
