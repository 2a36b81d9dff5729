"""`python -m benchmarks pool` (benchmarks/bench_pool.py): pairs per scored candidate for pools of the first n
candidates per clip, on a tiny scored pool whose pairs are known."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from benchmarks import bench_pool
from gensr.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PAIR_METRICS = {"dnsmos_ovrl": 1.0, "pesq_wb": 1.0, "estoi": 0.1, "wer": -0.1, "speaker_cosine": 0.01}


def _pool(root: Path) -> None:
    """Clip a: c0 beats c1 beats c2 on every pair metric (3 unanimous pairs among 3, 1 among the first 2).
    Clip b: its candidates disagree (OVRL rises where PESQ falls), so no pair is unanimous."""
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    rows, scores = [], []
    for clip, sign in (("a", -1.0), ("b", None)):
        for k in range(3):
            cand = f"u{clip}__d0__c{k}"
            rows.append({"cand_id": cand, "deg_id": f"u{clip}__d0", "utt_id": f"u{clip}", "paradigm": "ar",
                         "candidate": k, "seed": k, "path": f"wav/{cand}.wav", "codes_path": None,
                         "clean_path": f"clean/u{clip}.wav", "degraded_path": f"deg/u{clip}__d0.wav",
                         "text": "a b", "speaker": "s", "split": "pref"})
            for metric, step in PAIR_METRICS.items():
                if sign is None:  # clip b: dnsmos_ovrl improves with k, everything else worsens
                    value = 2.0 + (step * k if metric == "dnsmos_ovrl" else -step * k)
                else:
                    value = 2.0 + sign * step * k
                scores.append({"clip_id": cand, "metric": metric, "value": value, "reason": None,
                               "backend": "test", "version": "0"})
    (root / "data/candidates/ar").mkdir(parents=True)
    (root / "data/metrics/ar").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "data/candidates/ar/manifest.parquet")
    pd.DataFrame(scores).to_parquet(root / "data/metrics/ar/metrics.parquet")


def test_yields_count_the_pairs_of_the_first_n_candidates(tmp_path):
    _pool(tmp_path)
    params = load_params(tmp_path / "params.yaml")
    assert params.pairs.max_pairs_per_clip >= 3 and set(params.pairs.metrics) == set(PAIR_METRICS)
    rows = bench_pool.yields(params, "ar", "multi", tmp_path)
    assert [(r["n"], r["candidates"], r["pairs"], r["clips_with_pair"]) for r in rows] == [(2, 4, 1, 1), (3, 6, 3, 1)]
    assert all(r["clips"] == 2 and r["train"] <= r["pairs"] for r in rows)
    # one metric alone ranks clip b too: every ordered pair of distinct values
    single = bench_pool.yields(params, "ar", "single:pesq_wb", tmp_path)
    assert [r["pairs"] for r in single] == [2, 6]


def test_main_prints_a_table_per_pair_set_with_the_budgets_epochs(tmp_path, capsys):
    _pool(tmp_path)
    bench_pool.main(["--root", str(tmp_path), "--paradigms", "ar,mgm", "--strategies", "multi"])
    out = capsys.readouterr().out
    params = load_params(tmp_path / "params.yaml")
    draws = params.dpo.ar.steps * params.dpo.ar.batch_size
    assert f"ar, multi pairs (pair draws per fit: dpo.ar {draws}" in out
    assert "| 3 | 6 | 3 | 1.50 | 0.500 | 1 |" in out
    assert "mgm: no scored pool" in out
