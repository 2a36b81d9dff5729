"""`gensr pair-diagnostics`: the sampler's view of a token's log-prob, reward margins that are the DPO run's own
held-out diagnostics, and the report of a tiny AR ablation (a DPO run and its SFT-only control)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from test_align import _write_pairs, tiny_restorer
from test_models import tiny_params


def test_support_log_probs_are_what_the_top_k_sampler_draws_with():
    from gensr.models.token_restorer import sample_from_logits, support_log_probs_at

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, generator=g) * 2
    temperature, k = 0.6, 3
    n = 40000
    uniforms = torch.rand(3, n, generator=g)
    drawn, _ = sample_from_logits(logits, uniforms, temperature, k)  # [3, n]: n draws per row
    for token in range(8):
        lp, inside = support_log_probs_at(logits[:, None].expand(3, n, 8), logits[:, None].expand(3, n, 8),
                                          torch.full((3, n), token), temperature, k)
        frequency = (drawn == token).float().mean(dim=1)
        expected = torch.where(inside[:, 0], lp[:, 0].exp(), torch.zeros(3))
        assert torch.allclose(frequency, expected, atol=0.01), (token, frequency, expected)
        assert torch.equal(frequency == 0, ~inside[:, 0])  # never drawn <=> outside the support
    probs = torch.stack([support_log_probs_at(logits, logits, torch.full((3,), t), temperature, k)[0].exp()
                         for t in range(8)], dim=-1)
    inside = torch.stack([support_log_probs_at(logits, logits, torch.full((3,), t), temperature, k)[1]
                          for t in range(8)], dim=-1)
    assert torch.allclose((probs * inside).sum(-1), torch.ones(3)) and bool((inside.sum(-1) == k).all())


def test_the_sampler_view_ignores_mass_moved_to_or_from_tokens_it_never_draws():
    """Lowering the tail (tokens outside the support) raises every drawn token's full-softmax log-prob, which DPO's
    score counts, and leaves the top-k sampler, hence the sampler view, unchanged."""
    from gensr.models.token_restorer import support_log_probs_at, token_log_probs_at

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 8, generator=g)
    support = logits.topk(2, dim=-1).indices
    tail = torch.ones_like(logits, dtype=torch.bool).scatter(-1, support, False)
    moved = logits - 4.0 * tail
    codes = support[:, 0]
    before, _ = support_log_probs_at(logits, logits, codes, 0.6, 2)
    after, _ = support_log_probs_at(moved, logits, codes, 0.6, 2)
    assert torch.allclose(before, after)
    assert bool((token_log_probs_at(moved, codes, 0.6) > token_log_probs_at(logits, codes, 0.6) + 1e-3).all())


def _ar_pairs(tmp_path, n_pairs=10, tokens=True):
    """Pairs with metric columns and (with `tokens`) random sampled tokens of their own for chosen and rejected; the
    last 4 are held out (two clips)."""
    pairs = _write_pairs(tmp_path, n_pairs=n_pairs, codebooks=2 if tokens else 0)
    rng = np.random.default_rng(2)
    if tokens:
        for kind in ("chosen", "rejected"):
            for path in pairs[f"{kind}_codes_path"]:
                shape = np.load(tmp_path / path).shape
                np.save(tmp_path / path, rng.integers(0, 8, size=shape).astype(np.int32))
    pairs["role"] = ["train"] * (n_pairs - 4) + ["heldout"] * 4
    pairs["deg_id"] = [f"d{i // 2}" for i in range(n_pairs)]  # two pairs per clip
    for m in ("dnsmos_ovrl", "pesq_wb", "estoi", "wer", "speaker_cosine"):
        pairs[f"chosen_{m}"] = rng.random(n_pairs) + (0.5 if m != "wer" else 0.0)
        pairs[f"rejected_{m}"] = rng.random(n_pairs) + (0.0 if m != "wer" else 0.5)
    pairs.to_parquet(tmp_path / "pairs.parquet")
    return pairs


def test_reward_margins_of_the_reference_itself_and_of_a_copy(tmp_path):
    from gensr.align.data import PairTensors, score_pairs
    from gensr.evaluate.pair_diagnostics import reward_margins

    pairs = _ar_pairs(tmp_path)
    reference = tiny_restorer("ar")
    reference.score_temperature = 0.6
    data = PairTensors(pairs, tmp_path, 16000, 0.2, reference.stft_cfg.hop)
    own = reward_margins(reference, reference, data, 3)
    chosen, rejected = score_pairs(reference, data, 4)
    assert np.allclose(own["score"], (chosen - rejected).numpy(), atol=1e-4) and np.abs(own["score"]).min() > 0
    assert np.isfinite(own["sampler"]).all() and 0 <= own["outside_support"] < 1
    same = reward_margins(copy.deepcopy(reference), reference, data, 3)
    assert not same["score"].any() and not same["sampler"].any()  # an untrained copy: exactly 0

    clean_chosen = pairs.assign(chosen_codes_path=None, chosen_path=pairs["clean_path"])  # gt_as_chosen: never drawn
    data = PairTensors(clean_chosen, tmp_path, 16000, 0.2, reference.stft_cfg.hop)
    gt = reward_margins(reference, reference, data, 3)
    assert gt["sampler"] is None and np.isnan(gt["outside_support"]) and np.isfinite(gt["score"]).all()


@pytest.mark.slow
def test_pair_diagnostics_of_a_tiny_ar_ablation_agree_with_the_dpo_run(tmp_path):
    """The DPO run's held-out reward accuracy and margin are the diagnostics' own; the SFT control is reported beside
    it, and the DPO strategy minus the control comes with a clip-resampled CI."""
    import json

    from gensr.layout import base_checkpoint
    from gensr.stages.ablation import model_dir, strategy_settings
    from gensr.stages.dpo import train_dpo
    from gensr.stages.pair_diagnostics import run_pair_diagnostics
    from gensr.stages.pairs import pairs_dir

    params = tiny_params([f"paths.data={tmp_path / 'data'}", f"paths.models={tmp_path / 'models'}",
                          f"paths.reports={tmp_path / 'reports'}", f"paths.mlruns={tmp_path / 'mlruns'}",
                          "ablation.paradigms=[ar]", "ablation.strategies=[multi,sft_clean]",
                          "ablation.budget.steps=4", "ablation.budget.batch_size=2", "ablation.budget.lr=0.003",
                          "dpo.segment_seconds=0.2", "dpo.val_every_steps=2", "dpo.audio_examples=0",
                          "dpo.ref_batch_size=3", "evaluate.n_bootstrap=200", "dpo.ar.trainable=[heads]"])
    tiny_restorer("ar").save(base_checkpoint(params, "ar"))
    pdir = pairs_dir(params, "ar", "multi")
    pdir.mkdir(parents=True)
    _ar_pairs(pdir)
    summaries = {s: train_dpo(params, "ar", s, track=False, settings=strategy_settings(params, "ar", s),
                              out_dir=model_dir(params, "ar", s), kind="ablation") for s in ("multi", "sft_clean")}

    out = run_pair_diagnostics(params, "ar", train_pairs=5)
    rows = {(r["strategy"], r["role"]): r for r in out["rows"]}
    assert set(rows) == {(s, role) for s in ("base", "multi", "sft_clean") for role in ("heldout", "train")}
    assert rows[("multi", "train")]["n_pairs"] == 5 and rows[("multi", "heldout")]["n_clips"] == 2
    after = summaries["multi"]["heldout_after"]
    assert rows[("multi", "heldout")]["mean_margin"] != 0 and rows[("sft_clean", "heldout")]["mean_margin"] != 0
    assert rows[("multi", "heldout")]["accuracy"] == pytest.approx(after["rewards/accuracies"], abs=1e-6)
    beta = strategy_settings(params, "ar", "multi").beta
    assert beta * rows[("multi", "heldout")]["mean_margin"] == pytest.approx(after["rewards/margins"], abs=1e-4)
    assert rows[("base", "heldout")]["accuracy"] == pytest.approx(after["reference_prefers_chosen"], abs=1e-6)
    for r in out["rows"]:
        lo, hi = r["accuracy_ci"]
        assert lo <= r["accuracy"] <= hi and r["sampler_accuracy"] is not None
        assert set(r["rho"]) == {"dnsmos_ovrl", "pesq_wb", "estoi", "wer", "speaker_cosine"}
    versus = {(v["strategy"], v["view"]): v for v in out["versus_control"]}
    assert set(versus) == {("multi", "score"), ("multi", "sampler")}
    held = rows[("multi", "heldout")]["accuracy"] - rows[("sft_clean", "heldout")]["accuracy"]
    assert versus[("multi", "score")]["accuracy_minus_control"] == pytest.approx(held)
    written = json.loads((tmp_path / "reports" / "pair_diagnostics" / "ar.json").read_text())
    assert written["rows"] == json.loads(json.dumps(out["rows"]))
    assert "| sft_clean | multi | heldout |" in (tmp_path / "reports" / "pair_diagnostics" / "ar.md").read_text()


def test_clustered_mean_resamples_whole_clips():
    from gensr.evaluate.bootstrap import clustered_mean

    # one clip with 9 hits, nine clips with one miss each: the pair share is 0.5, but the CI must reflect
    # that a resample of clips either has the big clip (repeatedly) or not
    values = np.array([1.0] * 9 + [0.0] * 9)
    clips = np.array(["big"] * 9 + [f"c{i}" for i in range(9)])
    mean, lo, hi = clustered_mean(values, clips, 2000, 0.95, 0)
    assert mean == pytest.approx(0.5)
    assert lo == 0.0 and hi > 0.7  # a resample without the big clip has no hit at all
    iid_lo, iid_hi = clustered_mean(values, np.arange(18), 2000, 0.95, 0)[1:]
    assert hi - lo > 1.5 * (iid_hi - iid_lo)


def test_score_agreement_signs_metrics_so_that_positive_means_the_winner_is_better():
    from gensr.evaluate.pair_diagnostics import score_agreement

    pairs = pd.DataFrame({"chosen_pesq_wb": [2.0, 3.0, 4.0, 5.0], "rejected_pesq_wb": [1.9, 2.5, 3.0, 3.0],
                          "chosen_wer": [0.1, 0.1, 0.1, 0.1], "rejected_wer": [0.2, 0.4, 0.6, 0.8]})
    margin = np.array([0.1, 0.5, 1.0, 2.0])
    out = score_agreement(pairs, margin, ["pesq_wb", "wer"])
    assert out["accuracy"] == 1.0
    assert out["metrics"]["pesq_wb"]["rho"] == pytest.approx(1.0) and out["metrics"]["wer"]["rho"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 score margins for 4 pairs"):
        score_agreement(pairs, margin[:3], ["pesq_wb"])
    assert np.isnan(score_agreement(pairs, np.full(4, np.nan), ["pesq_wb"])["accuracy"])


@pytest.mark.parametrize("paradigm", ["mgm", "fm"])
def test_reward_margins_of_the_other_paradigms_use_their_preference_score(tmp_path, paradigm):
    """No head logits: the margins come from `preference_score` (with each pair's seed), and there is no sampler view."""
    from gensr.align.data import PairTensors, score_pairs
    from gensr.evaluate.pair_diagnostics import reward_margins

    pairs = _ar_pairs(tmp_path, tokens=paradigm != "fm")
    reference = tiny_restorer(paradigm)
    data = PairTensors(pairs, tmp_path, 16000, 0.2, reference.stft_cfg.hop)
    own = reward_margins(reference, reference, data, 3)
    chosen, rejected = score_pairs(reference, data, 3)
    assert own["sampler"] is None and np.array_equal(own["score"], (chosen - rejected).numpy().astype(float))
    assert own["score"].any()
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    moved = reward_margins(policy, reference, data, 3)
    pc, pr = score_pairs(policy, data, 3)
    assert np.allclose(moved["score"], ((pc - chosen) - (pr - rejected)).numpy(), atol=1e-4) and moved["score"].any()


@pytest.mark.slow
def test_learning_curve_trains_nested_subsets_and_judges_them_on_the_same_held_out_clips(tmp_path, monkeypatch):
    import json

    from gensr.layout import base_checkpoint
    from gensr.stages.pair_diagnostics import LEARNING_CURVE_RULE, learning_curve
    from gensr.stages.pairs import pairs_dir

    monkeypatch.chdir(tmp_path)  # paths.data relative, as in params.yaml: the derived tables must still find the audio
    params = tiny_params(["paths.data=data", f"paths.models={tmp_path / 'models'}",
                          f"paths.reports={tmp_path / 'reports'}", f"paths.mlruns={tmp_path / 'mlruns'}",
                          "ablation.budget.steps=3", "ablation.budget.batch_size=2", "ablation.budget.lr=0.003",
                          "dpo.segment_seconds=0.2", "dpo.val_every_steps=2", "dpo.audio_examples=0",
                          "dpo.ref_batch_size=4", "evaluate.n_bootstrap=200"])
    tiny_restorer("ar").save(base_checkpoint(params, "ar"))
    pdir = pairs_dir(params, "ar", "multi")
    pdir.mkdir(parents=True)
    _ar_pairs(pdir, n_pairs=12)  # 6 clips of 2 pairs: 2 held out, a pool of 4

    out = learning_curve(params, "ar", fractions=(1.0, 0.5), heldout_fraction=1 / 3)
    assert [r["n_clips"] for r in out["rows"]] == [2, 4] and out["n_heldout_clips"] == 2
    root = tmp_path / "models" / "pair_diagnostics" / "ar" / "learning_curve"
    tables = {n: pd.read_parquet(root / f"clips_{n}" / "pairs.parquet") for n in (2, 4)}
    held = set(tables[2][tables[2].role == "heldout"].deg_id)
    assert held == set(tables[4][tables[4].role == "heldout"].deg_id) and len(held) == 2
    train = {n: set(t[t.role == "train"].deg_id) for n, t in tables.items()}
    assert train[2] < train[4] and not (train[4] & held)  # nested, and never a held-out clip
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in tables[4]["chosen_path"])
    for r in out["rows"]:
        dpo = json.loads((root / f"clips_{r['n_clips']}" / "dpo" / "summary.json").read_text())
        assert r["dpo_accuracy"] == pytest.approx(dpo["heldout_after"]["rewards/accuracies"], abs=1e-6)
        assert r["delta"] == pytest.approx(r["dpo_accuracy"] - r["sft_accuracy"])
        sft = json.loads((root / f"clips_{r['n_clips']}" / "sft" / "summary.json").read_text())
        assert sft["objective"] == "sft" and not sft["heldout_after"]  # the control computes no preference score
    g = out["growth"]
    assert g["clips"] == [2, 4] and g["mean"] == pytest.approx(out["rows"][1]["delta"] - out["rows"][0]["delta"])
    assert g["more_clips_help"] == (g["ci"][0] > 0)
    md = (tmp_path / "reports" / "pair_diagnostics" / "ar_learning_curve.md").read_text()
    assert LEARNING_CURVE_RULE in md and "| 4 |" in md
    with pytest.raises(ValueError, match="heldout_fraction"):
        learning_curve(params, "ar", heldout_fraction=1.0)
