"""One LightningModule for every causal language model in the suite.

It owns the loss (next-token cross-entropy), the metrics (loss, perplexity, bits per
token, token accuracy, top-5/top-10 accuracy; torchmetrics), the optimiser and schedule,
truncated BPTT for models that carry state, and generation.

Batches: dict(input=(B, T) long, target=(B, T) long with -100 where nothing is predicted).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from memexp.data.spec import IGNORE_INDEX, DataSpec
from memexp.errors import ConfigError
from memexp.models.protocols import AuxiliaryLosses, MultiRateCMS, StepScheduled, context_limit
from memexp.models.sampling import Sampling, sample_next
from memexp.tasks.base import BaseTask
from memexp.tasks.cms_gate import CMSGradientGate
from memexp.tasks.optim import OptimizerSettings
from memexp.tasks.settings import CausalLMSettings


def _detach(state: Any) -> Any:
    """The model state (a nest of tuples / lists / dicts of tensors, or None) cut from the graph."""
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, state)


class CausalLMTask(BaseTask):
    """Next-token prediction with any `memexp.models` causal LM.

    Args:
        net: the model; `net(idx, state) -> (logits, state)`.
        spec: what the data provides (vocabulary, tokenizer, window length).
        optim: optimiser and schedule settings.
        settings: `CausalLMSettings`, its `carry_state` resolved (true or false; `create` resolves "auto").
    """

    task_kind = "causal_lm"
    Settings = CausalLMSettings

    def __init__(
        self, net: nn.Module, spec: DataSpec, optim: OptimizerSettings | None = None, settings: CausalLMSettings | None = None
    ):
        super().__init__(net, spec, optim, settings or CausalLMSettings(carry_state=False))
        self.carry_state = bool(self.settings.carry_state)
        self._train_state = None
        # Models that learn at several frequencies (HOPE's continuum memory) name which parameters
        # the optimiser may move at which period; the gate holds their gradients in between.
        schedule = net.cms_update_schedule() if isinstance(net, MultiRateCMS) else None
        self.cms_gate = CMSGradientGate(schedule) if schedule else None
        V = spec.vocab_size
        self.train_acc = MulticlassAccuracy(num_classes=V, average="micro", ignore_index=IGNORE_INDEX)
        for stage in ("val", "test"):
            metrics = MetricCollection(
                {
                    "acc": MulticlassAccuracy(num_classes=V, average="micro", ignore_index=IGNORE_INDEX),
                    "top5": MulticlassAccuracy(num_classes=V, top_k=min(5, V), average="micro", ignore_index=IGNORE_INDEX),
                    "top10": MulticlassAccuracy(num_classes=V, top_k=min(10, V), average="micro", ignore_index=IGNORE_INDEX),
                },
                prefix=f"{stage}/",
            )
            setattr(self, f"{stage}_metrics", metrics)
            setattr(self, f"{stage}_loss", MeanMetric())

    @staticmethod
    def metric_names() -> list[str]:
        """Every metric name a run logs at the end of training and testing (what `optimized_metric` may name)."""
        evals = [f"{stage}/{m}" for stage in ("val", "test") for m in ("loss", "ppl", "bpc", "acc", "top5", "top10")]
        return ["train/loss", "train/acc", *evals]

    @classmethod
    def create(cls, net: nn.Module, spec: DataSpec, optim: OptimizerSettings, settings: CausalLMSettings) -> CausalLMTask:
        """carry_state "auto" carries when the model carries state and the windows are in order; true with a model
        or data that cannot is an error."""
        ordered = spec.ordered_windows
        carry = settings.carry_state
        if carry == "auto":
            carry = bool(net.carries_state and ordered)
        elif carry and not net.carries_state:
            raise ConfigError(f"task.carry_state=true needs a model that carries state; {type(net).__name__} does not")
        elif carry and not ordered:
            raise ConfigError("task.carry_state=true needs in-order windows; set data.windows=stream")
        return cls(net, spec, optim=optim, settings=dataclasses.replace(settings, carry_state=bool(carry)))

    # -- steps --------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """idx (B, T) long, the net's state or None -> logits (B, T, V) and the new state."""
        return self.net(idx, state)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        if not bool((target != IGNORE_INDEX).any()):  # nothing to predict (a router-only batch): no NaN
            return logits.sum() * 0.0
        flat = logits.reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, target.reshape(-1), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if isinstance(self.net, StepScheduled):  # schedules that ramp with the optimiser step
            self.net.set_training_step(self.global_step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.cms_gate is not None:
            self.cms_gate.apply(self.global_step)

    def _extra_inputs(self, batch: dict) -> dict:
        """Batch entries the model reads besides the tokens (none here; memexp.tasks.explicit passes its router's)."""
        return {}

    def _before_forward(self, batch: dict) -> None:
        """What a training batch does to the model before it is read (nothing here; memexp.tasks.explicit writes
        its episode into the bank)."""

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = batch["input"], batch["target"]
        self._before_forward(batch)
        if "stream_start" in batch and bool(batch["stream_start"]):
            self._train_state = None  # the streams start again (a new epoch): no state to carry in
        logits, state = self.net(x, self._train_state if self.carry_state else None, **self._extra_inputs(batch))
        if self.carry_state:
            self._train_state = _detach(state)
        loss = self._loss(logits, y, self.settings.label_smoothing)
        for name, value in (self.net.auxiliary_losses() if isinstance(self.net, AuxiliaryLosses) else {}).items():
            self.log(f"train/{name}_loss", value, on_step=True, on_epoch=False)
            loss = loss + value
        self.train_acc(logits.detach().reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/acc", self.train_acc, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> None:
        x, y = batch["input"], batch["target"]
        logits, _ = self.net(x, None)
        n_tokens = (y != IGNORE_INDEX).sum()
        getattr(self, f"{stage}_loss").update(self._loss(logits, y), weight=n_tokens)
        getattr(self, f"{stage}_metrics").update(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def _eval_epoch_end(self, stage: str) -> None:
        loss = getattr(self, f"{stage}_loss").compute()
        values = {f"{stage}/loss": loss, f"{stage}/ppl": torch.exp(loss), f"{stage}/bpc": loss / math.log(2)}
        values.update(getattr(self, f"{stage}_metrics").compute())
        self.log_dict(values, prog_bar=stage == "val", sync_dist=True)
        getattr(self, f"{stage}_loss").reset()
        getattr(self, f"{stage}_metrics").reset()

    # -- checkpoints --------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.cms_gate is not None:
            checkpoint["memexp"]["cms_gate"] = self.cms_gate.state_dict()
        if self.carry_state and self._train_state is not None:  # the carried TBPTT state: a resume continues it
            checkpoint["memexp"]["train_state"] = self._train_state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        gate_state = checkpoint.get("memexp", {}).get("cms_gate")
        if self.cms_gate is not None and gate_state is not None:
            self.cms_gate.load_state_dict(gate_state)
        if self.carry_state:
            self._train_state = checkpoint.get("memexp", {}).get("train_state")

    # -- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int = 200,
        sampling: Sampling = Sampling(),
    ) -> list[int]:
        """Continue `prompt` (token ids, fed exactly once) by `max_new_tokens` tokens chosen as `sampling` says.

        Models with a bounded context (`max_len`) slide it: when the cache is full the last
        max_len - 1 tokens are fed again and generation continues.
        """
        was_training = self.training
        self.eval()
        device = self.device
        generator = sampling.generator(device)
        max_len = context_limit(self.net)
        tokens = list(prompt) or [0]
        context = tokens[-max_len:] if max_len else tokens
        logits, state = self.net(torch.tensor([context], device=device), None)
        fed = len(context)
        out = []
        for _ in range(max_new_tokens):
            nxt = int(sample_next(logits[:, -1].float(), sampling, generator))
            out.append(nxt)
            tokens.append(nxt)
            if max_len and fed >= max_len:
                context = tokens[-(max_len - 1) :] if max_len > 1 else tokens[-1:]
                logits, state = self.net(torch.tensor([context], device=device), None)
                fed = len(context)
            else:
                logits, state = self.net(torch.tensor([[nxt]], device=device), state)
                fed += 1
        self.train(was_training)
        return out
