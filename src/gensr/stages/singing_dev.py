"""`gensr singing-annotators`: choose the singing annotator on dev, never on the singing test split.

The pseudo-labels' annotator (`pseudo_labels.paradigm`) decides what the fine-tuned Voicefixer learns, and the
finetune split has no reference to tell a good annotator from a bad one. This builds a *dev* singing set with
the singing corpus code and a seed of its own (`singing_dev.seed`: other lyrics, melodies and degradations than
data/singing), restores its referenced clips with each candidate of `singing_dev.annotators`, and scores them
against the clean sung references beside the raw input. For the token paradigms (ar, mgm) it also scores the
codec's ceiling: each clean reference through the codec, on the degraded input's phase, which is what a token
restorer renders when it predicts the clean codes exactly. With `singing_dev.student` it adds the initial
Voicefixer, the model the labels are to teach: labels can only improve it where the annotator beats it.

Writes <paths.data>/singing_dev/ (the build, one folder per system: restorations and metric table) and
<paths.reports>/singing_dev/annotators.{json,md}. It is not a DVC stage: a dev tool, whose table the comment
on `pseudo_labels.paradigm` in params.yaml cites.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from gensr.config import Params, with_overrides
from gensr.storage import file_sha256, require_path, write_json, write_parquet

RAW, CEILING, STUDENT = "raw", "codec_ceiling", "initial_voicefixer"


def dev_data_dir(params: Params) -> Path:
    return Path(params.paths.data) / "singing_dev"


def dev_reports_dir(params: Params) -> Path:
    return Path(params.paths.reports) / "singing_dev"


def own_build_params(params: Params, data_dir: Path, seed: int, n_clips: int, test_fraction: float) -> Params:
    """The singing corpus params of a dev build under `data_dir`: its own seed, size and test share, no user
    recordings (the annotator comparison's build and the probe's)."""
    split = {"finetune": 1.0 - test_fraction, "test": test_fraction}
    return with_overrides(params, {"paths.data": str(data_dir), "singing.seed": seed, "singing.n_clips": n_clips,
                                   "singing.split": split, "singing.user_dir": None, "singing_dev": None})


def dev_build_params(params: Params) -> Params:
    """The singing corpus params of the dev build: its own seed and size, no user recordings, under singing_dev/."""
    dev = params.singing_dev
    return own_build_params(params, dev_data_dir(params), dev.seed, dev.n_clips, dev.reference_fraction)


def ensure_build(build: Params, marker: str, *, progress: bool = True) -> float | None:
    """Build the singing set of `build` unless its folder already holds one made under the same key (recorded in
    its summary.json under `marker`); returns the build's seconds, or None when it was reused."""
    from gensr.stages.singing_corpus import build_singing_corpus, singing_dir

    root = singing_dir(build)
    summary_path, key = root / "summary.json", build_key(build)
    if summary_path.is_file() and (root / "references.parquet").is_file() \
            and _read_json(summary_path).get(marker) == key:
        return None
    start = time.perf_counter()
    build_singing_corpus(build, progress=progress)
    write_json({**_read_json(summary_path), marker: key}, summary_path)
    return time.perf_counter() - start


def annotator_path(params: Params, spec: str) -> Path:
    """`aligned:<paradigm>` or `base:<paradigm>` -> its checkpoint (as `gensr singing-labels` would load it)."""
    from gensr.stages.singing import annotator_checkpoint

    source, paradigm = spec.split(":")
    return annotator_checkpoint(params, source, paradigm)


def _write_ceiling(codec, rows: list[dict], root: Path, refs: dict, out: Path, sample_rate: int) -> dict[str, Path]:
    """Each clean reference through `codec`, rendered on the degraded input's phase (as the token restorers do)."""
    import torch

    from gensr.audio.io import read_wav, write_wav

    paths = {}
    with torch.no_grad():
        for r in rows:
            clean, _ = read_wav(root / refs[r["deg_id"]]["clean_path"])
            degraded, _ = read_wav(root / r["path"])
            degraded_t = torch.from_numpy(degraded)[None]
            wave = codec.resynthesize(torch.from_numpy(clean)[None], degraded_t, degraded_t)[0].numpy()
            paths[r["deg_id"]] = write_wav(out / "wav" / f"{r['deg_id']}.wav", wave, sample_rate)
    return paths


