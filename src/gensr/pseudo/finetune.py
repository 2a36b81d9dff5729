"""Voicefixer fine-tuning on (degraded singing, kept pseudo-label) pairs, with no way to a clean reference.

The guarantee is structural: `finetune_on_labels` receives the finetune table (data/singing/finetune.parquet,
which the corpus stage writes without any reference column) and the label table, plus the folders their
relative paths are resolved against, and nothing else. It refuses
- a table with a reference-like column (ref_path, clean_path, reference_path, or any column whose name
  contains 'clean' or 'ref'),
- a row of a split other than `finetune` / `real` (the test split's references exist; its inputs never train),
- a path that is absolute, climbs out of its folder, or points into the corpus' `clean/` folder.
So the only audio it can open is the degraded inputs and the labels.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa

from gensr.config.voicefixer import VoicefixerTrain

TRAINABLE_SPLITS = ("finetune", "real")
REFERENCE_COLUMNS = ("ref_path", "clean_path", "reference_path")


def reference_columns(table: pa.Table) -> list[str]:
    """Columns of `table` that could lead to a clean reference."""
    return [c for c in table.column_names
            if c in REFERENCE_COLUMNS or "clean" in c.lower() or "ref" in c.lower()]


def check_no_reference(table: pa.Table, what: str) -> None:
    bad = reference_columns(table)
    if bad:
        raise ValueError(f"{what}: has reference column(s) {bad}; fine-tuning must never see a clean singing "
                         "reference (hand it data/singing/finetune.parquet and a label table)")


def _safe(root: Path, rel: str, what: str) -> Path:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0] == "clean"):
        raise ValueError(f"{what}: path {rel!r} must stay inside {root} and outside its clean/ folder")
    return Path(root) / p


def training_pairs(finetune: pa.Table, finetune_root: Path, labels: pa.Table, labels_root: Path,
                   sample_rate: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """(degraded, label) waves at `sample_rate` for every kept label, in deg_id order, and their deg_ids.

    The label table needs deg_id, path (relative to labels_root) and kept; the finetune table deg_id, path
    (relative to finetune_root) and split. Both are checked for reference columns first."""
    from gensr.audio.io import read_wav, resample

    check_no_reference(finetune, "finetune table")
    check_no_reference(labels, "label table")
    for table, what, cols in ((finetune, "finetune table", ("deg_id", "path", "split")),
                              (labels, "label table", ("deg_id", "path", "kept"))):
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise ValueError(f"{what}: missing column(s) {missing}")
    inputs = {r["deg_id"]: r for r in finetune.select(["deg_id", "path", "split"]).to_pylist()}
    bad_split = sorted({r["split"] for r in inputs.values()} - set(TRAINABLE_SPLITS))
    if bad_split:
        raise ValueError(f"finetune table: rows of split(s) {bad_split}; only {list(TRAINABLE_SPLITS)} may train")
    kept = sorted((r for r in labels.select(["deg_id", "path", "kept"]).to_pylist() if r["kept"]),
                  key=lambda r: r["deg_id"])
    unknown = [r["deg_id"] for r in kept if r["deg_id"] not in inputs]
    if unknown:
        raise ValueError(f"label table: {len(unknown)} kept labels have no row in the finetune table, e.g. {unknown[:3]}")
    pairs, ids = [], []
    for r in kept:
        degraded, sr_in = read_wav(_safe(finetune_root, inputs[r["deg_id"]]["path"], "finetune table"))
        label, sr_label = read_wav(_safe(labels_root, r["path"], "label table"))
        degraded, label = resample(degraded, sr_in, sample_rate), resample(label, sr_label, sample_rate)
        n = min(degraded.size, label.size)  # the gate bounds the difference (pseudo_labels.gate.max_length_diff_s)
        pairs.append((degraded[:n], label[:n]))
        ids.append(r["deg_id"])
    return pairs, ids


def finetune_on_labels(model, finetune: pa.Table, finetune_root: Path, labels: pa.Table, labels_root: Path,
                       cfg: VoicefixerTrain, *, seed: int, min_kept: int = 1, logger=None) -> dict:
    """Fine-tune `model` (a gensr Voicefixer, in place) on the kept labels; returns train_voicefixer's
    summary plus the deg_ids trained on. Fewer than `min_kept` kept labels is an error naming the param."""
    from gensr.voicefixer.train import train_voicefixer

    pairs, ids = training_pairs(finetune, finetune_root, labels, labels_root, model.sample_rate)
    if len(pairs) < min_kept:
        raise ValueError(f"only {len(pairs)} pseudo-labels passed the gate, fewer than pseudo_labels.min_kept="
                         f"{min_kept}; see the label table's reasons and relax pseudo_labels.gate")
    summary = train_voicefixer(model, pairs, cfg, logger, seed=seed)
    return {**summary, "deg_ids": ids}
