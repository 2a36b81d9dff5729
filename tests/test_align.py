"""DPO: the pure loss against hand-computed values, and the Lightning module on real restorers."""

from __future__ import annotations

import math

import pytest
import torch

from gensr.align.loss import dpo_loss


def test_dpo_loss_matches_a_hand_computed_value():
    pw, pl = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rw, rl = torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -4.0])
    beta = 0.5
    # pair 0: beta*((-10+11) - (-12+11)) = 0.5*2 = 1.0 ; pair 1: 0.5*((0) - (1)) = -0.5
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    loss, diag = dpo_loss(pw, pl, rw, rl, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert diag["rewards/chosen"].item() == pytest.approx((0.5 + 0.0) / 2)
    assert diag["rewards/rejected"].item() == pytest.approx((-0.5 + 0.5) / 2)
    assert diag["rewards/margins"].item() == pytest.approx((1.0 - 0.5) / 2)
    assert diag["rewards/accuracies"].item() == pytest.approx(0.5)


def test_dpo_loss_is_log2_when_policy_equals_reference():
    scores = torch.randn(7) * 100
    other = torch.randn(7) * 100
    loss, diag = dpo_loss(scores, other, scores.clone(), other.clone(), beta=3.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert diag["rewards/accuracies"].item() == 0.0  # a zero margin is not a win


def test_sft_term_adds_weighted_nll_and_is_required_when_weighted():
    z = torch.zeros(3)
    loss, _ = dpo_loss(z, z, z, z, beta=1.0, sft_weight=0.25, policy_chosen_nll=torch.tensor(2.0))
    assert loss.item() == pytest.approx(math.log(2) + 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="policy_chosen_nll"):
        dpo_loss(z, z, z, z, beta=1.0, sft_weight=0.1)


def test_loss_gradient_reaches_policy_scores_only():
    pw = torch.randn(4, requires_grad=True)
    pl = torch.randn(4, requires_grad=True)
    rw = torch.randn(4, requires_grad=True)
    rl = torch.randn(4, requires_grad=True)
    loss, _ = dpo_loss(pw, pl, rw, rl, beta=0.3)
    loss.backward()
    assert pw.grad is not None and pl.grad is not None
    assert (pw.grad < 0).all() and (pl.grad > 0).all()  # raise chosen, lower rejected
    assert rw.grad is None and rl.grad is None
