"""The demo page: reports/demo/index.html plus the audio, images and tables it shows, in one folder.

Sections, each built from whatever of its inputs exists (a missing input gives a line naming the
command that makes it, so the page can be built at any point of the pipeline):
- samples: per paradigm, a few test clips as rows of degraded / base / aligned / clean players and
  spectrograms (one colour scale per row), drawn at random with the project seed;
- evaluation: base vs aligned per paradigm, means with paired-bootstrap CIs and verdicts;
- ablation: the ablation's table, figure and pre-registered verdicts;
- singing: raw / initial Voicefixer / fine-tuned (reports/singing/), when it has run;
- how this was made: params hash, commit, MLflow runs.
Every file the page links to is copied under the page's folder, so the folder opens from disk, alone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gensr.config.report import SpectrogramParams
from gensr.report import html as h
from gensr.report.spectrogram import log_spectrogram, row_ceiling, save_spectrogram_png

KINDS = ("degraded", "base", "aligned", "clean")
MARKER = ".gensr_demo_page"  # marks a folder as a page, which the next build may replace whole


@dataclass(frozen=True)
class ParadigmSource:
    """Where one paradigm's test restorations and evaluation live (manifest paths relative to their folder)."""

    paradigm: str
    base_manifest: Path  # reports/base/<p>/test/manifest.parquet
    aligned_manifest: Path  # reports/evaluation/<p>/restored/manifest.parquet
    evaluation: Path  # reports/evaluation/<p>/evaluation.json
    command: str  # what makes them


@dataclass(frozen=True)
class RunRecord:
    label: str
    run_id: str | None
    url: str | None
    source: str


@dataclass(frozen=True)
class DemoInputs:
    strategy: str
    paradigms: list[ParadigmSource]
    clips_per_paradigm: int
    seed: int
    spectrogram: SpectrogramParams
    confidence: float
    table1_md: Path
    ablation_md: Path
    ablation_png: Path
    ablation_json: Path
    singing_dir: Path
    params_file: Path
    git_commit: str
    git_dirty: bool | None = None
    degraded_manifest: Path | None = None
    runs: list[RunRecord] = field(default_factory=list)
    title: str = "GenSR-Pref: multi-metric preference alignment for generative speech restoration"


# --- the folder -----------------------------------------------------------------------------
class _Folder:
    """The page folder being built: copies files in and hands back their relative paths."""

    def __init__(self, root: Path):
        self.root = root
        self.n_audio = 0
        self.n_images = 0

    def copy(self, src: Path, rel: str) -> str:
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        if dst.suffix.lower() == ".wav":
            self.n_audio += 1
        elif dst.suffix.lower() == ".png":
            self.n_images += 1
        return rel


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace out_dir by the finished tmp folder (the old page stays whole until the rename)."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _is_demo_page(folder: Path) -> bool:
    """An earlier page: it has our marker, or (made before the marker) an index.html with the provenance section."""
    if (folder / MARKER).is_file():
        return True
    index = folder / "index.html"
    return index.is_file() and '<section id="provenance">' in index.read_text(errors="replace")


