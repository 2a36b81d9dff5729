"""Run a restorer over degraded clips, shard by shard: WAVs + a manifest (the layer below the stages).

`restore_rows` is the loop `gensr sample` (N candidates per clip of the preference pool) and
every evaluation (seeded restorations of a held-out split) share:
    <out_dir>/wav/<name>.wav, <out_dir>/codes/<name>.npy (AR/MGM candidates: the sampled tokens,
    int32 [frames, K]), <out_dir>/manifest.parquet (paths relative to the manifest's folder).
A shard is one batched `restore` call over `shard_clips` clips x N samples, written atomically
as WAVs plus a shard table whose name carries a fingerprint of everything that decides its
audio (checkpoint hash, sampling knobs, clip ids, seeds, the degraded inputs' bytes). A rerun
skips finished shards; stale shards, orphan WAVs and the temp files of writes a kill interrupted
are removed, so a run killed at any point and rerun leaves the same files as one never interrupted
(tests/test_crash_resume.py).
`restore_rows_part` runs only the shards i with i % parts == part and writes no manifest: one
Dagster shard partition (docs/scaling.md); it removes only the temp files of its own shards' files,
never those a partition running beside it is writing.

Splits are read from the degraded corpus (`data/degraded`), except `confirm`, which lives in a
corpus of its own (`data/confirm/degraded`) that only the final evaluation reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from gensr.config import Params
from gensr.corpus.splits import CONFIRM, in_split
from gensr.layout import confirm_degraded_manifest, degraded_manifest
from gensr.storage import file_digest, file_sha256, remove_killed_writes, remove_killed_writes_of, write_parquet

CANDIDATE_COLUMNS = [
    ("cand_id", pa.string()), ("deg_id", pa.string()), ("utt_id", pa.string()), ("paradigm", pa.string()),
    ("candidate", pa.int32()), ("seed", pa.int64()), ("path", pa.string()), ("codes_path", pa.string()),
    ("clean_path", pa.string()),
    ("degraded_path", pa.string()), ("text", pa.string()), ("speaker", pa.string()), ("split", pa.string()),
]
CANDIDATE_SCHEMA = pa.schema(CANDIDATE_COLUMNS)
RESTORED_SCHEMA = pa.schema([c for c in CANDIDATE_COLUMNS if c[0] not in ("cand_id", "candidate", "codes_path")])


# --- seeds and clip selection ----------------------------------------------------------------
def clip_seed(base_seed: int, deg_id: str, candidate: int, purpose: str = "sample") -> int:
    """Seed of one (clip, candidate): stable across shardings, batchings and processes."""
    digest = hashlib.sha256(f"{purpose}:{base_seed}:{deg_id}:{candidate}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def select_clips(rows: list[dict], n_clips: int | None, seed: int) -> list[dict]:
    """A seeded subset of `n_clips` rows (all when null), returned in deg_id order."""
    rows = sorted(rows, key=lambda r: r["deg_id"])
    if n_clips is None or n_clips >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=n_clips, replace=False))
    return [rows[i] for i in keep]


def split_rows(params: Params, split: str) -> tuple[Path, list[dict]]:
    """(folder of the degraded manifest, its rows in `split`): a corpus split, `dev`, or `confirm`."""
    if split == CONFIRM:
        manifest = confirm_degraded_manifest(params)
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: confirm set not found; run `gensr confirm-corpus` first")
        return manifest.parent, pq.read_table(manifest).to_pylist()
    manifest = degraded_manifest(params)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: degraded corpus manifest not found; run `gensr degrade` first")
    rows = pq.read_table(manifest).to_pylist()
    keep = in_split([r["split"] for r in rows], [r["utt_id"] for r in rows], split, params.pairs.heldout_fraction)
    rows = [r for r, k in zip(rows, keep) if k]
    if not rows:
        hint = (" (corpus.split.pref is 0: give the preference pool a share, then rebuild the corpus and degrade)"
                if split == "pref" else "")
        raise ValueError(f"{manifest}: no clips in split '{split}'{hint}")
    return manifest.parent, rows


# --- the shared restore loop ---------------------------------------------------------------------
def relative_path(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def load_for_sampling(params: Params, paradigm: str, checkpoint: Path):
    """The restorer in `checkpoint`, with the sampling knobs of the current params."""
    import torch

    from gensr.models import load_restorer

    torch.set_num_threads(params.restorers.threads)
    restorer = load_restorer(checkpoint)
    if restorer.paradigm != paradigm:
        raise ValueError(f"{checkpoint}: holds a '{restorer.paradigm}' restorer, not '{paradigm}'")
    # sampling knobs come from the current params, so changing them needs no retraining
    restorer.sampling.update(getattr(params.restorers, paradigm).sampling.model_dump())
    return restorer


class RestorePlan:
    """The shards of one restore job: which clips each batched call takes and the file that marks it done.

    A shard's file name carries a fingerprint of everything that decides its audio, so any process
    that builds the same plan (a stage run, or one Dagster shard partition) agrees on every name.
    """

    def __init__(self, params: Params, paradigm: str, checkpoint: Path, rows: list[dict], deg_root: Path,
                 out_dir: Path, n_candidates: int, seed_of, candidate_ids: bool, shard_clips: int,
                 save_codes: bool = True):
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: checkpoint not found; run `gensr train-base --paradigm {paradigm}`")
        self.params, self.paradigm, self.checkpoint, self.rows = params, paradigm, checkpoint, rows
        self.deg_root, self.out_dir, self.n_candidates, self.seed_of = deg_root, out_dir, n_candidates, seed_of
        self.candidate_ids, self.save_codes = candidate_ids, save_codes
        self.restorer = load_for_sampling(params, paradigm, checkpoint)
        self.sr = params.audio.sample_rate
        self.shard_dir = out_dir / "shards"
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_hash = file_sha256(checkpoint)
        self.shards = [rows[i : i + shard_clips] for i in range(0, len(rows), shard_clips)]
        self.schema = CANDIDATE_SCHEMA if candidate_ids else RESTORED_SCHEMA
        self.paths = [self._shard_path(i, s) for i, s in enumerate(self.shards)]
        for stale in set(self.shard_dir.glob("shard-*.parquet")) - set(self.paths):
            stale.unlink(missing_ok=True)  # another shard partition may be removing it too

    def _shard_path(self, i: int, shard: list[dict]) -> Path:
        key = json.dumps([self.ckpt_hash, self.restorer.sampling, self.n_candidates, self.sr,
                          {"codes": self.candidate_ids and self.save_codes},
                          [(r["deg_id"], [self.seed_of(r["deg_id"], j) for j in range(self.n_candidates)],
                            file_digest(self.deg_root / r["path"])) for r in shard]],
                         sort_keys=True)
        return self.shard_dir / f"shard-{i:05d}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"

    def pending(self, part: int = 0, parts: int = 1) -> list[tuple[list[dict], Path]]:
        """Unfinished shards i with i % parts == part (every unfinished shard by default)."""
        return [(s, p) for i, (s, p) in enumerate(zip(self.shards, self.paths)) if i % parts == part and not p.is_file()]

    def remove_killed_writes(self, part: int = 0, parts: int = 1) -> None:
        """Remove the temp files a kill inside an atomic write left in the job's folders. The whole job
        (parts=1) removes every one, as an uninterrupted run leaves none; a shard partition only those of
        its own shards' tables, WAVs and codes, since partitions beside it may be writing theirs."""
        folders = (self.out_dir, self.shard_dir, self.out_dir / "wav", self.out_dir / "codes")
        if parts == 1:
            for folder in folders:
                remove_killed_writes(folder)
            return
        mine = [(s, p) for i, (s, p) in enumerate(zip(self.shards, self.paths)) if i % parts == part]
        names = [self._file_name(r, j) for s, _ in mine for r in s for j in range(self.n_candidates)]
        remove_killed_writes_of(self.shard_dir, [p.name for _, p in mine])
        remove_killed_writes_of(self.out_dir / "wav", [f"{n}.wav" for n in names])
        remove_killed_writes_of(self.out_dir / "codes", [f"{n}.npy" for n in names])

    def _file_name(self, r: dict, j: int) -> str:
        """The file stem of candidate j of clip r (the clip's deg_id when the job has no candidate ids)."""
        return f"{r['deg_id']}__c{j}" if self.candidate_ids else r["deg_id"]

    def run(self, pending: list[tuple[list[dict], Path]], desc: str, total: int | None = None) -> float:
        """Restore and write the `pending` shards; returns the seconds it took."""
        start = time.perf_counter()
        total = len(self.rows) if total is None else total
        bar = tqdm(total=total, initial=total - sum(len(s) for s, _ in pending), unit="clip", desc=desc)
        for shard, path in pending:
            self._restore_shard(shard, path)
            bar.update(len(shard))
        bar.close()
        return time.perf_counter() - start

    def _restore_shard(self, shard: list[dict], path: Path) -> None:
        import torch

        from gensr.audio.io import read_wav, write_wav
        from gensr.models.features import n_frames
        from gensr.storage import atomic_path
        from gensr.train.data import pad_batch

        out_dir, deg_root, sr, n_candidates = self.out_dir, self.deg_root, self.sr, self.n_candidates
        waves = []
        for r in shard:
            audio, file_sr = read_wav(deg_root / r["path"])
            if file_sr != sr:
                raise ValueError(f"{deg_root / r['path']}: {file_sr} Hz, expected audio.sample_rate={sr}")
            waves.append(audio)
        batch, lengths = pad_batch(waves)
        seeds = torch.tensor([[self.seed_of(r["deg_id"], j) for j in range(n_candidates)] for r in shard],
                             dtype=torch.int64)
        out, codes = self.restorer.restore(batch, n_candidates, seeds, lengths=lengths, return_codes=True)
        out = out.numpy()
        records = []
        for b, r in enumerate(shard):
            for j in range(n_candidates):
                name = self._file_name(r, j)
                wav = out_dir / "wav" / f"{name}.wav"
                write_wav(wav, out[b, j, : int(lengths[b])], sr)
                codes_path = None
                if self.candidate_ids and self.save_codes and codes is not None:
                    codes_path = f"codes/{name}.npy"
                    (out_dir / "codes").mkdir(exist_ok=True)
                    with atomic_path(out_dir / codes_path) as tmp, open(tmp, "wb") as fh:
                        np.save(fh, codes[b, j, : n_frames(int(lengths[b]), self.restorer.stft_cfg.hop)].numpy().astype(np.int32))
                rec = {
                    "cand_id": name, "deg_id": r["deg_id"], "utt_id": r["utt_id"], "paradigm": self.paradigm,
                    "candidate": j, "seed": int(seeds[b, j]), "path": f"wav/{name}.wav", "codes_path": codes_path,
                    "clean_path": relative_path(deg_root / r["clean_path"], out_dir),
                    "degraded_path": relative_path(deg_root / r["path"], out_dir),
                    "text": r["text"], "speaker": r["speaker"], "split": r["split"],
                }
                records.append({k: rec[k] for k in self.schema.names})
        write_parquet(pa.Table.from_pylist(records, schema=self.schema), path)

    def assemble(self) -> tuple[Path, pa.Table]:
        """The manifest from every shard file (all must exist); files no shard lists are removed."""
        out_dir, schema = self.out_dir, self.schema
        table = pa.concat_tables([pq.read_table(p) for p in self.paths]).cast(schema)
        table = table.sort_by([(schema.names[0], "ascending")])
        manifest = write_parquet(table, out_dir / "manifest.parquet")
        keep = {Path(p).name for p in table.column("path").to_pylist()}
        for wav in (out_dir / "wav").glob("*"):
            if wav.name not in keep:
                wav.unlink()
        keep_codes = {Path(p).name for p in table.column("codes_path").to_pylist() if p} if self.candidate_ids else set()
        for npy in (out_dir / "codes").glob("*"):
            if npy.name not in keep_codes:
                npy.unlink()
        return manifest, table


