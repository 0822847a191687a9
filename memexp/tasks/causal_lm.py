"""One LightningModule for every causal language model in the suite.

It owns the loss (next-token cross-entropy), the metrics (loss, perplexity, bits per
token, token accuracy, top-5/top-10 accuracy; torchmetrics), the optimiser and schedule,
truncated BPTT for models that carry state, and generation.

Batches: dict(input=(B, T) long, target=(B, T) long with -100 where nothing is predicted).

Answer positions (`DataSpec.answer_positions`, data=mqar): the targets label a few positions per sequence. The
loss is the same mean over labelled positions, but with `task.answer_readout` (auto: on) the LM head reads only
those positions (`FeatureReadout`: readout(features[mask]), N x V logits instead of B x T x V), and `acc` is
Zoology's: the answers a sequence got right over its answers, averaged over sequences.
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
from memexp.models.protocols import AuxiliaryLosses, FeatureReadout, MultiRateCMS, StepScheduled, context_limit
from memexp.models.sampling import Sampling, sample_next
from memexp.tasks.base import BaseTask
from memexp.tasks.cms_gate import CMSGradientGate
from memexp.tasks.optim import OptimizerSettings
from memexp.tasks.settings import CausalLMSettings


def _detach(state: Any) -> Any:
    """The model state (a nest of tuples / lists / dicts of tensors, or None) cut from the graph."""
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, state)


def answer_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sequence with answers, its right answers over its answers (Zoology's accuracy, before the mean over
    sequences): logits (N, V) at the N labelled positions of y (B, T), row by row -> (B',) for the B' rows with any."""
    mask = y != IGNORE_INDEX
    right = (logits.argmax(-1) == y[mask]).to(torch.float32)  # (N,)
    rows = mask.nonzero()[:, 0]  # (N,) the sequence of each answer
    per_row = torch.zeros(y.shape[0], device=y.device).index_add_(0, rows, right)
    counts = mask.sum(1)
    return per_row[counts > 0] / counts[counts > 0]


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
        self.answers = bool(spec.answer_positions)  # score the labelled positions only (data=mqar)
        self.sparse_readout = self.answers and self.settings.answer_readout in ("auto", True)
        if self.settings.answer_readout is True and not self.answers:
            raise ConfigError("task.answer_readout=true needs data that labels answer positions only (data=mqar)")
        if self.sparse_readout and not isinstance(net, FeatureReadout):
            raise ConfigError(
                f"{type(net).__name__} cannot read out at the answer positions only (it has no features(idx, state) and "
                "readout(h): memexp.models.protocols.FeatureReadout); set task.answer_readout=false to read out every position"
            )
        self._train_state = None
        # Models that learn at several frequencies (HOPE's continuum memory) name which parameters
        # the optimiser may move at which period; the gate holds their gradients in between.
        schedule = net.cms_update_schedule() if isinstance(net, MultiRateCMS) else None
        self.cms_gate = CMSGradientGate(schedule) if schedule else None
        V = spec.vocab_size
        self.train_acc = MulticlassAccuracy(num_classes=V, average="micro", ignore_index=IGNORE_INDEX)
        for stage in ("val", "test"):
            metrics = {
                "top5": MulticlassAccuracy(num_classes=V, top_k=min(5, V), average="micro", ignore_index=IGNORE_INDEX),
                "top10": MulticlassAccuracy(num_classes=V, top_k=min(10, V), average="micro", ignore_index=IGNORE_INDEX),
            }
            if not self.answers:  # token accuracy; on answer positions `acc` is the per-sequence mean (below)
                metrics["acc"] = MulticlassAccuracy(num_classes=V, average="micro", ignore_index=IGNORE_INDEX)
            setattr(self, f"{stage}_metrics", MetricCollection(metrics, prefix=f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric())
            if self.answers:  # one value per sequence: its right answers over its answers
                setattr(self, f"{stage}_answer_acc", MeanMetric())

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

    def _scored(self, x: torch.Tensor, y: torch.Tensor, state: Any, extra: dict) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(logits, their targets, the new state): (B, T, V) and y, or on answer-position data (N, V) and (N,) at the
        N labelled positions of y (row by row), read out there only when `sparse_readout`."""
        if not self.answers:
            logits, state = self.net(x, state, **extra)
            return logits, y, state
        mask = y != IGNORE_INDEX  # (B, T)
        if self.sparse_readout:
            h, state = self.net.features(x, state)  # (B, T, C)
            return self.net.readout(h[mask]), y[mask], state  # (N, V)
        logits, state = self.net(x, state, **extra)
        return logits[mask], y[mask], state

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
        logits, y, state = self._scored(x, y, self._train_state if self.carry_state else None, self._extra_inputs(batch))
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
        logits, target, _ = self._scored(x, y, None, {})
        n_tokens = (target != IGNORE_INDEX).sum()
        getattr(self, f"{stage}_loss").update(self._loss(logits, target), weight=n_tokens)
        getattr(self, f"{stage}_metrics").update(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        if self.answers:
            getattr(self, f"{stage}_answer_acc").update(answer_accuracy(logits, y))

    def _eval_epoch_end(self, stage: str) -> None:
        loss = getattr(self, f"{stage}_loss").compute()
        values = {f"{stage}/loss": loss, f"{stage}/ppl": torch.exp(loss), f"{stage}/bpc": loss / math.log(2)}
        values.update(getattr(self, f"{stage}_metrics").compute())
        if self.answers:
            values[f"{stage}/acc"] = getattr(self, f"{stage}_answer_acc").compute()
            getattr(self, f"{stage}_answer_acc").reset()
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