def check_out_dir(out_dir: Path) -> None:
    """The page replaces out_dir whole: refuse a file there, and a folder that holds anything but an earlier page."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: is a file; the demo page needs a folder (pass a new or empty one)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _is_demo_page(out_dir):
        raise FileExistsError(f"{out_dir}: a folder that holds no demo page; the page replaces its folder whole, "
                              "so pass a new or empty folder")


def build_demo_page(inputs: DemoInputs, out_dir: str | Path) -> dict:
    """Write out_dir/index.html and everything it links to (atomically, as one folder); returns a summary."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        folder = _Folder(tmp)
        sections, status = [], {}
        for key, title, build in (("samples", "Audio samples", _samples_section),
                                  ("evaluation", "Evaluation: base vs aligned", _evaluation_section),
                                  ("ablation", "Ablation: multi- vs single-metric preferences", _ablation_section),
                                  ("singing", "Singing: the aligned model as an annotator", _singing_section),
                                  ("provenance", "How this was made", _provenance_section)):
            body, status[key] = build(inputs, folder)
            sections.append(f'<section id="{key}">\n<h2>{h.esc(title)}</h2>\n{body}\n</section>')
        nav = [(k, t) for k, t in (("samples", "Samples"), ("evaluation", "Evaluation"), ("ablation", "Ablation"),
                                   ("singing", "Singing"), ("provenance", "How this was made"))]
        (tmp / MARKER).write_text("made by `gensr demo-page`; the next build replaces this folder whole\n")
        (tmp / "index.html").write_text(h.page(inputs.title, _intro(inputs), nav, "\n".join(sections)))
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"path": str(out_dir / "index.html"), "sections": status, "n_audio": folder.n_audio,
            "n_images": folder.n_images}


def _intro(inputs: DemoInputs) -> str:
    return ("<p class=\"lead\">Generative speech restorers (autoregressive, masked generative and flow-matching token "
            "models) post-trained with DPO on preference pairs whose chosen restoration beats the rejected one on "
            "<em>every</em> metric: perceptual quality (DNSMOS), signal fidelity (PESQ, ESTOI, SI-SDR, mel distance), "
            "content (WER/CER) and timbre (speaker similarity). Unanimity is meant to keep the alignment from hacking "
            "a single metric; the ablation below tests that, and whether DPO adds anything over SFT alone. "
            f"<em>Aligned</em> below is the <code>{h.esc(inputs.strategy)}</code> strategy.</p>")


# --- samples ----------------------------------------------------------------------------------
def _manifest_rows(manifest: Path) -> dict[str, dict]:
    """deg_id -> row; with several seeded samples per clip, sample 0 (the single restoration's seed)."""
    frame = pd.read_parquet(manifest)
    if "candidate" in frame:
        frame = frame.sort_values(["deg_id", "candidate"]).drop_duplicates("deg_id", keep="first")
    return {r["deg_id"]: r for r in frame.to_dict("records")}


def _per_clip(manifest: Path) -> pd.DataFrame | None:
    path = manifest.parent / "per_clip.parquet"
    return pd.read_parquet(path).set_index("clip_id") if path.is_file() else None


def choose_clips(available: dict[str, set[str]], k: int, seed: int) -> dict[str, list[str]]:
    """k clips per paradigm, a seeded draw: from the clips every paradigm has when there are k of them
    (so the paradigms can be compared on the same inputs), else from each paradigm's own."""
    def draw(ids: set[str]) -> list[str]:
        ids_sorted = sorted(ids)
        if len(ids_sorted) <= k:
            return ids_sorted
        pick = np.random.default_rng(seed).choice(len(ids_sorted), size=k, replace=False)
        return [ids_sorted[i] for i in sorted(pick)]

    shared = set.intersection(*available.values()) if available else set()
    if len(shared) >= k:
        common = draw(shared)
        return {p: common for p in available}
    return {p: draw(ids) for p, ids in available.items()}


def _degradations(manifest: Path | None) -> dict[str, str]:
    if manifest is None or not manifest.is_file():
        return {}
    frame = pd.read_parquet(manifest, columns=["deg_id", "degradations"])
    out = {}
    for deg_id, raw in zip(frame["deg_id"], frame["degradations"]):
        try:
            steps = json.loads(raw) if isinstance(raw, str) else []
        except ValueError:
            continue
        parts = []
        for s in steps:
            args = [f"{k} {h.fmt(v, 2) if isinstance(v, float) else v}" for k, v in s.items()
                    if k != "type" and isinstance(v, (int, float, str)) and not isinstance(v, bool)]
            parts.append(f"{s.get('type', '?')} ({', '.join(args)})" if args else str(s.get("type", "?")))
        out[deg_id] = " + ".join(parts)
    return out


