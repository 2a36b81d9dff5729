"""Stage `corpus`: the clean corpus (bundled TTS or a user directory) with its splits.

Writes, under out_dir:
    wav/<utt_id>.wav     16 kHz mono float32 (audio.sample_rate)
    manifest.parquet     utt_id, path, text, speaker, split, duration_s, sample_rate
    quarantine.parquet   path, reason (user corpora; empty for TTS)

manifest.parquet is removed first and written last, so its presence means a complete corpus. The summary, with
the stage's wall `seconds`, goes to `summary_path` if given (dvc.yaml: data/clean.json, beside the folder, not in it:
later stages depend on the folder); nothing is written outside out_dir otherwise.
WAVs already holding the right samples are kept, so a rerun after a crash costs only the
synthesis; WAVs of utterances no longer in the corpus are removed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

from gensr.config import Params
from gensr.corpus.ingest import quarantine_table
from gensr.corpus.splits import SPLITS, assign_splits
from gensr.storage import write_json, write_parquet

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("utt_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
    ]
)


def default_out_dir(params: Params) -> Path:
    return Path(params.paths.data) / "clean"


def manifest_table(rows: list[dict]) -> pa.Table:
    rows = sorted(rows, key=lambda r: r["utt_id"])
    return pa.table({f.name: [r[f.name] for r in rows] for f in MANIFEST_SCHEMA}, schema=MANIFEST_SCHEMA)


def _remove_stale_wavs(wav_dir: Path, keep: set[str]) -> int:
    removed = 0
    for path in wav_dir.glob("*"):
        stale_tmp = path.name.startswith(".") and ".tmp" in path.name  # left by a killed atomic write
        if path.is_file() and (stale_tmp or (path.suffix == ".wav" and path.name not in keep)):
            path.unlink()
            removed += 1
    return removed


def build_clean_corpus(params: Params, out_dir: str | Path | None = None,
                       summary_path: str | Path | None = None) -> dict:
    """Build the clean corpus into out_dir (default <paths.data>/clean); return a summary dict (also written
    beside out_dir, as <out_dir>.json)."""
    start = time.perf_counter()
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(params)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.parquet").unlink(missing_ok=True)
    corpus, sample_rate = params.corpus, params.audio.sample_rate

    if corpus.source == "tts":
        from gensr.corpus.tts import synthesize_corpus

        rows, quarantined = synthesize_corpus(corpus, params.seed, sample_rate, out_dir), []
    else:
        from gensr.corpus.user import read_user_corpus

        rows, quarantined = read_user_corpus(corpus.user_dir, corpus.user_manifest, out_dir, params.ingest, sample_rate)
        if not rows:
            raise ValueError(
                f"{corpus.user_manifest}: no usable file in corpus.user_dir={corpus.user_dir} "
                f"({len(quarantined)} quarantined; reasons in {out_dir / 'quarantine.parquet'})"
            )

    splits = assign_splits([r["utt_id"] for r in rows], [r["speaker"] for r in rows], corpus.split, params.seed)
    for row, split in zip(rows, splits):
        row["split"] = split
    _remove_stale_wavs(out_dir / "wav", {Path(r["path"]).name for r in rows})
    write_parquet(quarantine_table(quarantined), out_dir / "quarantine.parquet")
    write_parquet(manifest_table(rows), out_dir / "manifest.parquet")
    summary = summarize(rows, len(quarantined), out_dir, corpus.source)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    if summary_path is not None:
        write_json(summary, summary_path)
    return summary


def summarize(rows: list[dict], n_quarantined: int, out_dir: Path, source: str) -> dict:
    per_split = {
        split: {
            "n_utterances": sum(1 for r in rows if r["split"] == split),
            "n_speakers": len({r["speaker"] for r in rows if r["split"] == split}),
            "hours": round(sum(r["duration_s"] for r in rows if r["split"] == split) / 3600, 4),
        }
        for split in SPLITS
    }
    speakers = Counter(r["speaker"] for r in rows)
    return {
        "source": source,
        "n_utterances": len(rows),
        "n_speakers": len(speakers),
        "speakers": dict(sorted(speakers.items())),
        "splits": per_split,
        "total_hours": round(sum(r["duration_s"] for r in rows) / 3600, 4),
        "n_quarantined": n_quarantined,
        "path": str(out_dir),
    }
