"""The whole DAG under DVC: every stage of dvc.yaml, run by `dvc repro` on the smoke profile.

The project's files (those git tracks, plus new ones not ignored) are copied into a temporary folder, which becomes
a git repository of its own; params.yaml there is the real one with the sizes of tests/smoke/overrides.yaml. The
test runs `dvc repro` once and checks that every stage ran and wrote its declared outputs, that the outputs are
sane (tables with rows, reports written, every paradigm and ablation strategy present), and that a second
`dvc repro` has nothing to do. A failure names the stage.

Build the same project by hand to debug a stage: `python tests/test_e2e_dvc.py /tmp/smoke`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ROOT / "tests" / "smoke" / "overrides.yaml"
STAGE_START = re.compile(r"^Running stage '([^']+)':")
STAGE_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")


# --- the smoke project ---------------------------------------------------------------------------
def merge_overrides(base: dict, overrides: dict, where: str = "") -> dict:
    """`base` with `overrides` applied: mappings merge key by key, anything else replaces. A key that is not in
    `base` is an error, so a renamed param fails here and not as a silently larger smoke run."""
    out = dict(base)
    for key, value in overrides.items():
        if key not in base:
            raise KeyError(f"{OVERRIDES}: '{where}{key}' is not a key of params.yaml (renamed or removed?)")
        if isinstance(value, dict) and isinstance(base[key], dict):
            out[key] = merge_overrides(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def smoke_params() -> dict:
    """The real params.yaml with the smoke profile's sizes."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return merge_overrides(base, yaml.safe_load(OVERRIDES.read_text()))


def project_files(root: Path = ROOT) -> list[str]:
    """What a clean clone would hold, as the working tree has it: tracked files plus new files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=smoke", "-c", "user.email=smoke@localhost", "-c", "commit.gpgsign=false",
                    *args], cwd=project, check=True, capture_output=True)


def make_smoke_project(dest: Path) -> Path:
    """Copy the project into `dest` (a fresh git repository), with the smoke params and no dvc.lock."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (dest / "dvc.lock").unlink(missing_ok=True)  # the lock of the full-size run: every stage runs afresh
    (dest / "params.yaml").write_text("# tests/smoke/overrides.yaml over the project's params.yaml\n"
                                      + yaml.safe_dump(smoke_params(), sort_keys=False))
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "smoke project")
    return dest