def _samples_section(inputs: DemoInputs, folder: _Folder) -> tuple[str, str]:
    ready, notes = {}, []
    for src in inputs.paradigms:
        if not src.base_manifest.is_file() or not src.aligned_manifest.is_file():
            which = "base" if not src.base_manifest.is_file() else "aligned"
            notes.append(h.missing(f"{src.paradigm}: no {which} test restorations yet "
                                   f"({src.base_manifest if which == 'base' else src.aligned_manifest}).", src.command))
            continue
        ready[src.paradigm] = (src, _manifest_rows(src.base_manifest), _manifest_rows(src.aligned_manifest))
    if not ready:
        return "\n".join(notes) or h.missing("No paradigm is configured."), "missing"
    available = {p: set(b) & set(a) for p, (_, b, a) in ready.items()}
    chosen = choose_clips(available, inputs.clips_per_paradigm, inputs.seed)
    degradations = _degradations(inputs.degraded_manifest)
    db_range = h.fmt(inputs.spectrogram.db_range, 0)
    parts = [(f'<p class="note">{inputs.clips_per_paradigm} test clips per paradigm, drawn at random (seed '
              f"{inputs.seed}), not picked. Each row shares one colour scale ({db_range} dB below its loudest bin); "
              "frequency rises upwards, up to half the sample rate.</p>")]
    for p, (src, base_rows, aligned_rows) in ready.items():
        evaluation = json.loads(src.evaluation.read_text()) if src.evaluation.is_file() else None
        scores = {"base": _per_clip(src.base_manifest), "aligned": _per_clip(src.aligned_manifest)}
        rows = [_sample_row(p, deg_id, src, base_rows[deg_id], aligned_rows[deg_id], scores, evaluation,
                            degradations.get(deg_id), inputs, folder) for deg_id in chosen[p]]
        head = ["clip", "degraded input", "base", f"aligned ({h.esc(inputs.strategy)})", "clean reference"]
        parts.append(f'<h3 id="samples-{h.esc(p)}">{h.esc(p.upper())}</h3>')
        parts.append(h.table(head, rows, left=1, cls="samples"))
    return "\n".join(notes + parts), "ok" if not notes else "partial"


def _sample_row(paradigm: str, deg_id: str, src: ParadigmSource, base_row: dict, aligned_row: dict,
                scores: dict, evaluation: dict | None, degradation: str | None, inputs: DemoInputs,
                folder: _Folder) -> list[str]:
    base_root, aligned_root = src.base_manifest.parent, src.aligned_manifest.parent
    files = {"degraded": base_root / base_row["degraded_path"], "base": base_root / base_row["path"],
             "aligned": aligned_root / aligned_row["path"], "clean": base_root / base_row["clean_path"]}
    from gensr.audio.io import read_wav

    spec = inputs.spectrogram
    specs = {k: log_spectrogram(read_wav(f)[0], spec.n_fft, spec.hop) for k, f in files.items() if f.is_file()}
    ceiling = row_ceiling(list(specs.values()))
    slug = _slug(deg_id)
    cells = [_clip_cell(deg_id, base_row.get("text"), degradation, scores, evaluation)]
    for kind in KINDS:
        f = files[kind]
        if not f.is_file():
            cells.append(f'<span class="missing">missing: {h.esc(f.name)}</span>')
            continue
        audio = folder.copy(f, f"audio/{paradigm}/{slug}/{kind}.wav")
        img = f"img/{paradigm}/{slug}/{kind}.png"
        save_spectrogram_png(specs[kind], folder.root / img, ceiling, spec.db_range, spec.cmap)
        folder.n_images += 1
        cells.append(f'<img class="spec" src="{h.esc(h.href(img))}" alt="{h.esc(kind)} spectrogram of {h.esc(deg_id)}">'
                     f'<audio controls preload="metadata" src="{h.esc(h.href(audio))}"></audio>')
    return cells


