"""The metric suite: score a table of (clip_id, path, ref_path, text) rows into a long table.

- Rows are sorted by clip_id and cut into shards of at most `metrics.shard_size`. Each shard is
  scored by one worker (spawned processes that load every model once, one thread each) and
  written atomically to `<out>.shards/`; a rerun skips finished shards, then all shards are
  concatenated into `<out>` (sorted by clip_id, metric) and the shard folder is removed.
  `score_manifest_part` scores only the shards i with i % parts == part and leaves them there:
  one Dagster shard partition (docs/scaling.md).
  Workers exit with the process that spawned them, so a stage killed with SIGKILL and rerun
  writes the same bytes as one never interrupted (tests/test_crash_resume.py); a shard
  partition removes only the temp files of its own shards, never those a partition running
  beside it is writing.
- An unreadable, non-finite, silent or too-short candidate gets NaN for every metric with
  the reason; a missing reference or transcript only blanks the metrics that need it; a
  reference gets the candidate's checks, and one that fails them or whose duration differs
  from the candidate's by more than metrics.max_length_diff_s blanks the reference metrics
  with the reason; a metric that fails on a clip is NaN with the reason and the other
  metrics still count.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gensr.config.metrics import MetricsParams
from gensr.corpus.splits import in_split
from gensr.storage import file_digest, remove_killed_writes, remove_killed_writes_of, write_json, write_parquet

LONG_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("reason", pa.string()),
        ("backend", pa.string()),
        ("version", pa.string()),
    ]
)
INPUT_COLUMNS = ("clip_id", "path", "ref_path", "text")
# Values are rounded to 1e-10: BLAS/FFT code paths depend on array alignment and move the last
# bit of some scores (seen in pystoi), which would break byte-identical tables; 1e-10 is far
# below every metric's resolution.
DECIMALS = 10


# --- reading one row -------------------------------------------------------------------
def _read(path: str, params: MetricsParams):
    """Mono float audio at the file's own rate, or AudioRejected: candidates and references get the same
    checks (unreadable, non-finite, silent, too short)."""
    import soundfile as sf

    from gensr.audio.io import AudioRejected, load_audio

    try:
        rate = sf.info(path).samplerate
    except Exception as err:
        if not Path(path).is_file():
            raise AudioRejected(path, "missing: file does not exist") from None
        raise AudioRejected(path, f"unreadable: {type(err).__name__}: {err}".replace("\n", " ")[:300]) from None
    audio = load_audio(path, rate, min_seconds=params.min_seconds, silence_dbfs=params.silence_dbfs)
    return audio, rate


def length_mismatch(audio, rate: int, reference, reference_rate: int, params: MetricsParams) -> str | None:
    """Why the reference can't be compared with this candidate (their durations differ by more than
    metrics.max_length_diff_s), or None. The intrusive metrics trim both to the shorter one, so a much
    longer or shorter candidate would be scored on a part of itself only."""
    seconds, ref_seconds = len(audio) / rate, len(reference) / reference_rate
    if abs(seconds - ref_seconds) > params.max_length_diff_s:
        return (f"length mismatch: candidate {seconds:.3f} s, reference {ref_seconds:.3f} s "
                f"(more than metrics.max_length_diff_s={params.max_length_diff_s} s apart)")
    return None


def load_clip(row: dict, params: MetricsParams):
    """(Clip, None) or (None, reason) when the candidate itself can't be scored."""
    from gensr.audio.io import AudioRejected
    from gensr.metrics.base import Clip

    if not row.get("path"):
        return None, "candidate missing: no path for this clip"
    try:
        audio, rate = _read(row["path"], params)
    except AudioRejected as err:
        return None, f"candidate {err.reason}"
    reference = reference_rate = reference_error = None
    if row.get("ref_path"):
        try:
            reference, reference_rate = _read(row["ref_path"], params)
        except AudioRejected as err:
            reference_error = f"{err.path}: {err.reason}"
        else:
            reference_error = length_mismatch(audio, rate, reference, reference_rate, params)
            if reference_error:
                reference = reference_rate = None
    else:
        reference_error = "no reference path for this clip"
    text = row.get("text")
    text = text if isinstance(text, str) and text.strip() else None
    clip = Clip(
        clip_id=row["clip_id"],
        audio=audio,
        sample_rate=rate,
        reference=reference,
        reference_rate=reference_rate,
        reference_key=row.get("ref_path"),
        reference_error=reference_error,
        text=text,
    )
    return clip, None