def smoke_env(project: Path) -> dict:
    """Offline, and the `gensr` of this interpreter's environment importing the code under test."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1",
               DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0", DAGSTER_HOME=str(project / ".dagster_home"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # the copy's own src/, so the stages run the code the test copied (and `dvc repro` hashes)
    env["PYTHONPATH"] = os.pathsep.join([str(project / "src"), str(project)])
    return env


# --- running dvc ----------------------------------------------------------------------------------
def _tree_cpu(proc) -> float:
    """CPU seconds of `proc` and every child it has waited for (the stages that finished)."""
    import psutil

    try:
        t = psutil.Process(proc.pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return t.user + t.system + t.children_user + t.children_system


def run_dvc(project: Path, *args: str, log: str) -> tuple[int, str, dict[str, dict[str, float]]]:
    """Run `dvc <args>` in `project`, its output also in `log` there. Returns (returncode, output, per stage
    run: wall seconds and CPU seconds from its 'Running stage' line to the next one or to the end). The CPU seconds
    estimate the time on idle cores when other jobs share them (the smoke stages run one thread each).
    GENSR_E2E_TIMEOUT (seconds, default 7200) stops a run that hangs."""
    import resource
    import signal
    import threading

    timeout = float(os.environ.get("GENSR_E2E_TIMEOUT", 7200))
    lines, marks = [], []  # marks: (stage, wall, cpu) at each stage start
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(project / log, "w") as out, subprocess.Popen(
            ["dvc", *args], cwd=project, env=smoke_env(project), text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True) as proc:
        def read() -> None:
            for line in proc.stdout:
                now = time.monotonic() - t0
                out.write(f"{now:8.1f} {line}")
                out.flush()
                lines.append(line)
                m = STAGE_START.match(line)
                if m:
                    marks.append((m.group(1), now, _tree_cpu(proc)))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs
            rc = proc.wait()
            lines.append(f"\n[stopped after GENSR_E2E_TIMEOUT={timeout:.0f} s]\n")
        reader.join(timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    end = (time.monotonic() - t0, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    bounds = [*[(w, c) for _, w, c in marks[1:]], end]
    seconds = {name: {"wall": b[0] - w, "cpu": b[1] - c} for (name, w, c), b in zip(marks, bounds)}
    return rc, "".join(lines), seconds


def stage_names(project: Path) -> list[str]:
    out = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=project, env=smoke_env(project),
                         capture_output=True, text=True, check=True).stdout
    return [s for s in out.split() if s]


def timing_table(seconds: dict[str, dict[str, float]]) -> str:
    rows = [f"  {'stage':<34} {'wall':>8} {'cpu':>8}"]
    rows += [f"  {name:<34} {s['wall']:7.1f}s {s['cpu']:7.1f}s" for name, s in seconds.items()]
    rows.append(f"  {'total':<34} {sum(s['wall'] for s in seconds.values()):7.1f}s "
                f"{sum(s['cpu'] for s in seconds.values()):7.1f}s")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke project after one `dvc repro` of every stage."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the end-to-end run copies the project's git-tracked files: needs git and a git checkout")
    project = make_smoke_project(tmp_path_factory.mktemp("smoke") / "project")
    found = subprocess.run([sys.executable, "-c", "import gensr; print(gensr.__file__)"], cwd=project,
                           env=smoke_env(project), capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).is_relative_to(project / "src"), f"the stages would import gensr from {found}, not the copy"
    stages = stage_names(project)
    rc, output, seconds = run_dvc(project, "repro", log="repro-1.log")
    (project / "stage_seconds.json").write_text(json.dumps(seconds, indent=1))
    print(f"\nsmoke `dvc repro` in {project}:\n{timing_table(seconds)}")
    return {"project": project, "stages": stages, "rc": rc, "output": output, "seconds": seconds,
            "params": yaml.safe_load((project / "params.yaml").read_text())}


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


# --- the run -----------------------------------------------------------------------------------------
def test_smoke_profile_is_the_real_params_with_smaller_sizes():
    from gensr.config import params_from_dict

    params = params_from_dict(smoke_params(), source=str(OVERRIDES))
    real = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params.corpus.n_utterances < real["corpus"]["n_utterances"]
    # every block of the real file is there, so every stage has its params
    assert set(smoke_params()) == set(real)
    with pytest.raises(KeyError, match="corpus.n_utterance"):
        merge_overrides(real, {"corpus": {"n_utterance": 3}})


@pytest.mark.e2e
def test_every_stage_of_dvc_yaml_runs(smoke):
    ran = list(smoke["seconds"])
    failed = re.findall(r"failed to reproduce '([^']+)'", smoke["output"]) or ran[-1:]
    assert smoke["rc"] == 0, (f"`dvc repro` failed in stage {', '.join(map(repr, failed))} (exit {smoke['rc']}); log: "
                              f"{smoke['project']}/repro-1.log\n{_tail(smoke['output'])}")
    missing = [s for s in smoke["stages"] if s not in ran]
    assert not missing, f"stages dvc.yaml declares that `dvc repro` did not run: {missing}"
    assert len(smoke["stages"]) >= 30, smoke["stages"]  # foreach x 3 paradigms, the ablation matrix, singing


def _declared_outputs(project: Path) -> dict[str, list[str]]:
    """Stage -> every path its dvc.lock entry records (outs, metrics and plots alike)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {name: [o["path"] for o in entry.get("outs", [])] for name, entry in lock.items()}


@pytest.mark.e2e
def test_every_stage_wrote_its_declared_outputs(smoke):
    project = smoke["project"]
    assert smoke["rc"] == 0, "see test_every_stage_of_dvc_yaml_runs"
    declared = _declared_outputs(project)
    assert set(declared) == set(smoke["stages"]), "dvc.lock does not list every stage"
    problems = []
    for stage, paths in declared.items():
        if not paths:
            problems.append(f"{stage}: declares no outputs")
        for rel in paths:
            path = project / rel
            if not path.exists():
                problems.append(f"{stage}: {rel} missing")
            elif path.is_file() and path.stat().st_size == 0:
                problems.append(f"{stage}: {rel} is empty")
            elif path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
                problems.append(f"{stage}: {rel} holds no file")
            else:
                problems += [f"{stage}: {msg}" for msg in _unreadable(path)]
    assert not problems, "\n".join(problems)


