"""Pair tensors for DPO: degraded input, chosen and rejected waveforms, the per-pair seed.

Each pair is cropped to a fixed segment with an offset drawn from its own seed (the same crop
for degraded/chosen/rejected, and the same crop every epoch), so cached reference scores stay
valid. Clips shorter than the segment are zero-padded (`longest_pair_seconds` gives the segment
that crops nothing). Everything is loaded once: the demo pair sets are small, and loading in the
training loop would cost more than the model on 2 cores.

When the pair table carries the tokens the restorer sampled (`*_codes_path`, AR/MGM), they are
cropped to the same segment: the offset is then a multiple of the STFT hop, so segment frame j is
clip frame offset / hop + j. Frames without a token (padding, or a chosen clean reference) hold -1
and the model fills them from the codec encoding of the waveform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from gensr.audio.io import read_wav
from gensr.models.features import n_frames


def longest_pair_seconds(pairs: pd.DataFrame, pairs_dir: str | Path, sample_rate: int) -> float:
    """The segment that crops no pair: the longest pair, a pair being as long as its shortest file.

    `dpo.segment_seconds: null` uses it, so that DPO scores the whole clip its metrics judged. Only
    the WAV headers are read.
    """
    pairs_dir = Path(pairs_dir)
    longest = 0
    for row in pairs.itertuples():
        frames = []
        for kind in ("degraded", "chosen", "rejected"):
            path = pairs_dir / getattr(row, f"{kind}_path")
            info = sf.info(str(path))
            if info.samplerate != sample_rate:
                raise ValueError(f"{path}: sample rate {info.samplerate} != audio.sample_rate {sample_rate}")
            frames.append(info.frames)
        longest = max(longest, min(frames))
    if not longest:
        raise ValueError(f"{pairs_dir}: no pair audio to size dpo.segment_seconds from")
    return longest / sample_rate


def crop_or_pad(wave: np.ndarray, length: int, offset: int) -> np.ndarray:
    if len(wave) >= length:
        return wave[offset : offset + length]
    return np.pad(wave, (0, length - len(wave)))


class PairTensors(Dataset):
    """All pairs of one role held as [P, T] float tensors (+ optional cached reference scores)."""

    def __init__(self, pairs: pd.DataFrame, pairs_dir: str | Path, sample_rate: int, segment_seconds: float,
                 hop: int | None = None, with_clean: bool = False):
        self.pairs = pairs.reset_index(drop=True)
        pairs_dir = Path(pairs_dir)
        length = int(round(segment_seconds * sample_rate))
        code_cols = [f"{kind}_codes_path" for kind in ("chosen", "rejected")]
        with_codes = all(c in self.pairs for c in code_cols) and bool(self.pairs[code_cols].notna().any(axis=None))
        if with_codes and not hop:
            raise ValueError("pairs carry sampled tokens (*_codes_path): PairTensors needs the restorer's STFT hop")
        deg, cho, rej, clean = [], [], [], []
        codes = {"chosen": [], "rejected": []}
        kinds = ("degraded", "chosen", "rejected", "clean") if with_clean else ("degraded", "chosen", "rejected")
        for row in tqdm(self.pairs.itertuples(), total=len(self.pairs), desc="load pairs", leave=False):
            waves = {}
            for kind in kinds:
                path = pairs_dir / getattr(row, f"{kind}_path")
                wave, sr = read_wav(path)
                if sr != sample_rate:
                    raise ValueError(f"{path}: sample rate {sr} != audio.sample_rate {sample_rate}")
                waves[kind] = wave
            n = min(len(w) for w in waves.values())
            rng = np.random.default_rng(int(row.seed))
            if with_codes:
                offset = hop * int(rng.integers(0, max(n - length, 0) // hop + 1))
            else:
                offset = int(rng.integers(0, max(n - length, 0) + 1))
            deg.append(crop_or_pad(waves["degraded"][:n], length, offset))
            cho.append(crop_or_pad(waves["chosen"][:n], length, offset))
            rej.append(crop_or_pad(waves["rejected"][:n], length, offset))
            if with_clean:
                clean.append(crop_or_pad(waves["clean"][:n], length, offset))
            if with_codes:
                for kind in codes:
                    codes[kind].append(crop_codes(pairs_dir, getattr(row, f"{kind}_codes_path"), offset // hop,
                                                  n_frames(length, hop), n_frames(n, hop)))
        self.degraded = torch.from_numpy(np.stack(deg)) if deg else torch.zeros(0, length)
        self.chosen = torch.from_numpy(np.stack(cho)) if cho else torch.zeros(0, length)
        self.rejected = torch.from_numpy(np.stack(rej)) if rej else torch.zeros(0, length)
        self.seeds = torch.tensor(self.pairs["seed"].to_numpy(np.int64)) if len(self.pairs) else torch.zeros(0, dtype=torch.int64)
        self.clean = (torch.from_numpy(np.stack(clean)) if clean else torch.zeros(0, length)) if with_clean else None
        self.chosen_codes = self.rejected_codes = None
        if with_codes:
            k = max(c.shape[1] for c in codes["chosen"] + codes["rejected"] if c.shape[1])
            self.chosen_codes, self.rejected_codes = (
                torch.from_numpy(np.stack([c if c.shape[1] else np.full((len(c), k), -1, np.int64) for c in codes[kind]]))
                for kind in ("chosen", "rejected"))
        self.ref_chosen: torch.Tensor | None = None
        self.ref_rejected: torch.Tensor | None = None
        self.head_inputs: dict[str, dict[str, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    @torch.no_grad()
    def attach_head_inputs(self, model, batch_size: int, kinds: tuple[str, ...]) -> None:
        """Run `model`'s frozen trunk once over every pair (`Restorer.head_inputs` of degraded with each of `kinds`:
        chosen, rejected, clean) and keep the result, so that a fit of the heads alone never runs the trunk again.

        Exact as long as the trunk does not change: only a model whose trained parameters all sit under its
        `head_prefixes` may use it (gensr.align.train.trains_heads_only). Memory: per pair and kind, the hidden
        states [frames, d] in float32 (about 128 KB for a 4 s AR demo clip).
        """
        if "clean" in kinds and self.clean is None:
            raise ValueError("head inputs of the clean references need PairTensors(with_clean=True)")
        was_training = model.training
        model.eval()
        out: dict[str, dict[str, list]] = {kind: {} for kind in kinds}
        for start in tqdm(range(0, len(self), batch_size), desc="trunk (once per pair)", leave=False):
            sl = slice(start, start + batch_size)
            for kind in kinds:
                codes = getattr(self, f"{kind}_codes", None)
                got = model.head_inputs(self.degraded[sl], getattr(self, kind)[sl], None,
                                        None if codes is None else codes[sl])
                for name, value in got.items():
                    out[kind].setdefault(name, []).append(value)
        model.train(was_training)
        self.head_inputs = {kind: {name: torch.cat(parts) for name, parts in named.items()}
                            for kind, named in out.items()}

    def head_slice(self, kind: str, index) -> dict[str, torch.Tensor]:
        return {name: value[index] for name, value in self.head_inputs[kind].items()}

    def set_reference_scores(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        if len(chosen) != len(self) or len(rejected) != len(self):
            raise ValueError(f"reference scores for {len(chosen)} pairs, dataset has {len(self)}")
        self.ref_chosen, self.ref_rejected = chosen.float(), rejected.float()

    def __getitem__(self, i: int) -> dict:
        item = {"degraded": self.degraded[i], "chosen": self.chosen[i], "rejected": self.rejected[i],
                "seed": self.seeds[i], "index": i}
        if self.ref_chosen is not None:
            item["ref_chosen"], item["ref_rejected"] = self.ref_chosen[i], self.ref_rejected[i]
        if self.chosen_codes is not None:
            item["chosen_codes"], item["rejected_codes"] = self.chosen_codes[i], self.rejected_codes[i]
        if self.clean is not None:
            item["clean"] = self.clean[i]
        if self.head_inputs is not None:
            item["head_inputs"] = {kind: self.head_slice(kind, i) for kind in self.head_inputs}
        return item


def crop_codes(pairs_dir: Path, rel: str | None, first: int, frames: int, clip_frames: int) -> np.ndarray:
    """Frames [first, first + frames) of a candidate's sampled tokens, -1 where there are none.

    No file (e.g. the clean reference chosen by gt_as_chosen) gives a [frames, 0] placeholder.
    """
    if not isinstance(rel, str):
        return np.zeros((frames, 0), np.int64)
    path = pairs_dir / rel
    codes = np.load(path)
    if codes.ndim != 2 or len(codes) != clip_frames:
        raise ValueError(f"{path}: tokens of shape {codes.shape}, expected [{clip_frames}, K] for the paired audio")
    out = np.full((frames, codes.shape[1]), -1, np.int64)
    part = codes[first : first + frames]
    out[: len(part)] = part
    return out


@torch.no_grad()
def score_pairs(model, data: PairTensors, batch_size: int, desc: str = "reference scores") -> tuple[torch.Tensor, torch.Tensor]:
    """Preference scores of chosen and rejected under `model`, with each pair's own seed.

    Chosen and rejected go through one call (stacked), exactly as in the training step, so a
    model with batch-dependent randomness still sees the same seed for both sides.
    """
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    heads = data.head_inputs is not None and {"chosen", "rejected"} <= set(data.head_inputs)
    for start in tqdm(range(0, len(data), batch_size), desc=desc, leave=False):
        sl = slice(start, start + batch_size)
        if heads:  # the trunk already ran once per pair (attach_head_inputs)
            c, r = stacked_head_scores(model, data.head_slice("chosen", sl), data.head_slice("rejected", sl))
        else:
            codes = (None, None) if data.chosen_codes is None else (data.chosen_codes[sl], data.rejected_codes[sl])
            c, r = stacked_scores(model, data.degraded[sl], data.chosen[sl], data.rejected[sl], data.seeds[sl], *codes)
        chosen.append(c)
        rejected.append(r)
    model.train(was_training)
    empty = torch.zeros(0)
    return (torch.cat(chosen) if chosen else empty), (torch.cat(rejected) if rejected else empty)


def stacked_scores(model, degraded, chosen, rejected, seeds, chosen_codes=None,
                   rejected_codes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One preference_score call on [chosen; rejected] (2B clips), split back into two (B,) tensors.

    With the candidates' sampled tokens (AR/MGM), the score is that of those tokens."""
    b = degraded.shape[0]
    kwargs = {} if chosen_codes is None else {"codes": torch.cat([chosen_codes, rejected_codes])}
    scores = model.preference_score(torch.cat([degraded, degraded]), torch.cat([chosen, rejected]),
                                    torch.cat([seeds, seeds]), **kwargs)
    return scores[:b], scores[b:]


def stacked_head_scores(model, chosen: dict, rejected: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """`stacked_scores` from the pairs' head inputs: one `preference_from_heads` call on [chosen; rejected]."""
    b = next(iter(chosen.values())).shape[0]
    scores = model.preference_from_heads({name: torch.cat([chosen[name], rejected[name]]) for name in chosen})
    return scores[:b], scores[b:]
