"""Files in and out.

- Atomic writes: every output appears whole or not at all, so a crashed run can resume; it gets the
  mode a plain open() would give (0666 & ~umask), not tempfile's 0600.
- Names and paths that come from data (an utt_id from a manifest, an id from a pair table) are
  checked before they become a file name (`check_file_name`) or a path under an output folder
  (`path_inside`), so no row can write outside the folder it was meant for.
- `scan_folder` lists every entry under an input folder with an outcome: a file to read, or a
  reason it cannot be read (link loop, dangling link, FIFO, unreadable folder, ...); nothing vanishes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


def current_umask() -> int:
    """The process umask. Read from /proc where it can be: os.umask() can only be read by setting
    it, which would race with other threads creating files."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        os.chmod(tmp_path, 0o666 & ~current_umask())
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


def remove_killed_writes_of(folder: str | Path, names: Iterable[str]) -> None:
    """remove_killed_writes for the targets `names` only: what one process cleans of its own
    interrupted writes while other processes write other targets into the same folder (one
    Dagster shard partition beside another), whose live temp files must stay."""
    folder = Path(folder)
    names = set(names)
    for tmp in folder.glob(".*.tmp*") if folder.is_dir() and names else ():
        rest = tmp.name[1:]
        # atomic_path names it .<target>.<random>.tmp<suffix>: some prefix ending before a '.' is the target
        owned = any(rest[:k] in names and ".tmp" in rest[k:] for k in range(len(rest)) if rest[k] == ".")
        if owned and tmp.is_file():
            tmp.unlink(missing_ok=True)


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


def summary_beside(folder: str | Path) -> Path:
    """Where a stage whose output is a folder records its run summary (wall `seconds`, counts): `<folder>.json`,
    beside the folder, as `degraded_test.json` sits beside `degraded_test.parquet`. Not inside it: the folder is a
    DVC dependency of later stages, and a timing inside it would rerun all of them after a rerun whose outputs are
    the same bytes (`make bench` reads these files)."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.json"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | Path | None, memo: dict | None = None) -> str | None:
    """sha256 of a file's bytes (None for no path, 'missing' for a path that names no file, 'not a file' for a
    folder). Resume keys use it: work done on a file's old bytes must not be resumed after the file changed under
    the same path. `memo` (path -> digest) lets one key that names a file many times (a reference shared by N
    candidates) hash it once; nothing is remembered across calls, because a file replaced within one mtime tick
    can keep its size, mtime and even its inode number (the old inode is freed and reused)."""
    if path is None:
        return None
    key = str(path)
    if memo is not None and key in memo:
        return memo[key]
    try:
        st = os.stat(path)
    except OSError:
        digest = "missing"
    else:
        digest = file_sha256(path) if stat.S_ISREG(st.st_mode) else "not a file"
    if memo is not None:
        memo[key] = digest
    return digest


def require_path(path: str | Path, what: str, fix: str) -> Path:
    """`path`, or FileNotFoundError naming it, what it is and the command that makes it (a stage's missing input)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: {what} not found; {fix}")
    return Path(path)


# ---------------------------------------------------------------- names and paths from data

MAX_NAME_BYTES = 200  # leaves room for suffixes ("__d0.wav") under the usual 255-byte limit
_UNSAFE_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]")


class UnsafeName(ValueError):
    """An id or path from data that would land outside its folder, or is no usable file name."""


