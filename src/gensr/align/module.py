"""Lightning DPO: a Restorer policy trained against a frozen copy of itself (or, as the ablation's control,
the SFT term alone).

`objective="sft"` is the control the ablation compares DPO against (strategies sft_clean and
sft_chosen): the same data, steps, optimizer and trainable parameters, and only the SFT term.
It has no DPO term by construction: the step never calls `preference_score`, and no reference
model is held.

The reference is held in a plain list, not registered as a submodule, so it is neither in the
checkpoint's state_dict nor in hparams (save_hyperparameters ignores both models).
- AR/MGM (`reference_mode="cached"`): the reference scores arrive with the batch, precomputed
  once per pair with the pair's own seed (TRL's precompute_ref_log_probs).
- FM (`reference_mode="live"`): the reference runs every step on the same t and noise as the
  policy; seeds are re-drawn per step so every epoch sees fresh timesteps.

When only the parameters after the policy's frozen trunk train (AR with `trainable: [heads]`), the
batch carries the trunk's outputs (`head_inputs`, computed once per pair before the fit) and the step
runs the heads alone: `preference_from_heads` / `sft_from_heads` instead of `preference_score` / `sft_loss`.
"""

from __future__ import annotations

import lightning as L
import torch

from gensr.align.data import stacked_head_scores, stacked_scores
from gensr.align.loss import dpo_loss

SEED_MODULUS = 2**31 - 1


def under_prefix(name: str, prefix: str) -> bool:
    """A parameter-name prefix matches whole name components: "heads" matches "heads.0.weight", not "heads_x"."""
    return name == prefix or name.startswith(prefix + ".")


def freeze_except(policy: torch.nn.Module, prefixes) -> None:
    """Freeze every parameter whose name does not start with one of `prefixes`.

    A prefix matches whole name components ("heads" matches "heads.0.weight", not "heads_x.weight"). Only narrows:
    a parameter the restorer keeps frozen (the AR/MGM codec) stays frozen. A prefix that matches no trainable
    parameter is an error, so a typo in dpo.<paradigm>.trainable cannot silently freeze the whole policy.
    """
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    unmatched = [p for p in prefixes if not any(under_prefix(n, p) for n in names)]
    if unmatched:
        tops = sorted({n.split(".")[0] for n in names})
        raise ValueError(f"dpo.<paradigm>.trainable: {unmatched} match no trainable parameter of the policy; "
                         f"its trainable top-level modules are {tops}")
    for name, p in policy.named_parameters():
        p.requires_grad_(p.requires_grad and any(under_prefix(name, pre) for pre in prefixes))


class DPOModule(L.LightningModule):
    def __init__(
        self,
        policy: torch.nn.Module,
        reference: torch.nn.Module,
        *,
        paradigm: str,
        beta: float,
        lr: float,
        weight_decay: float,
        sft_weight: float,
        reference_mode: str,
        sft_target: str = "chosen",
        trainable: tuple[str, ...] | None = None,
        objective: str = "dpo",
    ):
        super().__init__()
        if objective not in ("dpo", "sft"):
            raise ValueError(f"objective must be 'dpo' or 'sft', got {objective!r}")
        if objective == "sft" and (reference is not None or sft_weight <= 0):
            raise ValueError("objective 'sft' trains the SFT term alone: pass reference=None and sft_weight > 0")
        if reference_mode not in ("cached", "live"):
            raise ValueError(f"reference_mode must be 'cached' or 'live', got {reference_mode!r}")
        if sft_target not in ("chosen", "clean"):
            raise ValueError(f"sft_target must be 'chosen' or 'clean' (dpo.<paradigm>.sft_target), got {sft_target!r}")
        self.save_hyperparameters(ignore=["policy", "reference"])
        self.policy = policy
        if trainable is not None:
            freeze_except(policy, trainable)
        if reference is not None:
            reference.eval()
            reference.requires_grad_(False)
        self._reference = [reference]  # hidden from nn.Module registration on purpose

    @property
    def reference(self) -> torch.nn.Module:
        return self._reference[0]

    def on_fit_start(self) -> None:
        # the reference is not a registered submodule, so Lightning does not move it to the fit's device
        if self.reference is not None:
            self.reference.to(self.device)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Dropout would make policy and reference disagree at step 0; DPO trains the deterministic model.
        self.policy.eval()

    def _seeds(self, batch) -> torch.Tensor:
        if self.hparams.reference_mode == "live" and self.training:
            return (batch["seed"] + 7919 * self.global_step) % SEED_MODULUS
        return batch["seed"]

    def _step(self, batch, seeds) -> tuple[torch.Tensor, dict]:
        deg, cho, rej = batch["degraded"], batch["chosen"], batch["rejected"]
        codes = (batch["chosen_codes"], batch["rejected_codes"]) if "chosen_codes" in batch else (None, None)
        if self.hparams.objective == "sft":
            nll = self._sft(batch, codes[0])
            return self.hparams.sft_weight * nll.mean(), {"sft_loss": nll.detach().mean()}
        heads = batch.get("head_inputs")
        if heads is not None:  # the frozen trunk ran once per pair; only the heads run here
            pc, pr = stacked_head_scores(self.policy, heads["chosen"], heads["rejected"])
        else:
            pc, pr = stacked_scores(self.policy, deg, cho, rej, seeds, *codes)
        if self.hparams.reference_mode == "live":
            if heads is not None:
                raise RuntimeError("head inputs go with reference_mode 'cached' (the reference scores come with them)")
            with torch.no_grad():
                rc, rr = stacked_scores(self.reference, deg, cho, rej, seeds, *codes)
        else:
            if "ref_chosen" not in batch:
                raise RuntimeError("reference_mode 'cached' needs precomputed reference scores in the batch")
            rc, rr = batch["ref_chosen"], batch["ref_rejected"]
        nll = self._sft(batch, codes[0]) if self.hparams.sft_weight > 0 else None
        loss, diag = dpo_loss(pc, pr, rc, rr, self.hparams.beta, self.hparams.sft_weight, nll)
        if nll is not None:
            diag["sft_loss"] = nll.detach()
        return loss, diag

    def _sft(self, batch, chosen_codes) -> torch.Tensor:
        """The SFT term: on the chosen candidate (its own sampled tokens, when known) or on the clean reference."""
        heads = batch.get("head_inputs")
        if heads is not None:
            return self.policy.sft_from_heads(heads[self.hparams.sft_target])
        if self.hparams.sft_target == "clean":
            if "clean" not in batch:
                raise RuntimeError("sft_target 'clean' needs the clean references in the batch (PairTensors(with_clean=True))")
            return self.policy.sft_loss(batch["degraded"], batch["clean"])
        kwargs = {} if chosen_codes is None else {"codes": chosen_codes}
        return self.policy.sft_loss(batch["degraded"], batch["chosen"], **kwargs)

    def training_step(self, batch, batch_idx):
        loss, diag = self._step(batch, self._seeds(batch))
        bs = batch["degraded"].shape[0]
        # sync_dist: with several processes every logged value is the mean over ranks (the global batch's)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log_dict({f"train/{k}": v for k, v in diag.items()}, batch_size=bs, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, diag = self._step(batch, batch["seed"])
        bs = batch["degraded"].shape[0]
        self.log("val/loss", loss, batch_size=bs, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in diag.items()}, batch_size=bs, prog_bar=False, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.policy.trainable_parameters(), lr=self.hparams.lr,
                                 weight_decay=self.hparams.weight_decay)
