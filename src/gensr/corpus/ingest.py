"""`gensr ingest`: every entry of a folder becomes pipeline audio or a quarantine row, never nothing.

`ingest_directory` admits every file under a folder (gensr.corpus.admit: header checks, block-wise
decoding, 16 kHz mono float32) and writes

    <out>/<same relative name>.wav             one per usable file, or
    <out>/<relative stem>_part000.wav, ...     for long files when ingest.long_files = split
    <out>/quarantine.parquet                   path (relative to <out>), reason
    <out>/.ingest_ledger.jsonl                 what each output was made from (see below)

Every directory entry gets an outcome: kept, or quarantined with a reason. Besides the codes of
gensr.corpus.admit there are the folder's own (gensr.storage.scan_folder): hidden, symlink_loop,
dangling_link, link_to_folder, link_into_output, not_a_regular_file, unreadable_folder; and
name_collision and error (anything unforeseen, one file's problem, not the run's).

No stale output: the ledger records, per source, the sha256 of its bytes, the settings (ingest
params and sample rate) and the files made from it. A rerun reuses a source's outputs only if all
three still match; otherwise the old outputs go before the new ones are written. At the end
every file the ledger ever recorded that this run did not produce is removed (a source deleted or
now rejected, parts of an older max_seconds), and quarantine.parquet, removed when the run starts,
is written last: its presence means a finished run. Killed at any point, a rerun resumes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa

from gensr.audio.io import AudioRejected, write_wav
from gensr.config.corpus import IngestParams
from gensr.corpus.admit import admit, admit_audio  # noqa: F401  (admit_audio: the in-memory form, for callers)
from gensr.storage import atomic_path, file_sha256, scan_folder, write_parquet

QUARANTINE_SCHEMA = pa.schema([pa.field("path", pa.string(), nullable=False), pa.field("reason", pa.string(), nullable=False)])
LEDGER_FILE = ".ingest_ledger.jsonl"
_LEGACY_SETTINGS_FILE = ".ingest_settings.json"  # written by earlier versions; its folder's WAVs are ingest's


def quarantine_table(rows: list[tuple[str, str]]) -> pa.Table:
    rows = sorted(rows)
    return pa.table({"path": [p for p, _ in rows], "reason": [r for _, r in rows]}, schema=QUARANTINE_SCHEMA)


def _part_path(target: Path, index: int) -> Path:
    return target.with_name(f"{target.stem}_part{index:03d}.wav")


class Ledger:
    """Append-only record of what each output was made from; one JSON object per line.

    A line {"source", "sha256", "settings", "outputs"} is written *before* the outputs, so a
    killed run never leaves an output the ledger does not know of.
    """

    def __init__(self, out_dir: Path):
        self.out_dir, self.path = out_dir, out_dir / LEDGER_FILE
        self.entries: dict[str, dict] = {}  # source -> its latest line
        self.owned: set[str] = set()  # every output any line ever named (relative to out_dir)
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
                source, outputs = entry["source"], [str(o) for o in entry["outputs"]]
            except (ValueError, KeyError, TypeError):  # a line torn by a kill
                continue
            self.entries[source] = entry
            self.owned.update(outputs)
        if (out_dir / _LEGACY_SETTINGS_FILE).is_file():
            self.owned.update(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.wav")
                              if not p.name.startswith("."))

    def reusable(self, source: str, sha256: str, settings: str) -> list[str] | None:
        entry = self.entries.get(source)
        if (entry is None or entry.get("sha256") != sha256 or entry.get("settings") != settings
                or not entry["outputs"] or not all((self.out_dir / o).is_file() for o in entry["outputs"])):
            return None
        return list(entry["outputs"])

    def forget(self, source: str) -> None:
        """Remove the outputs an earlier run made from `source` (they are about to be remade or dropped)."""
        for rel in self.entries.get(source, {}).get("outputs", []):
            (self.out_dir / rel).unlink(missing_ok=True)

    def record(self, source: str, sha256: str | None, settings: str, outputs: list[str]) -> None:
        entry = {"source": source, "sha256": sha256, "settings": settings, "outputs": outputs}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
        self.entries[source] = entry
        self.owned.update(outputs)

    def compact(self, keep: dict[str, dict]) -> None:
        """Remove every recorded output not in `keep`'s, then rewrite the ledger as `keep`."""
        current = {o for entry in keep.values() for o in entry["outputs"]}
        for rel in sorted(self.owned - current):
            path = self.out_dir / rel
            path.unlink(missing_ok=True)
            _remove_empty_parents(path.parent, self.out_dir)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(keep[s], sort_keys=True) + "\n" for s in sorted(keep)), encoding="utf-8")
        (self.out_dir / _LEGACY_SETTINGS_FILE).unlink(missing_ok=True)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent


