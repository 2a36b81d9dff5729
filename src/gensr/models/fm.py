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
finite as t -> 1. Sampling takes `ode_steps` Euler steps from a seeded eps; the first
`shared_steps` of them run once per clip (see `generate`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gensr.models import features as feats
from gensr.models.blocks import ConvStack, timestep_embedding
from gensr.models.restorer import Restorer, draw_padded, generators, repeat_rows


class VelocityNet(nn.Module):
    """The correction x1_hat - y given (x_t, t, y): residual dilated convolutions, FiLM-conditioned on t."""

    def __init__(self, n_bins: int, hidden: int, layers: int, kernel: int, time_dim: int):
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.body = ConvStack(2 * n_bins, hidden, layers, kernel, film_dim=hidden)
        self.out = nn.Linear(hidden, n_bins)
        nn.init.zeros_(self.out.weight)  # start as the identity restorer: x1_hat = y
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        film = self.time_mlp(timestep_embedding(t, self.time_dim))
        return self.out(self.body(torch.cat([x_t, y], dim=-1), mask, film)) * mask.unsqueeze(-1)


def endpoint(net: VelocityNet, x_t: Tensor, t: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """x1_hat: the degraded features plus the net's correction (zero at init: identity restorer)."""
    return (y + net(x_t, t, y, mask)) * mask.unsqueeze(-1)


class FMRestorer(Restorer):
    paradigm = "fm"

    def __init__(self, config: dict):
        super().__init__(config)
        m = config["model"]
        self.noise_scale = float(m["noise_scale"])
        self.score_draws = int(m["score_draws"])
        self.norm = feats.FeatureNorm(self.stft_cfg.n_bins)
        self.velocity = VelocityNet(self.stft_cfg.n_bins, m["hidden"], m["layers"], m["kernel"], m["time_dim"])

    @classmethod
    def build(cls, stft: dict, model: dict, sampling: dict) -> "FMRestorer":
        return cls({"stft": stft, "model": model, "sampling": sampling})

    def _flow_inputs(self, degraded: Tensor, target: Tensor, lengths: Tensor | None):
        y = self.norm(self.log_magnitude(degraded, lengths))
        x1 = self.norm(self.log_magnitude(target, lengths))
        mask = feats.frame_mask(lengths, y.shape[0], y.shape[1], self.stft_cfg.hop, degraded.device)
        return y * mask.unsqueeze(-1), x1 * mask.unsqueeze(-1), mask

    def _velocity_mse(self, y, x1, mask, t, eps) -> Tensor:
        """Per-sample (1 - t)^2-weighted velocity MSE over valid frames and bins: [B].

        (1 - t)^2 * |v_hat - v|^2 = |x1_hat - x1|^2, since v_hat - v = (x1_hat - x1) / (1 - t).
        """
        x0 = y + self.noise_scale * eps
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        err = (endpoint(self.velocity, x_t, t, y, mask) - x1).pow(2) * mask.unsqueeze(-1)
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
        total = torch.zeros(y.shape[0], device=y.device)
        for _ in range(self.score_draws):
            t = torch.stack([torch.rand((), generator=g) for g in gens])
            eps = draw_padded(gens, mask.sum(1), (y.shape[-1],), y.shape[1])
            total = total + self._velocity_mse(y, x1, mask, t, eps)
        return -0.5 * total / self.score_draws

    def context(self, cond_log_mag: Tensor, mask: Tensor) -> dict[str, Tensor]:
        return {"y": self.norm(cond_log_mag) * mask.unsqueeze(-1)}

    def generate(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator], n_candidates: int) -> Tensor:
        """Euler steps of the flow, the first `shared_steps` once per clip.

        Along the training path x_t = (1 - t)(y + sigma * eps) + t * x1, a candidate's noise is
        the term (1 - t) * sigma * eps. So the first `shared_steps` steps run once per clip from
        the noise-free start x0 = y, and each candidate joins at t_k = shared_steps / ode_steps
        with its own noise at the scale the path has there, (1 - t_k) * sigma * noise_factor * eps.
        With shared_steps = 0 this is the plain sampler from x0 = y + sigma * noise_factor * eps.
        Candidates still differ only by their noise seed; what they share is computed once.
        """
        steps = int(self.sampling["ode_steps"])
        shared = int(self.sampling.get("shared_steps", 0))
        if not 0 <= shared < steps:
            raise ValueError(f"restorers.fm.sampling.shared_steps={shared} must be in [0, ode_steps={steps})")
        y = ctx["y"]
        x = y
        for i in range(shared):  # per clip: every candidate of a clip follows this part of the path
            x = self._euler_step(x, y, mask, i, steps)
        ctx, row_mask = repeat_rows({"x": x, "y": y}, mask, n_candidates)
        eps = draw_padded(gens, row_mask.sum(1), (y.shape[-1],), y.shape[1])
        scale = self.noise_scale * float(self.sampling["noise_factor"]) * (1 - shared / steps)
        x = ctx["x"] + scale * eps
        for i in range(shared, steps):
            x = self._euler_step(x, ctx["y"], row_mask, i, steps)
        return self.norm.inverse(x)

    def _euler_step(self, x: Tensor, y: Tensor, mask: Tensor, i: int, steps: int) -> Tensor:
        """Euler step i of `steps` (dt = 1/steps) with v = (x1_hat - x) / (1 - t)."""
        t = torch.full((y.shape[0],), i / steps)
        x1_hat = endpoint(self.velocity, x, t, y, mask)
        return x + (x1_hat - x) / (steps - i)