def _slug(deg_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in deg_id)


def _clip_cell(deg_id: str, text, degradation: str | None, scores: dict, evaluation: dict | None) -> str:
    out = [f"<strong>{h.esc(deg_id)}</strong>"]
    if text:
        out.append(f"<div>“{h.esc(text)}”</div>")
    if degradation:
        out.append(f'<div class="note">{h.esc(degradation)}</div>')
    base, aligned = scores.get("base"), scores.get("aligned")
    if base is not None and aligned is not None and deg_id in base.index and deg_id in aligned.index:
        metrics = [c for c in base.columns if c in aligned.columns]
        direction = {m: v["higher_is_better"] for m, v in (evaluation or {}).get("metrics", {}).items()}
        rows = []
        for m in metrics:
            b, a = float(base.at[deg_id, m]), float(aligned.at[deg_id, m])
            cls = ""
            if m in direction and math.isfinite(a - b) and a != b:
                cls = "better" if (a > b) == direction[m] else "worse"
            arrow = {True: " ↑", False: " ↓"}.get(direction.get(m), "")
            rows.append([h.esc(m + arrow), h.fmt(b), f'<span class="{cls}">{h.fmt(a)}</span>'])
        out.append("<details><summary>per-clip scores</summary>" + h.table(["metric", "base", "aligned"], rows)
                   + "</details>")
    return "".join(out)


# --- evaluation -------------------------------------------------------------------------------
def _evaluation_section(inputs: DemoInputs, folder: _Folder) -> tuple[str, str]:
    results, notes = {}, []
    for src in inputs.paradigms:
        if src.evaluation.is_file():
            results[src.paradigm] = json.loads(src.evaluation.read_text())
        else:
            notes.append(h.missing(f"{src.paradigm}: no evaluation yet ({src.evaluation}).", src.command))
    parts = []
    table1 = ""
    if inputs.table1_md.is_file():
        rel = folder.copy(inputs.table1_md, "files/table1.md")
        table1 = f'<p class="note">Table 1 as Markdown: {h.link(rel, "table1.md")}.</p>'
    if not results:
        if inputs.table1_md.is_file():
            return "\n".join(notes + [h.markdown(inputs.table1_md.read_text()), table1]), "partial"
        return "\n".join(notes) or h.missing("No evaluation yet.", "dvc repro evaluation_table"), "missing"
    pct = round(inputs.confidence * 100)
    parts.append(_table1(results, inputs.strategy, pct))
    parts.append(table1)
    sources = {s.paradigm: s.evaluation for s in inputs.paradigms}
    for p, res in results.items():
        src_path = sources[p]
        rel = folder.copy(src_path, f"files/evaluation_{p}.json")
        parts.append(f'<h3 id="evaluation-{h.esc(p)}">{h.esc(p.upper())}: differences aligned − base, '
                     f"{pct}% paired-bootstrap CIs ({res['n_clips']} clips)</h3>")
        parts.append(_diff_table(res))
        parts.append(_dimension_table(res, pct))
        verdict = res.get("verdict", {})
        met = res.get("target_met")
        parts.append(f"<p><strong>Pre-registered verdict: {'improves' if met else 'does not improve'}.</strong> "
                     f"Win rate {h.fmt(res['win_rate'])} (aligned better on every metric), loss rate "
                     f"{h.fmt(res['loss_rate'])}. Significantly worse (uncorrected): "
                     f"{h.esc(', '.join(res.get('significantly_worse', [])) or 'none')}. "
                     f'<span class="note">Rule: {h.esc(verdict.get("rule", res.get("target", "")))}. '
                     f"Source: {h.link(rel, src_path.name)}.</span></p>")
    return "\n".join(notes + parts), "ok" if not notes else "partial"


def _arrow(v: dict) -> str:
    return "↑" if v["higher_is_better"] else "↓"


