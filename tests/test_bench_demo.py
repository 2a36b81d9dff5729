"""`make bench` (benchmarks/bench_demo.py): the per-stage table of the last `dvc repro` and the 80K-pair projection,
built on a tiny synthetic project tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import bench_demo


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture()
def tree(tmp_path) -> Path:
    """dvc.yaml with plain, foreach and matrix stages; records for some of them (sample@fm, pairs@fm, ... missing)."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "corpus": {"cmd": "gensr corpus"},
        "sample": {"foreach": ["ar", "fm"], "do": {"cmd": "gensr sample --paradigm ${item}"}},
        "score_candidates": {"foreach": ["ar", "fm"], "do": {"cmd": "x"}},
        "pairs": {"foreach": ["ar", "fm"], "do": {"cmd": "x"}},
        "dpo": {"foreach": ["ar", "fm"], "do": {"cmd": "x"}},
        "ablation": {"matrix": {"paradigm": "${ablation.paradigms}", "strategy": "${ablation.strategies}"}, "cmd": "x"},
        "mystery": {"cmd": "x"},
    }}, sort_keys=False))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"restorers": {"threads": 2},
                                                          "ablation": {"paradigms": ["ar"], "strategies": ["multi"]}}))
    _write(tmp_path / "data/clean.json", {"seconds": 10.0, "n_utterances": 20})
    _write(tmp_path / "data/candidates/ar/summary.json", {"seconds": 30.0, "n_clips": 10, "n_candidates": 4})
    _write(tmp_path / "data/metrics/ar/summary.json", {"wall_seconds": 40.0, "n_clips": 40,
                                                         "scorer_seconds": {"A": 60.0, "B": 15.0, "load": 5.0}})
    _write(tmp_path / "data/pairs/ar.json", {"seconds": 2.0, "n_clips": 10})
    _write(tmp_path / "data/pairs/ar/multi/stats.json", {"n_pairs": 20, "n_clips": 10})
    _write(tmp_path / "models/aligned/ar/multi/summary.json", {"seconds": 18.0, "settings": {"steps": 9, "batch_size": 8}})
    _write(tmp_path / "reports/ablation/ar/multi/summary.json", {"train_seconds": 5.0})  # an older record
    (tmp_path / "data/pairs/fm").mkdir(parents=True)
    (tmp_path / "data/pairs/fm/multi").mkdir()
    (tmp_path / "data/pairs/fm/multi/stats.json").write_text("{not json")  # a half-written record is missing
    return tmp_path


def test_stage_rows_expand_dvc_yaml_and_show_missing_stages(tree):
    rows = {r.stage: r for r in bench_demo.stage_rows(tree)}
    assert list(rows) == ["corpus", "sample@ar", "sample@fm", "score_candidates@ar", "score_candidates@fm", "pairs@ar",
                          "pairs@fm", "dpo@ar", "dpo@fm", "ablation@ar-multi", "mystery"]
    assert (rows["corpus"].seconds, rows["corpus"].items) == (10.0, 20)
    assert (rows["sample@ar"].seconds, rows["sample@ar"].items, rows["sample@ar"].unit) == (30.0, 10, "clips")
    assert (rows["score_candidates@ar"].seconds, rows["score_candidates@ar"].items) == (40.0, 40)
    assert rows["dpo@ar"].items == 9 and rows["ablation@ar-multi"].seconds == 5.0
    assert "training only" in rows["ablation@ar-multi"].note
    assert {n for n, r in rows.items() if r.missing} == {"sample@fm", "score_candidates@fm", "pairs@fm", "dpo@fm",
                                                         "mystery"}


def test_stage_table_has_shares_per_item_costs_a_total_and_missing_rows(tree):
    table = bench_demo.stage_table(bench_demo.stage_rows(tree))
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    assert "| sample@ar | 30.0 | 28.6% | 10 clips | 3 |" in lines["sample@ar"]  # 30 of 105 s
    assert "| sample@fm | missing |" in lines["sample@fm"]
    assert "**105.0** (0:01:45)" in lines["**total**"] and "6 of 11 stages recorded; 5 missing" in lines["**total**"]


def test_projection_follows_the_stated_formula(tree):
    costs = bench_demo.measured_costs(tree, "ar")
    assert costs.pairs_per_clip == 2.0 and costs.sample_s_per_clip == 3.0 and costs.threads == 2
    assert costs.score_core_s_per_clip == pytest.approx(80.0 / 10)  # 80 scorer core-s over 40 / 4 pool clips
    assert costs.dpo_s_per_step == 2.0 and costs.dpo_batch == 8
    res = bench_demo.project(costs, pairs=80_000)
    clips = 80_000 / 2.0
    assert res["clips"] == clips
    assert res["sampling_h"] == pytest.approx(clips * 2 * 3.0 / 3600)
    assert res["scoring_h"] == pytest.approx(clips * 8.0 / 3600)
    assert res["dpo_h"] == pytest.approx(80_000 / 8 * 2 * 2.0 / 3600)
    assert res["core_h"] == pytest.approx(res["sampling_h"] + res["scoring_h"] + res["dpo_h"]) and not res["partial"]
    fm = bench_demo.measured_costs(tree, "fm")
    assert bench_demo.project(fm) is None and "pairs" in fm.missing()
    table = bench_demo.projection_table([costs, fm], cores=4)
    assert "| fm | missing: pairs, sample, score_candidates, dpo |" in table
    assert f"{res['core_h'] / 4:.1f} h" in table


def test_partial_costs_give_a_lower_bound(tree):
    (tree / "models/aligned/ar/multi/summary.json").unlink()
    res = bench_demo.project(bench_demo.measured_costs(tree, "ar"))
    assert res["dpo_h"] is None and res["partial"] and res["core_h"] == res["sampling_h"] + res["scoring_h"]
    assert "≥ " in bench_demo.projection_table([bench_demo.measured_costs(tree, "ar")])


def test_main_prints_the_table_and_the_projection(tree, capsys):
    bench_demo.main([f"--root={tree}", "--repeats=3"])  # options of other benchmarks are ignored
    out = capsys.readouterr().out
    assert "| sample@fm | missing |" in out and "projection to 80,000 preference pairs" in out and "| ar | 2.000 |" in out


def test_the_repo_dvc_yaml_has_a_timing_for_every_stage():
    """A stage added to dvc.yaml needs its record in bench_demo._record (else it is always shown as missing)."""
    from conftest import ROOT

    unknown = [name for name, base, item in bench_demo.stage_instances(ROOT)
               if "no timing known" in bench_demo._record(ROOT / "nowhere", base, item)[3]]
    assert not unknown, f"benchmarks/bench_demo.py does not know where these stages record their time: {unknown}"
