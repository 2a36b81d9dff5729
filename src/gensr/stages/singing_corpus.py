"""Stage `singing_corpus`: the embedded singing corpus, degraded, plus a user's real recordings.

    data/singing/clean/wav/<utt_id>.wav       clean sung clips (both splits; the finetune ones only for checks)
    data/singing/degraded/wav/<deg_id>.wav    degraded copies (singing.degrade, singing.seed)
    data/singing/finetune.parquet             the table fine-tuning reads: split finetune + real, NO reference column
    data/singing/test.parquet                 degraded test inputs (same schema)
    data/singing/references.parquet           test split only: deg_id -> clean_path
    data/singing/melody.parquet               target notes per clip (key, notes JSON; no audio paths)
    data/singing/real/                        user recordings at 16 kHz mono (ingest), split `real`
    data/singing/quarantine.parquet           source, path, reason
    data/singing/summary.json

Singing has no ground truth in the application (pseudo-labels stand in for it), so the finetune
split's references must never reach training: no table the stage leaves behind pairs a finetune
input with its clean audio. The degrade simulator's own manifests (which carry clean_path for
every row) are deleted once the tables above are written. All paths are relative to data/singing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gensr.config import Params, with_overrides
from gensr.storage import write_json, write_parquet

INPUT_SCHEMA = pa.schema([
    ("deg_id", pa.string()), ("utt_id", pa.string()), ("split", pa.string()), ("speaker", pa.string()),
    ("path", pa.string()), ("text", pa.string()), ("seed", pa.int64()), ("degradations", pa.string()),
    ("duration_s", pa.float64()), ("sample_rate", pa.int64()),
])
REFERENCE_SCHEMA = pa.schema([
    ("deg_id", pa.string()), ("utt_id", pa.string()), ("speaker", pa.string()), ("text", pa.string()),
    ("clean_path", pa.string()),
])
MELODY_SCHEMA = pa.schema([
    ("utt_id", pa.string()), ("split", pa.string()), ("speaker", pa.string()), ("voice", pa.string()),
    ("text", pa.string()), ("key", pa.string()), ("notes", pa.string()),  # JSON [[start_s, end_s, midi], ...]
])
QUARANTINE_SCHEMA = pa.schema([("source", pa.string()), ("path", pa.string()), ("reason", pa.string())])
CLEAN_MANIFEST_SCHEMA = pa.schema([
    ("utt_id", pa.string()), ("path", pa.string()), ("text", pa.string()), ("speaker", pa.string()),
    ("split", pa.string()), ("duration_s", pa.float64()), ("sample_rate", pa.int64()),
])


# The code that decides a build's audio: the `singing_corpus` stage's code deps in dvc.yaml, relative to the gensr
# package (tests/test_singing_app.py checks that the two lists agree). The dev builds of `gensr singing-annotators`
# and `gensr singing-probe` are not DVC stages; they key their reuse by this code's digest as well as their params.
GENERATOR_SOURCES = ("singing", "stages/singing_corpus.py", "stages/degrade.py", "corpus/degrade.py",
                     "corpus/templates.py", "corpus/tts.py", "corpus/ingest.py", "corpus/admit.py", "audio/stream.py",
                     "config/singing.py", "config/degrade.py")


def generator_digest() -> str:
    """sha256 over the Python sources of GENERATOR_SOURCES (names and bytes, in a fixed order)."""
    import hashlib

    import gensr

    package = Path(gensr.__file__).parent
    h = hashlib.sha256()
    for rel in GENERATOR_SOURCES:
        path = package / rel
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def singing_dir(params: Params) -> Path:
    return Path(params.paths.data) / "singing"


def _voices(params: Params) -> list[str]:
    voices = list(params.singing.voices or params.corpus.voices)
    if len(set(voices)) != len(voices):
        raise ValueError(f"singing.voices lists a voice twice: {voices}")
    return voices


def _check_babble(params: Params, voices: list[str]) -> None:
    from gensr.singing.corpus import clip_layout

    cfg = params.singing.degrade
    if "babble" not in cfg.noise.kinds or cfg.noise.prob == 0:
        return
    layout = clip_layout(params.singing.n_clips, params.singing.split.test, voices)
    for split in {s for s, _ in layout}:
        if len({v for s, v in layout if s == split}) < 2:
            raise ValueError(f"singing.degrade.noise.kinds has babble, which mixes other singers of the same split, but "
                             f"split '{split}' gets one singer; raise singing.n_clips, add singing.voices or drop babble")


def _real_rows(params: Params, out: Path) -> tuple[list[dict], list[dict], dict | None]:
    """Ingest singing.user_dir into out/real (afresh, so no file of an earlier folder lingers)."""
    from gensr.audio.io import read_wav
    from gensr.corpus.ingest import ingest_directory

    real_dir = out / "real"
    shutil.rmtree(real_dir, ignore_errors=True)
    if params.singing.user_dir is None:
        return [], [], None
    user_dir = Path(params.singing.user_dir)
    if not user_dir.is_dir():
        raise FileNotFoundError(f"singing.user_dir={user_dir}: folder not found")
    summary = ingest_directory(user_dir, real_dir, params.ingest, params.audio.sample_rate)
    quarantine = []
    for row in pq.read_table(real_dir / "quarantine.parquet").to_pylist():
        source = (real_dir / row["path"]).resolve()
        rel = source.relative_to(user_dir.resolve()).as_posix() if source.is_relative_to(user_dir.resolve()) else row["path"]
        quarantine.append({"source": "singing.user_dir", "path": rel, "reason": row["reason"]})
    rows = []
    for wav in sorted(real_dir.rglob("*.wav"), key=lambda p: p.relative_to(real_dir).as_posix()):
        rel = wav.relative_to(real_dir)
        utt_id = "real-" + rel.with_suffix("").as_posix().replace("/", "_")
        audio, sr = read_wav(wav)
        rows.append({"deg_id": utt_id, "utt_id": utt_id, "split": "real", "speaker": "real",
                     "path": f"real/{rel.as_posix()}", "text": None, "seed": None, "degradations": None,
                     "duration_s": audio.size / sr, "sample_rate": sr})
    return rows, quarantine, summary


def build_singing_corpus(params: Params, progress: bool = True) -> dict:
    """Synthesise, degrade and tabulate the singing corpus under <paths.data>/singing; returns a summary."""
    from gensr.singing.corpus import plan_corpus, render_corpus
    from gensr.stages.degrade import build_degraded_corpus

    if params.singing is None:
        raise ValueError("params has no `singing:` block; add one (see params.yaml) to build the singing corpus")
    start = time.perf_counter()
    cfg, sr = params.singing, params.audio.sample_rate
    voices = _voices(params)
    _check_babble(params, voices)
    out = singing_dir(params)
    clean_dir, degraded_dir = out / "clean", out / "degraded"
    real_rows, quarantine, real_summary = _real_rows(params, out)

    centers, plans = plan_corpus(cfg, voices, sr)
    shutil.rmtree(clean_dir / "wav", ignore_errors=True)  # clips of a bigger or other build must not linger
    results = render_corpus(plans, cfg, sr, clean_dir / "wav", progress=progress)
    clean_rows = [{"utt_id": p.utt_id, "path": f"wav/{p.utt_id}.wav", "text": p.text, "speaker": p.speaker,
                   "split": p.split, "duration_s": seconds, "sample_rate": sr} for p, (seconds, _) in zip(plans, results)]
    melody = [{"utt_id": p.utt_id, "split": p.split, "speaker": p.speaker, "voice": p.voice, "text": p.text,
               "key": p.key, "notes": json.dumps([[round(n.start, 4), round(n.end, 4), n.midi] for n in notes])}
              for p, (_, notes) in zip(plans, results)]

    # The simulator needs a clean manifest and writes one pairing every clip with clean audio: both go
    # once the reference-free tables exist.
    write_parquet(pa.Table.from_pylist(clean_rows, schema=CLEAN_MANIFEST_SCHEMA), clean_dir / "manifest.parquet")
    # The simulator's own params: the singing seed and degradations (the singing block itself goes, as
    # its seed would now equal the top-level one).
    degrade_params = with_overrides(params, {"seed": cfg.seed, "degrade": cfg.degrade.model_dump(mode="json"),
                                             "singing": None})
    degraded = build_degraded_corpus(degrade_params, clean_dir, degraded_dir, progress=progress)
    manifest = pq.read_table(degraded_dir / "manifest.parquet").to_pylist()
    for row in pq.read_table(degraded_dir / "quarantine.parquet").to_pylist():
        quarantine.append({"source": "singing.degrade", "path": row["path"], "reason": row["reason"]})

    inputs = {"finetune": [], "test": []}
    references = []
    for row in manifest:
        entry = {k: row[k] for k in INPUT_SCHEMA.names}
        entry["path"] = f"degraded/{row['path']}"
        inputs[row["split"]].append(entry)
        if row["split"] == "test":
            references.append({"deg_id": row["deg_id"], "utt_id": row["utt_id"], "speaker": row["speaker"],
                               "text": row["text"], "clean_path": f"clean/wav/{row['utt_id']}.wav"})
    finetune = pa.Table.from_pylist(inputs["finetune"] + real_rows, schema=INPUT_SCHEMA).sort_by("deg_id")
    write_parquet(finetune, out / "finetune.parquet")
    write_parquet(pa.Table.from_pylist(inputs["test"], schema=INPUT_SCHEMA).sort_by("deg_id"), out / "test.parquet")
    write_parquet(pa.Table.from_pylist(references, schema=REFERENCE_SCHEMA).sort_by("deg_id"), out / "references.parquet")
    write_parquet(pa.Table.from_pylist(melody, schema=MELODY_SCHEMA).sort_by("utt_id"), out / "melody.parquet")
    write_parquet(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA)
                  .sort_by([("source", "ascending"), ("path", "ascending")]), out / "quarantine.parquet")
    (clean_dir / "manifest.parquet").unlink()
    (degraded_dir / "manifest.parquet").unlink()
    (degraded_dir / "quarantine.parquet").unlink()

    by_split = {s: sum(1 for p in plans if p.split == s) for s in ("finetune", "test")}
    summary = {
        "n_clips": len(plans), "splits": {**by_split, "real": len(real_rows)},
        "singers": {v: round(c, 2) for v, c in centers.items()},  # speaking pitch (MIDI) = range centre - offset
        "sung_seconds": round(sum(r["duration_s"] for r in clean_rows), 2),
        "n_degraded": degraded["n_degraded"], "degradation_mix": degraded.get("mix"),
        "n_quarantined": len(quarantine), "real": real_summary, "seed": cfg.seed,
        "seconds": round(time.perf_counter() - start, 1), "path": str(out),
    }
    write_json(summary, out / "summary.json")
    return summary