def _table1(results: dict[str, dict], strategy: str, pct: int) -> str:
    """Degraded input, then base and aligned per paradigm; an aligned cell is coloured when its CI excludes 0."""
    first = next(iter(results.values()))
    names = list(first["metrics"])
    head = ["paradigm", "model"] + [f"{h.esc(n)} {_arrow(first['metrics'][n])}" for n in names]
    rows = [["–", "degraded input"] + [h.fmt(first.get("degraded", {}).get(n)) for n in names]]
    for p, res in results.items():
        m = res["metrics"]
        rows.append([h.esc(p), "base"] + [h.fmt(m[n]["base"]) if n in m else "–" for n in names])
        cells = []
        for n in names:
            if n not in m:
                cells.append("–")
                continue
            v = m[n]
            flag = {"better": "*", "worse": "!"}.get(v["significant"], "")
            cells.append(f'<span class="{h.esc(v["significant"])}" title="diff {h.fmt(v["diff"])} '
                         f'[{h.fmt(v["ci_low"])}, {h.fmt(v["ci_high"])}]">{h.fmt(v["aligned"])}{flag}</span>')
        rows.append([h.esc(p), f"aligned ({h.esc(strategy)})"] + cells)
    note = (f'<p class="note">Means over the test clips. <span class="better">*</span> significantly better, '
            f'<span class="worse">!</span> significantly worse than base ({pct}% paired-bootstrap CI of the '
            "difference excludes 0); hover a cell for its difference and CI.</p>")
    return h.table(head, rows, left=2) + note


def _diff_table(res: dict) -> str:
    rows = []
    for n, v in res["metrics"].items():
        rows.append([f"{h.esc(n)} {_arrow(v)}", h.esc(v["dimension"]), h.fmt(v["n"]), h.fmt(v["base"]),
                     h.fmt(v["aligned"]), f"{v['diff']:+.4f}" if math.isfinite(v["diff"]) else "nan",
                     f"[{h.fmt(v['ci_low'], 4)}, {h.fmt(v['ci_high'], 4)}]", h.fmt(v.get("p_value"), 4),
                     f'<span class="{h.esc(v["significant"])}">{h.esc(v["significant"])}</span>'])
    return h.table(["metric", "dimension", "n", "base", "aligned", "diff", "CI", "p", "verdict"], rows, left=2)


def _dimension_table(res: dict, pct: int) -> str:
    rows = []
    for d, v in res.get("dimensions", {}).items():
        std = f"{v['std_diff']:+.3f}" if math.isfinite(v["std_diff"]) else "nan"
        rows.append([h.esc(d), h.esc(", ".join(v["metrics"])), std,
                     f"[{h.fmt(v['ci_low'])}, {h.fmt(v['ci_high'])}]", h.fmt(v.get("p_value"), 4),
                     '<span class="better">yes</span>' if v["improved"] else '<span class="ns">no</span>'])
    if not rows:
        return ""
    return (h.table(["dimension", "metrics", "standardized diff", f"{pct}% CI", "p", "mean above 0"], rows, left=2)
            + '<p class="note">Per dimension: each metric\'s per-clip difference, signed so that positive is better '
            "and divided by the std of the base values, averaged over the dimension's metrics.</p>")


