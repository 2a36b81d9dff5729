"""The demo page: built from a small fake-but-real pipeline tree, every local link resolves, and headless
Chromium shows it with every audio player loaded (the page's own check writes the counts into the DOM)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
METRICS = ["dnsmos_ovrl", "pesq_wb", "wer", "speaker_cosine"]
SR = 16000


# --- a small pipeline tree ------------------------------------------------------------------
def _params(tmp: Path, project_params, paradigms=("ar", "fm")):
    return project_params([f"paths.data={tmp / 'data'}", f"paths.models={tmp / 'models'}",
                           f"paths.reports={tmp / 'reports'}", f"paths.mlruns={tmp / 'mlruns'}",
                           f"evaluate.paradigms=[{', '.join(paradigms)}]", "report.clips_per_paradigm=2",
                           "ablation.paradigms=[ar]", "ablation.strategies=[multi, sft_clean, 'single:pesq_wb']"])


def _tone(rng, seconds=1.5, f0=220.0, noise=0.05):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t) + noise * rng.standard_normal(t.size)).astype(np.float32)


def _scores(rng, ids, shift=0.0):
    return pd.DataFrame({"clip_id": ids, "dnsmos_ovrl": 2.5 + shift + 0.2 * rng.standard_normal(len(ids)),
                         "pesq_wb": 1.8 + shift + 0.2 * rng.standard_normal(len(ids)),
                         "wer": np.clip(0.3 - shift / 4 + 0.05 * rng.standard_normal(len(ids)), 0, 1),
                         "speaker_cosine": 0.8 + shift / 10 + 0.02 * rng.standard_normal(len(ids))})


def _evaluation(params, base, aligned, paradigm):
    """An evaluation.json in the real schema: gensr.evaluate.compare on synthetic per-clip tables."""
    from gensr.evaluate.compare import compare
    from gensr.preference.suite import metric_info

    infos = metric_info(METRICS)
    res = compare(base, aligned, infos, n_bootstrap=200, confidence=params.evaluate.confidence, seed=params.seed)
    res["degraded"] = {m: float(base[m].mean() - 0.5) for m in METRICS}
    res.update(paradigm=paradigm, strategy="multi", split="test", base_checkpoint="b.pt", aligned_checkpoint="a.pt")
    return res, infos


def build_tree(params, with_downstream: bool) -> None:
    """Degraded corpus, base and aligned test restorations (+ per-clip scores), evaluations, Table 1; with
    `with_downstream` also the ablation outputs, the singing section's files and MLflow summaries."""
    from gensr.audio.io import write_wav
    from gensr.evaluate.table import table_markdown
    from gensr.stages.evaluate import base_dir, evaluation_dir

    rng = np.random.default_rng(0)
    data, reports = Path(params.paths.data), Path(params.paths.reports)
    ids = [f"spk{i % 2}-{i:05d}__d0" for i in range(5)]
    rows = []
    for i, deg_id in enumerate(ids):
        utt = deg_id.split("__")[0]
        clean = _tone(rng, f0=200 + 20 * i, noise=0.0)
        write_wav(data / "clean" / "wav" / f"{utt}.wav", clean, SR)
        write_wav(data / "degraded" / "wav" / f"{deg_id}.wav", clean + _tone(rng, noise=0.2) * 0.3, SR)
        rows.append({"deg_id": deg_id, "degradations": json.dumps([{"type": "noise", "kind": "pink", "snr_db": 3.25},
                                                                   {"type": "bandlimit", "rate_hz": 8000}])})
    (data / "degraded").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(data / "degraded" / "manifest.parquet")

    results, infos = {}, None
    for p in params.evaluate.paradigms:
        for side, folder, samples in (("base", base_dir(params, p, "test"), 1),
                                      ("aligned", evaluation_dir(params, p) / "restored", 2)):
            records = []
            for deg_id in ids:
                utt = deg_id.split("__")[0]
                for j in range(samples):  # the aligned side as evaluate.samples_per_clip > 1 writes it
                    name = f"{deg_id}__c{j}" if samples > 1 else deg_id
                    write_wav(folder / "wav" / f"{name}.wav", _tone(rng, noise=0.02 if side == "aligned" else 0.08), SR)
                    rec = {"deg_id": deg_id, "utt_id": utt, "paradigm": p, "path": f"wav/{name}.wav",
                           "clean_path": os.path.relpath(data / "clean" / "wav" / f"{utt}.wav", folder),
                           "degraded_path": os.path.relpath(data / "degraded" / "wav" / f"{deg_id}.wav", folder),
                           "text": f"the small farmer number {utt[-1]}", "speaker": utt[:4], "split": "test"}
                    if samples > 1:
                        rec.update(cand_id=name, candidate=j)
                    records.append(rec)
            pd.DataFrame(records).to_parquet(folder / "manifest.parquet")
            scores = _scores(rng, ids, shift=0.4 if side == "aligned" else 0.0)
            scores.to_parquet(folder / "per_clip.parquet")
            if side == "base":
                base = scores
        res, infos = _evaluation(params, base, scores, p)
        (evaluation_dir(params, p) / "evaluation.json").write_text(json.dumps(res))
        results[p] = res
    (reports / "table1.md").write_text(table_markdown(results["ar"]["degraded"], results, infos, "multi", 0.95))
    if with_downstream:
        _downstream(params, rng, ids)


