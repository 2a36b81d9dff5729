"""Atomic writes: every output appears whole or not at all, so a crashed run can resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_killed_writes(folder: str | Path, name: str = "*") -> None:
    """Delete the temp files atomic_path left in `folder` for targets matching `name` when the
    process was killed inside the block (no `finally` runs on SIGKILL), so a resumed run's
    folder holds exactly the files of an uninterrupted one."""
    folder = Path(folder)
    for tmp in folder.glob(f".{name}.*.tmp*") if folder.is_dir() else ():
        if tmp.is_file():
            tmp.unlink()


def save_torch(payload, path: str | Path) -> Path:
    """torch.save atomically and byte-reproducibly. Saved to a path, torch names the records inside
    the zip after the (here random, temporary) file name, so equal weights would hash differently;
    through a buffer the record name is fixed."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    """Write a Parquet table atomically, deterministically (no timestamps, fixed row groups)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    return Path(path)


def write_json(obj, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