def compare_annotators(params: Params, *, progress: bool = True) -> dict:
    """Build the dev singing set if needed, restore it with every candidate annotator, score, compare each with
    the raw input (paired bootstrap). Returns the result written to annotators.json."""
    import pyarrow.parquet as pq
    import torch

    from gensr.preference.suite import metric_info
    from gensr.pseudo.report import compare_systems
    from gensr.pseudo.restore import restore_clips
    from gensr.sampling.restore import clip_seed, load_for_sampling
    from gensr.stages.singing import VOICEFIXER_FILE, _block, annotator_fix, restore_voicefixer, voicefixer_dir
    from gensr.stages.singing_corpus import singing_dir

    for block in ("singing", "pseudo_labels", "singing_dev"):
        _block(params, block)
    dev = params.singing_dev
    if dev.student:
        _block(params, "voicefixer")
    missing = [(spec, annotator_path(params, spec)) for spec in dev.annotators]
    missing = [(spec, path) for spec, path in missing if not path.is_file()]
    if missing:  # checked before the dev build: a missing model must not cost one
        spec, path = missing[0]
        raise FileNotFoundError(f"{path}: checkpoint of annotator {spec} (singing_dev.annotators) not found; "
                                f"{annotator_fix(params, *spec.split(':'))}, or drop {spec} from singing_dev.annotators")
    student = voicefixer_dir(params, "initial") / VOICEFIXER_FILE
    if dev.student:
        require_path(student, "initial Voicefixer (singing_dev.student)",
                     "run `gensr initial-voicefixer`, or set singing_dev.student=false")
    start, timings = time.perf_counter(), {}
    torch.set_num_threads(int(params.restorers.threads))
    build = dev_build_params(params)
    root, out = singing_dir(build), dev_data_dir(params)
    built = ensure_build(build, "dev_build", progress=progress)
    if built is not None:
        timings["build"] = built
    refs = {r["deg_id"]: r for r in pq.read_table(root / "references.parquet").to_pylist()}
    rows = sorted((r for r in pq.read_table(root / "test.parquet").to_pylist() if r["deg_id"] in refs),
                  key=lambda r: r["deg_id"])
    sr = params.audio.sample_rate
    paths = {RAW: {r["deg_id"]: root / r["path"] for r in rows}}
    checkpoints, ceiling_of = {}, None
    t0 = time.perf_counter()
    for spec in dev.annotators:
        ckpt = annotator_path(params, spec)
        checkpoints[spec] = {"path": str(ckpt), "sha256": file_sha256(ckpt)}
        restorer = load_for_sampling(params, spec.split(":")[1], ckpt)
        res = restore_clips(restorer, rows, root, out / spec.replace(":", "_"),
                            lambda d: clip_seed(params.pseudo_labels.seed, d, 0, "label"),
                            shard_clips=params.pseudo_labels.shard_clips, sample_rate=sr,
                            checkpoint_sha256=checkpoints[spec]["sha256"], desc=f"restoring ({spec})",
                            progress=progress)
        paths[spec] = {rec["deg_id"]: out / spec.replace(":", "_") / rec["path"] for rec in res["records"]}
        if CEILING not in paths and hasattr(restorer, "codec"):  # the token paradigms share models/codec/codec.pt
            paths[CEILING] = _write_ceiling(restorer.codec, rows, root, refs, out / CEILING, sr)
            ceiling_of = spec
        del restorer
    if dev.student:
        from gensr.audio.io import read_wav, write_wav
        from gensr.voicefixer import load_voicefixer

        waves = restore_voicefixer(load_voicefixer(student), [read_wav(p)[0] for p in paths[RAW].values()], sr,
                                   params.voicefixer.restore_batch)
        paths[STUDENT] = {d: write_wav(out / STUDENT / "wav" / f"{d}.wav", w, sr) for d, w in zip(paths[RAW], waves)}
        checkpoints[STUDENT] = {"path": str(student), "sha256": file_sha256(student)}
    timings["restore"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    wide, per_system = score_systems(params, paths, rows, refs, root, list(dev.metrics), out / "metrics.parquet",
                                     progress=progress)
    timings["score"] = time.perf_counter() - t0
    infos = metric_info(list(dev.metrics))
    boot = {"n_bootstrap": params.evaluate.n_bootstrap, "confidence": params.evaluate.confidence, "seed": params.seed}
    order = [*dev.annotators, CEILING, STUDENT]  # the candidates, then what bounds them from above and beside
    comparisons = {s: compare_systems(per_system, s, RAW, infos, **boot) for s in order if s in paths}
    means = {s: {m: float(per_system[s][m].mean()) for m in dev.metrics} for s in paths}
    result = {"n_clips": len(rows), "seed": dev.seed, "build": str(root), "checkpoints": checkpoints,
              "metrics": list(dev.metrics), "ceiling_codec_of": ceiling_of, "means": means, "vs_raw": comparisons,
              "confidence": params.evaluate.confidence, "n_bootstrap": params.evaluate.n_bootstrap,
              "beats_raw": {s: _beats_raw(c) for s, c in comparisons.items()},
              "timings_s": {**timings, "total": time.perf_counter() - start}}
    reports = dev_reports_dir(params)
    write_json(result, reports / "annotators.json")
    (reports / "annotators.md").write_text(markdown(result))
    write_parquet(pa.Table.from_pandas(wide.drop(columns="clip_id"), preserve_index=False), reports / "per_clip.parquet")
    return result


def score_systems(params: Params, paths: dict[str, dict[str, Path]], rows: list[dict], refs: dict[str, dict],
                  root: Path, metrics: list[str], out: Path, *, progress: bool = True):
    """Score every system's restoration of every row against the build's clean references (`metrics` only) into
    `out`; returns the wide table (columns system, deg_id and the metrics) and, per system, its rows indexed by
    deg_id."""
    from gensr.metrics import to_wide
    from gensr.metrics.suite import score_manifest

    score_rows = [{"clip_id": f"{system}/{r['deg_id']}", "path": str(paths[system][r["deg_id"]]),
                   "ref_path": str(root / refs[r["deg_id"]]["clean_path"]), "text": r.get("text")}
                  for system in paths for r in rows]
    long = score_manifest(params.metrics.model_copy(update={"names": metrics}), score_rows, out, progress=progress)
    wide = to_wide(long)
    parts = wide["clip_id"].str.split("/", n=1, expand=True)
    wide["system"], wide["deg_id"] = parts[0], parts[1]
    return wide, {s: wide[wide["system"] == s].set_index("deg_id")[metrics] for s in paths}


def _beats_raw(comparison: dict) -> dict:
    """Significantly better / worse than the raw input, per metric (the comparison's own verdicts)."""
    verdicts = {m: v["significant"] for m, v in comparison["metrics"].items()}
    return {"better": sorted(m for m, v in verdicts.items() if v == "better"),
            "worse": sorted(m for m, v in verdicts.items() if v == "worse")}


def build_key(build: Params) -> dict:
    """What a dev build is reused under: its params and the generator's code (a changed melody or degradation
    code rebuilds it, as DVC reruns the singing_corpus stage)."""
    from gensr.stages.singing_corpus import generator_digest

    return {"singing": build.singing.model_dump(mode="json"), "audio": build.audio.model_dump(mode="json"),
            "code": generator_digest()}


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def markdown(result: dict) -> str:
    conf = round(result["confidence"] * 100)
    metrics = result["metrics"]
    lines = ["# Singing annotators on dev", "",
             f"{result['n_clips']} dev clips (seed {result['seed']}, never the singing test split), each system minus "
             f"the raw input, mean and {conf}% paired-bootstrap CI ({result['n_bootstrap']} resamples); `*` "
             "significantly better, `!` significantly worse." + (
                 " `initial_voicefixer`: the student the labels are to teach." if STUDENT in result["vs_raw"] else "") + (
                 f" `codec_ceiling`: the clean reference through the codec of {result['ceiling_codec_of']} on the "
                 "degraded phase: what a token restorer (ar, mgm) renders when it predicts the clean codes exactly."
                 if result["ceiling_codec_of"] else ""), "",
             "| system | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics),
             "| raw (mean) | " + " | ".join(f"{result['means']['raw'][m]:.3f}" for m in metrics) + " |"]
    for system, comp in result["vs_raw"].items():
        cells = []
        for m in metrics:
            v = comp["metrics"][m]
            flag = {"better": "*", "worse": "!"}.get(v["significant"], "")
            cells.append(f"{v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]{flag}")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
