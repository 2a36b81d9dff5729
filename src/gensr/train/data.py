"""Training data for the codec and the restorers: (degraded, clean) clips held in memory,
served as seeded batches of fixed-length random crops.

The demo corpus is small (minutes of audio), so clips are read once; crops are drawn by a
numpy generator seeded from params, which makes every SFT run reproducible regardless of
DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from gensr.audio.io import read_wav
from gensr.train.distributed import rank_rows


@dataclass
class Clip:
    clip_id: str
    degraded: np.ndarray | None
    clean: np.ndarray


def read_manifest(manifest: str | Path, what: str) -> tuple[Path, list[dict]]:
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: {what} manifest not found; build it first (see dvc.yaml)")
    return manifest.parent, sorted(pq.read_table(manifest).to_pylist(), key=lambda r: r.get("deg_id") or r["utt_id"])


def _read(path: Path, sample_rate: int) -> np.ndarray:
    audio, sr = read_wav(path)
    if sr != sample_rate:
        raise ValueError(f"{path}: sample rate {sr} Hz, expected audio.sample_rate={sample_rate}")
    return audio


def load_paired_clips(degraded_manifest: str | Path, split: str, sample_rate: int,
                      limit: int | None = None) -> list[Clip]:
    """(degraded, clean) pairs of one split from the degraded corpus manifest (paths relative to it)."""
    root, rows = read_manifest(degraded_manifest, "degraded corpus")
    rows = [r for r in rows if r["split"] == split][:limit]
    if not rows:
        raise ValueError(f"{degraded_manifest}: no clips in split '{split}'")
    return [
        Clip(r["deg_id"], _read(root / r["path"], sample_rate), _read(root / r["clean_path"], sample_rate))
        for r in tqdm(rows, desc=f"reading {split} clips", leave=False)
    ]


def pad_batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D clips to a [B, T] tensor; returns (batch, lengths)."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return out, lengths


class CropBatches(IterableDataset):
    """`steps` batches of random crops; yields (degraded [B, L], clean [B, L], lengths [B]).

    Clips shorter than the crop are zero-padded and their true length is returned. When the
    clips have no degraded side (codec training) the clean crop is returned twice.
    With `world` > 1 processes, every rank draws the same global batches and yields only its
    rows (gensr.train.distributed.rank_rows): the one-process batches, split.
    """

    def __init__(self, clips: list[Clip], steps: int, batch_size: int, crop_samples: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.clips, self.steps, self.batch_size = clips, steps, batch_size
        self.crop, self.seed = crop_samples, seed
        self.rows = rank_rows(batch_size, rank, world) if world > 1 else None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.steps):
            picks = rng.integers(0, len(self.clips), self.batch_size)
            deg = torch.zeros(self.batch_size, self.crop)
            clean = torch.zeros(self.batch_size, self.crop)
            lengths = torch.zeros(self.batch_size, dtype=torch.long)
            for i, c in enumerate(picks):
                clip = self.clips[c]
                n = len(clip.clean)
                start = int(rng.integers(0, n - self.crop + 1)) if n > self.crop else 0
                take = min(n, self.crop)
                clean[i, :take] = torch.from_numpy(clip.clean[start : start + take])
                src = clip.degraded if clip.degraded is not None else clip.clean
                deg[i, :take] = torch.from_numpy(src[start : start + take])
                lengths[i] = take
            if self.rows is None:
                yield deg, clean, lengths
            else:
                yield deg[self.rows], clean[self.rows], lengths[self.rows]


class CropDataModule(L.LightningDataModule):
    def __init__(self, clips: list[Clip], steps: int, batch_size: int, crop_samples: int, seed: int):
        super().__init__()
        self.dataset = CropBatches(clips, steps, batch_size, crop_samples, seed)

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1:  # built inside each rank's process, where its rank is known
            d = self.dataset
            return DataLoader(CropBatches(d.clips, d.steps, d.batch_size, d.crop, d.seed, self.trainer.global_rank, world),
                              batch_size=None, num_workers=0)
        return DataLoader(self.dataset, batch_size=None, num_workers=0)
