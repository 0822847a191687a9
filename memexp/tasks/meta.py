"""A first-order Reptile outer loop that adapts on held-out validation tasks during training.

Every `outer_frequency` optimizer steps, `outer_steps` times:

    theta0  <- current weights
    theta'  <- theta0 after `inner_steps` plain SGD steps (lr `inner_lr`) on held-out batches
               (the validation loader: tasks the training loss never sees)
    theta   <- theta0 + outer_lr * (theta' - theta0)

(Nichol et al. 2018, first order: no second derivatives.) The main optimiser's state is
left alone; only the weights move. Its effect is measured on the *test* split, which the
outer loop never touches: `python -m memexp.run -m experiment=meta_recall meta.use=true,false`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class ReptileOuterLoop(L.Callback):
    def __init__(
        self, inner_steps: int = 5, outer_steps: int = 1, outer_frequency: int = 50, inner_lr: float = 1e-2, outer_lr: float = 0.5
    ):
        from memexp.errors import ConfigError

        if min(inner_steps, outer_steps, outer_frequency) < 1:
            raise ConfigError("meta.inner_steps, meta.outer_steps and meta.outer_frequency must be >= 1")
        if not 0 < outer_lr <= 1:
            raise ConfigError(f"meta.outer_lr={outer_lr} must be in (0, 1]")
        self.inner_steps, self.outer_steps, self.outer_frequency = inner_steps, outer_steps, outer_frequency
        self.inner_lr, self.outer_lr = inner_lr, outer_lr
        self._batches = None
        self.updates = 0

    def _next_batch(self, trainer: L.Trainer) -> dict:
        if self._batches is None:
            self._batches = iter(trainer.datamodule.val_dataloader())
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = iter(trainer.datamodule.val_dataloader())
            return next(self._batches)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == 0 or trainer.global_step % self.outer_frequency:
            return
        self.meta_update(trainer, pl_module)

    def meta_update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net = pl_module.net
        params = [p for p in net.parameters() if p.requires_grad]
        with torch.enable_grad():
            for _ in range(self.outer_steps):
                start = [p.detach().clone() for p in params]
                inner = torch.optim.SGD(params, lr=self.inner_lr)
                for _ in range(self.inner_steps):
                    b = self._next_batch(trainer)
                    x, y = b["input"].to(pl_module.device), b["target"].to(pl_module.device)
                    logits, _ = net(x, None)
                    loss = pl_module._loss(logits, y)
                    inner.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    inner.step()
                with torch.no_grad():
                    for p, p0 in zip(params, start):
                        p.copy_(p0 + self.outer_lr * (p - p0))
                for p in params:
                    p.grad = None
                self.updates += 1
        pl_module.log("meta/inner_loss", loss.detach(), on_step=True, on_epoch=False)
