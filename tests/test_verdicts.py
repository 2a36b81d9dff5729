"""The pre-registered verdicts on synthetic tables: hacking or not, borderline CIs, DPO vs SFT both ways, and
the false-positive rate of the 'improves' rule next to the old '3 of 4 means above 0' rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gensr.evaluate.bootstrap import holm, paired_bootstrap
from gensr.evaluate.compare import compare
from gensr.evaluate.verdicts import hacking_verdict, head_to_head_verdict, improvement_verdict
from gensr.preference.suite import MetricInfo

METRICS = [MetricInfo("dnsmos_ovrl", "quality", True), MetricInfo("pesq_wb", "fidelity", True),
           MetricInfo("estoi", "fidelity", True), MetricInfo("wer", "content", False),
           MetricInfo("speaker_cosine", "timbre", True)]
N = 120


def _tables(shift: dict[str, float], seed: int = 0, noise: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Base and 'aligned' per-clip tables: aligned = base + shift + paired noise."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(N)]
    base = pd.DataFrame({"clip_id": ids, **{m.name: rng.normal(2.0, 0.5, N) for m in METRICS}})
    aligned = base.copy()
    for m in METRICS:
        aligned[m.name] = base[m.name] + shift.get(m.name, 0.0) + rng.normal(0, noise, N)
    return base, aligned


def _compare(base, aligned, seed=0):
    return compare(base, aligned, METRICS, n_bootstrap=2000, confidence=0.95, seed=seed)


def test_single_metric_run_that_raises_its_target_and_damages_another_dimension_is_hacking():
    res = _compare(*_tables({"pesq_wb": +0.2, "dnsmos_ovrl": -0.2}))
    v = hacking_verdict(res, "pesq_wb", 0.05)
    assert v["target_better"] and v["hacking"]
    assert v["damaged_metrics"] == ["dnsmos_ovrl"] and v["damaged_dimensions"] == ["quality"]


def test_target_up_and_nothing_else_worse_is_not_hacking():
    res = _compare(*_tables({"pesq_wb": +0.2}))
    v = hacking_verdict(res, "pesq_wb", 0.05)
    assert v["target_better"] and not v["hacking"] and v["damaged_metrics"] == []


def test_damage_inside_the_targets_own_dimension_is_not_counted_as_hacking():
    res = _compare(*_tables({"pesq_wb": +0.2, "estoi": -0.2}))
    assert not hacking_verdict(res, "pesq_wb", 0.05)["hacking"]


def test_borderline_damage_whose_corrected_test_overlaps_zero_is_not_hacking():
    """The damaged metric's own 95% CI just excludes 0, but Holm over the other dimensions' metrics does not
    reject it: overlapping corrected evidence is no verdict."""
    for seed in range(200):
        base, aligned = _tables({"pesq_wb": +0.2}, seed=seed)
        aligned["wer"] = aligned["wer"] + 0.021  # worse (lower is better), near the edge
        res = _compare(base, aligned, seed)
        w = res["metrics"]["wer"]
        if w["significant"] == "worse" and w["p_value"] > 0.05 / 3:
            break
    else:
        pytest.fail("no seed gave a borderline WER")
    v = hacking_verdict(res, "pesq_wb", 0.05)
    assert v["target_better"] and not v["hacking"], (w, v)


def test_target_not_significant_is_never_hacking_even_with_damage():
    res = _compare(*_tables({"pesq_wb": +0.001, "dnsmos_ovrl": -0.3}))
    v = hacking_verdict(res, "pesq_wb", 0.05)
    assert not v["target_better"] and not v["hacking"] and v["damaged_metrics"] == ["dnsmos_ovrl"]


@pytest.mark.parametrize("direction", [+1, -1])
def test_head_to_head_names_the_winner_in_both_directions(direction):
    sft, multi = _tables({"dnsmos_ovrl": 0.15 * direction, "pesq_wb": 0.1 * direction})
    v = head_to_head_verdict(_compare(sft, multi), 0.05, "multi", "sft_clean")
    assert v["winner"] == ("multi" if direction > 0 else "sft_clean")
    assert ("quality" in v["dimensions_better"]) == (direction > 0)
    assert ("quality" in v["dimensions_worse"]) == (direction < 0)


def test_head_to_head_with_a_trade_off_or_no_difference_has_no_winner():
    sft, multi = _tables({"dnsmos_ovrl": 0.15, "pesq_wb": -0.15, "estoi": -0.15})
    assert head_to_head_verdict(_compare(sft, multi), 0.05, "multi", "sft_clean")["winner"] is None
    sft, multi = _tables({})
    assert head_to_head_verdict(_compare(sft, multi), 0.05, "multi", "sft_clean")["winner"] is None


def test_improves_needs_a_significant_dimension_and_nothing_worse():
    res = _compare(*_tables({"dnsmos_ovrl": 0.1}))
    assert improvement_verdict(res, 0.05)["target_met"]
    res = _compare(*_tables({"dnsmos_ovrl": 0.1, "wer": 0.1}))  # WER up = worse
    v = improvement_verdict(res, 0.05)
    assert not v["target_met"] and "wer" in v["metrics_worse"]


def test_false_positive_rate_of_improves_is_at_most_alpha_where_three_of_four_means_is_not():
    """A model that changed nothing: the 'improves' rule passes <= 5% of the time; the old rule (>= 3 of 4
    dimension means above 0) about a third of the time (the binomial tail 5/16 for independent dimensions)."""
    new = old = 0
    runs = 200
    for seed in range(runs):
        res = compare(*_tables({}, seed=seed, noise=0.1), METRICS, n_bootstrap=400, confidence=0.95, seed=seed)
        new += improvement_verdict(res, 0.05)["target_met"]
        old += len(res["improved_dimensions"]) >= 3 and not res["significantly_worse"]
    assert new / runs <= 0.06
    assert old / runs > 0.15


def test_holm_rejects_step_down_and_ignores_nan():
    assert holm([0.001, 0.02, 0.04], 0.05).tolist() == [True, True, True]
    assert holm([0.001, 0.03, 0.04], 0.05).tolist() == [True, False, False]
    assert holm([np.nan, 0.001], 0.05).tolist() == [False, True]


def test_paired_bootstrap_p_value_matches_its_ci_and_keeps_nan_out():
    rng = np.random.default_rng(1)
    diff = rng.normal(0.3, 1.0, 200)
    diff[:5] = np.nan
    r = paired_bootstrap(diff, 2000, 0.95, seed=0)
    assert r.n == 195 and r.mean == pytest.approx(np.nanmean(diff))
    assert (r.ci_low > 0) == (r.p_value < 0.05)
    assert np.isnan(paired_bootstrap(np.full(10, np.nan), 200, 0.95, 0).mean)


def test_ablation_tables_put_splits_side_by_side_and_mark_hacking():
    from gensr.evaluate.ablation import ablation_verdicts, table_markdown

    results, verdicts = {}, {}
    for k, split in enumerate(("test", "confirm")):
        base, multi = _tables({"dnsmos_ovrl": 0.1}, seed=10 + k)
        rng = np.random.default_rng(20 + k)
        single = base.copy()  # the same clips and base, another strategy
        for m, shift in (("pesq_wb", 0.2), ("dnsmos_ovrl", -0.2), ("estoi", 0.2)):
            single[m] = base[m] + shift + rng.normal(0, 0.1, N)
        res = {"multi": _compare(base, multi), "single:pesq_wb": _compare(base, single)}
        for r in res.values():
            r["n_clips"] = N
        results[("ar", split)] = res
        verdicts[("ar", split)] = ablation_verdicts(res, {"multi": multi, "single:pesq_wb": single}, 0.05, 300,
                                                    0.95, 0)
    md = table_markdown(results, verdicts, 0.95)
    assert "### ar, test" in md and "### ar, confirm" in md and "test / confirm side by side" in md
    row = next(line for line in md.splitlines() if line.startswith("| single:pesq_wb |") and " / " in line)
    assert row.count("!") >= 2  # OVRL worse on both splits
    assert verdicts[("ar", "test")]["hacking"]["single:pesq_wb"]["hacking"]
    assert verdicts[("ar", "test")]["head_to_head"]["multi_vs_single:pesq_wb"]["winner"] is None  # a trade-off
