"""`gensr singing-probe`: what each label source can teach the initial Voicefixer, measured on a dev build.

The singing application fine-tunes the initial Voicefixer (the *student*) on pseudo-labels, and its target is a
student that restores singing better afterwards. Whether it can depends on two things the singing test split must
not be used to find out: how good the labels are, and whether the fine-tuning budget (`voicefixer.finetune`)
turns good labels into a better student at all. The probe answers both on a build of its own
(`singing_dev.probe.seed`: other lyrics, melodies, singers' notes and degradations than data/singing and the
annotator comparison's build):

- its finetune split is labelled by each source of `singing_dev.probe.sources`: `oracle`, the clean sung
  reference itself (the best label any annotator could give; it exists only because the build is simulated), or
  an annotator `<aligned|base>:<paradigm>`, whose restorations pass `pseudo_labels.gate` as in
  `gensr singing-labels`;
- a copy of the initial Voicefixer is fine-tuned on each label set with `gensr.pseudo.finetune.finetune_on_labels`
  and `voicefixer.finetune`, exactly as the `finetuned_voicefixer` stage does (the oracle labels are handed to it
  as a label table, like any other);
- the student and every fine-tuned copy restore the probe's test split, which is scored against its references;
  each fine-tuned copy minus the student, with paired-bootstrap CIs.

If even the oracle labels do not improve the student, the fine-tuning budget is what fails, not the annotator.

Writes <paths.data>/singing_dev/probe/ (build, labels, fine-tuned checkpoints, restorations, scores) and
<paths.reports>/singing_dev/probe.{json,md}. A dev tool, not a DVC stage; nothing reads the singing test split.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow as pa

from gensr.config import Params
from gensr.config.singing_dev import ORACLE
from gensr.storage import file_sha256, require_path, write_json, write_parquet

STUDENT = "initial_voicefixer"


def probe_dir(params: Params) -> Path:
    from gensr.stages.singing_dev import dev_data_dir

    return dev_data_dir(params) / "probe"


def probe_build_params(params: Params) -> Params:
    """The singing corpus params of the probe's build: its own seed, size and split, no user recordings."""
    from gensr.stages.singing_dev import own_build_params

    probe = params.singing_dev.probe
    return own_build_params(params, probe_dir(params), probe.seed, probe.n_clips, probe.test_fraction)


def _oracle_labels(rows: list[dict], root: Path, out: Path) -> list[dict]:
    """Label-table rows whose labels are copies of the clean sung references (every one kept)."""
    records = []
    for r in rows:
        target = out / "wav" / f"{r['deg_id']}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "clean" / "wav" / f"{r['utt_id']}.wav", target)
        records.append({"deg_id": r["deg_id"], "path": f"wav/{r['deg_id']}.wav", "kept": True, "reason_code": None})
    return records


def _annotator_labels(params: Params, spec: str, rows: list[dict], root: Path, out: Path, progress: bool) -> list[dict]:
    """The annotator's restorations of `rows`, gated as `gensr singing-labels` gates them."""
    from gensr.pseudo.gate import gate_labels
    from gensr.pseudo.restore import restore_clips
    from gensr.sampling.restore import clip_seed, load_for_sampling
    from gensr.stages.singing_dev import annotator_path

    cfg = params.pseudo_labels
    ckpt = annotator_path(params, spec)
    restorer = load_for_sampling(params, spec.split(":")[1], ckpt)
    res = restore_clips(restorer, rows, root, out, lambda d: clip_seed(cfg.seed, d, 0, "label"),
                        shard_clips=cfg.shard_clips, sample_rate=params.audio.sample_rate,
                        checkpoint_sha256=file_sha256(ckpt), desc=f"labelling ({spec})", progress=progress)
    by_id = {r["deg_id"]: r for r in rows}
    items = [{"clip_id": rec["deg_id"], "label": out / rec["path"], "input": root / by_id[rec["deg_id"]]["path"]}
             for rec in res["records"]]
    gated = {g["clip_id"]: g for g in gate_labels(items, cfg.gate, params.metrics, out / "gate_scores.parquet",
                                                   params.audio.sample_rate, progress=progress)}
    return [{"deg_id": rec["deg_id"], "path": rec["path"], "kept": bool(gated[rec["deg_id"]]["kept"]),
             "reason_code": gated[rec["deg_id"]]["reason_code"]} for rec in res["records"]]