def _downstream(params, rng, ids) -> None:
    from gensr.audio.io import write_wav
    from gensr.evaluate.ablation import ablation_figure, ablation_verdicts, table_markdown
    from gensr.evaluate.compare import compare
    from gensr.preference.suite import metric_info

    reports, models = Path(params.paths.reports), Path(params.paths.models)
    base = _scores(rng, ids)
    per_clip = {"multi": _scores(rng, ids, 0.4), "sft_clean": _scores(rng, ids, 0.1),
                "single:pesq_wb": _scores(rng, ids, 0.3).assign(speaker_cosine=0.5)}
    res = {s: compare(base, pc, metric_info(METRICS), n_bootstrap=200, confidence=0.95, seed=1)
           for s, pc in per_clip.items()}
    verdicts = ablation_verdicts(res, per_clip, 0.05, 200, 0.95, 1)
    (reports / "ablation.md").write_text(table_markdown({("ar", "test"): res}, {("ar", "test"): verdicts}, 0.95))
    ablation_figure({("ar", "test"): res}, {("ar", "test"): verdicts}, reports / "ablation.png")
    (reports / "ablation.json").write_text(json.dumps({"ar/test": {"verdicts": verdicts}}, default=str))
    # the singing application, laid out as gensr.stages.singing writes it: table.md, evaluation.json,
    # triptychs/<clip>.png, restored/<system>/wav/<clip>.wav (+ a raw WAV beside the triptych)
    singing = reports / "singing"
    (singing / "triptychs").mkdir(parents=True)
    (singing / "table.md").write_text("### Singing, test\n\n| system | dnsmos_ovrl |\n|---|---|\n| initial | 2.1 |\n"
                                      "| finetuned_aligned | 2.6* |\n\n![song 01](triptychs/song 01.png)\n")
    (singing / "evaluation.json").write_text(json.dumps({
        "systems": {"initial": "initial Voicefixer", "finetuned_aligned": "fine-tuned (aligned labels)"},
        "metrics": ["dnsmos_ovrl"], "n_test": 4, "triptychs": ["triptychs/song 01.png"],
        "test": {"n_clips": 4, "means": {"initial": {"dnsmos_ovrl": 2.1}, "finetuned_aligned": {"dnsmos_ovrl": 2.6}},
                 "comparisons": {"finetuned_aligned-initial": {"dnsmos_ovrl": {
                     "diff": 0.5, "ci_low": 0.2, "ci_high": 0.8, "significant": "better"}}}}}))
    shutil.copyfile(reports / "ablation.png", singing / "triptychs" / "song 01.png")  # a space: links are encoded
    write_wav(singing / "triptychs" / "song 01_raw.wav", _tone(rng), SR)
    for system in ("finetuned_aligned", "initial"):
        write_wav(singing / "restored" / system / "wav" / "song 01.wav", _tone(rng), SR)
    # summaries of the training runs: an id, or only a UI link (as the SFT runs write them)
    aligned = models / "aligned" / "ar" / "multi"
    aligned.mkdir(parents=True)
    (aligned / "summary.json").write_text(json.dumps({
        "mlflow_run_id": "0123abcd", "mlflow_url": "http://127.0.0.1:5000/#/experiments/3/runs/0123abcd"}))
    (models / "codec").mkdir(parents=True)
    (models / "codec" / "summary.json").write_text(json.dumps(
        {"mlflow_url": "http://127.0.0.1:5000/#/experiments/1/runs/c0dec"}))


# --- reading the page back --------------------------------------------------------------------
class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if a.get(key) is not None:
                self.links.append((tag, a[key]))


