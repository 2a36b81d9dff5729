"""The preference loss: sigmoid DPO over four (B,) tensors, with TRL's diagnostic names.

    loss = -logsigmoid(beta * ((pw - rw) - (pl - rl)))  [+ sft_weight * nll(chosen)]

pw/pl are the policy's preference scores of chosen/rejected, rw/rl the frozen reference's.
The paradigm-specific part (AR log-prob, MGM masked log-prob, FM -1/2 velocity MSE) only
produces those numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    sft_weight: float = 0.0,
    policy_chosen_nll: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean sigmoid-DPO loss and detached diagnostics.

    `policy_chosen_nll` (scalar or (B,)) is the SFT loss (on the chosen candidate or, with
    dpo.<paradigm>.sft_target = clean, on the clean reference); it is required
    when `sft_weight > 0`, because a well-scaled NLL is model specific.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    ref_chosen, ref_rejected = ref_chosen.detach(), ref_rejected.detach()
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    if sft_weight > 0:
        if policy_chosen_nll is None:
            raise ValueError("sft_weight > 0 needs policy_chosen_nll (the SFT loss on the chosen candidate)")
        loss = loss + sft_weight * policy_chosen_nll.mean()
    diagnostics = {
        "rewards/chosen": chosen_reward.detach().mean(),
        "rewards/rejected": rejected_reward.detach().mean(),
        "rewards/margins": margin.detach().mean(),
        "rewards/accuracies": (margin.detach() > 0).float().mean(),
    }
    return loss, diagnostics
