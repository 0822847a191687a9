"""One LightningModule for (dialogue history -> reply) models such as HGD-MemNet.

It owns the loss (teacher-forced cross-entropy on the reply tokens, padding ignored, plus
the model's ponder loss), the metrics (loss, perplexity, mean thinking steps; BLEU-2/4 and
distinct-1/2 of greedy replies to the first `max_eval_generate_batches` evaluation batches;
torchmetrics), the optimiser and schedule, and decoding for chat.

Batches: dict(context (B, Lc), context_mask (B, Lc), reply_in (B, Lr), reply_out (B, Lr)),
see `memexp.data.dialogue.collate_dialogues`. The net: `net(context, context_mask,
reply_in) -> {"logits" (B, Lr, V), "ponder_loss" (), "think_steps" (B,)}` and
`net.generate(context, context_mask, max_len, sos_id, eos_id, sampling, min_len) -> (B, L)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import BLEUScore

from memexp.data.spec import DataSpec
from memexp.models.sampling import GREEDY, Sampling
from memexp.tasks.base import BaseTask
from memexp.tasks.optim import OptimizerSettings
from memexp.tasks.settings import DialogueSettings
from memexp.tasks.text_metrics import DistinctN


class DialogueTask(BaseTask):
    """Reply generation given the dialogue history.

    Args:
        net: the model (see the module docstring).
        spec: what the data provides (vocabulary with pad/sos/eos ids).
        optim: optimiser and schedule settings.
        settings: `DialogueSettings`.
    """

    task_kind = "dialogue"
    Settings = DialogueSettings

    def __init__(
        self, net: nn.Module, spec: DataSpec, optim: OptimizerSettings | None = None, settings: DialogueSettings | None = None
    ):
        super().__init__(net, spec, optim, settings)
        self.max_eval_generate_batches = self.settings.max_eval_generate_batches
        vocab = spec.tokenizer
        self.pad_id, self.sos_id, self.eos_id = vocab.pad_id, vocab.sos_id, vocab.eos_id
        for stage in ("val", "test"):
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_think", MeanMetric())
            setattr(self, f"{stage}_bleu2", BLEUScore(n_gram=2))
            setattr(self, f"{stage}_bleu4", BLEUScore(n_gram=4))
            setattr(self, f"{stage}_distinct1", DistinctN(1))
            setattr(self, f"{stage}_distinct2", DistinctN(2))

    @staticmethod
    def metric_names() -> list[str]:
        """Every metric name a run logs at the end of training and testing (what `optimized_metric` may name)."""
        names = ("loss", "ppl", "think_steps", "bleu2", "bleu4", "distinct1", "distinct2")
        return ["train/loss", "train/ponder", "train/think_steps", *(f"{s}/{n}" for s in ("val", "test") for n in names)]

    # -- steps ------------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        return self.net(batch["context"], batch["context_mask"], batch["reply_in"])

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=self.pad_id)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        ce = self._ce(out["logits"], batch["reply_out"])
        loss = ce + out["ponder_loss"]
        self.log("train/loss", ce, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/ponder", out["ponder_loss"], on_step=True, on_epoch=False)
        self.log("train/think_steps", out["think_steps"].mean(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> None:
        out = self(batch)
        target = batch["reply_out"]
        getattr(self, f"{stage}_loss").update(self._ce(out["logits"], target), weight=(target != self.pad_id).sum())
        getattr(self, f"{stage}_think").update(out["think_steps"])
        if batch_idx < self.max_eval_generate_batches:
            ids = self.net.generate(
                batch["context"],
                batch["context_mask"],
                max_len=target.shape[1],
                sos_id=self.sos_id,
                eos_id=self.eos_id,
                sampling=GREEDY,
            )
            replies = [self._until_eos(row) for row in ids.tolist()]
            refs = [self._until_eos(row) for row in target.tolist()]
            decode = self.spec.tokenizer.decode
            getattr(self, f"{stage}_bleu2").update([decode(r) for r in replies], [[decode(r)] for r in refs])
            getattr(self, f"{stage}_bleu4").update([decode(r) for r in replies], [[decode(r)] for r in refs])
            getattr(self, f"{stage}_distinct1").update(replies)
            getattr(self, f"{stage}_distinct2").update(replies)

    def _eval_epoch_end(self, stage: str) -> None:
        loss = getattr(self, f"{stage}_loss").compute()
        values = {
            f"{stage}/loss": loss,
            f"{stage}/ppl": torch.exp(loss),
            f"{stage}/think_steps": getattr(self, f"{stage}_think").compute(),
        }
        names = ("bleu2", "bleu4", "distinct1", "distinct2") if self.max_eval_generate_batches else ()
        for name in names:
            values[f"{stage}/{name}"] = getattr(self, f"{stage}_{name}").compute()
        self.log_dict(values, prog_bar=stage == "val", sync_dist=True)
        for name in ("loss", "think", "bleu2", "bleu4", "distinct1", "distinct2"):
            getattr(self, f"{stage}_{name}").reset()

    # -- decoding ---------------------------------------------------------------------------
    def _until_eos(self, ids: list[int]) -> list[int]:
        """Token ids before the first EOS, without padding or SOS."""
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.sos_id):
                out.append(i)
        return out

    @torch.no_grad()
    def reply(
        self,
        context_ids_list: list[list[int]],
        max_len: int = 32,
        sampling: Sampling = Sampling(),
        max_context_len: int | None = None,
        min_len: int = 1,
    ) -> list[int]:
        """The reply (token ids, EOS excluded) to a history given as utterances (each a list of ids).

        Each utterance is followed by EOS, as in training; the history is cut to its last
        `max_context_len` tokens. An empty history is one empty utterance. The reply has at
        least `min_len` tokens (EOS is held back until then).
        """
        context: list[int] = []
        for utterance in context_ids_list or [[]]:
            context.extend(list(utterance) + [self.eos_id])
        if max_context_len:
            context = context[-max_context_len:]
        was_training = self.training
        self.eval()
        device = self.device
        ids = torch.tensor([context], device=device)
        ids = self.net.generate(
            ids,
            torch.ones_like(ids, dtype=torch.bool),
            max_len=max_len,
            sos_id=self.sos_id,
            eos_id=self.eos_id,
            sampling=sampling,
            min_len=min(min_len, max_len),
        )
        self.train(was_training)
        return self._until_eos(ids[0].tolist())

    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int = 32,
        sampling: Sampling = Sampling(),
    ) -> list[int]:
        """The reply to `prompt` taken as a one-utterance history (the run's end-of-training sample)."""
        return self.reply([list(prompt)], max_len=max(1, max_new_tokens), sampling=sampling)