def check_local_links(page: Path) -> dict[str, int]:
    """Every src/href of the page: a file inside the page's folder, an anchor on the page, or http(s)."""
    parser = _Links()
    parser.feed(page.read_text())
    counts = {"audio": 0, "img": 0, "a": 0}
    root = page.parent.resolve()
    for tag, url in parser.links:
        assert not url.startswith("data:"), f"inline data URI in <{tag}>: the page carries files, not base64"
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            continue
        assert not parts.scheme and not parts.netloc, f"<{tag}> {url}: not a relative link"
        if not parts.path:
            assert parts.fragment in parser.ids, f"<{tag}> {url}: no element with that id"
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        assert target.is_file(), f"<{tag}> {url}: {target} does not exist"
        assert root in target.parents, f"<{tag}> {url}: outside the page's folder"
        counts[tag] = counts.get(tag, 0) + 1
    return counts


def _text(page: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text()))


# --- tests ---------------------------------------------------------------------------------------
def test_page_before_the_downstream_stages_says_what_to_run(tmp_path, project_params):
    from gensr.stages.report import demo_page

    params = _params(tmp_path, project_params)
    build_tree(params, with_downstream=False)
    s = demo_page(params, ROOT / "params.yaml", tmp_path / "reports" / "demo")
    page = Path(s["path"])
    assert s["sections"]["samples"] == "ok" and s["sections"]["evaluation"] == "ok"
    assert s["sections"]["ablation"] == "missing" and s["sections"]["singing"] == "missing"
    text = _text(page)
    assert "The ablation has not run yet" in text and "dvc repro ablation_summary" in text
    assert "The singing application has not run yet" in text
    assert "No MLflow runs recorded yet" in text
    counts = check_local_links(page)
    assert counts["audio"] == 2 * 2 * 4  # 2 paradigms x 2 clips x (degraded, base, aligned, clean)
    assert counts["img"] == 2 * 2 * 4


def test_page_with_nothing_built_yet(tmp_path, project_params):
    from gensr.stages.report import demo_page

    params = _params(tmp_path, project_params)
    s = demo_page(params, ROOT / "params.yaml", tmp_path / "reports" / "demo")
    assert s["n_audio"] == 0
    text = _text(Path(s["path"]))
    assert "dvc repro evaluate@ar" in text and "no base test restorations yet" in text
    check_local_links(Path(s["path"]))


def test_full_page_links_resolve_and_show_every_section(tmp_path, project_params):
    from gensr.stages.report import demo_page

    params = _params(tmp_path, project_params)
    build_tree(params, with_downstream=True)
    out = tmp_path / "reports" / "demo"
    s = demo_page(params, ROOT / "params.yaml", out)
    assert all(v == "ok" for v in s["sections"].values()), s["sections"]
    page = Path(s["path"])
    counts = check_local_links(page)
    assert counts["audio"] == 2 * 2 * 4 + 3  # + the singing triptych's raw / initial / fine-tuned
    assert counts["img"] == 2 * 2 * 4 + 2  # + the ablation figure and the singing triptych
    text = _text(page)
    # the same seeded clips for both paradigms, sample 0 of the aligned side, copied as files
    ar = sorted(p.name for p in (out / "audio" / "ar").iterdir())
    assert ar == sorted(p.name for p in (out / "audio" / "fm").iterdir()) and len(ar) == 2
    aligned = out / "audio" / "ar" / ar[0] / "aligned.wav"
    src = params.paths.reports / Path("evaluation/ar/restored/wav") / f"{ar[0]}__c0.wav"
    assert aligned.read_bytes() == Path(src).read_bytes()
    assert "noise (kind pink, snr_db 3.25) + bandlimit (rate_hz 8000)" in text
    assert "Pre-registered verdict" in text and "win rate" in text.lower()
    assert "multi vs sft_clean" in text and "Reward hacking" in text
    start = text.index("Singing: the aligned model")
    singing = text[start:text.index("How this was made", start)]
    assert "fine-tuned (aligned labels)" in singing and "finetuned_aligned-initial" in singing
    assert singing.index(" raw ") < singing.index(" initial ") < singing.index(" finetuned_aligned ")
    assert "![" not in singing  # the Markdown's image line: the page shows the triptych itself
    digest = __import__("hashlib").sha256((ROOT / "params.yaml").read_bytes()).hexdigest()
    assert digest[:16] in text
    html = page.read_text()
    assert "http://127.0.0.1:5000/#/experiments/3/runs/0123abcd?workflowType=machine_learning" in html
    assert "http://127.0.0.1:5000/#/experiments/1/runs/c0dec?workflowType=machine_learning" in html
    # a rebuild replaces the folder whole and gives the same page
    again = demo_page(params, ROOT / "params.yaml", out)
    assert Path(again["path"]).read_text() == html
    assert not list(out.parent.glob(".demo.*"))
    from gensr.report.demo import broken_links

    assert broken_links(page) == []
    (out / "audio" / "ar" / ar[0] / "base.wav").unlink()
    assert broken_links(page) == [f"audio/ar/{ar[0]}/base.wav: no such file inside {out.resolve()}"]


