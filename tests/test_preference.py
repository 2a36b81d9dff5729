"""The pair rule: dominance in each metric's direction, margins, NaN never pairs, deterministic selection."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gensr.preference import MetricRule, dominance_matrix, dominates, select_pairs, violations
from gensr.preference.pairs import build_pair_table, rules_for_strategy, strategy_slug
from gensr.preference.stats import candidate_spread, pair_stats

RULES = [MetricRule("pesq", True, 0.05), MetricRule("wer", False, 0.0), MetricRule("spk", True, 0.01)]
value = st.one_of(st.floats(-5, 5, allow_nan=False), st.just(float("nan")), st.sampled_from([0.0, 1.0]))


@st.composite
def candidate_tables(draw):
    n_clips = draw(st.integers(1, 4))
    rows = []
    for c in range(n_clips):
        for k in range(draw(st.integers(1, 5))):
            rows.append({"clip_id": f"clip{c}", "cand_id": f"clip{c}__c{k}",
                         **{r.name: draw(value) for r in RULES}})
    return pd.DataFrame(rows)


def _lookup(table):
    return table.set_index("cand_id")[[r.name for r in RULES]]


@settings(max_examples=150, deadline=None)
@given(candidate_tables(), st.integers(1, 4))
def test_chosen_dominates_rejected_on_every_metric_beyond_margin(table, k):
    pairs = select_pairs(table, RULES, k)
    vals = _lookup(table)
    for _, p in pairs.iterrows():
        a, b = vals.loc[p.chosen_id], vals.loc[p.rejected_id]
        advantages = []
        for r in RULES:
            assert not math.isnan(a[r.name]) and not math.isnan(b[r.name]), "NaN must never pair"
            advantages.append(r.sign * (a[r.name] - b[r.name]))
            assert advantages[-1] >= r.margin, "chosen must not be worse than the margin allows on any metric"
        assert max(advantages) > 0, "chosen must be strictly better somewhere"
        assert p.clip_id == p.chosen_id.split("__")[0] == p.rejected_id.split("__")[0]
    assert (pairs.groupby("clip_id").size() <= k).all()


@settings(max_examples=150, deadline=None)
@given(candidate_tables())
def test_every_dominating_pair_is_found_when_k_is_large(table):
    pairs = select_pairs(table, RULES, 1000)
    found = set(zip(pairs.chosen_id, pairs.rejected_id))
    vals = _lookup(table)
    for clip, g in table.groupby("clip_id"):
        for a in g.cand_id:
            for b in g.cand_id:
                d = dominates(vals.loc[a].to_numpy(float), vals.loc[b].to_numpy(float), RULES)
                assert d == ((a, b) in found)


@settings(max_examples=100, deadline=None)
@given(candidate_tables(), st.integers(1, 3), st.randoms(use_true_random=False))
def test_selection_is_deterministic_and_independent_of_row_order(table, k, rnd):
    first = select_pairs(table, RULES, k)
    order = list(range(len(table)))
    rnd.shuffle(order)
    second = select_pairs(table.iloc[order].reset_index(drop=True), RULES, k)
    pd.testing.assert_frame_equal(first, second)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3), st.integers(0, 2))
def test_nan_anywhere_never_pairs(vec, nan_at):
    a = np.array(vec) + np.array([10.0, -10.0, 10.0])  # a is far better on every metric
    b = np.array(vec)
    assert dominates(a, b, RULES)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[nan_at] = np.nan
    b_nan[nan_at] = np.nan
    assert not dominates(a_nan, b, RULES)
    assert not dominates(a, b_nan, RULES)


def test_margin_and_direction_are_respected():
    b = np.array([2.0, 0.30, 0.80])
    assert dominates(np.array([2.06, 0.29, 0.82]), b, RULES)
    assert not dominates(np.array([2.04, 0.29, 0.82]), b, RULES)  # pesq gain below its margin
    assert not dominates(np.array([2.5, 0.31, 0.9]), b, RULES)  # wer is lower-is-better
    assert dominates(np.array([2.5, 0.30, 0.9]), b, RULES)  # a tied WER (margin 0) does not block
    assert not dominates(b, b, RULES)  # identical candidates never pair
    zero = [MetricRule("x", True), MetricRule("y", False)]
    assert not dominates(np.array([1.0, 1.0]), np.array([1.0, 1.0]), zero)
    assert dominates(np.array([1.0, 0.5]), np.array([1.0, 1.0]), zero)
    dom = dominance_matrix(np.stack([b, b + [1, -1, 1]]), RULES)
    assert dom.tolist() == [[False, False], [True, False]]


def test_selection_keeps_the_largest_normalised_margin_first():
    table = pd.DataFrame({
        "clip_id": ["c"] * 3, "cand_id": ["c__0", "c__1", "c__2"],
        "pesq": [1.0, 2.0, 3.0], "wer": [0.5, 0.4, 0.1], "spk": [0.5, 0.6, 0.9],
    })
    pairs = select_pairs(table, RULES, 2)
    assert list(zip(pairs.chosen_id, pairs.rejected_id)) == [("c__2", "c__0"), ("c__2", "c__1")]
    assert pairs.margin_norm.is_monotonic_decreasing and list(pairs["rank"]) == [0, 1]


def _manifest_and_metrics(utts=(("u0", "train"), ("u1", "train"), ("u2", "valid"), ("u3", "test"))):
    """4 candidates per utterance, each dominating the one before on every metric."""
    rows, metrics = [], []
    rng = np.random.default_rng(0)
    for u, split in utts:
        for k in range(4):
            cid = f"{u}__d0__c{k}"
            rows.append({"cand_id": cid, "deg_id": f"{u}__d0", "utt_id": u, "paradigm": "mgm", "candidate": k,
                         "seed": k, "path": f"wav/{cid}.wav", "clean_path": f"../clean/{u}.wav",
                         "degraded_path": f"../deg/{u}.wav", "text": "t", "speaker": "s", "split": split})
            metrics.append({"clip_id": cid, "pesq": 1 + k + rng.normal(0, .1), "wer": .5 - .1 * k, "spk": .5 + .1 * k})
    return pd.DataFrame(rows), pd.DataFrame(metrics)


@pytest.mark.parametrize("strategy", ["multi", "single:pesq", "gt_as_chosen"])
def test_build_pair_table_strategies(strategy):
    cands, wide = _manifest_and_metrics()
    hib = {"pesq": True, "wer": False, "spk": True}
    rules = rules_for_strategy(strategy, ["pesq", "wer", "spk"], hib, {"pesq": 0.05})
    pairs = build_pair_table(cands, wide, strategy=strategy, rules=rules, max_pairs_per_clip=2, seed=1,
                             heldout_fraction=0.0)
    assert "u3" not in set(pairs.utt_id), "the test split must never pair"
    assert set(pairs.role[pairs.utt_id == "u2"]) == {"heldout"}
    assert len(pairs) == 6 and (pairs.groupby("deg_id").size() == 2).all()
    assert {"chosen_pesq", "rejected_wer", "chosen_spk"} <= set(pairs.columns)
    if strategy == "gt_as_chosen":
        assert (pairs.chosen_path == pairs.clean_path).all()
        assert set(pairs.rejected_id.str[-3:]) == {"_c0", "_c1"}  # the worst two
    else:
        assert violations(pairs, rules).empty
    again = build_pair_table(cands.sample(frac=1, random_state=3), wide.sample(frac=1, random_state=4),
                             strategy=strategy, rules=rules, max_pairs_per_clip=2, seed=1, heldout_fraction=0.0)
    pd.testing.assert_frame_equal(pairs, again)
    stats = pair_stats(pairs, n_clips=3, rules=rules)
    assert stats["n_clips_with_pair"] == 3 and stats["pairs_per_clip_mean"] == 2.0


def test_dev_split_holds_no_clip_that_dpo_trains_on():
    """`evaluate --split dev` = valid + the pref utterances whose pairs are held out, and nothing else."""
    from gensr.corpus.splits import in_split

    cands, wide = _manifest_and_metrics([(f"p{i:03d}", ("pref", "pref", "pref", "valid", "test", "train")[i % 6])
                                         for i in range(120)])
    rules = rules_for_strategy("multi", ["pesq", "wer", "spk"], {"pesq": True, "wer": False, "spk": True}, {})
    pairs = build_pair_table(cands, wide, strategy="multi", rules=rules, max_pairs_per_clip=1, seed=1,
                             heldout_fraction=0.2)
    utts = cands.drop_duplicates("utt_id")
    dev = set(utts.utt_id[in_split(utts.split, utts.utt_id, "dev", 0.2)])
    assert set(utts.utt_id[utts.split == "valid"]) <= dev
    assert not dev & set(utts.utt_id[utts.split.isin(["train", "test"])])
    trained_on = set(pairs.utt_id[pairs.role == "train"])
    assert trained_on and not dev & trained_on
    held = pairs[(pairs.role == "heldout") & (pairs.split != "train")]  # the base trained on train clips
    assert dev == set(held.utt_id)  # every clip pairs here, so dev = the held-out pairs off train
    assert 0 < len(dev - set(utts.utt_id[utts.split == "valid"])) < 60  # some pref utterances, not all
    assert list(in_split(utts.split, utts.utt_id, "test", 0.2)) == list(utts.split == "test")


def test_violations_flags_nan_and_wrong_direction():
    pairs = pd.DataFrame({"chosen_pesq": [3.0, np.nan, 3.0], "rejected_pesq": [2.0, 2.0, 3.5]})
    assert list(violations(pairs, [MetricRule("pesq", True)]).index) == [1, 2]


def test_candidate_spread_is_per_clip_and_skips_nan():
    cands = pd.DataFrame({"cand_id": ["a0", "a1", "a2", "b0", "b1"], "deg_id": ["a", "a", "a", "b", "b"]})
    wide = pd.DataFrame({"clip_id": ["a0", "a1", "a2", "b0", "b1"],
                         "pesq": [1.0, 2.0, 3.0, 2.0, 2.0], "wer": [0.5, np.nan, 0.1, np.nan, 0.2]})
    spread = candidate_spread(cands, wide)
    assert spread["pesq"]["n_clips"] == 2 and spread["pesq"]["clips_all_equal"] == 1
    assert spread["pesq"]["within_clip_range_mean"] == pytest.approx((2.0 + 0.0) / 2)
    assert spread["pesq"]["within_clip_std_mean"] == pytest.approx((np.std([1.0, 2.0, 3.0]) + 0.0) / 2)
    assert spread["wer"]["n_clips"] == 1 and spread["wer"]["within_clip_range_mean"] == pytest.approx(0.4)


def test_strategy_errors_name_the_metric():
    with pytest.raises(KeyError, match="nosuch"):
        rules_for_strategy("single:nosuch", ["pesq"], {"pesq": True}, {})
    assert strategy_slug("single:pesq") == "single-pesq"


def test_export_is_a_self_contained_dataset_folder(tmp_path):
    from gensr.audio.io import write_wav
    from gensr.preference.export import export_dataset
    from gensr.preference.pairs import pair_table_to_arrow
    from gensr.storage import write_parquet

    cands, wide = _manifest_and_metrics()
    src = tmp_path / "pairs" / "mgm" / "multi"
    cands["path"] = "../../../cand/" + cands["path"]
    cands["clean_path"] = "../../../clean/" + cands["utt_id"] + ".wav"
    cands["degraded_path"] = "../../../deg/" + cands["deg_id"] + ".wav"
    cands["codes_path"] = "../../../codes/" + cands["cand_id"] + ".npy"  # a token restorer's sampled tokens
    for rel in set(cands["path"]) | set(cands["clean_path"]) | set(cands["degraded_path"]):
        write_wav(src / rel, np.zeros(160, np.float32), 16000)
    for i, rel in enumerate(cands["codes_path"]):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(src / rel, np.full((2, 2), i, np.int32))
    rules = rules_for_strategy("multi", ["pesq", "wer", "spk"], {"pesq": True, "wer": False, "spk": True}, {})
    pairs = build_pair_table(cands, wide, strategy="multi", rules=rules, max_pairs_per_clip=1, seed=0,
                             heldout_fraction=0.0)
    write_parquet(pair_table_to_arrow(pairs), src / "pairs.parquet")
    stats = pair_stats(pairs, 3, rules)
    out = tmp_path / "export"
    summary = export_dataset(src / "pairs.parquet", out, stats, {"paradigm": "mgm", "strategy": "multi"})
    assert summary["n_pairs"] == 3
    exported = pd.read_parquet(out / "pairs.parquet")
    for col in ("chosen_path", "rejected_path", "degraded_path", "clean_path", "chosen_codes_path",
                "rejected_codes_path"):
        assert all((out / p).is_file() and not p.startswith("..") for p in exported[col])
    for kind in ("chosen", "rejected"):  # the exported tokens are the candidate's own
        for src_rel, out_rel in zip(pairs[f"{kind}_codes_path"], exported[f"{kind}_codes_path"]):
            assert np.array_equal(np.load(src / src_rel), np.load(out / out_rel))
    card = (out / "README.md").read_text()
    assert "unanimous" in card and "pairs.parquet" in card
    pd.testing.assert_frame_equal(exported.drop(columns=[c for c in exported if c.endswith("_path")]),
                                  pairs.drop(columns=[c for c in pairs if c.endswith("_path")]))


def test_pairs_stage_on_a_scored_candidate_folder(tmp_path, project_params):
    """build_pairs reads the candidate manifest + long metric table, applies the registry's directions,
    writes pairs + stats that the asset check accepts, and rebases paths to the pair folder."""
    from gensr.metrics.registry import METRIC_NAMES, get
    from gensr.stages.pairs import build_pairs, check_pairs, metrics_path, pairs_dir

    params = project_params([f"paths.data={tmp_path / 'data'}", "pairs.heldout_fraction=0.0",
                             "pairs.strategies=[multi, 'single:pesq_wb', gt_as_chosen]"])
    cands, _ = _manifest_and_metrics()
    cdir = tmp_path / "data" / "candidates" / "mgm"
    cdir.mkdir(parents=True)
    cands.to_parquet(cdir / "manifest.parquet")
    rng = np.random.default_rng(0)
    rows = []
    for cid in cands["cand_id"]:
        quality = int(cid[-1])  # candidate k is better on every metric as k grows
        for m in METRIC_NAMES:
            sign = 1 if get(m).higher_is_better else -1
            value = float("nan") if (m == "wer" and cid == "u1__d0__c1") else 1.0 + sign * 0.1 * quality + rng.normal(0, 1e-3)
            rows.append({"clip_id": cid, "metric": m, "value": value, "reason": None, "backend": "t", "version": "0"})
    long = pd.DataFrame(rows)
    metrics_path(params, "mgm").parent.mkdir(parents=True)
    long.to_parquet(metrics_path(params, "mgm"))
    summary = build_pairs(params, "mgm")
    assert set(summary) == {"multi", "single:pesq_wb", "gt_as_chosen"}
    multi = pd.read_parquet(pairs_dir(params, "mgm", "multi") / "pairs.parquet")
    assert "u1__d0__c1" not in set(multi.chosen_id) | set(multi.rejected_id)  # its NaN WER never pairs
    assert (multi.chosen_id.str[-1].astype(int) > multi.rejected_id.str[-1].astype(int)).all()
    assert all((pairs_dir(params, "mgm", "multi") / p).resolve() == (cdir / q).resolve()
               for p, q in zip(multi.rejected_path, cands.set_index("cand_id").loc[multi.rejected_id, "path"]))
    for strategy in summary:
        assert check_pairs(pairs_dir(params, "mgm", strategy) / "pairs.parquet")["passed"]
    assert summary["multi"]["n_clips"] == 3 and summary["multi"]["n_clips_with_pair"] == 3
    assert summary["multi"]["candidate_spread"]["pesq_wb"]["within_clip_range_mean"] > 0.1


def test_preference_pairs_asset_materializes_a_partition_and_passes_its_blocking_check(tmp_path):
    import dagster as dg

    from gensr.metrics.registry import METRIC_NAMES, get
    from gensr_dagster.assets.align import pairs_chosen_dominates, preference_pairs
    from gensr_dagster.resources import MlflowResource, ParamsResource

    cands, _ = _manifest_and_metrics()
    cdir = tmp_path / "data" / "candidates" / "fm"
    cdir.mkdir(parents=True)
    cands.to_parquet(cdir / "manifest.parquet")
    rows = [{"clip_id": cid, "metric": m, "value": 1.0 + (1 if get(m).higher_is_better else -1) * 0.1 * int(cid[-1]),
             "reason": None, "backend": "t", "version": "0"} for cid in cands["cand_id"] for m in METRIC_NAMES]
    (tmp_path / "data" / "metrics" / "fm").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(tmp_path / "data" / "metrics" / "fm" / "metrics.parquet")
    params_yaml = Path(__file__).resolve().parents[1] / "params.yaml"
    resources = {"params": ParamsResource(params_path=str(params_yaml), overrides=[f"paths.data={tmp_path / 'data'}"]),
                 "mlflow": MlflowResource(mlruns_dir=str(tmp_path / "mlruns"))}
    result = dg.materialize([preference_pairs, pairs_chosen_dominates], partition_key="fm", resources=resources)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    meta = result.asset_materializations_for_node("preference_pairs")[0].metadata
    assert meta["multi/n_pairs"].value > 0
