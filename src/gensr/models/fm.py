"""Flow-matching (FM) restorer over normalised log-magnitude frames.

The flow starts near the degraded features, x0 = y + sigma * eps, and ends at the clean
features x1; along x_t = (1 - t) x0 + t x1 the target velocity is x1 - x0. Starting from
the degraded input keeps the path short, which is what lets a small net trained for minutes
restore well, while sigma (`noise_scale`) gives candidates their variety.

The net predicts the endpoint, x1_hat = y + net(x_t, t, y), and the velocity follows as
v_hat = (x1_hat - x_t) / (1 - t). With a minutes-long CPU budget this parameterisation is
what removes the start noise reliably: the last Euler step lands exactly on x1_hat. The
training loss and the DPO score are the velocity MSE weighted by (1 - t)^2 (the usual
flow-matching weighting for this parameterisation), i.e. the endpoint MSE, which stays
finite as t -> 1. Sampling takes `ode_steps` Euler steps from a seeded eps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gensr.models import features as feats
from gensr.models.blocks import ConvStack, timestep_embedding
from gensr.models.restorer import Restorer, draw_padded, generators, repeat_rows


class VelocityNet(nn.Module):
    """The correction x1_hat - y given (x_t, t, y), in two parts.

    - `encode(y)`, once per clip: a deep residual conv encoder of the degraded features. It
      gives a clip-level correction (the restorer's estimate of clean - degraded) and the
      features the head reads. A clip's candidates share it, and so do the ODE steps.
    - `head(x_t, t, enc)`, per candidate and step: a light FiLM(t)-conditioned conv stack
      over the flow state that refines the clip-level estimate for this candidate's x_t.

    Most of the work is in the encoder, so N candidates cost little more than one (the
    sampling benchmark's N = 8 vs N = 1). Both output layers start at zero: x1_hat = y.
    """

    def __init__(self, n_bins: int, hidden: int, layers: int, kernel: int, time_dim: int,
                 head_hidden: int, head_layers: int):
        super().__init__()
        self.time_dim = time_dim
        self.encoder = ConvStack(n_bins, hidden, layers, kernel)
        self.clip_out = nn.Linear(hidden, n_bins)
        self.to_head = nn.Linear(hidden, head_hidden)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, head_hidden), nn.GELU(), nn.Linear(head_hidden, head_hidden))
        self.head = ConvStack(n_bins, head_hidden, head_layers, kernel, film_dim=head_hidden)
        self.out = nn.Linear(head_hidden, n_bins)
        for layer in (self.clip_out, self.out):  # start as the identity restorer: x1_hat = y
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode(self, y: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Per-clip part: {"base": clip-level correction [B, T, bins], "feats": head input [B, T, head_hidden]}."""
        h = self.encoder(y, mask)
        return {"base": self.clip_out(h) * mask.unsqueeze(-1), "feats": self.to_head(h)}

    def refine(self, x_t: Tensor, t: Tensor, feats: Tensor, mask: Tensor) -> Tensor:
        """Per-candidate part: the head's refinement for flow state x_t at time t [B, T, bins]."""
        film = self.time_mlp(timestep_embedding(t, self.time_dim))
        return self.out(self.head(x_t, mask, film, extra=feats)) * mask.unsqueeze(-1)

    def correction(self, x_t: Tensor, t: Tensor, enc: dict[str, Tensor], mask: Tensor) -> Tensor:
        """x1_hat - y for flow state x_t at time t, given the clip's encoding."""
        return enc["base"] + self.refine(x_t, t, enc["feats"], mask)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        return self.correction(x_t, t, self.encode(y, mask), mask)


def endpoint(net: VelocityNet, x_t: Tensor, t: Tensor, y: Tensor, mask: Tensor,
             enc: dict[str, Tensor] | None = None) -> Tensor:
    """x1_hat: the degraded features plus the net's correction (zero at init: identity restorer).
    Pass `enc = net.encode(y, mask)` to reuse a clip's encoding across steps and candidates."""
    enc = net.encode(y, mask) if enc is None else enc
    return (y + net.correction(x_t, t, enc, mask)) * mask.unsqueeze(-1)


class FMRestorer(Restorer):
    paradigm = "fm"

    def __init__(self, config: dict):
        super().__init__(config)
        m = config["model"]
        self.noise_scale = float(m["noise_scale"])
        self.score_draws = int(m["score_draws"])
        self.norm = feats.FeatureNorm(self.stft_cfg.n_bins)
        self.velocity = VelocityNet(self.stft_cfg.n_bins, m["hidden"], m["layers"], m["kernel"], m["time_dim"],
                                    m["head_hidden"], m["head_layers"])

    @classmethod
    def build(cls, stft: dict, model: dict, sampling: dict) -> "FMRestorer":
        return cls({"stft": stft, "model": model, "sampling": sampling})

    def _flow_inputs(self, degraded: Tensor, target: Tensor, lengths: Tensor | None):
        y = self.norm(self.log_magnitude(degraded, lengths))
        x1 = self.norm(self.log_magnitude(target, lengths))
        mask = feats.frame_mask(lengths, y.shape[0], y.shape[1], self.stft_cfg.hop, degraded.device)
        return y * mask.unsqueeze(-1), x1 * mask.unsqueeze(-1), mask

    def _velocity_mse(self, y, x1, mask, t, eps, enc=None) -> Tensor:
        """Per-sample (1 - t)^2-weighted velocity MSE over valid frames and bins: [B].

        (1 - t)^2 * |v_hat - v|^2 = |x1_hat - x1|^2, since v_hat - v = (x1_hat - x1) / (1 - t).
        """
        x0 = y + self.noise_scale * eps
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        err = (endpoint(self.velocity, x_t, t, y, mask, enc) - x1).pow(2) * mask.unsqueeze(-1)
        return err.sum(dim=(1, 2)) / (mask.sum(1) * y.shape[-1])

    def sft_loss(self, degraded: Tensor, clean: Tensor, lengths: Tensor | None = None) -> Tensor:
        y, x1, mask = self._flow_inputs(degraded, clean, lengths)
        t = torch.rand(y.shape[0], device=y.device)
        eps = torch.randn_like(y) * mask.unsqueeze(-1)
        return self._velocity_mse(y, x1, mask, t, eps).mean()

    def preference_score(self, degraded: Tensor, target: Tensor, seeds: Tensor,
                         lengths: Tensor | None = None) -> Tensor:
        """-0.5 * the (1 - t)^2-weighted velocity MSE, averaged over `score_draws` (t, eps) draws from seeds[b]."""
        y, x1, mask = self._flow_inputs(degraded, target, lengths)
        gens = generators(torch.as_tensor(seeds, dtype=torch.int64))
        enc = self.velocity.encode(y, mask)  # y does not depend on the draw
        total = torch.zeros(y.shape[0], device=y.device)
        for _ in range(self.score_draws):
            t = torch.stack([torch.rand((), generator=g) for g in gens])
            eps = draw_padded(gens, mask.sum(1), (y.shape[-1],), y.shape[1])
            total = total + self._velocity_mse(y, x1, mask, t, eps, enc)
        return -0.5 * total / self.score_draws

    def context(self, cond_log_mag: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Once per clip, for every step and candidate: the normalised degraded features y, the
        clip-level endpoint estimate y + base, and the features the per-candidate head reads."""
        y = self.norm(cond_log_mag) * mask.unsqueeze(-1)
        enc = self.velocity.encode(y, mask)
        return {"y": y, "anchor": y + enc["base"], "feats": enc["feats"]}

    def generate(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator], n_candidates: int) -> Tensor:
        """Euler steps of every candidate's own x_t; only the light head runs per candidate and step."""
        ctx, mask = repeat_rows(ctx, mask, n_candidates)
        y, anchor, feats = ctx["y"], ctx["anchor"], ctx["feats"]
        eps = draw_padded(gens, mask.sum(1), (y.shape[-1],), y.shape[1])
        x = y + self.noise_scale * float(self.sampling["noise_factor"]) * eps
        steps = int(self.sampling["ode_steps"])
        for i in range(steps):
            t = torch.full((y.shape[0],), i / steps)
            x1_hat = anchor + self.velocity.refine(x, t, feats, mask)  # = endpoint(...), base computed once
            x = torch.lerp(x, x1_hat, 1.0 / (steps - i))  # Euler step dt = 1/steps with v = (x1_hat - x) / (1 - t)
        return self.norm.inverse(x)