def run_probe(params: Params, *, progress: bool = True) -> dict:
    """Build (or reuse) the probe's singing set, label, fine-tune, restore and score; returns probe.json's content."""
    import pyarrow.parquet as pq
    import torch

    from gensr.audio.io import read_wav, write_wav
    from gensr.preference.suite import metric_info
    from gensr.pseudo.finetune import finetune_on_labels
    from gensr.pseudo.gate import reason_counts
    from gensr.pseudo.report import compare_systems
    from gensr.stages.singing import VOICEFIXER_FILE, _block, annotator_fix, restore_voicefixer, voicefixer_dir
    from gensr.stages.singing_corpus import singing_dir
    from gensr.stages.singing_dev import annotator_path, dev_reports_dir, ensure_build, score_systems
    from gensr.voicefixer import load_voicefixer, save_voicefixer

    for block in ("singing", "pseudo_labels", "voicefixer", "singing_dev"):
        _block(params, block)
    probe = params.singing_dev.probe
    if probe is None:
        raise ValueError("params has no `singing_dev.probe:` block; add one (see params.yaml)")
    for spec in probe.sources:  # a missing model must not cost a build
        if spec != ORACLE and not annotator_path(params, spec).is_file():
            raise FileNotFoundError(f"{annotator_path(params, spec)}: checkpoint of label source {spec} "
                                    f"(singing_dev.probe.sources) not found; {annotator_fix(params, *spec.split(':'))}")
    student = require_path(voicefixer_dir(params, "initial") / VOICEFIXER_FILE, "initial Voicefixer",
                           "run `gensr initial-voicefixer`")
    start, timings = time.perf_counter(), {}
    torch.set_num_threads(int(params.restorers.threads))
    build = probe_build_params(params)
    root, out, sr = singing_dir(build), probe_dir(params), params.audio.sample_rate
    built = ensure_build(build, "probe_build", progress=progress)
    if built is not None:
        timings["build"] = built
    finetune = pq.read_table(root / "finetune.parquet")
    train_rows = sorted(finetune.to_pylist(), key=lambda r: r["deg_id"])
    refs = {r["deg_id"]: r for r in pq.read_table(root / "references.parquet").to_pylist()}
    test_rows = sorted((r for r in pq.read_table(root / "test.parquet").to_pylist() if r["deg_id"] in refs),
                       key=lambda r: r["deg_id"])

    inputs = [read_wav(root / r["path"])[0] for r in test_rows]
    systems = {STUDENT: student}
    labels_info = {}
    t0 = time.perf_counter()
    for spec in probe.sources:
        name = spec.replace(":", "_")
        label_dir = out / "labels" / name
        records = (_oracle_labels(train_rows, root, label_dir) if spec == ORACLE
                   else _annotator_labels(params, spec, train_rows, root, label_dir, progress))
        table = pa.Table.from_pylist([{k: r[k] for k in ("deg_id", "path", "kept")} for r in records])
        write_parquet(table, label_dir / "labels.parquet")
        model = load_voicefixer(student)
        fit = finetune_on_labels(model, finetune, root, table, label_dir, params.voicefixer.finetune,
                                 seed=params.seed, min_kept=params.pseudo_labels.min_kept)
        systems[_system(spec)] = save_voicefixer(model, out / "models" / name / VOICEFIXER_FILE,
                                                       extra={"stage": "singing_probe", "labels": spec})
        labels_info[spec] = {"n_labels": len(records), "n_kept": len(fit["deg_ids"]),
                             "dropped": reason_counts(records), "final_loss": fit["analysis"].get("final_loss")}
    timings["label_and_finetune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    paths = {"raw": {r["deg_id"]: root / r["path"] for r in test_rows}}
    for system, ckpt in systems.items():
        waves = restore_voicefixer(load_voicefixer(ckpt), inputs, sr, params.voicefixer.restore_batch)
        paths[system] = {r["deg_id"]: write_wav(out / "restored" / system / f"{r['deg_id']}.wav", w, sr)
                         for r, w in zip(test_rows, waves)}
    metrics = list(params.singing_dev.metrics)
    _, per_system = score_systems(params, paths, test_rows, refs, root, metrics, out / "metrics.parquet",
                                  progress=progress)
    timings["restore_and_score"] = time.perf_counter() - t0
    infos = metric_info(metrics)
    boot = {"n_bootstrap": params.evaluate.n_bootstrap, "confidence": params.evaluate.confidence, "seed": params.seed}
    vs_student = {s: compare_systems(per_system, s, STUDENT, infos, **boot) for s in systems if s != STUDENT}
    vs_student["raw"] = compare_systems(per_system, "raw", STUDENT, infos, **boot)
    # the singing target's control: the student fine-tuned on an aligned annotator's labels minus on its base's
    pairs = [(spec, "base:" + spec.split(":")[1]) for spec in probe.sources
             if spec.startswith("aligned:") and "base:" + spec.split(":")[1] in probe.sources]
    vs_base_labels = {a: compare_systems(per_system, _system(a), _system(b), infos, **boot) for a, b in pairs}
    result = {"seed": probe.seed, "n_train_clips": len(train_rows), "n_test_clips": len(test_rows),
              "build": str(root), "sources": list(probe.sources), "labels": labels_info,
              "finetune": params.voicefixer.finetune.model_dump(mode="json"), "metrics": metrics,
              "means": {s: {m: float(per_system[s][m].mean()) for m in metrics} for s in paths},
              "vs_student": vs_student, "vs_base_labels": vs_base_labels, "confidence": params.evaluate.confidence,
              "n_bootstrap": params.evaluate.n_bootstrap,
              "improves_student": {s: _improves(c) for s, c in vs_student.items() if s != "raw"},
              "timings_s": {**{k: round(v, 1) for k, v in timings.items()},
                            "total": round(time.perf_counter() - start, 1)}}
    reports = dev_reports_dir(params)
    write_json(result, reports / "probe.json")
    (reports / "probe.md").write_text(markdown(result))
    return result


def _system(source: str) -> str:
    """The fine-tuned copy of a label source, e.g. aligned:mgm -> finetuned_aligned_mgm."""
    return "finetuned_" + source.replace(":", "_")


def _cells(comparison: dict, metrics: list[str]) -> list[str]:
    cells = []
    for m in metrics:
        v = comparison["metrics"][m]
        flag = {"better": "*", "worse": "!"}.get(v["significant"], "")
        cells.append(f"{v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]{flag}")
    return cells


def _improves(comparison: dict) -> dict:
    """The singing target's reading, per fine-tuned copy: better than the student on DNSMOS OVRL and on every
    intrusive metric scored, by CIs; and the lists of metrics significantly better / worse."""
    from gensr.metrics.registry import get

    verdicts = {m: v["significant"] for m, v in comparison["metrics"].items()}
    intrusive = [m for m in verdicts if get(m).needs_reference]
    needed = [m for m in ["dnsmos_ovrl", *intrusive] if m in verdicts]
    return {"target_met": bool(needed) and all(verdicts[m] == "better" for m in needed),
            "better": sorted(m for m, v in verdicts.items() if v == "better"),
            "worse": sorted(m for m, v in verdicts.items() if v == "worse")}


def markdown(result: dict) -> str:
    conf = round(result["confidence"] * 100)
    metrics = result["metrics"]
    ft = result["finetune"]["analysis"]
    lines = ["# Singing probe: what each label source teaches the initial Voicefixer (dev)", "",
             f"Build seed {result['seed']}: {result['n_train_clips']} finetune clips (labelled by each source, trained "
             f"on), {result['n_test_clips']} test clips (scored against their references; never the singing test "
             f"split). Fine-tuning: voicefixer.finetune ({ft['steps']} analysis steps, lr {ft['lr']}, batch "
             f"{ft['batch_size']}). Each row minus the initial Voicefixer, mean and {conf}% paired-bootstrap CI "
             f"({result['n_bootstrap']} resamples); `*` significantly better, `!` significantly worse. `oracle`: the "
             "clean sung reference as the label, the best any annotator could give.", "",
             "| labels kept | system | target met | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics),
             "| | initial Voicefixer (mean) | | " + " | ".join(f"{result['means'][STUDENT][m]:.3f}" for m in metrics) + " |"]
    for system, comp in result["vs_student"].items():
        source = next((s for s in result["labels"] if _system(s) == system), None)
        kept = f"{result['labels'][source]['n_kept']}/{result['labels'][source]['n_labels']}" if source else ""
        met = "yes" if result["improves_student"].get(system, {}).get("target_met") else ("no" if source else "")
        name = "raw input" if system == "raw" else system
        lines.append(f"| {kept} | {name} | {met} | " + " | ".join(_cells(comp, metrics)) + " |")
    if result["vs_base_labels"]:
        lines += ["", "The control: fine-tuned on the aligned annotator's labels minus on its base's (`*` the aligned "
                  "labels teach significantly better, `!` worse).", "",
                  "| labels | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for source, comp in result["vs_base_labels"].items():
            lines.append(f"| {source} - base:{source.split(':')[1]} | " + " | ".join(_cells(comp, metrics)) + " |")
    return "\n".join(lines) + "\n"
