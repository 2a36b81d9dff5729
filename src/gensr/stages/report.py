"""Stage `demo_page`: reports/demo/index.html, the paper-style demo page, from whatever the pipeline has made.

    reports/demo/index.html    samples, evaluation, ablation, singing, how this was made
    reports/demo/audio/ img/ files/   the WAVs, spectrograms and source tables it shows (relative links only)

Reads (each optional: a missing one becomes a line on the page naming the command that makes it)
    reports/base/<p>/test/, reports/evaluation/<p>/{restored/,evaluation.json}, reports/table1.md,
    reports/ablation.{md,png,json}, reports/singing/{evaluation.json,triptychs/*.png},
    summary.json files of the training runs (their MLflow run ids), params.yaml, the git commit.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from gensr.config import Params
from gensr.report.demo import DemoInputs, ParadigmSource, RunRecord, build_demo_page
from gensr.stages.ablation import report_dir as ablation_report_dir
from gensr.stages.dpo import aligned_dir
from gensr.stages.evaluate import base_dir, evaluation_dir

_URL = re.compile(r"#/experiments/([^/?#]+)/runs/([^/?#]+)")


def demo_dir(params: Params) -> Path:
    return Path(params.paths.reports) / "demo"


def demo_page(params: Params, params_file: str | Path = "params.yaml", out_dir: str | Path | None = None, *,
              summary: str | Path | None = None) -> dict:
    """Build the demo page (atomically, as one folder); returns its path and which sections had inputs (also written,
    with the wall seconds, to `summary`, a JSON path, if given: dvc.yaml's reports/demo.json)."""
    start = time.perf_counter()
    if params.report is None:
        raise ValueError("params.yaml has no `report` block (report.clips_per_paradigm, report.spectrogram): "
                         "copy it from the project's params.yaml")
    reports = Path(params.paths.reports)
    strategy = params.evaluate.strategy
    sources = [ParadigmSource(p, base_dir(params, p, "test") / "manifest.parquet",
                              evaluation_dir(params, p) / "restored" / "manifest.parquet",
                              evaluation_dir(params, p) / "evaluation.json", f"dvc repro evaluate@{p}")
               for p in params.evaluate.paradigms]
    from gensr.layout import degraded_manifest
    from gensr.tracking import git_sha

    inputs = DemoInputs(
        strategy=strategy, paradigms=sources, clips_per_paradigm=params.report.clips_per_paradigm, seed=params.seed,
        spectrogram=params.report.spectrogram, confidence=params.evaluate.confidence,
        table1_md=reports / "table1.md", ablation_md=reports / "ablation.md", ablation_png=reports / "ablation.png",
        ablation_json=reports / "ablation.json", singing_dir=reports / "singing", params_file=Path(params_file),
        git_commit=git_sha(), git_dirty=_git_dirty(), degraded_manifest=degraded_manifest(params),
        runs=mlflow_runs(params),
    )
    out_dir = Path(out_dir or demo_dir(params))
    result = build_demo_page(inputs, out_dir)
    if summary is not None:
        from gensr.storage import write_json

        write_json({**result, "seconds": round(time.perf_counter() - start, 2)}, summary)
    return result


def _git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Tracked files changed since the commit; None outside git.

    Untracked outputs do not count, and neither does `dvc.lock`: every `dvc repro` rewrites it (it records the
    run being made, and this stage runs inside one), so counting it would mark every fresh `make demo` dirty.
    """
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
                             capture_output=True, text=True, timeout=10, check=True, cwd=cwd)
        return bool(out.stdout.strip())
    except Exception:
        return None


def _summary_runs(params: Params) -> list[tuple[str, Path]]:
    """(label, summary.json) of every training run the page names, in pipeline order."""
    models, reports = Path(params.paths.models), Path(params.paths.reports)
    found = [("codec", models / "codec" / "summary.json")]
    found += [(f"base {p}", models / "base" / p / "summary.json") for p in params.evaluate.paradigms]
    found += [(f"dpo {p} {params.evaluate.strategy}", aligned_dir(params, p, params.evaluate.strategy) / "summary.json")
              for p in params.evaluate.paradigms]
    found += [(f"ablation {p} {s}", ablation_report_dir(params, p, s, "summary.json"))
              for p in params.ablation.paradigms for s in params.ablation.strategies]
    # the singing application's runs, whatever its layout
    for root in (reports / "singing", models / "voicefixer", models / "singing"):
        if root.is_dir():
            found += [(f"{root.name} {path.parent.relative_to(root).as_posix()}".replace(" .", ""), path)
                      for path in sorted(root.rglob("summary.json"))]
    return found


def mlflow_runs(params: Params) -> list[RunRecord]:
    """Run ids from the summaries (an id, or a UI link that carries one), with links into the MLflow UI's
    model-training view; the ablation's parent run is read from its children in the store, when it exists."""
    from gensr.tracking import ui_url

    records, pending = [], []
    for label, path in _summary_runs(params):
        if not path.is_file():
            continue
        try:
            summary = json.loads(path.read_text())
        except ValueError:
            continue
        run_id, url = summary.get("mlflow_run_id"), summary.get("mlflow_url")
        m = _URL.search(url or "")
        exp_id = m.group(1) if m else None
        run_id = run_id or (m.group(2) if m else None)
        if run_id is None:
            continue
        records.append([label, run_id, exp_id, str(path)])
        if exp_id is None:
            pending.append(records[-1])
    parent = None
    wants_store = pending or any(r[0].startswith("ablation") for r in records)
    if wants_store and (Path(params.paths.mlruns) / "mlflow.db").is_file():
        parent = _complete_from_store(params, records)
    out = [RunRecord(label, run_id, ui_url(exp, run_id) if exp else None, source)
           for label, run_id, exp, source in records]
    if parent is not None:
        out.append(RunRecord("ablation (parent)", parent[1], ui_url(parent[0], parent[1]), "the children's parent run"))
    return out


def _complete_from_store(params: Params, records: list[list]) -> tuple[str, str] | None:
    """Fill in experiment ids from the MLflow store; return the ablation parent (experiment, run id) if found.

    The store is optional for the page: a run it does not hold (deleted, another store) just has no link."""
    try:
        from gensr.tracking import configure

        client = configure(params.paths.mlruns).tracking.MlflowClient()
    except Exception:
        return None
    parent = None
    for rec in records:
        try:
            run = client.get_run(rec[1])
        except Exception:
            continue
        rec[2] = rec[2] or run.info.experiment_id
        pid = run.data.tags.get("mlflow.parentRunId")
        if rec[0].startswith("ablation") and pid and parent is None:
            parent = (run.info.experiment_id, pid)
    return parent
