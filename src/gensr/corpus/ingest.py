"""Admitting user audio: one function decides what a file becomes, a batch never dies on a file.

`admit_audio` turns one file into pipeline audio (16 kHz mono float32), splitting or rejecting
files longer than ingest.max_seconds. `ingest_directory` (the `gensr ingest` tool) applies it to
every file under a folder and writes

    <out>/<same relative name>.wav             one per usable file, or
    <out>/<relative stem>_part000.wav, ...     for long files when ingest.long_files = split
    <out>/quarantine.parquet                   path (relative to <out>), reason

Reasons are the stable codes of gensr.audio.io.load_audio (empty_file, unreadable, no_samples,
non_finite, silent, too_short) plus too_long, name_collision and error.
Outputs are written atomically; a rerun with the same params skips the files already written, so
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from gensr.audio.io import AudioRejected, load_audio, write_wav
from gensr.config.corpus import IngestParams
from gensr.storage import write_json, write_parquet

QUARANTINE_SCHEMA = pa.schema([pa.field("path", pa.string(), nullable=False), pa.field("reason", pa.string(), nullable=False)])
_SETTINGS_FILE = ".ingest_settings.json"


def admit_audio(path: str | Path, ingest: IngestParams, sample_rate: int, *, allow_split: bool = True) -> list[np.ndarray]:
    """One file as a list of mono float32 segments at `sample_rate`, or raise AudioRejected.

    A file longer than ingest.max_seconds becomes equal parts no longer than the limit when
    ingest.long_files is 'split' and `allow_split` (a transcribed utterance cannot be split).
    """
    audio = load_audio(path, sample_rate, min_seconds=ingest.min_seconds, silence_dbfs=ingest.silence_dbfs)
    max_len = int(ingest.max_seconds * sample_rate)
    if audio.size <= max_len:
        return [audio]
    seconds = audio.size / sample_rate
    if ingest.long_files == "reject" or not allow_split:
        fix = "set ingest.long_files: split" if allow_split else "cut it into sentences with their own transcripts"
        raise AudioRejected(path, f"too_long: {seconds:.2f} s > ingest.max_seconds={ingest.max_seconds} ({fix}, or raise the limit)")
    n_parts = math.ceil(audio.size / max_len)
    bounds = np.linspace(0, audio.size, n_parts + 1).round().astype(int)
    return [audio[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def quarantine_table(rows: list[tuple[str, str]]) -> pa.Table:
    rows = sorted(rows)
    return pa.table({"path": [p for p, _ in rows], "reason": [r for _, r in rows]}, schema=QUARANTINE_SCHEMA)


def _source_files(in_dir: Path, out_dir: Path) -> list[Path]:
    """Every regular, non-hidden file under in_dir (outside out_dir), in a stable order."""
    out_resolved = out_dir.resolve()
    files = []
    for path in in_dir.rglob("*"):
        rel = path.relative_to(in_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.resolve().is_relative_to(out_resolved):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(in_dir).as_posix())


def _part_path(target: Path, index: int) -> Path:
    return target.with_name(f"{target.stem}_part{index:03d}.wav")


def ingest_directory(in_dir: str | Path, out_dir: str | Path, ingest: IngestParams, sample_rate: int) -> dict:
    """Convert every usable file under `in_dir` into `out_dir`; quarantine the rest. Never raises per file."""
    from tqdm import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"{in_dir}: input audio folder not found")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Existing outputs are reused only if the settings file says they were made with these settings.
    # It is written before work starts in a fresh folder, and only at the end when settings changed,
    # so a crash never leaves outputs of old settings looking current.
    settings = json.loads(json.dumps({"ingest": ingest.model_dump(mode="json"), "sample_rate": sample_rate}))
    settings_path = out_dir / _SETTINGS_FILE
    try:
        previous = json.loads(settings_path.read_text())
    except (OSError, ValueError):
        previous = None
    trust_existing = previous == settings
    if not trust_existing:
        settings_path.unlink(missing_ok=True)
        if not any(out_dir.rglob("*.wav")):
            write_json(settings, settings_path)

    quarantined: list[tuple[str, str]] = []
    claimed: dict[Path, Path] = {}
    counts = Counter()
    sources = _source_files(in_dir, out_dir)
    for source in tqdm(sources, desc="ingesting", unit="file"):
        rel_source = os.path.relpath(source, out_dir)
        target = out_dir / source.relative_to(in_dir).with_suffix(".wav")
        if target in claimed:
            quarantined.append((rel_source, f"name_collision: {claimed[target].relative_to(in_dir)} already maps to {target.relative_to(out_dir)}"))
            continue
        claimed[target] = source
        # Parts are written last-to-first, so part000 existing means the whole file is done.
        if trust_existing and (target.is_file() or _part_path(target, 0).is_file()):
            counts["reused"] += 1
            continue
        try:
            segments = admit_audio(source, ingest, sample_rate)
            if len(segments) == 1:
                write_wav(target, segments[0], sample_rate)
            else:
                for index in reversed(range(len(segments))):
                    write_wav(_part_path(target, index), segments[index], sample_rate)
                counts["split"] += 1
            counts["written"] += 1
        except AudioRejected as err:
            quarantined.append((rel_source, err.reason))
        except Exception as err:  # anything unforeseen is one file's problem, not the run's
            quarantined.append((rel_source, f"error: {type(err).__name__}: {err}".replace("\n", " ")[:300]))

    write_parquet(quarantine_table(quarantined), out_dir / "quarantine.parquet")
    write_json(settings, settings_path)
    reasons = Counter(reason.split(":", 1)[0] for _, reason in quarantined)
    return {
        "n_files": len(sources),
        "n_kept": counts["written"] + counts["reused"],
        "n_written": counts["written"],
        "n_reused": counts["reused"],
        "n_split": counts["split"],
        "n_quarantined": len(quarantined),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "out_dir": str(out_dir),
    }