def _unreadable(path: Path) -> list[str]:
    """Every Parquet and JSON file under `path` opens (an interrupted write would not)."""
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    bad = []
    for f in files:
        try:
            if f.suffix == ".parquet":
                pq.read_metadata(f)
            elif f.suffix == ".json":
                json.loads(f.read_text())
        except Exception as err:  # noqa: BLE001 - reported with the file
            bad.append(f"{f}: {type(err).__name__}: {err}")
    return bad


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.e2e
def test_outputs_hold_what_each_stage_promises(smoke):
    """Content checks, stage by stage: the counts the smoke params ask for, and non-empty tables and reports."""
    import pandas as pd

    assert smoke["rc"] == 0, "see test_every_stage_of_dvc_yaml_runs"
    d, p = smoke["project"], smoke["params"]
    paradigms, n_cand = ("ar", "mgm", "fm"), p["sample"]["n_candidates"]
    problems: list[str] = []

    def check(stage: str, ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"{stage}: {what}")

    clean = pd.read_parquet(d / "data/clean/manifest.parquet")
    check("corpus", len(clean) == p["corpus"]["n_utterances"], f"{len(clean)} utterances")
    check("corpus", {"train", "pref", "test"} <= set(clean["split"]), f"splits {sorted(set(clean['split']))}")
    degraded = pd.read_parquet(d / "data/degraded/manifest.parquet")
    check("degrade", len(degraded) == len(clean) * p["degrade"]["copies"], f"{len(degraded)} degraded clips")
    check("confirm_corpus", _rows(d / "data/confirm/degraded/manifest.parquet") == p["confirm"]["n_utterances"],
          "confirmation set size")
    n_test = int((degraded["split"] == "test").sum())
    check("score_inputs", pd.read_parquet(d / "data/metrics/degraded_test.parquet")["clip_id"].nunique() == n_test,
          "not every degraded test clip scored")
    codec = json.loads((d / "models/codec/summary.json").read_text())
    check("train_codec", _finite(codec["final_loss"]) and codec["ceiling"], "codec loss or ceiling")
    n_pref = int((degraded["split"] == p["sample"]["split"]).sum())
    metrics = p["metrics"]["names"]
    for par in paradigms:
        base = json.loads((d / f"models/base/{par}/summary.json").read_text())
        check(f"train_base@{par}", base["steps"] == p["restorers"][par]["train"]["steps"]
              and _finite(base["final_loss"]) and set(metrics) <= set(base["test"]), "steps, loss or test scores")
        cands = pd.read_parquet(d / f"data/candidates/{par}/manifest.parquet")
        check(f"sample@{par}", len(cands) == n_pref * n_cand, f"{len(cands)} candidates, not {n_pref} x {n_cand}")
        scores = pd.read_parquet(d / f"data/metrics/{par}/metrics.parquet")
        check(f"score_candidates@{par}", len(scores) == len(cands) * len(metrics) and scores["value"].notna().mean()
              >= 1 - p["metrics"]["max_nan_rate"], f"{len(scores)} rows, NaN rate {scores['value'].isna().mean():.2f}")
        pairs = pd.read_parquet(d / f"data/pairs/{par}/multi/pairs.parquet")
        check(f"pairs@{par}", len(pairs) > 0, "no multi pairs")
        dpo = json.loads((d / f"models/aligned/{par}/multi/summary.json").read_text())
        check(f"dpo@{par}", dpo["n_train_pairs"] > 0 and dpo.get("mlflow_run_id"), "no pairs trained or no MLflow run")
        splits = ["test", *(s for s in p["ablation"]["splits"] if s != "test" and par in p["ablation"]["paradigms"])]
        for split in splits:
            per_clip = d / f"reports/base/{par}/{split}/per_clip.parquet"
            check(f"evaluate_base@{par}", per_clip.is_file() and _rows(per_clip) > 0, f"no base scores on {split}")
        ev = json.loads((d / f"reports/evaluation/{par}/evaluation.json").read_text())
        check(f"evaluate@{par}", set(metrics) <= set(ev["metrics"]) and all(
            _finite(ev["metrics"][m]["base"]) for m in metrics), "metrics missing or not finite")
        check(f"evaluate@{par}", ev["n_clips"] == n_test, f"{ev['n_clips']} clips, not {n_test}")
    for par in p["ablation"]["paradigms"]:
        for strategy in p["ablation"]["strategies"]:
            stage = f"ablation@{par}-{strategy}"
            for split in p["ablation"]["splits"]:
                ev = json.loads((d / f"reports/ablation/{par}/{strategy}/{split}/evaluation.json").read_text())
                check(stage, ev["split"] == split and ev["n_clips"] > 0, f"evaluation on {split}")
            check(stage, (d / f"models/ablation/{par}/{strategy}/restorer.pt").is_file(), "no checkpoint")
    ablation = pd.read_csv(d / "reports/ablation.csv")
    check("ablation_summary", set(ablation["strategy"]) == set(p["ablation"]["strategies"]),
          f"strategies {sorted(set(ablation['strategy']))}")
    check("ablation_summary", (d / "reports/ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "figure not PNG")
    table1 = pd.read_csv(d / "reports/table1.csv")
    check("evaluation_table", set(paradigms) <= set(table1["paradigm"]), f"Table 1 rows {table1['paradigm'].tolist()}")
    check("evaluation_table", set(json.loads((d / "reports/evaluation.json").read_text())) == set(
        p["evaluate"]["paradigms"]), "reports/evaluation.json paradigms")
    singing = {s: _rows(d / f"data/singing/{s}.parquet") for s in ("finetune", "test")}
    check("singing_corpus", sum(singing.values()) == p["singing"]["n_clips"] and min(singing.values()) > 0,
          f"clips per split {singing}")
    for source in ("aligned", "base"):
        labels = json.loads((d / f"data/singing_labels/{source}/summary.json").read_text())
        check("singing_labels", labels["n_kept"] >= p["pseudo_labels"]["min_kept"], f"{source}: {labels}")
        tuned = json.loads((d / f"models/voicefixer/finetuned_{source}/summary.json").read_text())
        check(f"finetuned_voicefixer@{source}", tuned.get("mlflow_run_id"), "no MLflow run")
    check("initial_voicefixer", json.loads((d / "models/voicefixer/initial/summary.json").read_text()).get(
        "mlflow_run_id"), "no MLflow run")
    sing = json.loads((d / "reports/singing/evaluation.json").read_text())
    check("singing_evaluation", sing["n_test"] == singing["test"] and sing.get("test", {}).get("n_clips") ==
          singing["test"], f"{sing['n_test']} test clips, scored {sing.get('test', {}).get('n_clips')}")
    check("singing_evaluation", len(sing["triptychs"]) == min(p["singing_eval"]["triptychs"], singing["test"]),
          "triptychs")
    assert not problems, "\n".join(problems)


@pytest.mark.e2e
def test_demo_page_links_resolve(smoke):
    from gensr.report.demo import broken_links

    assert smoke["rc"] == 0, "see test_every_stage_of_dvc_yaml_runs"
    page = smoke["project"] / "reports/demo/index.html"
    assert page.is_file(), "demo_page: reports/demo/index.html missing"
    assert broken_links(page) == [], f"demo_page: {broken_links(page)}"
    html = page.read_text()
    n_audio = html.count("<audio")
    assert n_audio >= 3 * smoke["params"]["report"]["clips_per_paradigm"], f"demo_page: {n_audio} audio players"
    # every section has its inputs: the page ran after every stage it shows, singing included
    missing = re.findall(r'<p class="missing">([^<]*)', html)
    assert not missing, f"demo_page ran before the stages its sections show: {missing}"
    assert "files/singing/triptychs/" in html and "audio/singing/" in html, "demo_page: no singing triptych"


@pytest.mark.e2e
def test_a_second_repro_has_nothing_to_do(smoke):
    assert smoke["rc"] == 0, "see test_every_stage_of_dvc_yaml_runs"
    project = smoke["project"]
    t0 = time.monotonic()
    rc, output, seconds = run_dvc(project, "repro", log="repro-2.log")
    print(f"\nno-op `dvc repro`: {time.monotonic() - t0:.1f} s")
    assert rc == 0, _tail(output)
    assert not seconds, f"a second `dvc repro` ran {list(seconds)}: their outputs or deps changed after they ran"
    skipped = {m.group(1) for m in map(STAGE_SKIPPED.match, output.splitlines()) if m}
    assert skipped == set(smoke["stages"]), f"not reported unchanged: {set(smoke['stages']) - skipped}"
    status = subprocess.run(["dvc", "status"], cwd=project, env=smoke_env(project), capture_output=True, text=True)
    assert status.returncode == 0 and "up to date" in status.stdout, f"`dvc status`:\n{status.stdout}{status.stderr}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/test_e2e_dvc.py DEST   (an empty or new folder)")
    print(make_smoke_project(Path(sys.argv[1])))