# --- scoring one shard -----------------------------------------------------------------
class ShardScorer:
    """Holds the loaded scorers of one process."""

    def __init__(self, params: MetricsParams):
        from gensr.metrics.registry import build_scorers

        self.params = params
        self.scorers = build_scorers(params, threads=1)
        for scorer in self.scorers:
            scorer.setup()
        self.infos = {info.name: info for s in self.scorers for info in s.infos}

    def score(self, rows: Sequence[dict]) -> tuple[pa.Table, dict[str, float]]:
        seconds: dict[str, float] = {"load": 0.0}
        start = time.perf_counter()
        clips, failures = [], {}
        for row in rows:
            clip, reason = load_clip(row, self.params)
            if clip is None:
                failures[row["clip_id"]] = reason
            else:
                clips.append(clip)
        seconds["load"] = time.perf_counter() - start
        scores: dict[str, dict] = {c.clip_id: {} for c in clips}
        for scorer in self.scorers:
            start = time.perf_counter()
            for clip, result in zip(clips, scored_batch(scorer, clips)):
                scores[clip.clip_id].update(result)
            key = type(scorer).__name__
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
        records = []
        for row in rows:
            clip_id = row["clip_id"]
            for name in self.params.names:
                info = self.infos[name]
                if clip_id in failures:
                    value, reason = float("nan"), failures[clip_id]
                else:
                    score = scores[clip_id][name]
                    value, reason = score.value, score.reason
                records.append((clip_id, name, round(value, DECIMALS), reason, info.backend, info.version))
        return long_table(records), seconds


def scored_batch(scorer, clips: list) -> list[dict]:
    """scorer.score_batch, but an exception the scorer did not turn into NaN itself costs only
    the clip that raised it: the batch is retried clip by clip and that clip's metrics are NaN."""
    from gensr.metrics.asr import MissingWeights

    try:
        return scorer.score_batch(clips)
    except MissingWeights:
        raise
    except Exception:
        out = []
        for clip in clips:
            try:
                out.append(scorer.score_batch([clip])[0])
            except MissingWeights:
                raise
            except Exception as err:
                out.append(scorer.all_nan(f"{type(err).__name__}: {err}".replace("\n", " ")[:300]))
        return out


def long_table(records: Iterable[tuple]) -> pa.Table:
    records = sorted(records, key=lambda r: (r[0], r[1]))
    columns = list(zip(*records)) if records else [[] for _ in LONG_SCHEMA]
    return pa.table([pa.array(col, type=f.type) for col, f in zip(columns, LONG_SCHEMA)], schema=LONG_SCHEMA)


_WORKER: ShardScorer | None = None
_WORKER_ERROR: str | None = None


def _exit_with_parent() -> None:
    """End this pool worker as soon as the process that spawned it dies. After a SIGKILL (or the
    OOM killer) of the stage, a worker would otherwise wait for work forever with its models in
    memory, or finish a queued shard into the folder a rerun is writing and cleaning."""
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])  # ready once the parent's end of the pipe closes, i.e. it exited
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(params_json: str) -> None:
    _exit_with_parent()
    # one thread per worker: the workers are the parallelism, and results stay deterministic
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    global _WORKER, _WORKER_ERROR
    try:
        _WORKER = ShardScorer(MetricsParams.model_validate_json(params_json))
    except Exception as err:  # re-raised per task: a failing initializer only says "BrokenProcessPool"
        _WORKER_ERROR = f"{type(err).__name__}: {err}"


def _score_shard(rows: list[dict], path: str) -> dict[str, float]:
    if _WORKER is None:
        raise RuntimeError(f"metric worker could not load its models: {_WORKER_ERROR}")
    table, seconds = _WORKER.score(rows)
    write_parquet(table, path)
    return seconds


# --- the suite -------------------------------------------------------------------------
ID_COLUMNS = ("clip_id", "cand_id", "candidate_id", "deg_id", "utt_id")
REFERENCE_COLUMNS = ("ref_path", "clean_path", "reference_path")


