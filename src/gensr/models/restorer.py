"""The interface every generative restorer implements, plus seeding and checkpoints.

A restorer maps degraded 16 kHz waveforms [B, T] to restored ones. The three paradigms
(AR, MGM, FM) subclass `Restorer` and implement three things:

- `sft_loss(degraded, clean)`: the supervised training objective (a scalar);
- `restore(degraded, n_candidates, seeds)`: N candidates per clip in ONE batched call,
  [B, N, T]; candidate j draws all its randomness from a generator seeded with seeds[j]
  (or seeds[b, j] when a [B, N] tensor is given), so equal seeds give equal outputs. It runs
  the per-clip `context` (the conditioning encoders) once per clip and `generate` for the
  candidates, so the work a clip's candidates share is done once;
- `preference_score(degraded, target, seeds)`: a differentiable per-sample score [B] that
  DPO compares between policy and reference; its randomness (mask, step, t, noise) comes
  from seeds[b], so chosen/rejected and policy/reference can share it.

Token restorers (AR, MGM) can also return the codec tokens they sampled (`restore(...,
return_codes=True)`); DPO then scores those tokens (`preference_score(..., codes=...)`) rather than
a re-encoding of the decoded waveform, which differs from what the model generated.

Per-clip randomness is drawn with the clip's own length (from `lengths`), so a clip's output
does not depend on the other clips in its batch. Checkpoints hold the config (plain types)
and the state dict and load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gensr.models import features as feats
from gensr.storage import save_torch

CHECKPOINT_FORMAT = "gensr-restorer/1"


def row_seed(seed: int) -> int:
    """Spread a user seed into a well-mixed 63-bit generator seed (nearby seeds -> unrelated streams)."""
    return int(np.random.SeedSequence(int(seed) % (2**63)).generate_state(1, dtype=np.uint64)[0] % (2**63))


def candidate_seeds(seeds: Sequence[int] | Tensor, batch: int, n_candidates: int) -> Tensor:
    """[B, N] int64 seeds: a length-N sequence is shared by every clip, a [B, N] tensor is per clip."""
    s = torch.as_tensor(seeds, dtype=torch.int64)
    if s.ndim == 1:
        if s.numel() != n_candidates:
            raise ValueError(f"restore: got {s.numel()} seeds for n_candidates={n_candidates}; pass one per candidate")
        s = s.unsqueeze(0).expand(batch, n_candidates)
    if tuple(s.shape) != (batch, n_candidates):
        raise ValueError(f"restore: seeds must have shape [{n_candidates}] or [{batch}, {n_candidates}], got {tuple(s.shape)}")
    return s


def generators(seeds: Tensor) -> list[torch.Generator]:
    """One CPU generator per seed (flattened in row-major order)."""
    return [torch.Generator().manual_seed(row_seed(int(s))) for s in seeds.reshape(-1).tolist()]


def repeat_rows(ctx: dict[str, Tensor], mask: Tensor, n: int) -> tuple[dict[str, Tensor], Tensor]:
    """Per-clip context and mask -> one row per candidate (clip-major: row r is clip r // n)."""
    return {k: v.repeat_interleave(n, 0) for k, v in ctx.items()}, mask.repeat_interleave(n, 0)


def draw_padded(gens: list[torch.Generator], valid_frames: Tensor, shape_after: tuple, frames: int,
                kind: str = "normal", lead: tuple = ()) -> Tensor:
    """Per-row random tensor [R, *lead, frames, *shape_after]; each row draws only its valid frames."""
    out = torch.zeros(len(gens), *lead, frames, *shape_after)
    for r, (g, n) in enumerate(zip(gens, valid_frames.tolist())):
        size = (*lead, n, *shape_after)
        draw = torch.randn(size, generator=g) if kind == "normal" else torch.rand(size, generator=g)
        out[r, ..., :n, :] = draw
    return out


class Restorer(nn.Module):
    """Abstract base: degraded waveform -> restored waveform candidates (see module doc)."""

    paradigm: ClassVar[str] = ""

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.stft_cfg = feats.StftConfig(**config["stft"])
        # Sampling knobs (temperature, steps, ...) may be changed after training without retraining.
        self.sampling = dict(config.get("sampling", {}))

    # --- the protocol -------------------------------------------------------------------
    def sft_loss(self, degraded: Tensor, clean: Tensor, lengths: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def restore(self, degraded: Tensor, n_candidates: int, seeds: Sequence[int] | Tensor,
                lengths: Tensor | None = None, return_codes: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
        """[B, T] -> [B, N, T]; samples beyond a clip's length (when `lengths` is given) are zero.

        With `return_codes`, also the sampled tokens [B, N, frames, K] of a token restorer (None for FM);
        the waveforms are the same either way.
        """
        b, t = degraded.shape
        row_seeds = candidate_seeds(seeds, b, n_candidates)
        prep = self.prepare(degraded, lengths)
        gens = generators(row_seeds)  # row r = clip r // N, candidate r % N
        # the per-clip context (conditioning encoders) runs once per clip, not once per candidate
        log_mag, codes = self.generate_with_codes(self.context(prep["cond"], prep["mask"]), prep["mask"], gens,
                                                  n_candidates)
        log_mag = log_mag.view(b, n_candidates, *log_mag.shape[1:])
        # silence after each clip's end so that padding never leaks into the overlap-add; the clip's
        # mask and phase broadcast over its candidates instead of being copied N times
        log_mag = log_mag.masked_fill(~prep["mask"][:, None, :, None], float(np.log(self.stft_cfg.log_floor)))
        wave = feats.to_waveform(log_mag, prep["phasor"].unsqueeze(1), t, self.stft_cfg)
        if lengths is not None:
            wave = wave * (torch.arange(t)[None, :] < lengths.to(torch.long)[:, None]).unsqueeze(1)
        if not return_codes:
            return wave
        return wave, (None if codes is None else codes.view(b, n_candidates, *codes.shape[1:]))

    def preference_score(self, degraded: Tensor, target: Tensor, seeds: Tensor,
                         lengths: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    # --- the frozen trunk (optional) -------------------------------------------------------
    # Prefixes of the parameters that act only after `head_inputs` (e.g. AR's output heads). When a fit trains
    # nothing else, everything before them is a fixed function of a pair, so DPO computes it once per pair and
    # trains on it (gensr.align.data.PairTensors.attach_head_inputs). None: the restorer has no such cut.
    head_prefixes: ClassVar[tuple[str, ...] | None] = None

    def head_inputs(self, degraded: Tensor, target: Tensor, lengths: Tensor | None = None,
                    codes: Tensor | None = None) -> dict[str, Tensor]:
        """The frozen part of `preference_score` and `sft_loss` for a (degraded, target) batch: named tensors [B, ...]."""
        raise NotImplementedError(f"{type(self).__name__} has no frozen trunk (head_prefixes is None)")

    def preference_from_heads(self, inputs: dict[str, Tensor]) -> Tensor:
        """`preference_score` from `head_inputs`: equal up to float rounding, differentiable in the head parameters."""
        raise NotImplementedError(f"{type(self).__name__} has no frozen trunk (head_prefixes is None)")

    def sft_from_heads(self, inputs: dict[str, Tensor]) -> Tensor:
        """`sft_loss` from `head_inputs` (of the SFT target)."""
        raise NotImplementedError(f"{type(self).__name__} has no frozen trunk (head_prefixes is None)")

    # --- shared pieces -------------------------------------------------------------------
    def context(self, cond_log_mag: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Per-clip work shared by all candidates of a clip: degraded log-magnitude [B, frames, bins]
        -> named tensors [B, ...]."""
        raise NotImplementedError

    def generate(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator], n_candidates: int) -> Tensor:
        """Per-clip context and mask [B, frames] -> restored log-magnitude [B * N, frames, bins],
        row r = candidate r % N of clip r // N, drawing its randomness from gens[r]."""
        raise NotImplementedError

    def generate_with_codes(self, ctx: dict[str, Tensor], mask: Tensor, gens: list[torch.Generator],
                            n_candidates: int) -> tuple[Tensor, Tensor | None]:
        """`generate` plus the sampled tokens [B * N, frames, K]; None for a restorer without tokens."""
        return self.generate(ctx, mask, gens, n_candidates), None

    def prepare(self, degraded: Tensor, lengths: Tensor | None) -> dict:
        """Degraded log-magnitude (model input), phase reference and the frame validity mask."""
        spec = feats.clipwise_stft(degraded, lengths, self.stft_cfg)
        mask = feats.frame_mask(lengths, spec.shape[0], spec.shape[1], self.stft_cfg.hop, degraded.device)
        return {
            "cond": feats.log_magnitude(spec, self.stft_cfg),
            "phasor": feats.phase_reference(degraded, self.stft_cfg, lengths),
            "mask": mask,
        }

    def log_magnitude(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        return feats.log_magnitude(feats.clipwise_stft(wave, lengths, self.stft_cfg), self.stft_cfg)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # --- checkpoints -------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "paradigm": self.paradigm,
            "config": {**self.config, "sampling": dict(self.sampling)},
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
            "extra": extra or {},
        }
        return save_torch(payload, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> "Restorer":
        payload = read_checkpoint(path, map_location)
        from gensr.models.registry import restorer_class

        klass = restorer_class(payload["paradigm"])
        if cls is not Restorer and not issubclass(klass, cls):
            raise TypeError(f"{path}: holds a '{payload['paradigm']}' restorer, not a {cls.__name__}")
        model = klass(payload["config"])
        model.load_state_dict(payload["state_dict"])
        model.eval()
        return model


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (run `gensr train-base` / `gensr train-codec` first)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:  # not a torch file, or cut short
        raise ValueError(f"{path}: not a readable checkpoint ({' '.join(str(err).split())[:160]})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a gensr restorer checkpoint (expected format {CHECKPOINT_FORMAT})")
    return payload
