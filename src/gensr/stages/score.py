"""Stages `score_inputs` and `score_candidates`, and the scoring door for user files (`gensr score`).

- `score_inputs`: one split of the degraded corpus against its clean references ->
  <paths.data>/metrics/degraded_<split>.parquet (+ .json summary): the 'degraded input' row.
- `score_candidates`: every candidate of <paths.data>/candidates/<paradigm>/manifest.parquet
  against its clean reference -> <paths.data>/metrics/<paradigm>/metrics.parquet (+ summary.json),
  the table the preference pairs are built from. `score_candidates_part` scores one Dagster shard
  partition of it into the resume shards, which `score_candidates` then assembles.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pandas as pd

from gensr.config import Params
from gensr.metrics.suite import inputs_table_path, manifest_rows, score_inputs, score_manifest

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def score_degraded_inputs(params: Params, degraded: str | Path | None = None, out: str | Path | None = None) -> dict:
    """Score the degraded `metrics.score_inputs_split` against clean; returns the summary dict."""
    split = params.metrics.score_inputs_split
    out = check_out_table(out) if out else inputs_table_path(params, split)
    long = score_inputs(params, split, degraded=degraded, out=out)
    return {**long.attrs["summary"], "split": split, "path": str(out)}


def candidates_manifest(params: Params, paradigm: str) -> Path:
    return Path(params.paths.data) / "candidates" / paradigm / "manifest.parquet"


def candidates_table(params: Params, paradigm: str) -> Path:
    return Path(params.paths.data) / "metrics" / paradigm / "metrics.parquet"


def score_candidates(params: Params, paradigm: str) -> dict:
    """Score one paradigm's candidates against clean; returns the summary dict."""
    from gensr.storage import remove_killed_writes, write_json

    manifest = candidates_manifest(params, paradigm)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: candidates manifest not found; run `gensr sample --paradigm {paradigm}` first")
    out = candidates_table(params, paradigm)
    remove_killed_writes(out.parent, "summary.json")
    long = score_manifest(params, manifest, out)
    summary = {**long.attrs["summary"], "paradigm": paradigm}
    write_json(summary, out.parent / "summary.json")
    return summary


def score_candidates_part(params: Params, paradigm: str, part: int, parts: int | None = None) -> dict:
    """Shard partition `part` of `parts` (default scaleout.shards) of `score_candidates`: its resume shards i with
    i % parts == part, left in the shard folder; `score_candidates` then writes the table one run writes."""
    from gensr.metrics.suite import score_manifest_part
    from gensr.stages.sample import shard_partitions

    manifest = candidates_manifest(params, paradigm)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: candidates manifest not found; run `gensr sample --paradigm {paradigm}` first")
    parts = parts if parts is not None else shard_partitions(params)
    return {**score_manifest_part(params, manifest, candidates_table(params, paradigm), part, parts),
            "paradigm": paradigm}


def _audio_files(root: Path, flag: str) -> dict[str, Path]:
    """relative path without suffix -> file, for every audio file under root. Two files that differ only by
    suffix (x.wav, x.flac) would share a clip id: refused, naming both."""
    files: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES:
            key = p.relative_to(root).with_suffix("").as_posix()
            if key in files:
                raise ValueError(f"{flag} {root}: {files[key].name} and {p.name} in {p.parent} would share the id "
                                 f"'{key}'; keep one")
            files[key] = p
    return files


def _folder(path: Path, flag: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: folder not found")
    if not path.is_dir():
        raise ValueError(f"{flag} {path}: not a folder")
    return path


def read_transcripts(path: Path) -> dict[str, str]:
    """CSV or JSONL with a `text` column and an id column (clip_id, or path/file matched by stem)."""
    if not path.is_file():
        raise FileNotFoundError(f"--transcripts {path}: file not found")
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            with open(path, newline="") as f:
                records = list(csv.DictReader(f))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise ValueError(f"--transcripts {path}: not a UTF-8 CSV/JSONL table ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:120]})") from None
    out = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"--transcripts {path}: row {i + 1} is not a record")
        key = rec.get("clip_id") or rec.get("path") or rec.get("file")
        if key is None or "text" not in rec:
            raise ValueError(f"--transcripts {path}: row {i + 1} needs 'text' and one of clip_id/path/file")
        out[Path(str(key)).with_suffix("").as_posix() if "clip_id" not in rec else str(key)] = rec["text"]
    return out