def test_sample_clips_are_a_seeded_draw_shared_across_paradigms():
    from gensr.report.demo import choose_clips

    ids = {f"c{i:02d}" for i in range(20)}
    a = choose_clips({"ar": ids, "fm": ids | {"extra"}}, 3, seed=5)
    assert a["ar"] == a["fm"] and len(a["ar"]) == 3 and a == choose_clips({"ar": ids, "fm": ids | {"extra"}}, 3, 5)
    assert choose_clips({"ar": ids}, 3, seed=6) != choose_clips({"ar": ids}, 3, seed=5)
    few = choose_clips({"ar": {"x", "y"}, "fm": {"y", "z"}}, 2, seed=5)
    assert few == {"ar": ["x", "y"], "fm": ["y", "z"]}


def test_markdown_subset_renders_the_project_tables():
    from gensr.report.html import markdown

    out = markdown("## Title\n\n| a | b `x` |\n|---|---|\n| 1 | **2** |\n\n- one\n- two\n\nplain <b> text\n")
    assert "<h3>Title</h3>" in out and "<th class=\"l\">b <code>x</code></th>" in out
    assert "<strong>2</strong>" in out and "<li>two</li>" in out and "plain &lt;b&gt; text" in out


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--window-size=1600,1000", "--virtual-time-budget=15000", "--autoplay-policy=no-user-gesture-required",
           *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (apt-get install chromium; "
                    ".ci/run installs it in CI)")
def test_page_renders_in_headless_chromium_with_every_player_loaded(tmp_path, project_params):
    from gensr.stages.report import demo_page

    params = _params(tmp_path, project_params)
    build_tree(params, with_downstream=True)
    page = Path(demo_page(params, ROOT / "params.yaml", tmp_path / "reports" / "demo")["path"])
    dom = _chromium(["--dump-dom", page.resolve().as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    check = re.search(r'<p id="player-check"([^>]*)>([^<]*)<', dom.stdout)
    assert check, f"no player check in the DOM: {dom.stdout[-1000:]}"
    attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', check.group(1)))
    assert attrs["audio-total"] == str(2 * 2 * 4 + 3), check.group(0)
    assert attrs["audio-errored"] == "0", check.group(2)
    assert attrs["audio-loaded"] == attrs["audio-total"], check.group(2)
    assert attrs["img-loaded"] == attrs["img-total"] == str(2 * 2 * 4 + 2), check.group(2)
    shot = tmp_path / "demo.png"
    run = _chromium([f"--screenshot={shot}", page.resolve().as_uri()], tmp_path / "profile-shot")
    assert run.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, run.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1600, 1000)
        assert len(set(img.convert("L").getdata())) > 50  # rendered content, not a blank page


def test_dagster_asset_builds_the_page_and_checks_its_links(tmp_path, project_params):
    import dagster as dg
    import yaml

    from gensr_dagster.assets.report import demo_page, demo_page_links_resolve
    from gensr_dagster.resources import MlflowResource, ParamsResource

    params = _params(tmp_path, project_params)
    build_tree(params, with_downstream=False)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    result = dg.materialize([demo_page, demo_page_links_resolve], resources={
        "params": ParamsResource(params_path=str(params_file)),
        "mlflow": MlflowResource(mlruns_dir=str(tmp_path / "mlruns"))})
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["n_audio"].value == 2 * 2 * 4
    assert meta["sections"].value["ablation"] == "missing"
    [check] = result.get_asset_check_evaluations()
    assert check.passed, check.metadata


def test_dvc_lock_rewritten_by_the_run_does_not_mark_the_page_dirty(tmp_path):
    """The page's "+ uncommitted changes" is about code and params: `dvc repro` rewrites dvc.lock in every fresh
    clone (the page is built inside that run), so a changed dvc.lock alone is clean; any other tracked file is not."""
    from gensr.stages.report import _git_dirty

    assert _git_dirty(tmp_path) is None  # not a git work tree
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    subprocess.run([*git, "add", "dvc.lock", "params.yaml"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=tmp_path, check=True)
    assert _git_dirty(tmp_path) is False
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (tmp_path / "data.wav").write_bytes(b"untracked output")
    assert _git_dirty(tmp_path) is False
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    assert _git_dirty(tmp_path) is True
