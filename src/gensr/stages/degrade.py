"""Stage `degrade`: the clean corpus -> degraded copies + a manifest of exactly what was applied.

Output (out_dir): wav/<deg_id>.wav (sample-aligned with the clean file), manifest.parquet
(one row per degraded clip, schema MANIFEST_SCHEMA) and quarantine.parquet (path, reason) for
clean files or user noise/RIR files that could not be used.

Resume: clips are processed in shards; a finished shard leaves a Parquet of its rows under
out_dir/.shards/<fingerprint>/, where the fingerprint covers the params, the clean manifest and
the bytes of every clean file and user noise/RIR file, so a rerun after a crash skips finished
shards and any change starts afresh. The result does not depend on `workers` or `shard_size`:
every clip has its own generator.

No stale manifest: manifest.parquet and quarantine.parquet are removed before the first WAV is
written and the manifest is written last, after WAVs no longer described are removed; so a
manifest, when present, describes exactly the WAVs beside it, even after a kill.

Ids from the clean manifest become file names: an utt_id that is empty, hidden, holds a path
separator (`../../x`) or names more than one row is quarantined (bad_utt_id), never written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from gensr.audio.io import read_wav, write_wav
from gensr.config import Params, params_from_dict
from gensr.corpus.degrade import BabblePool, audio_folder, clip_rng, degrade
from gensr.storage import (UnsafeName, check_file_name, file_sha256, path_inside, write_json,
                           write_parquet)

CLEAN_COLUMNS = ("utt_id", "path", "text", "speaker", "split")

MANIFEST_SCHEMA = pa.schema(
    [
        ("deg_id", pa.string()),
        ("utt_id", pa.string()),
        ("copy", pa.int64()),
        ("path", pa.string()),
        ("clean_path", pa.string()),
        ("text", pa.string()),
        ("speaker", pa.string()),
        ("split", pa.string()),
        ("seed", pa.int64()),
        ("degradations", pa.string()),  # JSON list of {"type": ..., params...} in applied order
        ("noise_kind", pa.string()),
        ("snr_db", pa.float64()),
        ("rt60_s", pa.float64()),
        ("clip_threshold", pa.float64()),
        ("band_rate_hz", pa.int64()),
        ("loss_rate", pa.float64()),
        ("codec_kind", pa.string()),
        ("codec_bits", pa.int64()),
        ("codec_level", pa.float64()),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int64()),
    ]
)
QUARANTINE_SCHEMA = pa.schema([("path", pa.string()), ("reason", pa.string())])

# applied-step key -> manifest column, per degradation type
TYPE_COLUMNS = {
    "noise": {"kind": "noise_kind", "snr_db": "snr_db"},
    "reverb": {"rt60_s": "rt60_s"},
    "clipping": {"threshold": "clip_threshold"},
    "bandlimit": {"rate_hz": "band_rate_hz"},
    "packet_loss": {"loss_rate": "loss_rate"},
    "codec": {"kind": "codec_kind", "bits": "codec_bits", "level": "codec_level"},
}


def deg_id(utt_id: str, copy: int) -> str:
    return f"{utt_id}__d{copy}"


def manifest_row(clean: dict, copy: int, applied: list[dict], n_samples: int, params: Params, rel_clean: str) -> dict:
    did = deg_id(clean["utt_id"], copy)
    row = {
        "deg_id": did,
        "utt_id": clean["utt_id"],
        "copy": copy,
        "path": f"wav/{did}.wav",
        "clean_path": rel_clean,
        "text": clean["text"],
        "speaker": clean["speaker"],
        "split": clean["split"],
        "seed": params.seed,
        "degradations": json.dumps(applied),
        "duration_s": n_samples / params.audio.sample_rate,
        "sample_rate": params.audio.sample_rate,
    }
    row.update({col: None for cols in TYPE_COLUMNS.values() for col in cols.values()})
    for step in applied:
        for key, col in TYPE_COLUMNS[step["type"]].items():
            row[col] = step.get(key)
    return row


def fingerprint(params: Params, clean_manifest: Path, sources: dict[str, str] | None = None) -> str:
    """Identifies one run's outputs: everything that changes them, nothing that doesn't.

    `sources`: name -> sha256 of every input file read (clean WAVs, user noise/RIR files)."""
    deg = params.degrade.model_dump(mode="json", exclude={"workers", "shard_size"})
    key = {"seed": params.seed, "audio": params.audio.model_dump(mode="json"), "degrade": deg}
    key["clean_manifest"] = file_sha256(clean_manifest)
    if sources:
        key["sources"] = dict(sorted(sources.items()))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _read_clean_manifest(clean_dir: Path, sample_rate: int) -> list[dict]:
    path = clean_dir / "manifest.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no clean manifest; run `gensr corpus` first or pass --clean <corpus dir>")
    table = pq.read_table(path)
    missing = [c for c in CLEAN_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; the clean manifest must have {list(CLEAN_COLUMNS)}")
    if "sample_rate" in table.column_names:
        rates = set(table.column("sample_rate").to_pylist())
        if rates - {sample_rate}:
            raise ValueError(f"{path}: sample rates {sorted(rates)} differ from audio.sample_rate={sample_rate}")
    rows = sorted(table.select(list(CLEAN_COLUMNS)).to_pylist(), key=lambda r: (r["utt_id"] is None, str(r["utt_id"])))
    if not rows:
        raise ValueError(f"{path}: the clean manifest is empty; nothing to degrade")
    return rows


# ---------------------------------------------------------------- one shard (runs in a worker)


@functools.lru_cache(maxsize=4)
def _clean_index(clean_dir: str, sample_rate: int, stamp: tuple, unusable: frozenset) -> tuple[dict, dict]:
    """Per process: utt_id -> clean row, and split -> babble pool of the usable clips (stamp: manifest mtime/size)."""
    rows = [r for r in _read_clean_manifest(Path(clean_dir), sample_rate) if r["utt_id"] not in unusable]
    pools = {}
    for split, split_rows in _by_split(rows).items():
        paths = {r["utt_id"]: Path(clean_dir) / r["path"] for r in split_rows}
        pools[split] = BabblePool({r["utt_id"]: r["speaker"] for r in split_rows}, lambda u, p=paths: read_wav(p[u])[0])
    return {r["utt_id"]: r for r in rows}, pools


def _by_split(rows: list[dict]) -> dict[str, list[dict]]:
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r["split"], []).append(r)
    return by_split


def _read_clean(path: Path, sample_rate: int) -> np.ndarray:
    audio, sr = read_wav(path)
    if sr != sample_rate:
        raise ValueError(f"sample_rate: {sr} Hz, expected {sample_rate}")
    if audio.size == 0 or not np.isfinite(audio).all() or not np.any(audio):
        raise ValueError("unusable: empty, silent or non-finite samples")
    return audio


def _rel_to_out(clean_dir: Path, rel_clean, out_dir: Path) -> str:
    return os.path.relpath(os.path.abspath(clean_dir / str(rel_clean)), os.path.abspath(out_dir))


def _bad_ids(rows: list[dict], clean_dir: Path, out_dir: Path) -> tuple[set, list[dict]]:
    """Ids that cannot name an output file, or name more than one clean row: (ids, quarantine rows)."""
    counts = Counter(r["utt_id"] for r in rows)
    ids, rejects = set(), []
    for r in rows:
        try:
            check_file_name(r["utt_id"], "utt_id")
            if counts[r["utt_id"]] > 1:
                raise UnsafeName(f"utt_id {r['utt_id']!r} names {counts[r['utt_id']]} rows of the clean manifest")
        except UnsafeName as err:
            ids.add(r["utt_id"])
            rejects.append({"path": _rel_to_out(clean_dir, r["path"], out_dir), "reason": f"bad_utt_id: {err}"[:300]})
    return ids, rejects


def _unusable_clean(rows: list[dict], clean_dir: Path, out_dir: Path, sample_rate: int) -> tuple[dict, dict]:
    """Read every clean file once up front, so that a bad one is neither degraded nor mixed into babble.

    Returns (utt_id -> quarantine row of the unusable, utt_id -> sha256 of the usable)."""
    bad, hashes = {}, {}
    root = clean_dir.resolve()
    for r in tqdm(rows, desc="check clean", unit="clip", leave=False, disable=len(rows) < 1000):
        try:
            if not isinstance(r["path"], str) or not (clean_dir / r["path"]).resolve().is_relative_to(root):
                raise ValueError(f"path escapes the corpus folder {clean_dir}")
            _read_clean(clean_dir / r["path"], sample_rate)
            hashes[r["utt_id"]] = file_sha256(clean_dir / r["path"])
        except Exception as err:  # a bad clean file is data, not a crash
            bad[r["utt_id"]] = {"path": _rel_to_out(clean_dir, r["path"], out_dir),
                                "reason": f"{type(err).__name__}: {err}"[:300]}
    return bad, hashes


def _check_babble_speakers(params: Params, rows: list[dict]) -> None:
    noise = params.degrade.noise
    if "babble" not in noise.kinds or noise.prob == 0 or "noise" not in params.degrade.order:
        return
    for split, split_rows in _by_split(rows).items():
        if len({r["speaker"] for r in split_rows}) < 2:
            raise ValueError(
                f"babble noise mixes other speakers of the same split, but split '{split}' has one speaker; "
                "remove 'babble' from degrade.noise.kinds or give every split at least two speakers"
            )


def degrade_shard(params_json: dict, clean_dir: str, out_dir: str, jobs: list[tuple[str, int]], unusable: frozenset):
    """Degrade `jobs` [(utt_id, copy)] and write their WAVs; returns the manifest rows."""
    params = params_from_dict(params_json)
    sr = params.audio.sample_rate
    stat = (Path(clean_dir) / "manifest.parquet").stat()
    clean_rows, pools = _clean_index(clean_dir, sr, (stat.st_mtime_ns, stat.st_size), unusable)
    clean_dir, out_dir = Path(clean_dir), Path(out_dir)
    rows = []
    for utt_id, copy in jobs:
        clean = clean_rows[utt_id]
        clean_path = clean_dir / clean["path"]
        rel_clean = os.path.relpath(os.path.abspath(clean_path), os.path.abspath(out_dir))
        audio = _read_clean(clean_path, sr)
        rng = clip_rng(params.seed, utt_id, copy)
        pool = pools[clean["split"]]
        degraded, applied = degrade(audio, sr, rng, params.degrade, speaker=clean["speaker"], babble_pool=pool,
                                    ingest=params.ingest)
        row = manifest_row(clean, copy, applied, len(degraded), params, rel_clean)
        write_wav(path_inside(out_dir, row["path"], "deg_id"), degraded, sr)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the stage


def _user_folder_rejects(params: Params, out_dir: Path, hashes: dict[str, str] | None = None) -> list[dict]:
    """Scan user noise/RIR folders once up front: a bad config fails fast, bad files are quarantined.

    `hashes`, if given, receives "<param>/<file>" -> sha256 of every usable file (for the fingerprint)."""
    folders = []
    if "user" in params.degrade.noise.kinds and params.degrade.noise.prob > 0:
        folders.append((params.degrade.noise.user_dir, "degrade.noise.user_dir"))
    if params.degrade.reverb.user_rir_dir is not None and params.degrade.reverb.prob > 0:
        folders.append((params.degrade.reverb.user_rir_dir, "degrade.reverb.user_rir_dir"))
    rejects = []
    for root, param in folders:
        folder = audio_folder(str(Path(root).resolve()), params.audio.sample_rate, param, params.ingest)
        if hashes is not None:
            hashes.update({f"{param}/{rel}": file_sha256(folder.root / rel) for rel in folder.files})
        for path, reason in folder.rejected:
            rejects.append({"path": os.path.relpath(path, os.path.abspath(out_dir)), "reason": f"{param}: {reason}"})
    return rejects


def build_degraded_corpus(params: Params, clean_dir: str | Path, out_dir: str | Path, progress: bool = True, *,
                          summary: str | Path | None = None) -> dict:
    """Degrade every clean utterance `degrade.copies` times; returns a summary dict (also written to `summary`,
    a JSON path, if given: dvc.yaml's data/degraded.json, beside the folder, not in it, since later stages
    depend on the folder)."""
    started = time.perf_counter()
    clean_dir, out_dir = Path(clean_dir), Path(out_dir)
    cfg = params.degrade
    clean_rows = _read_clean_manifest(clean_dir, params.audio.sample_rate)
    bad_ids, id_rejects = _bad_ids(clean_rows, clean_dir, out_dir)
    unusable, hashes = _unusable_clean([r for r in clean_rows if r["utt_id"] not in bad_ids], clean_dir, out_dir,
                                       params.audio.sample_rate)
    usable_rows = [r for r in clean_rows if r["utt_id"] not in unusable and r["utt_id"] not in bad_ids]
    _check_babble_speakers(params, usable_rows)
    sources = {f"clean/{u}": h for u, h in hashes.items()}
    quarantined = _user_folder_rejects(params, out_dir, sources) + id_rejects + list(unusable.values())
    excluded = set(unusable) | bad_ids

    jobs = [(r["utt_id"], c) for r in usable_rows for c in range(cfg.copies)]
    shards = [jobs[i : i + cfg.shard_size] for i in range(0, len(jobs), cfg.shard_size)]
    shard_dir = out_dir / ".shards" / fingerprint(params, clean_dir / "manifest.parquet", sources)
    if (out_dir / ".shards").is_dir():  # shards of other params or inputs can never be reused
        for stale in (out_dir / ".shards").iterdir():
            if stale != shard_dir:
                shutil.rmtree(stale)
    # From the first WAV written until the new manifest, no manifest may describe this folder.
    (out_dir / "manifest.parquet").unlink(missing_ok=True)
    (out_dir / "quarantine.parquet").unlink(missing_ok=True)

    def done_path(i: int) -> Path:
        return shard_dir / f"{i:05d}.parquet"

    todo = [i for i in range(len(shards)) if not done_path(i).is_file()]
    params_json = params.model_dump(mode="json")

    def args(i: int) -> tuple:
        return params_json, str(clean_dir), str(out_dir), shards[i], frozenset(excluded)

    def finish(i: int, rows: list[dict]) -> None:
        write_parquet(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), done_path(i))
        bar.update(len(shards[i]))

    bar = tqdm(total=len(jobs), initial=len(jobs) - sum(len(shards[i]) for i in todo), desc="degrade",
               unit="clip", disable=not progress)
    if cfg.workers > 1 and len(todo) > 1:
        # spawn, not fork: the caller may be a threaded process (Dagster)
        with ProcessPoolExecutor(min(cfg.workers, len(todo)), mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(degrade_shard, *args(i)): i for i in todo}
            for fut in as_completed(futures):
                finish(futures[fut], fut.result())
    else:
        for i in todo:
            finish(i, degrade_shard(*args(i)))
    bar.close()

    tables = [pq.read_table(done_path(i)) for i in range(len(shards))]
    manifest = pa.concat_tables([MANIFEST_SCHEMA.empty_table(), *tables]).sort_by("deg_id")
    quarantine = pa.Table.from_pylist(quarantined, schema=QUARANTINE_SCHEMA)
    quarantine = quarantine.sort_by([("path", "ascending"), ("reason", "ascending")])
    write_parquet(quarantine, out_dir / "quarantine.parquet")
    _remove_orphan_wavs(out_dir, set(manifest.column("path").to_pylist()))
    write_parquet(manifest, out_dir / "manifest.parquet")  # last: its presence means a complete folder
    shutil.rmtree(out_dir / ".shards", ignore_errors=True)
    result = summarize(manifest, quarantine.num_rows, len(clean_rows), time.perf_counter() - started)
    if summary is not None:
        write_json(result, summary)
    return result


def _remove_orphan_wavs(out_dir: Path, keep: set[str]) -> None:
    """WAVs from an earlier run with other params or a bigger corpus would mislead; drop them, and
    anything else in wav/ (the stage owns the folder: folders an older version made from a bad id)."""
    wav_dir = out_dir / "wav"
    if wav_dir.is_dir():
        for entry in wav_dir.iterdir():
            if f"wav/{entry.name}" in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


# ---------------------------------------------------------------- summaries (also used by the Dagster asset)


def degradation_mix(manifest: pa.Table) -> list[dict]:
    """Per type: how many clips it was applied to, the fraction, and the range of each recorded param."""
    n = manifest.num_rows
    stats: dict[str, dict] = {}
    for text in manifest.column("degradations").to_pylist():
        for step in json.loads(text):
            entry = stats.setdefault(step["type"], {"count": 0, "values": {}})
            entry["count"] += 1
            for key, value in step.items():
                if key != "type" and isinstance(value, (int, float, str)) and not isinstance(value, bool):
                    entry["values"].setdefault(key, []).append(value)
    mix = []
    for kind, entry in sorted(stats.items(), key=lambda kv: -kv[1]["count"]):
        ranges = []
        for key, values in entry["values"].items():
            if all(isinstance(v, int) for v in values):
                ranges.append(f"{key} {min(values)}..{max(values)}")
            elif all(isinstance(v, (int, float)) for v in values):
                ranges.append(f"{key} {min(values):.3g}..{max(values):.3g}")
            else:
                counts = {v: values.count(v) for v in sorted(set(map(str, values)))}
                ranges.append(f"{key} " + " ".join(f"{v}:{c}" for v, c in counts.items()))
        mix.append({"type": kind, "count": entry["count"], "fraction": entry["count"] / n if n else 0.0,
                    "params": "; ".join(ranges)})
    return mix


def summarize(manifest: pa.Table, n_quarantined: int, n_clean: int, seconds: float) -> dict:
    durations = manifest.column("duration_s").to_pylist()
    splits = manifest.column("split").to_pylist()
    return {
        "n_clean": n_clean,
        "n_degraded": manifest.num_rows,
        "n_quarantined": n_quarantined,
        "hours": float(sum(durations) / 3600),
        "per_split": {s: splits.count(s) for s in sorted(set(splits))},
        "mix": degradation_mix(manifest),
        "seconds": round(seconds, 2),
    }


# ---------------------------------------------------------------- checks (used by the Dagster asset checks and tests)


def misaligned_clips(out_dir: str | Path) -> list[str]:
    """deg_ids whose WAV is missing or differs in length or rate from its clean reference."""
    import soundfile as sf

    out_dir = Path(out_dir)
    bad = []
    for row in pq.read_table(out_dir / "manifest.parquet", columns=["deg_id", "path", "clean_path"]).to_pylist():
        try:
            deg, clean = sf.info(str(out_dir / row["path"])), sf.info(str(out_dir / row["clean_path"]))
        except (sf.LibsndfileError, RuntimeError):
            bad.append(row["deg_id"])
            continue
        if deg.frames != clean.frames or deg.samplerate != clean.samplerate:
            bad.append(row["deg_id"])
    return bad


def nonfinite_clips(out_dir: str | Path) -> list[str]:
    """deg_ids whose degraded audio holds NaN or Inf samples."""
    out_dir = Path(out_dir)
    bad = []
    for row in pq.read_table(out_dir / "manifest.parquet", columns=["deg_id", "path"]).to_pylist():
        audio, _ = read_wav(out_dir / row["path"])
        if not np.isfinite(audio).all():
            bad.append(row["deg_id"])
    return bad
