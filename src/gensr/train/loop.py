"""One Lightning optimisation loop for any objective: the codec phases and every SFT run.

`ObjectiveModule` wraps a plain nn.Module and a loss function of a (degraded, clean,
lengths) batch, trains only the parameters it is given (AdamW, linear warm-up then cosine
decay) and remembers the losses so the caller can report a stable final loss.

With `scaleout.trainer.devices` > 1 the fit runs as DDP (gensr.train.distributed): each rank
trains on its slice of every global batch, the recorded loss is the mean over ranks (the
global batch's loss), and the history travels back to the caller in a buffer, since the
launcher returns rank 0's state_dict and nothing else.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
import torch
from torch import nn

from gensr.config.models import TrainLoop
from gensr.config.scaleout import TrainerParams
from gensr.train.data import Clip, CropDataModule
from gensr.train.distributed import quiet_lightning, rank_callbacks, trainer_kwargs

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class ObjectiveModule(L.LightningModule):
    def __init__(self, model: nn.Module, loss_fn: LossFn, parameters: list[nn.Parameter], loop: TrainLoop,
                 metric_name: str):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.train_params = parameters
        self.loop = loop
        self.metric_name = metric_name
        # float64: holds each float32 loss exactly; NaN = a step not taken
        self.register_buffer("loss_history", torch.full((loop.steps,), float("nan"), dtype=torch.float64))

    @property
    def losses(self) -> list[float]:
        return [float(v) for v in self.loss_history if not math.isnan(v)]

    def training_step(self, batch, batch_idx):
        degraded, clean, lengths = batch
        loss = self.loss_fn(degraded, clean, lengths)
        # the global batch's loss: the mean of the ranks' means (the identity in one process); reduce works in place
        global_loss = self.trainer.strategy.reduce(loss.detach().clone(), reduce_op="mean")
        self.loss_history[self.global_step] = global_loss
        self.log(self.metric_name, global_loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.train_params, lr=self.loop.lr, weight_decay=self.loop.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.loop.warmup_steps, self.loop.steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(model: nn.Module, loss_fn: LossFn, parameters: list[nn.Parameter], clips: list[Clip], loop: TrainLoop,
        sample_rate: int, seed: int, logger=None, metric_name: str = "train/loss",
        trainer: TrainerParams | None = None) -> dict:
    """Run `loop.steps` optimisation steps (on `trainer`'s devices; None = one CPU process);
    returns {final_loss, seconds, steps, losses}."""
    if not parameters:
        raise ValueError("nothing to train: the parameter list is empty")
    quiet_lightning()
    L.seed_everything(seed, workers=True, verbose=False)
    module = ObjectiveModule(model, loss_fn, parameters, loop, metric_name)
    data = CropDataModule(clips, loop.steps, loop.batch_size, int(loop.crop_seconds * sample_rate), seed)
    devices, rank_hooks = trainer_kwargs(trainer), rank_callbacks(trainer, seed)
    trainer = L.Trainer(
        max_steps=loop.steps,
        max_epochs=1,
        **devices,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_model_summary=False,
        gradient_clip_val=loop.grad_clip,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        enable_progress_bar=True,
        # tqdm rather than rich: rich prints nothing until the end when stderr is not a terminal
        callbacks=[TQDMProgressBar(refresh_rate=20), *rank_hooks],
    )
    model.train()
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    model.eval()
    losses = module.losses
    tail = losses[-max(1, min(50, len(losses) // 5)) :]
    return {"final_loss": float(sum(tail) / len(tail)), "seconds": seconds, "steps": len(losses), "losses": losses}
