"""Reading a user corpus: your own recordings with transcripts instead of the bundled TTS.

Format (set `corpus.source: user`, `corpus.user_dir` and `corpus.user_manifest` in params.yaml):

    my_corpus/                  corpus.user_dir, the corpus root
      alice/0001.flac           any format soundfile reads (wav, flac, ogg, ...), any rate, any channels
      bob/take2.wav
      manifest.csv              corpus.user_manifest (may live anywhere)

    manifest.csv                          manifest.jsonl (the same, one JSON object per line)
      path,text,speaker                     {"path": "alice/0001.flac", "text": "...", "speaker": "alice"}
      alice/0001.flac,the cat sat,alice
      bob/take2.wav,hello there,bob

- `path` is relative to corpus.user_dir (an absolute path is accepted if it lies inside it);
  a path that resolves outside the root (`../x.wav`, `/etc/...`, a symlink out) is rejected.
- `text` is the transcript of the whole file; `speaker` is any label. Both are required.
- Extra columns are ignored. Empty lines in JSONL are skipped.

Every file goes through gensr.corpus.admit (header plausibility, then block-wise decoding,
mix-down, resampling to audio.sample_rate, checks) with the ingest.* bounds. A file longer than
ingest.max_seconds is rejected whatever ingest.long_files says, because its transcript cannot be
split with it. Rejected rows go to the quarantine table with their reason; a malformed manifest
(missing columns, unreadable) is an error that names the file, since no row could be trusted.

Accepted files are written as <out>/wav/<utt_id>.wav, where utt_id is the relative path with
its extension dropped and every run of other characters than letters and digits replaced by '_'.
A path with no ASCII letter or digit at all (e.g. `日本語.wav`) gets `utt_<12 hex digits of the
sha256 of its path>`: stable, non-empty, and distinct for distinct paths.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path

from gensr.audio.io import AudioRejected, write_wav_if_changed
from gensr.config.corpus import IngestParams
from gensr.corpus.admit import admit_audio
from gensr.storage import check_file_name

MANIFEST_COLUMNS = ("path", "text", "speaker")


class ManifestError(ValueError):
    """The manifest as a whole cannot be read; the message names the file and the param."""


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV (.csv) or JSONL (.jsonl/.json) manifest, each with path, text, speaker and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (set corpus.user_manifest to a CSV or JSONL file)")
    suffix = path.suffix.lower()
    rows: list[dict] = []
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise ManifestError(f"{path}: CSV header lacks columns {missing}; it needs path,text,speaker")
                for line, record in enumerate(reader, start=2):
                    rows.append({"line": line, **{c: record.get(c) for c in MANIFEST_COLUMNS}})
        elif suffix in (".jsonl", ".json"):
            with open(path, encoding="utf-8") as f:
                for line, raw in enumerate(f, start=1):
                    if not raw.strip():
                        continue
                    record = json.loads(raw)
                    if not isinstance(record, dict):
                        raise ManifestError(f"{path}:{line}: each line must be a JSON object with path, text, speaker")
                    rows.append({"line": line, **{c: record.get(c) for c in MANIFEST_COLUMNS}})
        else:
            raise ManifestError(f"{path}: manifest must end in .csv or .jsonl (corpus.user_manifest)")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise ManifestError(f"{path}: cannot parse manifest: {err}") from None
    return rows


def utt_id_for(rel_path: str) -> str:
    stem = Path(rel_path).with_suffix("").as_posix()
    utt_id = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")
    return utt_id or "utt_" + hashlib.sha256(rel_path.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def resolve_inside(root: Path, manifest_path: str) -> Path | None:
    """The file a manifest path names, or None if it resolves outside `root`.

    Raises OSError (ELOOP) for a symlink loop, which the caller quarantines."""
    candidate = Path(manifest_path)
    candidate = candidate if candidate.is_absolute() else root / candidate
    try:
        resolved = candidate.resolve()
    except RuntimeError as err:  # Python 3.11 reports a symlink loop this way
        raise OSError(40, f"symlink loop: {err}") from None
    return resolved if resolved.is_relative_to(root.resolve()) else None


def read_user_corpus(
    user_dir: str | Path, manifest: str | Path, out_dir: str | Path, ingest: IngestParams, sample_rate: int
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Admit every manifest row: (manifest rows without split, quarantine (path, reason) rows).

    Quarantine paths are relative to `out_dir`, where the quarantine table is written.
    """
    from tqdm import tqdm

    root, out_dir = Path(user_dir), Path(out_dir)
    if not root.is_dir():
        raise ManifestError(f"{root}: corpus.user_dir is not a folder")
    rows, quarantined, seen_files, seen_ids = [], [], set(), set()

    def reject(where: Path, reason: str) -> None:
        quarantined.append((os.path.relpath(where, out_dir), reason))

    for record in tqdm(read_manifest(manifest), desc="reading user corpus", unit="file"):
        raw_path = (record["path"] or "").strip() if isinstance(record["path"], str) else ""
        text = " ".join(str(record["text"]).split()) if record["text"] is not None else ""
        speaker = str(record["speaker"]).strip() if record["speaker"] is not None else ""
        if not raw_path:
            reject(Path(manifest), f"bad_row: line {record['line']} has no path")
            continue
        try:
            source = resolve_inside(root, raw_path)
        except OSError as err:
            reject(root / raw_path, f"symlink_loop: manifest path '{raw_path}': {err.strerror}")
            continue
        if source is None:
            reject((root / raw_path).resolve(), f"path_escapes_root: manifest path '{raw_path}' resolves outside corpus.user_dir")
            continue
        if not text:
            reject(source, "no_transcript: empty text in the manifest")
            continue
        if not speaker:
            reject(source, "no_speaker: empty speaker in the manifest")
            continue
        if source in seen_files:
            reject(source, f"duplicate_row: {raw_path} is listed more than once")
            continue
        seen_files.add(source)
        utt_id = utt_id_for(source.relative_to(root.resolve()).as_posix())
        try:
            check_file_name(utt_id, "utt_id")  # e.g. a path too long to be a file name
        except ValueError as err:
            reject(source, f"bad_utt_id: {err}")
            continue
        if utt_id in seen_ids:
            reject(source, f"duplicate_utt_id: another file also maps to utt_id '{utt_id}'; rename one")
            continue
        try:
            (audio,) = admit_audio(source, ingest, sample_rate, allow_split=False)
        except AudioRejected as err:
            reject(source, err.reason)
            continue
        except Exception as err:  # one bad file never stops the corpus
            reject(source, f"error: {type(err).__name__}: {err}".replace("\n", " ")[:300])
            continue
        seen_ids.add(utt_id)
        rel_path = f"wav/{utt_id}.wav"
        write_wav_if_changed(out_dir / rel_path, audio, sample_rate)
        rows.append(
            {"utt_id": utt_id, "path": rel_path, "text": text, "speaker": speaker,
             "duration_s": audio.size / sample_rate, "sample_rate": sample_rate}
        )
    return rows, quarantined