def candidate_rows(candidates: Path, references: Path | None = None, transcripts: Path | None = None) -> list[dict]:
    """Rows to score from a manifest Parquet or a folder of audio files.

    Folder: clip_id = path relative to the folder without suffix. Manifest: per the path rule,
    relative name = the row's path relative to the manifest's folder. With `references`, each
    candidate's reference is the file with the same relative name (any audio suffix) under it,
    and only that file: `sub2/x.wav` never falls back to `sub1/x.wav`. A candidate without one
    is still scored, its reference metrics NaN with the expected path as the reason."""
    candidates = Path(candidates)
    if references is not None:  # checked first: a typo must not cost a scoring run
        references = _folder(references, "--references")
    if candidates.is_dir():
        files = _audio_files(candidates, "--candidates")
        if not files:
            raise ValueError(f"--candidates {candidates}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
        rows = [{"clip_id": key, "path": str(p), "ref_path": None, "text": None} for key, p in files.items()]
        rel = {key: key for key in files}
        suffix = {key: p.suffix for key, p in files.items()}
    elif candidates.is_file():
        rows = manifest_rows(candidates)
        rel = {r["clip_id"]: Path(os.path.relpath(r["path"], candidates.parent)).with_suffix("").as_posix()
               if r["path"] else r["clip_id"] for r in rows}
        suffix = {r["clip_id"]: Path(r["path"] or ".wav").suffix for r in rows}
    else:
        raise FileNotFoundError(f"--candidates {candidates}: neither a manifest Parquet nor a folder")
    if references is not None:
        refs = _audio_files(references, "--references")
        if not refs:
            raise ValueError(f"--references {references}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
        for row in rows:
            key = rel[row["clip_id"]]
            # the expected path when there is none, so the NaN reason says which file was looked for
            row["ref_path"] = str(refs.get(key, references / f"{key}{suffix[row['clip_id']]}"))
    if transcripts is not None:
        texts = read_transcripts(Path(transcripts))
        for row in rows:
            row["text"] = texts.get(row["clip_id"], texts.get(rel[row["clip_id"]], row["text"]))
    return rows


def check_out_table(out: Path, flag: str = "--out") -> Path:
    """`out` names a file to (over)write, not a folder, and its parent is not a file."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{flag} {out}: is a folder; give the path of the Parquet table to write")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{flag} {out}: {parent} is a file, not a folder")
    return out


def score_files(params: Params, candidates: Path, out: Path, references: Path | None = None,
                transcripts: Path | None = None) -> dict:
    out = check_out_table(out)
    rows = candidate_rows(candidates, references, transcripts)
    long = score_manifest(params, rows, out)
    found = sum(1 for r in rows if r["ref_path"] and Path(r["ref_path"]).is_file())
    return {**long.attrs["summary"], "n_with_reference": found, "n_with_text": sum(1 for r in rows if r["text"])}


def metric_means(long: pd.DataFrame) -> pd.DataFrame:
    """metric, mean, std, n, nan: the table the CLI prints."""
    grouped = long.groupby("metric")["value"]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(), "n": grouped.size(),
                         "nan": grouped.apply(lambda v: int(v.isna().sum()))})


def plot_histograms(long: pd.DataFrame, path: str | Path, title: str) -> Path:
    """One histogram per metric (NaN left out, counted in the panel title), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gensr.metrics.registry import METRIC_NAMES
    from gensr.storage import atomic_path

    metrics = [m for m in METRIC_NAMES if m in set(long["metric"])]
    cols = 4
    rows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        values = long.loc[long["metric"] == metric, "value"].astype(float)
        finite = values[values.notna()]
        if metric == "si_sdr":
            finite = finite.clip(upper=60.0)  # clean-vs-itself scores ~180 dB would squash the plot
        ax.hist(finite, bins=20, color="#4c72b0")
        ax.set_title(f"{metric} (NaN {int(values.isna().sum())})", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)


def nan_rates(long: pd.DataFrame) -> dict[str, float]:
    return {m: float(g["value"].isna().mean()) for m, g in long.groupby("metric", sort=True)}