# --- ablation -------------------------------------------------------------------------------
def _ablation_section(inputs: DemoInputs, folder: _Folder) -> tuple[str, str]:
    have = [p for p in (inputs.ablation_md, inputs.ablation_png, inputs.ablation_json) if p.is_file()]
    if not have:
        return h.missing("The ablation has not run yet (reports/ablation.md, .png, .json).",
                         "dvc repro ablation_summary"), "missing"
    parts = []
    if inputs.ablation_json.is_file():
        rel = folder.copy(inputs.ablation_json, "files/ablation.json")
        parts.append(_ablation_verdicts(json.loads(inputs.ablation_json.read_text())))
        parts.append(f'<p class="note">Verdicts as JSON: {h.link(rel, "ablation.json")}.</p>')
    if inputs.ablation_png.is_file():
        rel = folder.copy(inputs.ablation_png, "files/ablation.png")
        parts.append(f'<figure><img src="{h.esc(h.href(rel))}" alt="ablation figure"><figcaption class="note">'
                     "Each strategy's difference from the base per metric, with CIs.</figcaption></figure>")
    if inputs.ablation_md.is_file():
        rel = folder.copy(inputs.ablation_md, "files/ablation.md")
        parts.append(f"<details open><summary>The ablation tables ({h.link(rel, 'ablation.md')})</summary>"
                     f"{h.markdown(inputs.ablation_md.read_text())}</details>")
    missing_names = [p.name for p in (inputs.ablation_md, inputs.ablation_png, inputs.ablation_json) if not p.is_file()]
    if missing_names:
        parts.insert(0, h.missing(f"Missing: {', '.join(missing_names)}.", "dvc repro ablation_summary"))
    return "\n".join(parts), "ok" if not missing_names else "partial"


def _ablation_verdicts(data: dict) -> str:
    parts = []
    for key, entry in data.items():
        v = entry.get("verdicts", {})
        items = []
        primary = v.get("head_to_head", {}).get("multi_vs_sft_clean")
        if primary is not None:
            winner = primary.get("winner")
            items.append(f"<li><strong>Primary, multi vs sft_clean</strong> (does the DPO term add anything over SFT "
                         f"alone?): {'<strong>' + h.esc(winner) + ' wins</strong>' if winner else 'no winner'} "
                         f"(dimensions better: {h.esc(', '.join(primary.get('dimensions_better', [])) or 'none')}; "
                         f"worse: {h.esc(', '.join(primary.get('dimensions_worse', [])) or 'none')}).</li>")
        hacking = v.get("hacking", {})
        if hacking:
            hacked = [f"{s} (target {hv.get('target')} better; {', '.join(hv.get('damaged_metrics', []))} worse)"
                      for s, hv in hacking.items() if hv.get("hacking")]
            items.append(f"<li><strong>Reward hacking</strong> by single-metric strategies: "
                         f"{h.esc('; '.join(hacked)) if hacked else 'none detected'} "
                         f"({len(hacking)} tested).</li>")
        improves = v.get("improves", {})
        if improves:
            yes = [s for s, iv in improves.items() if iv.get("target_met")]
            items.append(f"<li><strong>Improves on the base</strong> (pre-registered rule): "
                         f"{h.esc(', '.join(yes)) if yes else 'none'} of {len(improves)} strategies.</li>")
        others = [(k, hv) for k, hv in v.get("head_to_head", {}).items() if k != "multi_vs_sft_clean"]
        if others:
            rows = [[h.esc(k.replace("multi_vs_", "multi vs ")), h.esc(hv.get("winner") or "no winner"),
                     h.esc(", ".join(hv.get("dimensions_better", [])) or "–"),
                     h.esc(", ".join(hv.get("dimensions_worse", [])) or "–")] for k, hv in others]
            items.append("<li>Other head-to-heads:" + h.table(["comparison", "winner", "multi better on",
                                                                "multi worse on"], rows, left=4) + "</li>")
        parts.append(f"<h3>{h.esc(key)}</h3><ul>{''.join(items)}</ul>")
    return "\n".join(parts)