def _remove_killed_temps(out_dir: Path) -> None:
    """Temp files of atomic writes a kill interrupted (.<name>.<random>.tmp.<ext>)."""
    for path in out_dir.rglob(".*.tmp*"):
        if path.is_file():
            path.unlink()


def _one_line(err: Exception) -> str:
    return f"error: {type(err).__name__}: {err}".replace("\n", " ")[:300]


def ingest_directory(in_dir: str | Path, out_dir: str | Path, ingest: IngestParams, sample_rate: int) -> dict:
    """Convert every usable file under `in_dir` into `out_dir`; quarantine the rest. Never raises per file."""
    from tqdm import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"{in_dir}: input audio folder not found")
    if in_dir.resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"--out {out_dir}: is or contains the input folder {in_dir}; outputs could overwrite inputs, "
                         "choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quarantine.parquet").unlink(missing_ok=True)
    _remove_killed_temps(out_dir)
    settings = json.dumps({"ingest": ingest.model_dump(mode="json"), "sample_rate": sample_rate}, sort_keys=True)
    ledger = Ledger(out_dir)

    quarantined: list[tuple[str, str]] = []
    current: dict[str, dict] = {}
    claimed: dict[Path, Path] = {}
    counts = Counter()
    entries = scan_folder(in_dir, skip=[out_dir])
    for entry in tqdm(entries, desc="ingesting", unit="file"):
        source = entry.path
        rel_out = os.path.relpath(source, out_dir)  # quarantine paths are relative to <out>
        if entry.problem is not None:
            quarantined.append((rel_out, entry.problem))
            continue
        rel_source = source.relative_to(in_dir).as_posix()
        target = out_dir / source.relative_to(in_dir).with_suffix(".wav")
        if target in claimed:
            quarantined.append((rel_out, f"name_collision: {claimed[target].relative_to(in_dir)} already maps to "
                                         f"{target.relative_to(out_dir)}"))
            continue
        claimed[target] = source
        try:
            sha256 = file_sha256(source)
        except OSError as err:
            ledger.forget(rel_source)
            quarantined.append((rel_out, f"unreadable: {type(err).__name__}: {err.strerror}"))
            continue
        reused = ledger.reusable(rel_source, sha256, settings)
        if reused is not None:
            current[rel_source] = ledger.entries[rel_source]
            counts["reused"] += 1
            continue
        ledger.forget(rel_source)
        try:
            admitted = admit(source, ingest, sample_rate)
            paths = [target] if len(admitted.bounds) == 1 else [_part_path(target, i) for i in range(len(admitted.bounds))]
            outputs = [p.relative_to(out_dir).as_posix() for p in paths]
            ledger.record(rel_source, sha256, settings, outputs)  # before writing: a kill leaves nothing unknown
            for path, segment in zip(paths, admitted.segments()):
                write_wav(path, segment, sample_rate)
            current[rel_source] = ledger.entries[rel_source]
            counts["written"] += 1
            counts["split"] += len(paths) > 1
        except AudioRejected as err:
            quarantined.append((rel_out, err.reason))
        except Exception as err:  # anything unforeseen is one file's problem, not the run's
            quarantined.append((rel_out, _one_line(err)))

    ledger.compact(current)
    write_parquet(quarantine_table(quarantined), out_dir / "quarantine.parquet")
    reasons = Counter(reason.split(":", 1)[0] for _, reason in quarantined)
    return {
        "n_files": len(entries),
        "n_kept": counts["written"] + counts["reused"],
        "n_written": counts["written"],
        "n_reused": counts["reused"],
        "n_split": counts["split"],
        "n_quarantined": len(quarantined),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "out_dir": str(out_dir),
    }
