"""Where the last `dvc repro` spent its time, stage by stage, and what the paper's 80K preference pairs would cost.

Reads only what the stages left on disk under a project directory (default: the repo root): each stage's wall
seconds from its summary (data/*/summary.json, data/clean.json, models/*/summary.json, reports/*, ...), and the
stage list from dvc.yaml (foreach and matrix expanded with params.yaml). A stage whose record is absent is shown as
missing. Nothing is run.

    python -m benchmarks demo [--root=DIR] [--pairs=80000] [--cores=2]

Projection, per paradigm, from the measured per-clip costs (docs/scaling.md, "What 80K preference pairs cost"):

    clips      = P / y                      y = unanimous pairs per pool clip (data/pairs/<p>/multi/stats.json)
    sampling   = clips * T * s_sample       s_sample = sample wall seconds per clip, T = restorers.threads
    scoring    = clips * s_score            s_score = scorer core-seconds per pool clip (the sum of scorer_seconds
                                            of data/metrics/<p>/summary.json over its clips / n_candidates)
    dpo        = (P / B) * T * s_step       one epoch at the DPO batch B; s_step = DPO wall seconds per step
    core-hours = (sampling + scoring + dpo) / 3600,   wall on C cores = core-hours / C
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER_PAIRS = 80_000


@dataclass
class Row:
    """One stage of dvc.yaml: its recorded wall seconds and the items it processed (None: not recorded)."""

    stage: str
    seconds: float | None = None
    items: int | None = None
    unit: str = ""
    note: str = ""

    @property
    def missing(self) -> bool:
        return self.seconds is None


# --- where each stage records its time --------------------------------------------------------------------------
def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(d: dict | None, *keys) -> float | None:
    for key in keys:
        cur = d
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if isinstance(cur, (int, float)) and not isinstance(cur, bool):
            return float(cur)
    return None


# stage -> (its record, relative to the root with {p} = the paradigm/item, the seconds key, the items key, unit):
# the stages whose record needs no more than reading two numbers
RECORDS = {
    "corpus": ("data/clean.json", "seconds", "n_utterances", "utterances"),
    "degrade": ("data/degraded.json", "seconds", "n_degraded", "clips"),
    "confirm_corpus": ("data/confirm/summary.json", "seconds", "n_utterances", "utterances"),
    "score_inputs": ("data/metrics/degraded_test.json", "wall_seconds", "n_clips", "clips"),
    "score_candidates": ("data/metrics/{p}/summary.json", "wall_seconds", "n_clips", "candidates"),
    "sample": ("data/candidates/{p}/summary.json", "seconds", "n_clips", "clips"),
    "pairs": ("data/pairs/{p}.json", "seconds", "n_clips", "clips"),
    "dpo": ("models/aligned/{p}/multi/summary.json", "seconds", "settings.steps", "steps"),
    "evaluate": ("reports/evaluation/{p}.json", "seconds", "n_clips", "clips"),
    "ablation_summary": ("reports/ablation_summary.json", "seconds", None, ""),
    "evaluation_table": ("reports/table1.json", "seconds", None, ""),
    "demo_page": ("reports/demo.json", "seconds", None, ""),
    "singing_corpus": ("data/singing/summary.json", "seconds", "n_clips", "clips"),
    "singing_labels": ("data/singing_labels/summary.json", "seconds", "n_clips", "clips"),
    "initial_voicefixer": ("models/voicefixer/initial/summary.json", "seconds", "n_train_pairs", "pairs"),
    "finetuned_voicefixer": ("models/voicefixer/finetuned_{p}/summary.json", "seconds", "n_kept", "labels"),
    "singing_evaluation": ("reports/singing/evaluation.json", "seconds.total", "n_test", "clips"),
}


def _record(root: Path, stage: str, item: dict) -> tuple[float | None, int | None, str, str]:
    """(seconds, items, unit, note) of one stage instance from the files it wrote."""
    p = item.get("item") or item.get("paradigm")
    models, reports = root / "models", root / "reports"
    if stage in RECORDS:
        path, seconds_key, items_key, unit = RECORDS[stage]
        s = _json(root / path.format(p=p))
        return _num(s, seconds_key), (_num(s, items_key) if items_key else None), unit, ""
    if stage == "train_codec":
        s = _json(models / "codec" / "summary.json")  # train_seconds includes k-means
        return _num(s, "train_seconds"), None, "", "fit only (the ceiling's restoring and scoring are not timed)"
    if stage == "train_base":
        s = _json(models / "base" / p / "summary.json")
        train, score = _num(s, "train_seconds"), _num(s, "score_seconds")
        seconds = None if train is None else train + (score or 0.0)
        return seconds, _num(s, "steps"), "steps", "fit + scoring the test split (its restoring is not timed)"
    if stage == "evaluate_base":
        s = _json(reports / "base" / f"{p}.json")
        clips = sum((s or {}).get("n_clips", {}).values()) if s else None
        return _num(s, "seconds"), clips, "clips", ""
    if stage == "ablation":
        strategy = item["strategy"]
        s = _json(reports / "ablation" / p / strategy / "summary.json")
        steps = _num(_json(models / "ablation" / p / strategy / "summary.json"), "settings.steps")
        seconds = _num(s, "seconds")
        if seconds is None and _num(s, "train_seconds") is not None:
            return _num(s, "train_seconds"), steps, "steps", "training only (an older run: evaluation not timed)"
        return seconds, steps, "steps", ""
    return None, None, "", "no timing known for this stage (add it to benchmarks/bench_demo.py)"


# --- the stages of dvc.yaml -------------------------------------------------------------------------------------
def _resolve(value, params: dict):
    """`${a.b}` from params.yaml (dvc.yaml's matrix lists), or the value itself."""
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{([\w.]+)\}", value.strip())
        if m:
            cur = params
            for part in m.group(1).split("."):
                cur = cur.get(part, {}) if isinstance(cur, dict) else {}
            return cur if isinstance(cur, list) else []
    return value


def stage_instances(root: Path) -> list[tuple[str, str, dict]]:
    """(dvc stage name, base name, item) for every stage of root/dvc.yaml, in file order."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    params = yaml.safe_load((root / "params.yaml").read_text()) if (root / "params.yaml").is_file() else {}
    out = []
    for name, body in (dvc.get("stages") or {}).items():
        if "foreach" in body:
            items = _resolve(body["foreach"], params or {})
            out += [(f"{name}@{it}", name, {"item": it}) for it in items]
        elif "matrix" in body:
            keys = list(body["matrix"])
            values = [_resolve(body["matrix"][k], params or {}) for k in keys]
            for combo in itertools.product(*values):
                out.append((f"{name}@{'-'.join(map(str, combo))}", name, dict(zip(keys, combo))))
        else:
            out.append((name, name, {}))
    return out


def stage_rows(root: str | Path) -> list[Row]:
    """One Row per stage instance of root/dvc.yaml, from what its last run wrote under root."""
    root = Path(root)
    rows = []
    for name, base, item in stage_instances(root):
        seconds, items, unit, note = _record(root, base, item)
        rows.append(Row(name, seconds, None if items is None else int(items), unit, note))
    return rows


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def stage_table(rows: list[Row]) -> str:
    """Markdown table: stage, seconds, share of the recorded total, items, seconds per item; then the total."""
    total = sum(r.seconds for r in rows if not r.missing)
    lines = ["| stage | seconds | share | items | s / item | note |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.missing:
            lines.append(f"| {r.stage} | missing | | | | no record of a run |")
            continue
        share = f"{100 * r.seconds / total:.1f}%" if total else ""
        items = f"{r.items} {r.unit}" if r.items is not None else ""
        per = f"{r.seconds / r.items:.3g}" if r.items else ""
        lines.append(f"| {r.stage} | {r.seconds:.1f} | {share} | {items} | {per} | {r.note} |")
    n_missing = sum(r.missing for r in rows)
    lines.append(f"| **total** | **{total:.1f}** ({_hms(total)}) | 100% | | | "
                 f"{len(rows) - n_missing} of {len(rows)} stages recorded" + (f"; {n_missing} missing" if n_missing else "")
                 + " |")
    return "\n".join(lines)


# --- the 80K-pair projection -------------------------------------------------------------------------------------
@dataclass
class Costs:
    """Measured per-clip costs of one paradigm (None: not measured)."""

    paradigm: str
    pairs_per_clip: float | None = None
    sample_s_per_clip: float | None = None  # wall, on `threads` threads
    score_core_s_per_clip: float | None = None  # scorer core-seconds per pool clip (all its candidates)
    dpo_s_per_step: float | None = None  # wall, on `threads` threads
    dpo_batch: int | None = None
    threads: int = 1

    def missing(self) -> list[str]:
        names = {"pairs_per_clip": "pairs", "sample_s_per_clip": "sample", "score_core_s_per_clip": "score_candidates",
                 "dpo_s_per_step": "dpo"}
        return [v for k, v in names.items() if getattr(self, k) is None]


def _threads(params: dict) -> int:
    t = (params.get("restorers") or {}).get("threads", 1)
    return os.cpu_count() or 1 if t == "auto" else int(t)


def measured_costs(root: str | Path, paradigm: str) -> Costs:
    root = Path(root)
    params = yaml.safe_load((root / "params.yaml").read_text()) if (root / "params.yaml").is_file() else {}
    c = Costs(paradigm, threads=_threads(params or {}))
    pairs = _json(root / "data" / "pairs" / paradigm / "multi" / "stats.json")
    if _num(pairs, "n_clips"):
        c.pairs_per_clip = _num(pairs, "n_pairs") / _num(pairs, "n_clips")
    sample = _json(root / "data" / "candidates" / paradigm / "summary.json")
    if _num(sample, "seconds") is not None and _num(sample, "n_clips"):
        c.sample_s_per_clip = _num(sample, "seconds") / _num(sample, "n_clips")
    score = _json(root / "data" / "metrics" / paradigm / "summary.json")
    n_candidates = _num(sample, "n_candidates")
    if score and isinstance(score.get("scorer_seconds"), dict) and _num(score, "n_clips") and n_candidates:
        pool_clips = _num(score, "n_clips") / n_candidates
        c.score_core_s_per_clip = sum(score["scorer_seconds"].values()) / pool_clips
    dpo = _json(root / "models" / "aligned" / paradigm / "multi" / "summary.json")
    if _num(dpo, "seconds") is not None and _num(dpo, "settings.steps"):
        c.dpo_s_per_step = _num(dpo, "seconds") / _num(dpo, "settings.steps")
        c.dpo_batch = int(_num(dpo, "settings.batch_size") or 0) or None
    return c


def project(c: Costs, pairs: int = PAPER_PAIRS) -> dict | None:
    """The formula of the module docstring, in core-hours; a part whose cost is missing is None and left out of
    core_h (`partial` then says so). None without the pair yield, which every part but DPO needs."""
    if not c.pairs_per_clip:
        return None
    clips = pairs / c.pairs_per_clip
    sampling = None if c.sample_s_per_clip is None else clips * c.threads * c.sample_s_per_clip / 3600
    scoring = None if c.score_core_s_per_clip is None else clips * c.score_core_s_per_clip / 3600
    dpo = None if c.dpo_s_per_step is None or not c.dpo_batch else pairs / c.dpo_batch * c.threads * c.dpo_s_per_step / 3600
    parts = (sampling, scoring, dpo)
    return {"clips": clips, "sampling_h": sampling, "scoring_h": scoring, "dpo_h": dpo,
            "core_h": sum(x for x in parts if x is not None), "partial": any(x is None for x in parts)}


def projection_table(costs: list[Costs], pairs: int = PAPER_PAIRS, cores: int = 2) -> str:
    lines = [f"| paradigm | pairs / clip | pool clips for {pairs:,} pairs | sampling core-h | scoring core-h | "
             f"DPO core-h (1 epoch) | total core-h | wall on {cores} cores |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in costs:
        res = project(c, pairs)
        if res is None:
            lines.append(f"| {c.paradigm} | missing: {', '.join(c.missing())} | | | | | | |")
            continue

        def h(x):
            return "missing" if x is None else f"{x:.1f}"

        at_least = "≥ " if res["partial"] else ""
        lines.append(f"| {c.paradigm} | {c.pairs_per_clip:.3f} | {res['clips']:,.0f} | {h(res['sampling_h'])} | "
                     f"{h(res['scoring_h'])} | {h(res['dpo_h'])} | {at_least}{res['core_h']:.1f} | "
                     f"{at_least}{res['core_h'] / cores:.1f} h |")
    return "\n".join(lines)


def cost_lines(costs: list[Costs]) -> list[str]:
    out = []
    for c in costs:
        parts = [f"{c.paradigm}: threads {c.threads}"]
        if c.sample_s_per_clip is not None:
            parts.append(f"sampling {c.sample_s_per_clip:.3f} s/clip")
        if c.score_core_s_per_clip is not None:
            parts.append(f"scoring {c.score_core_s_per_clip:.2f} core-s/clip")
        if c.dpo_s_per_step is not None:
            parts.append(f"DPO {c.dpo_s_per_step:.3f} s/step at batch {c.dpo_batch}")
        out.append("  " + ", ".join(parts))
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks demo")
    ap.add_argument("--root", default=str(ROOT), help="project directory the last dvc repro wrote into")
    ap.add_argument("--pairs", type=int, default=PAPER_PAIRS)
    ap.add_argument("--cores", type=int, default=2, help="cores for the projected wall time")
    args, _ = ap.parse_known_args(argv)  # options meant for the other benchmarks of the same `make bench`
    root = Path(args.root)
    if not (root / "dvc.yaml").is_file():
        print(f"{root}: no dvc.yaml; pass --root=<project dir>")
        return
    print(f"last `dvc repro` under {root} (wall seconds each stage recorded)\n")
    print(stage_table(stage_rows(root)))
    paradigms = [it["item"] for _, base, it in stage_instances(root) if base == "sample"]
    costs = [measured_costs(root, p) for p in paradigms]
    print(f"\nprojection to {args.pairs:,} preference pairs per paradigm, from the measured per-clip costs:")
    print("  clips = P / (pairs per pool clip); core-h = clips x (T x sample s/clip + scorer core-s/clip) / 3600"
          "\n    + (P / DPO batch) x T x DPO s/step / 3600  (T = restorers.threads; one DPO epoch)")
    print("\n".join(cost_lines(costs)) + "\n")
    print(projection_table(costs, args.pairs, args.cores))
