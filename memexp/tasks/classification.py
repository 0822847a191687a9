"""One LightningModule for binary document classifiers (the BiGRU fake-news detectors, and any later one).

It owns the loss (BCE with logits, safe under bf16 autocast, plus any auxiliary logits the net
returns with their weights, e.g. ENDEF's entity branch), the metrics (torchmetrics; val and test:
AUC, spAUC = AUC up to a false-positive rate of 0.1 with McClish's correction as scikit-learn's
`roc_auc_score(max_fpr=0.1)`, macro F1, F1 / precision / recall per class and their macro means,
accuracy, loss), the optimiser and schedule (`memexp.tasks.optim`), and model selection: validation
macro F1 picks the checkpoint the test reloads (`selection`, read by `memexp.runs.train`), and
Lightning's EarlyStopping stops after `early_stop` validations without a new best.

Batches: see `memexp.data.news.batches` (content, content_mask, entity, entity_mask, label, ...).
The net: `net(batch) -> {"logits": (B,), "aux": {name: (weight, logits (B,))}}` ("aux" only in
training); label 1 is the positive class (fake news), 0 the negative (real).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from memexp.data.spec import DataSpec
from memexp.errors import ConfigError
from memexp.tasks.base import BaseTask
from memexp.tasks.optim import OptimizerSettings
from memexp.tasks.settings import ClassificationSettings

CLASS_NAMES = ("real", "fake")  # label 0, label 1: the names of the per-class metrics, as the original's


def classification_metrics(prefix: str) -> MetricCollection:
    """The metrics of one evaluation stage; update with (probabilities of label 1 (B,), labels (B,))."""
    return MetricCollection(
        {
            "auc": BinaryAUROC(),
            "spauc": BinaryAUROC(max_fpr=0.1),
            "acc": BinaryAccuracy(),
        },
        prefix=prefix,
    )


def class_metrics() -> MetricCollection:
    """Per-class and macro F1 / precision / recall; update with (predicted labels (B,), labels (B,))."""
    return MetricCollection(
        {
            "macro_f1": MulticlassF1Score(num_classes=2, average="macro"),
            "f1": MulticlassF1Score(num_classes=2, average=None),
            "precision": MulticlassPrecision(num_classes=2, average="macro"),
            "precision_cls": MulticlassPrecision(num_classes=2, average=None),
            "recall": MulticlassRecall(num_classes=2, average="macro"),
            "recall_cls": MulticlassRecall(num_classes=2, average=None),
        }
    )


def flatten_class_metrics(values: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """{"f1": [real, fake], "macro_f1": x, ...} -> {"<prefix>f1_real": ..., "<prefix>f1_fake": ..., "<prefix>macro_f1": x}."""
    out = {}
    for name, v in values.items():
        if v.ndim == 0:
            out[f"{prefix}{name}"] = v
        else:
            base = name.removesuffix("_cls")
            out |= {f"{prefix}{base}_{c}": v[i] for i, c in enumerate(CLASS_NAMES)}
    return out


class ClassificationTask(BaseTask):
    """Binary classification of documents with any net that returns a logit per document.

    Args:
        net: the model (see the module docstring).
        spec: what the data provides (vocabulary, two classes).
        optim: optimiser and schedule settings.
        settings: `ClassificationSettings`.
    """

    task_kind = "classification"
    Settings = ClassificationSettings
    selection = {"monitor": "val/macro_f1", "mode": "max"}  # the checkpoint the test reloads

    def __init__(
        self,
        net: nn.Module,
        spec: DataSpec,
        optim: OptimizerSettings | None = None,
        settings: ClassificationSettings | None = None,
    ):
        if spec.num_classes not in (None, 2):
            raise ConfigError(f"a classification task here is binary; the data has {spec.num_classes} classes")
        super().__init__(net, spec, optim, settings)
        self.early_stop = self.settings.early_stop
        for stage in ("val", "test"):
            setattr(self, f"{stage}_scores", classification_metrics(f"{stage}/"))
            setattr(self, f"{stage}_classes", class_metrics())
            setattr(self, f"{stage}_loss", MeanMetric())

    @staticmethod
    def metric_names() -> list[str]:
        """Every metric name a run logs at the end of training and testing (what `optimized_metric` may name)."""
        per_class = [f"{m}_{c}" for m in ("f1", "precision", "recall") for c in CLASS_NAMES]
        names = ["loss", *classification_metrics("").keys(), "macro_f1", "precision", "recall", *per_class]
        return ["train/loss", *(f"{s}/{n}" for s in ("val", "test") for n in names)]

    def forward(self, batch: dict) -> dict:
        return self.net(batch)

    @staticmethod
    def bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        y = batch["label"]
        loss = main = self.bce(out["logits"], y)
        for name, (weight, logits) in (out.get("aux") or {}).items():
            aux = self.bce(logits, y)
            loss = loss + weight * aux
            self.log(f"train/{name}_loss", aux, on_step=True, on_epoch=False)
        self.log("train/loss", main, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> None:
        logits = self(batch)["logits"].float()
        y = batch["label"]
        getattr(self, f"{stage}_loss").update(self.bce(logits, y), weight=len(y))
        getattr(self, f"{stage}_scores").update(torch.sigmoid(logits), y)
        getattr(self, f"{stage}_classes").update((logits > 0).long(), y)

    def _eval_epoch_end(self, stage: str) -> None:
        values = {f"{stage}/loss": getattr(self, f"{stage}_loss").compute()}
        values |= getattr(self, f"{stage}_scores").compute()
        values |= flatten_class_metrics(getattr(self, f"{stage}_classes").compute(), f"{stage}/")
        self.log_dict(values, prog_bar=stage == "val", sync_dist=True)
        for name in ("loss", "scores", "classes"):
            getattr(self, f"{stage}_{name}").reset()

    @torch.no_grad()
    def predict_proba(self, batch: dict) -> torch.Tensor:
        """P(label 1) per document (B,), with the net in eval mode (ENDEF: the content logit alone)."""
        was_training = self.training
        self.eval()
        p = torch.sigmoid(self(batch)["logits"].float())
        self.train(was_training)
        return p

    def configure_callbacks(self) -> list[L.Callback]:
        if not self.early_stop:
            return []
        return [EarlyStopping(monitor=self.selection["monitor"], mode=self.selection["mode"], patience=self.early_stop)]
