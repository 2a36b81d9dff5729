"""Restore clips that have no clean reference (singing finetune/test/real rows) with a generative restorer.

gensr.sampling.restore.restore_rows needs a `clean_path` per row; singing inputs handed to the annotator
have none, so this is its reference-free variant: one seeded restoration per clip, shard by shard, each
shard one batched `restore` call written atomically (WAVs, then a shard table whose name carries a
fingerprint of what decides its audio, the inputs' bytes included). A rerun skips finished shards; when all
are done the shard tables are merged into the returned records and removed, and WAVs of other clips are
deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gensr.storage import file_digest, write_parquet

RESTORED_SCHEMA = pa.schema([("deg_id", pa.string()), ("path", pa.string()), ("seed", pa.int64()),
                             ("n_samples", pa.int64())])


def restore_clips(restorer, rows: list[dict], root: Path, out_dir: Path, seed_of: Callable[[str], int], *,
                  shard_clips: int, sample_rate: int, checkpoint_sha256: str, desc: str = "restoring",
                  progress: bool = True) -> dict:
    """Restore each row (`deg_id`, `path` relative to `root`) once with seed `seed_of(deg_id)` into
    out_dir/wav/<deg_id>.wav. Returns {records: [{deg_id, path (relative to out_dir), seed, n_samples}]
    in deg_id order, seconds, shards, shards_resumed}."""
    import torch
    from tqdm import tqdm

    from gensr.audio.io import read_wav, write_wav
    from gensr.train.data import pad_batch

    root, out_dir = Path(root), Path(out_dir)
    rows = sorted(rows, key=lambda r: r["deg_id"])
    ids = [r["deg_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"restore_clips: duplicated deg_id in the rows of {root}")
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = [rows[i : i + shard_clips] for i in range(0, len(rows), shard_clips)]

    def shard_path(i: int, shard: list[dict]) -> Path:
        key = json.dumps([checkpoint_sha256, restorer.sampling, sample_rate,
                          [(r["deg_id"], r["path"], seed_of(r["deg_id"]), file_digest(root / r["path"])) for r in shard]],
                         sort_keys=True, default=str)
        return shard_dir / f"shard-{i:05d}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"

    paths = [shard_path(i, s) for i, s in enumerate(shards)]
    for stale in set(shard_dir.glob("shard-*.parquet")) - set(paths):
        stale.unlink()
    pending = [(s, p) for s, p in zip(shards, paths) if not p.is_file()]
    start = time.perf_counter()
    bar = tqdm(total=len(rows), initial=len(rows) - sum(len(s) for s, _ in pending), unit="clip", desc=desc,
               disable=not progress)
    for shard, path in pending:
        waves = []
        for r in shard:
            audio, sr = read_wav(root / r["path"])
            if sr != sample_rate:
                raise ValueError(f"{root / r['path']}: {sr} Hz, expected audio.sample_rate={sample_rate}")
            waves.append(audio)
        batch, lengths = pad_batch(waves)
        seeds = torch.tensor([[seed_of(r["deg_id"])] for r in shard], dtype=torch.int64)
        out = restorer.restore(batch, 1, seeds, lengths=lengths).numpy()
        records = []
        for b, r in enumerate(shard):
            n = int(lengths[b])
            rel = f"wav/{r['deg_id']}.wav"
            write_wav(out_dir / rel, np.asarray(out[b, 0, :n], dtype=np.float32), sample_rate)
            records.append({"deg_id": r["deg_id"], "path": rel, "seed": int(seeds[b, 0]), "n_samples": n})
        write_parquet(pa.Table.from_pylist(records, schema=RESTORED_SCHEMA), path)
        bar.update(len(shard))
    bar.close()
    table = pa.concat_tables([pq.read_table(p) for p in paths]).cast(RESTORED_SCHEMA) if paths else \
        RESTORED_SCHEMA.empty_table()
    records = sorted(table.to_pylist(), key=lambda r: r["deg_id"])
    keep = {Path(r["path"]).name for r in records}
    for wav in (out_dir / "wav").glob("*") if (out_dir / "wav").is_dir() else []:
        if wav.name not in keep:
            wav.unlink()
    shutil.rmtree(shard_dir, ignore_errors=True)
    return {"records": records, "seconds": round(time.perf_counter() - start, 3), "shards": len(shards),
            "shards_resumed": len(shards) - len(pending)}
