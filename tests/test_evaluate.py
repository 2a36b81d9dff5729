"""Held-out evaluation: paired bootstrap CIs, direction-aware verdicts, dimensions, win rate, Table 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gensr.evaluate.compare import MetricInfo, compare
from gensr.evaluate.table import diff_rows, summary_markdown, table_markdown, table_rows

METRICS = [MetricInfo("pesq", "fidelity", True), MetricInfo("wer", "content", False),
           MetricInfo("dnsmos", "quality", True), MetricInfo("spk", "timbre", True)]


def _tables(n=60, seed=0, shift=(0.3, -0.05, 0.2, 0.0)):
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(n)]
    base = pd.DataFrame({"clip_id": ids, "pesq": rng.normal(2, .3, n), "wer": rng.uniform(.1, .5, n),
                         "dnsmos": rng.normal(2.5, .2, n), "spk": rng.normal(.8, .05, n)})
    aligned = base.copy()
    for (col, s) in zip(["pesq", "wer", "dnsmos", "spk"], shift):
        aligned[col] = base[col] + s + rng.normal(0, .05, n)
    return base, aligned


def test_clear_improvement_is_significant_in_each_direction():
    base, aligned = _tables()
    res = compare(base, aligned, METRICS, n_bootstrap=500, confidence=0.95, seed=1)
    m = res["metrics"]
    assert m["pesq"]["significant"] == "better" and m["pesq"]["ci_low"] > 0
    assert m["wer"]["significant"] == "better" and m["wer"]["ci_high"] < 0  # lower WER is better
    assert m["spk"]["significant"] == "ns"
    assert set(res["improved_dimensions"]) >= {"fidelity", "content", "quality"}
    assert res["target_met"] and res["significantly_worse"] == []


def test_worse_metric_fails_the_target_and_is_flagged():
    base, aligned = _tables(shift=(0.3, 0.1, 0.2, 0.0))  # WER goes up
    res = compare(base, aligned, METRICS, n_bootstrap=500, confidence=0.95, seed=1)
    assert res["metrics"]["wer"]["significant"] == "worse"
    assert not res["target_met"] and res["significantly_worse"] == ["wer"]
    md = table_markdown({"pesq": 1.1}, {"mgm": res}, METRICS, "multi", 0.95)
    assert "!" in md and "**NO**" in md


def test_summary_row_names_which_test_each_column_is():
    """A metric worse by its own (uncorrected) CI need not fail the Holm-corrected target: the summary row must
    put them in different columns, with the verdict's own lists, so "target met" beside a worse metric reads
    as what it is."""
    res = {"target_met": True, "significantly_worse": ["cer"], "improved_dimensions": ["fidelity", "quality", "timbre"],
           "dimensions": ["content", "fidelity", "quality", "timbre"], "win_rate": 0.033, "loss_rate": 0.0,
           "verdict": {"dimensions_better": ["fidelity", "quality"], "dimensions_worse": [], "metrics_worse": [],
                       "rule": "RULE TEXT", "target_met": True}}
    lines = summary_markdown({"fm": res}, 0.95)
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = dict(zip(head, (c.strip() for c in lines[2].strip("|").split("|"))))
    assert row["target met"] == "**yes**"
    assert row["dimensions better (Holm)"] == "fidelity, quality"
    assert row["dimensions worse (Holm)"] == "-" and row["metrics worse (Holm)"] == "-"
    assert row["metrics worse by their own 95% CI (uncorrected)"] == "cer"
    assert row["dimension means above 0 (descriptive)"] == "3/4 (fidelity, quality, timbre)"
    assert any("RULE TEXT" in line for line in lines)


def test_bootstrap_is_seeded_and_order_independent():
    base, aligned = _tables()
    r1 = compare(base, aligned, METRICS, n_bootstrap=300, confidence=0.9, seed=5)
    r2 = compare(base.sample(frac=1, random_state=2), aligned.sample(frac=1, random_state=3), METRICS,
                 n_bootstrap=300, confidence=0.9, seed=5)
    assert r1 == r2


def test_ci_width_matches_the_normal_approximation():
    base, aligned = _tables(n=200, shift=(0.1, 0, 0, 0))
    res = compare(base, aligned, METRICS, n_bootstrap=2000, confidence=0.95, seed=0)
    p = res["metrics"]["pesq"]
    d = aligned["pesq"] - base["pesq"]
    expected = 2 * 1.96 * d.std() / np.sqrt(len(d))
    assert p["ci_low"] < p["diff"] < p["ci_high"]
    assert p["ci_high"] - p["ci_low"] == pytest.approx(expected, rel=0.15)


def test_win_rate_counts_pareto_dominance_and_nan_never_wins():
    base = pd.DataFrame({"clip_id": ["a", "b", "c", "d"], "pesq": [1., 1., 1., 1.], "wer": [.5, .5, .5, .5],
                         "dnsmos": [2., 2., 2., 2.], "spk": [.5, .5, .5, .5]})
    aligned = pd.DataFrame({"clip_id": ["a", "b", "c", "d"], "pesq": [2., 2., np.nan, 0.5],
                            "wer": [.4, .6, .4, .6], "dnsmos": [3., 3., 3., 1.], "spk": [.6, .6, .6, .4]})
    res = compare(base, aligned, METRICS, n_bootstrap=200, confidence=0.95, seed=0)
    assert res["win_rate"] == pytest.approx(0.25)  # only 'a' dominates; 'c' has a NaN
    assert res["loss_rate"] == pytest.approx(0.25)  # 'd' is dominated
    assert res["metrics"]["pesq"]["n"] == 3


def test_table_has_degraded_and_before_after_rows():
    base, aligned = _tables()
    res = compare(base, aligned, METRICS, n_bootstrap=200, confidence=0.95, seed=0)
    rows = table_rows({"pesq": 1.2, "wer": .6, "dnsmos": 2.0, "spk": .7}, {"ar": res, "fm": res}, METRICS, "multi")
    assert list(rows["model"]) == ["degraded input", "base", "aligned (multi)", "base", "aligned (multi)"]
    assert len(diff_rows({"ar": res})) == 4


def test_no_common_clips_is_a_clear_error():
    base, aligned = _tables()
    aligned["clip_id"] = "x" + aligned["clip_id"]
    with pytest.raises(ValueError, match="share no test clips"):
        compare(base, aligned, METRICS, n_bootstrap=200, confidence=0.95, seed=0)


def test_evaluation_table_stage_writes_dvc_metrics_and_table1(tmp_path, project_params):
    import json

    from gensr.stages.evaluate import evaluation_dir, evaluation_table
    from gensr.storage import write_json

    params = project_params([f"paths.reports={tmp_path / 'reports'}", "evaluate.paradigms=[ar, fm]"])
    base, aligned = _tables()
    for i, p in enumerate(["ar", "fm"]):
        res = compare(base, aligned, METRICS, n_bootstrap=200, confidence=0.95, seed=i)
        res.update(paradigm=p, strategy="multi", degraded={"pesq": 1.1, "wer": 0.6, "dnsmos": 2.0, "spk": 0.7})
        write_json(res, evaluation_dir(params, p) / "evaluation.json")
    out = evaluation_table(params)
    metrics = json.loads((tmp_path / "reports" / "evaluation.json").read_text())
    assert set(metrics) == {"ar", "fm"} and metrics["ar"]["target_met"] is True
    assert set(metrics["fm"]["metrics"]["pesq"]) == {"base", "aligned", "diff", "ci_low", "ci_high"}
    table = pd.read_csv(tmp_path / "reports" / "table1.csv")
    assert list(table["model"]) == ["degraded input", "base", "aligned (multi)", "base", "aligned (multi)"]
    assert "| ar | aligned (multi) |" in out["markdown"]


def test_a_restored_split_is_rescored_when_its_audio_changed_under_the_same_manifest(tmp_path):
    """A sampler change re-restores the same clips under the same paths, with the same manifest and checkpoint:
    the cached scores of the old audio must not be reused."""
    import soundfile as sf

    from conftest import PARAMS
    from gensr.config import load_params
    from gensr.stages.evaluate import _score_restored

    sr, rng = 16000, np.random.default_rng(0)
    ref = 0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * sr) / sr)
    (tmp_path / "wav").mkdir()
    sf.write(tmp_path / "ref.wav", ref, sr)
    pd.DataFrame({"deg_id": ["a", "b"], "path": ["wav/a.wav", "wav/b.wav"],
                  "clean_path": ["ref.wav", "ref.wav"]}).to_parquet(tmp_path / "manifest.parquet")
    checkpoint = tmp_path / "restorer.pt"
    checkpoint.write_bytes(b"the same checkpoint both times")
    params = load_params(PARAMS, ["metrics.names=[si_sdr]", "metrics.workers=1"])

    def restore(noise: float) -> None:
        for name in ("a", "b"):
            sf.write(tmp_path / "wav" / f"{name}.wav", ref + noise * rng.standard_normal(ref.size), sr)

    restore(0.01)
    first = _score_restored(params, tmp_path / "manifest.parquet", checkpoint, tmp_path)
    assert (first["si_sdr"] > 20).all()
    restore(0.3)
    second = _score_restored(params, tmp_path / "manifest.parquet", checkpoint, tmp_path)
    assert (second["si_sdr"] < 0).all()
    mtime = (tmp_path / "metrics.parquet").stat().st_mtime_ns
    third = _score_restored(params, tmp_path / "manifest.parquet", checkpoint, tmp_path)  # unchanged: reused
    assert (tmp_path / "metrics.parquet").stat().st_mtime_ns == mtime and third.equals(second)