def restore_rows(params: Params, paradigm: str, checkpoint: Path, rows: list[dict], deg_root: Path,
                  out_dir: Path, n_candidates: int, seed_of, candidate_ids: bool, shard_clips: int,
                  desc: str, save_codes: bool = True) -> dict:
    """Restore `rows` (degraded clips under `deg_root`) with `checkpoint`, `n_candidates` seeded samples each."""
    plan = RestorePlan(params, paradigm, checkpoint, rows, deg_root, out_dir, n_candidates, seed_of, candidate_ids,
                       shard_clips, save_codes)
    plan.remove_killed_writes()
    pending = plan.pending()
    seconds = plan.run(pending, desc)
    manifest, table = plan.assemble()
    return {
        "path": str(manifest),
        "paradigm": paradigm,
        "checkpoint": str(plan.checkpoint),
        "checkpoint_sha256": plan.ckpt_hash,
        "n_clips": len(rows),
        "n_candidates": n_candidates,
        "n_rows": table.num_rows,
        "shards": len(plan.shards),
        "shards_resumed": len(plan.shards) - len(pending),
        "seconds": round(seconds, 3),
        "sampling": dict(plan.restorer.sampling),
    }


def restore_rows_part(params: Params, paradigm: str, checkpoint: Path, rows: list[dict], deg_root: Path,
                      out_dir: Path, n_candidates: int, seed_of, candidate_ids: bool, shard_clips: int,
                      desc: str, part: int, parts: int, save_codes: bool = True) -> dict:
    """Only the shards i with i % parts == part of the `restore_rows` job with the same arguments, and no manifest:
    one Dagster shard partition. `restore_rows` afterwards finds them done and assembles the same bytes."""
    if not 0 <= part < parts:
        raise ValueError(f"shard {part} is not one of 0..{parts - 1} (scaleout.shards={parts})")
    plan = RestorePlan(params, paradigm, checkpoint, rows, deg_root, out_dir, n_candidates, seed_of, candidate_ids,
                       shard_clips, save_codes)
    plan.remove_killed_writes(part, parts)
    mine = [(s, p) for i, (s, p) in enumerate(zip(plan.shards, plan.paths)) if i % parts == part]
    pending = plan.pending(part, parts)
    seconds = plan.run(pending, f"{desc} [shard {part}/{parts}]", total=sum(len(s) for s, _ in mine))
    return {
        "paradigm": paradigm,
        "part": part,
        "parts": parts,
        "checkpoint_sha256": plan.ckpt_hash,
        "n_clips": sum(len(s) for s, _ in mine),
        "n_candidates": n_candidates,
        "shards": len(mine),
        "shards_resumed": len(mine) - len(pending),
        "shard_files": [str(p) for _, p in mine],
        "seconds": round(seconds, 3),
    }


def restore_split(params: Params, paradigm: str, checkpoint: str | Path, split: str = "test",
                  out_dir: str | Path | None = None, max_clips: int | None = None, samples: int = 1) -> Path:
    """Restore every clip of `split` (seeded per clip); returns the manifest path.

    Default out_dir: <checkpoint dir>/restored_<split>. Clips are the first `max_clips` by deg_id.
    With `samples` > 1 every clip is restored that many times (rows `<deg_id>__c<j>` with the
    candidate columns); sample 0 has the seed of the single restoration.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples} (evaluate.samples_per_clip)")
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / f"restored_{split}"
    deg_root, rows = split_rows(params, split)
    rows = sorted(rows, key=lambda r: r["deg_id"])[:max_clips]
    restore_rows(params, paradigm, checkpoint, rows, deg_root, out_dir, samples,
                  lambda deg_id, j: clip_seed(params.sample.seed, deg_id, j, purpose="restore"), samples > 1,
                  params.restorers.restore_batch, f"restoring {split} ({paradigm})", save_codes=False)
    return out_dir / "manifest.parquet"