def check_file_name(name, what: str) -> str:
    """`name` if it can be used as one file name inside an output folder, else raise UnsafeName.

    Refused: non-strings, empty names, '.' and '..', names starting with '.' (hidden, and the
    atomic writer's temp prefix), path separators, control characters, and names over
    MAX_NAME_BYTES bytes. `what` names the field in the message, e.g. "utt_id".
    """
    if not isinstance(name, str) or not name:
        raise UnsafeName(f"{what} {name!r} is empty or not text; it must be a non-empty file name")
    if name.startswith(".") or _UNSAFE_CHARS.search(name):
        raise UnsafeName(f"{what} {name!r} cannot be a file name (no leading '.', no '/' or '\\', no control characters)")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UnsafeName(f"{what} {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
    return name


def path_inside(root: str | Path, rel: str | Path, what: str) -> Path:
    """root / rel, or raise UnsafeName if it would resolve outside `root` (.., absolute, a link out)."""
    root = Path(root).resolve()
    target = (root / rel).resolve()
    if target == root or not target.is_relative_to(root):
        raise UnsafeName(f"{what} {str(rel)!r} resolves outside {root}")
    return target


# ---------------------------------------------------------------- scanning an input folder


@dataclass(frozen=True)
class FolderEntry:
    """One entry under a scanned folder: `problem` is None for a file to read, else the reason it can't be."""

    path: Path
    problem: str | None = None


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def _special_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), f"not a regular file (mode {oct(mode)})")


def scan_folder(root: str | Path, skip: Iterable[str | Path] = ()) -> list[FolderEntry]:
    """Every entry under `root`, in a stable order, each with an outcome; nothing is opened.

    Regular files, and links to regular files, are files to read. Hidden entries (a name starting
    with '.') are reported once, without descending. Links to folders are not followed (they can
    loop or leave the tree); link loops, dangling links, FIFOs, sockets, devices and folders that
    cannot be listed are reported with their reason. Folders in `skip` (e.g. an output folder
    inside the input) and everything under them are left out. Raises OSError only if `root`
    itself cannot be listed.
    """
    root = Path(root)
    skip_resolved = {Path(p).resolve() for p in skip}
    entries: list[FolderEntry] = []

    def walk(folder: Path, is_root: bool) -> None:
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as err:
            if is_root:
                raise
            entries.append(FolderEntry(folder, f"unreadable_folder: {type(err).__name__}: {err.strerror}"))
            return
        for child in children:
            path = Path(child.path)
            try:
                lmode = os.lstat(path).st_mode
            except OSError as err:  # vanished or unreadable since listing
                entries.append(FolderEntry(path, f"unreadable: {type(err).__name__}: {err.strerror}"))
                continue
            if stat.S_ISDIR(lmode) and path.resolve() in skip_resolved:
                continue
            if child.name.startswith("."):
                entries.append(FolderEntry(path, "hidden: names starting with '.' are not read"))
            elif stat.S_ISLNK(lmode):
                entries.append(_link_entry(path, skip_resolved))
            elif stat.S_ISDIR(lmode):
                walk(path, False)
            elif stat.S_ISREG(lmode):
                entries.append(FolderEntry(path))
            else:
                entries.append(FolderEntry(path, f"not_a_regular_file: {_special_kind(lmode)}"))

    walk(root, True)
    return sorted(entries, key=lambda e: e.path.relative_to(root).as_posix())


def _link_entry(path: Path, skip_resolved: set[Path]) -> FolderEntry:
    target = os.readlink(path)
    try:
        mode = os.stat(path).st_mode  # follows the link
    except FileNotFoundError:
        return FolderEntry(path, f"dangling_link: points to '{target}', which does not exist")
    except OSError as err:
        if err.errno == errno.ELOOP:
            return FolderEntry(path, f"symlink_loop: '{target}' leads back to itself")
        return FolderEntry(path, f"unreadable: {type(err).__name__}: {err.strerror}")
    if stat.S_ISDIR(mode):
        return FolderEntry(path, f"link_to_folder: '{target}' is not followed (a linked folder can loop or leave the input)")
    if not stat.S_ISREG(mode):
        return FolderEntry(path, f"not_a_regular_file: links to {_special_kind(mode)}")
    resolved = path.resolve()
    if any(resolved.is_relative_to(s) for s in skip_resolved):
        return FolderEntry(path, f"link_into_output: '{target}' points into the output folder")
    return FolderEntry(path)