def manifest_rows(manifest) -> list[dict]:
    """Rows (clip_id, path, ref_path, text) from a manifest Parquet (paths relative to its
    folder, per the project's path rule), a DataFrame or a list of dicts (paths as given).

    The id column is the first of ID_COLUMNS present, the reference the first of
    REFERENCE_COLUMNS; `text` is optional."""
    base = None
    if isinstance(manifest, (str, Path)):
        base = Path(manifest).parent
        try:
            frame = pd.read_parquet(manifest)
        except Exception as err:  # not Parquet, truncated, or a folder: a user's file, so a clear refusal
            raise ValueError(f"{manifest}: not a readable Parquet manifest ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:160] if str(err) else ''})") from None
    else:
        frame = pd.DataFrame(manifest)
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if id_column is None or "path" not in frame.columns:
        raise ValueError(f"{manifest if base else 'rows'}: need a 'path' column and one id column of {list(ID_COLUMNS)}")
    ref_column = next((c for c in REFERENCE_COLUMNS if c in frame.columns), None)

    def resolve(p):
        if p is None or (isinstance(p, float) and np.isnan(p)) or p == "":
            return None
        return str(base / p) if base is not None else str(p)

    rows = []
    for rec in frame.to_dict("records"):
        text = rec.get("text")
        rows.append(
            {
                "clip_id": str(rec[id_column]),
                "path": resolve(rec["path"]),
                "ref_path": resolve(rec.get(ref_column)) if ref_column else None,
                "text": text if isinstance(text, str) else None,
            }
        )
    counts = Counter(r["clip_id"] for r in rows)
    duplicated = sorted(k for k, n in counts.items() if n > 1)
    if duplicated:
        raise ValueError(f"clip ids must be unique; duplicated: {duplicated[:5]}")
    named = [r["ref_path"] for r in rows if r["ref_path"]]
    if named and not any(Path(p).is_file() for p in named):
        # one missing reference is that clip's NaN (with its reason); all of them is a broken manifest, e.g. a
        # reports folder copied elsewhere, whose relative paths now point nowhere: refuse instead of scoring NaN
        raise FileNotFoundError(
            f"{manifest if base is not None else 'rows'}: none of the {len(named)} reference files of column "
            f"'{ref_column}' exists (first: {named[0]}); a manifest's paths are relative to its own folder, so it "
            f"cannot be moved without the files it names")
    return sorted(rows, key=lambda r: r["clip_id"])


def _shard_name(index: int, rows: list[dict], params: MetricsParams) -> str:
    return f"shard-{index:05d}-{fingerprint(rows, params)[:12]}.parquet"