# --- singing --------------------------------------------------------------------------------
def _singing_section(inputs: DemoInputs, folder: _Folder) -> tuple[str, str]:
    """reports/singing/ as the singing stages leave it: *.md tables, evaluation.json, triptychs/<clip>.png, and
    the audio of each triptych's clip (triptychs/<clip>*.wav, or restored/<system>/wav/<clip>.wav)."""
    root = inputs.singing_dir
    evaluation = root / "evaluation.json"
    triptychs = sorted((root / "triptychs").glob("*.png")) if (root / "triptychs").is_dir() else []
    notes = sorted(root.glob("*.md")) if root.is_dir() else []
    if not evaluation.is_file() and not triptychs and not notes:
        return h.missing("The singing application has not run yet (nothing in reports/singing/): raw singing, "
                         "the initial Voicefixer and the Voicefixer fine-tuned on the aligned model's pseudo-labels "
                         "appear here once it has.", "dvc repro"), "missing"
    parts = [('<p class="note">Singing has no clean reference: the aligned restorer annotates degraded singing with '
              "pseudo-clean labels, and a discriminative Voicefixer is fine-tuned on them. Shown: raw input, the "
              "initial Voicefixer (trained on speech) and the fine-tuned one.</p>")]
    for md in notes:
        rel = folder.copy(md, f"files/singing/{md.name}")
        parts.append(f"{h.markdown(md.read_text())}<p class=\"note\">Source: {h.link(rel, md.name)}.</p>")
    if evaluation.is_file():
        rel = folder.copy(evaluation, "files/singing/evaluation.json")
        body = _generic_json(json.loads(evaluation.read_text()))
        parts.append(f"<details{'' if notes else ' open'}><summary>All numbers ({h.link(rel, 'evaluation.json')})"
                     f"</summary>{body}</details>")
    else:
        parts.append(h.missing("No reports/singing/evaluation.json yet."))
    for png in triptychs:
        rel = folder.copy(png, f"files/singing/triptychs/{png.name}")
        players = []
        for label, wav in sorted(_singing_audio(root, png).items(), key=lambda kv: _singing_order(kv[0])):
            a = folder.copy(wav, f"audio/singing/{_slug(png.stem)}/{_slug(label)}.wav")
            players.append(f'<div><span class="note">{h.esc(label)}</span><audio controls preload="metadata" '
                           f'src="{h.esc(h.href(a))}"></audio></div>')
        parts.append(f'<figure><img src="{h.esc(h.href(rel))}" alt="{h.esc(png.stem)}">'
                     f'<figcaption class="note">{h.esc(png.stem)}</figcaption>'
                     f'<div class="grid">{"".join(players)}</div></figure>')
    if not triptychs:
        parts.append(h.missing("No spectrogram triptychs yet (reports/singing/triptychs/*.png)."))
    return "\n".join(parts), "ok" if evaluation.is_file() and triptychs else "partial"


def _singing_audio(root: Path, png: Path) -> dict[str, Path]:
    """label -> WAV of the triptych's clip: triptychs/<stem>_<label>.wav, restored/<system>/wav/<stem>.wav."""
    found = {wav.stem[len(png.stem):].strip("_- ") or wav.stem: wav for wav in png.parent.glob(f"{png.stem}*.wav")}
    restored = root / "restored"
    if restored.is_dir():
        for wav in sorted(restored.glob(f"*/wav/{png.stem}.wav")):
            found.setdefault(wav.parent.parent.name, wav)
    return found


_SINGING_ORDER = ("raw", "degraded", "input", "annotator", "pseudo", "initial", "fine")


def _singing_order(label: str) -> tuple[int, str]:
    """raw input first, then the pseudo-label, the initial Voicefixer, the fine-tuned ones; others after."""
    low = label.lower()
    return next((i for i, k in enumerate(_SINGING_ORDER) if k in low), len(_SINGING_ORDER)), low