def fingerprint(rows: list[dict], params: MetricsParams) -> str:
    """Hash of what decides the scores: the rows, the bytes of every file they name, and the metrics params (not
    worker counts). The bytes matter: a stage rerun after its inputs changed (new candidates under the same paths,
    e.g. after a sampling param changed) must not resume the shards, or reuse the table, of the old audio."""
    settings = params.model_dump(mode="json", exclude={"workers", "shard_size", "max_nan_rate", "score_inputs_split"})
    memo: dict[str, str | None] = {}
    contents = [[file_digest(r.get("path"), memo), file_digest(r.get("ref_path"), memo)] for r in rows]
    key = json.dumps([rows, contents, settings], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()


def _metrics_params(params) -> MetricsParams:
    return params.metrics if hasattr(params, "metrics") else params


def balanced_shards(rows: list, shard_size: int, workers: int) -> list[list]:
    """Contiguous shards of at most `shard_size` rows, as many as a multiple of `workers` and even in size (they
    differ by at most one row), so that no worker idles while another scores a last, larger shard. The layout
    depends only on the row count and the two params. E.g. 150 rows, 64, 2 workers: 38, 38, 37, 37 (not 64, 64,
    22, which leaves one worker 86 rows and the other 64)."""
    n, workers = len(rows), max(1, int(workers))
    if n == 0:
        return []
    count = min(n, workers * -(-n // (workers * max(1, int(shard_size)))))
    size, extra = divmod(n, count)
    shards, start = [], 0
    for i in range(count):
        stop = start + size + (1 if i < extra else 0)
        shards.append(rows[start:stop])
        start = stop
    return shards


def _shard_plan(params: MetricsParams, rows: list[dict], out: Path) -> tuple[Path, list[list[dict]], list[Path]]:
    """(shard folder, shards, their files): the same for every process that scores `rows` into `out`."""
    shard_dir = out.parent / f"{out.name}.shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = balanced_shards(rows, params.shard_size, params.workers)
    paths = [shard_dir / _shard_name(i, shard, params) for i, shard in enumerate(shards)]
    for stale in set(shard_dir.glob("shard-*.parquet")) - set(paths):
        stale.unlink(missing_ok=True)  # shards of other inputs or params (another shard partition may race us)
    return shard_dir, shards, paths


def _score_pending(params: MetricsParams, pending: list[tuple[list[dict], Path]], workers: int, bar) -> dict[str, float]:
    """Score and write the pending shards (in-process, or `workers` spawned processes); returns scorer seconds."""
    seconds: dict[str, float] = {}
    if pending and workers == 1:
        import torch

        # one torch thread, as in every spawned worker: a torch metric's float sums depend on the thread count on
        # some CPUs (speaker_cosine moved by 6e-8 with 4 threads on an AMD EPYC), and the table must not
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            scorer = ShardScorer(params)
            for shard, path in pending:
                table, shard_seconds = scorer.score(shard)
                write_parquet(table, path)
                _add(seconds, shard_seconds)
                bar.update(len(shard))
        finally:
            torch.set_num_threads(threads)
    elif pending:
        context = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(params.model_dump_json(),)) as pool:
            futures = {pool.submit(_score_shard, shard, str(path)): len(shard) for shard, path in pending}
            for future in as_completed(futures):
                _add(seconds, future.result())
                bar.update(futures[future])
    return seconds


def score_manifest(params, manifest, out: str | Path, *, workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Score every row of `manifest` (see manifest_rows) into the long Parquet `out` and
    return it as a DataFrame; `.attrs["summary"]` holds NaN counts and timings.

    `params` is the project Params or its `metrics` block. Resumable by shard."""
    from tqdm import tqdm

    from gensr.metrics.registry import check_names

    params = _metrics_params(params)
    check_names(params.names)
    out = Path(out)
    rows = manifest_rows(manifest)
    remove_killed_writes(out.parent, out.name)
    shard_dir, shards, paths = _shard_plan(params, rows, out)
    pending = [(shard, path) for shard, path in zip(shards, paths) if not path.is_file()]
    workers = min(workers or params.workers, max(1, len(pending)))
    start = time.perf_counter()
    done = len(rows) - sum(len(s) for s, _ in pending)
    bar = tqdm(total=len(rows), initial=done, unit="clip", desc=f"scoring {out.name}", disable=not progress)
    seconds = _score_pending(params, pending, workers, bar)
    bar.close()
    table = pa.concat_tables([pq.read_table(p) for p in paths]) if paths else long_table([])
    table = table.cast(LONG_SCHEMA).sort_by([("clip_id", "ascending"), ("metric", "ascending")])
    write_parquet(table, out)
    shutil.rmtree(shard_dir, ignore_errors=True)
    frame = table.to_pandas()
    frame.attrs["summary"] = {
        "path": str(out),
        "n_clips": len(rows),
        "n_rows": table.num_rows,
        "shards": len(shards),
        "shards_resumed": len(shards) - len(pending),
        "workers": workers,
        "wall_seconds": round(time.perf_counter() - start, 3),
        "scorer_seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
        "fingerprint": fingerprint(rows, params),
        "metrics": summarize(frame),
    }
    return frame


def score_manifest_part(params, manifest, out: str | Path, part: int, parts: int, *, workers: int | None = None,
                        progress: bool = True) -> dict:
    """Only the shards i with i % parts == part of `score_manifest(params, manifest, out)`, left in its shard folder
    (no table): one Dagster shard partition. `score_manifest` afterwards finds them done and writes the same bytes."""
    from tqdm import tqdm

    from gensr.metrics.registry import check_names

    if not 0 <= part < parts:
        raise ValueError(f"shard {part} is not one of 0..{parts - 1} (scaleout.shards={parts})")
    params = _metrics_params(params)
    check_names(params.names)
    out = Path(out)
    rows = manifest_rows(manifest)
    shard_dir, shards, paths = _shard_plan(params, rows, out)
    mine = [(shard, path) for i, (shard, path) in enumerate(zip(shards, paths)) if i % parts == part]
    # a killed earlier run of this partition left temp files of its shards; the other partitions' stay theirs
    remove_killed_writes_of(shard_dir, [path.name for _, path in mine])
    pending = [(shard, path) for shard, path in mine if not path.is_file()]
    workers = min(workers or params.workers, max(1, len(pending)))
    start = time.perf_counter()
    total = sum(len(s) for s, _ in mine)
    bar = tqdm(total=total, initial=total - sum(len(s) for s, _ in pending), unit="clip",
               desc=f"scoring {out.name} [shard {part}/{parts}]", disable=not progress)
    seconds = _score_pending(params, pending, workers, bar)
    bar.close()
    return {
        "part": part,
        "parts": parts,
        "n_clips": total,
        "shards": len(mine),
        "shards_resumed": len(mine) - len(pending),
        "shard_files": [str(p) for _, p in mine],
        "workers": workers,
        "wall_seconds": round(time.perf_counter() - start, 3),
        "scorer_seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
    }


def degraded_manifest(params) -> Path:
    return Path(params.paths.data) / "degraded" / "manifest.parquet"


def inputs_table_path(params, split: str) -> Path:
    return Path(params.paths.data) / "metrics" / f"degraded_{split}.parquet"


def score_inputs(params, split: str | None = None, *, degraded: str | Path | None = None, out: str | Path | None = None,
                 workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Score one split of the degraded corpus against its clean references: the 'degraded
    input' row of the evaluation. Reuses `out` when it was made from the same rows and params."""
    split = split or params.metrics.score_inputs_split
    manifest = Path(degraded) / "manifest.parquet" if degraded else degraded_manifest(params)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: degraded corpus manifest not found; run `gensr degrade` first")
    out = Path(out) if out else inputs_table_path(params, split)
    frame = pd.read_parquet(manifest)
    frame = frame[in_split(frame["split"], frame["utt_id"], split, params.pairs.heldout_fraction)]
    rows = manifest_rows(frame.assign(path=[str(manifest.parent / p) for p in frame["path"]],
                                      clean_path=[str(manifest.parent / p) for p in frame["clean_path"]]))
    if not rows:
        raise ValueError(f"{manifest}: no clip in split {split!r} (metrics.score_inputs_split)")
    summary_path = out.with_suffix(".json")
    key = fingerprint(rows, params.metrics)
    if out.is_file() and summary_path.is_file() and json.loads(summary_path.read_text()).get("fingerprint") == key:
        long = pd.read_parquet(out)
        long.attrs["summary"] = json.loads(summary_path.read_text())
        return long
    long = score_manifest(params, rows, out, workers=workers, progress=progress)
    write_json(long.attrs["summary"], summary_path)
    return long


def _add(total: dict[str, float], part: dict[str, float]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0.0) + value


def summarize(long_df: pd.DataFrame) -> dict[str, dict]:
    """Per metric: mean, std, NaN count and the most common NaN reason."""
    out = {}
    for metric, group in long_df.groupby("metric", sort=True):
        values = group["value"].astype(float)
        reasons = group.loc[values.isna(), "reason"].dropna()
        out[metric] = {
            "mean": None if values.notna().sum() == 0 else round(float(values.mean()), 4),
            "std": None if values.notna().sum() < 2 else round(float(values.std()), 4),
            "n": int(len(values)),
            "nan": int(values.isna().sum()),
            "top_nan_reason": None if reasons.empty else str(reasons.value_counts().index[0]),
        }
    return out


def to_wide(long_df: pd.DataFrame) -> pd.DataFrame:
    """One row per clip_id, one column per metric (values only; reasons stay in the long table)."""
    wide = long_df.pivot(index="clip_id", columns="metric", values="value")
    from gensr.metrics.registry import METRIC_NAMES

    order = [m for m in METRIC_NAMES if m in wide.columns] + sorted(c for c in wide.columns if c not in METRIC_NAMES)
    wide = wide[order].sort_index()
    wide.columns.name = None
    return wide.reset_index()