def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _generic_json(data, depth: int = 0) -> str:
    """Any JSON as tables: {row: {column: scalar}} as one table, scalars (and lists of scalars) of a mapping as a
    key/value table, nested mappings under their key; other lists as indented JSON."""
    if not isinstance(data, dict):
        if isinstance(data, list) and all(_scalar(v) for v in data):
            return f"<p>{h.esc(', '.join(h.fmt(v) for v in data))}</p>"
        return f"<pre>{h.esc(json.dumps(data, indent=2, sort_keys=True))}</pre>"
    if data and all(isinstance(v, dict) and v and all(_scalar(x) for x in v.values()) for v in data.values()):
        cols = list(dict.fromkeys(c for v in data.values() for c in v))
        rows = [[h.esc(k)] + [h.esc(h.fmt(v.get(c))) for c in cols] for k, v in data.items()]
        return h.table([""] + [h.esc(c) for c in cols], rows)
    flat = {k: v for k, v in data.items() if _scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v))}
    out = []
    if flat:
        out.append(h.table(None, [[h.esc(k), h.esc(", ".join(h.fmt(x) for x in v) if isinstance(v, list) else h.fmt(v))]
                                  for k, v in flat.items()], left=2))
    level = min(4 + depth, 6)
    for k, v in data.items():
        if k not in flat:
            out.append(f"<h{level}>{h.esc(k)}</h{level}>{_generic_json(v, depth + 1)}")
    return "\n".join(out)


# --- provenance -----------------------------------------------------------------------------
def _provenance_section(inputs: DemoInputs, folder: _Folder) -> tuple[str, str]:
    import hashlib

    rows = []
    if inputs.params_file.is_file():
        digest = hashlib.sha256(inputs.params_file.read_bytes()).hexdigest()
        rel = folder.copy(inputs.params_file, "files/params.yaml")
        sha = f'<code title="{digest}">{digest[:16]}</code>'
        rows.append(["params", f"{h.link(rel, inputs.params_file.name)} sha256 {sha}"])
    else:
        rows.append(["params", f"<span class=\"missing\">{h.esc(inputs.params_file)} not found</span>"])
    dirty = {True: " + uncommitted changes", False: "", None: ""}[inputs.git_dirty]
    rows.append(["git commit", f"<code>{h.esc(inputs.git_commit)}</code>{h.esc(dirty)}"])
    rows.append(["built by", ("<code>gensr demo-page</code> (DVC stage <code>demo_page</code>; "
                              "<code>dvc repro demo_page</code> rebuilds it)")])
    parts = [h.table(None, rows, left=2)]
    if inputs.runs:
        run_rows = []
        for r in inputs.runs:
            ident = f"<code>{h.esc(r.run_id)}</code>" if r.run_id else "–"
            url = f'<a href="{h.esc(r.url)}">open in MLflow</a>' if r.url else "–"
            run_rows.append([h.esc(r.label), ident, url, f'<span class="note">{h.esc(r.source)}</span>'])
        parts.append("<h3>MLflow runs</h3>" + h.table(["run", "run id", "link", "recorded in"], run_rows, left=4))
        parts.append('<p class="note">The links open the MLflow UI\'s model-training view; start it with '
                     "<code>make mlflow-ui</code> (port from <code>GENSR_MLFLOW_PORT</code>, default 5000).</p>")
    else:
        parts.append(h.missing("No MLflow runs recorded yet (no summary.json under models/ or reports/).",
                               "dvc repro"))
    return "\n".join(parts), "ok"


# --- checking a built page ------------------------------------------------------------------
def broken_links(page: str | Path) -> list[str]:
    """src/href values of `page` that are neither http(s), nor an anchor on the page, nor a file inside its folder."""
    from html.parser import HTMLParser
    from urllib.parse import unquote, urlsplit

    class _Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.ids = [], set()

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("id"):
                self.ids.add(a["id"])
            self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]

    page = Path(page)
    parser = _Links()
    parser.feed(page.read_text())
    root, broken = page.parent.resolve(), []
    for url in parser.links:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            continue
        if parts.scheme or parts.netloc:
            broken.append(f"{url}: not a relative link")
        elif not parts.path:
            if parts.fragment not in parser.ids:
                broken.append(f"{url}: no element with that id")
        else:
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.is_file() or root not in target.parents:
                broken.append(f"{url}: no such file inside {root}")
    return broken
