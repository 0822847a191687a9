"""BiGRU fake-news classifier (ENDEF's `bigru` base model) and its ENDEF entity-debiased variant.

Shape legend: B batch, L content tokens, E entity-string tokens, D embedding width,
H GRU hidden size (2H both directions), F entity CNN features.

    content ids (B, L) -> embeddings (B, L, D) -> BiGRU (B, L, 2H) -> masked attention pooling (B, 2H)
        -> [LayerNorm, dropout] -> MLP -> content logit (B,)

ENDEF (Zhu et al., SIGIR 2022, "Generalizing to the Future: Mitigating Entity Bias in Fake News
Detection") adds an entity branch: a CNN over the embeddings of the entity string, max-pooled,
then an MLP, giving an entity logit e. Training fits sigmoid(0.9 c + 0.1 e) plus 0.2 * the entity
branch's own loss, so the entity branch soaks up what the entities alone say about the label;
inference uses the content logit c alone, removing the entities' direct effect.

The nets return *logits* (the task applies BCE with logits, which is safe under autocast).
Token embeddings are learned (`embedding="learned"`) or the embeddings module of a BERT
(`embedding="bert"`): that module is loaded by the layer above (`memexp.runs.build`) from
`bert_path` and handed in as `embeddings`; only it is kept, not the rest of the BERT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from memexp.errors import ConfigError
from memexp.models.autocast import run_recurrent


class MaskedAttentionPool(nn.Module):
    """Softmax attention over positions with padding excluded: (B, L, C), mask (B, L) -> (B, C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(x).squeeze(-1).float()  # (B, L)
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no token pools to zero
        return torch.einsum("bl,blc->bc", weights.to(x.dtype), x)


def mlp(in_dim: int, dims: Sequence[int], dropout: float) -> nn.Sequential:
    """ENDEF's MLP: (Linear -> ReLU -> Dropout) per hidden size, then Linear(-> 1)."""
    layers: list[nn.Module] = []
    for d in dims:
        layers += [nn.Linear(in_dim, d), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = d
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


class EntityCNN(nn.Module):
    """Conv1d per kernel size over the entity-string embeddings, max-pooled over unpadded positions.

    (B, E, D), mask (B, E) -> (B, F), F = filters * len(kernel_sizes). Strings shorter than a
    kernel are padded inside the convolution, so every kernel sees at least one window.
    """

    def __init__(self, dim: int, kernel_sizes: Sequence[int] = (1, 2, 3, 5, 10), filters: int = 64):
        super().__init__()
        self.kernel_sizes = list(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, k) for k in self.kernel_sizes)
        self.out_dim = filters * len(self.kernel_sizes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (x * mask.unsqueeze(-1).to(x.dtype)).transpose(1, 2)  # (B, D, E), padding zeroed
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            xk = nn.functional.pad(x, (0, max(0, k - x.shape[-1])))
            h = conv(xk)  # (B, filters, E - k + 1)
            # a window is valid when it starts on a real token; others cannot win the max
            valid = nn.functional.pad(mask.bool(), (0, max(0, k - mask.shape[-1])))[:, : h.shape[-1]]
            valid[:, 0] = True  # an empty string still pools its first window
            pooled.append(h.masked_fill(~valid.unsqueeze(1), float("-inf")).amax(-1))
        return torch.cat(pooled, dim=-1)


class BiGRUClassifier(nn.Module):
    """BiGRU + masked attention pooling + MLP over token embeddings; one logit per document.
    With `endef=True`, ENDEF's entity branch is added (trained on the mix, absent at inference).

    Args:
        vocab_size: token ids the embeddings cover (from the data).
        embedding: "learned" (a fresh nn.Embedding of `embedding_size`) or "bert" (the `embeddings` module).
        bert_path: the BERT folder whose embeddings module `memexp.runs.build` loads and passes as
            `embeddings` when embedding="bert"; the model itself never reads it.
        finetune_embeddings: train the BERT embeddings too (learned embeddings always train).
        embeddings: a module (B, L) ids -> (B, L, D), e.g. `BertModel(...).embeddings`.
        embedding_size: width of learned embeddings (a BERT's width is its own).
        hidden_size, num_layers: the bidirectional GRU.
        mlp_dims: hidden sizes of the MLP head (ENDEF's [384]); the output Linear(-> 1) is added.
        dropout: after pooling (before the head) and inside the MLPs.
        layer_norm: LayerNorm on the pooled feature, before dropout.
        pad_id: padding id of learned embeddings (from the data).
        endef: add the entity branch (ENDEF).
        entity_kernel_sizes, entity_filters: the entity CNN ({1, 2, 3, 5, 10} x 64 in ENDEF).
        entity_mlp_dims: hidden sizes of the entity MLP (ENDEF's [384]).
        entity_mix: weight of the entity logit in the training logit, (1 - entity_mix) c + entity_mix e (0.1).
        entity_loss_weight: weight of the entity branch's own BCE loss (0.2).

    forward(batch) takes dict(content (B, L) long, content_mask (B, L) bool; with endef also
    entity (B, E) long, entity_mask (B, E) bool) and returns {"logits": (B,)}. With endef, in
    training mode the logits are the mix and "aux" holds {"entity": (entity_loss_weight, e)}; in
    eval mode the logits are the content logit alone: the entity input does not reach the prediction.
    """

    task_kind = "classification"

    def __init__(
        self,
        vocab_size: int,
        embedding: str = "learned",
        bert_path: str | None = None,
        finetune_embeddings: bool = False,
        embeddings: nn.Module | None = None,
        embedding_size: int = 768,
        hidden_size: int = 768,
        num_layers: int = 1,
        mlp_dims: Sequence[int] = (384,),
        dropout: float = 0.2,
        layer_norm: bool = False,
        pad_id: int = 0,
        endef: bool = False,
        entity_kernel_sizes: Sequence[int] = (1, 2, 3, 5, 10),
        entity_filters: int = 64,
        entity_mlp_dims: Sequence[int] = (384,),
        entity_mix: float = 0.1,
        entity_loss_weight: float = 0.2,
    ):
        super().__init__()
        if embedding not in ("learned", "bert"):
            raise ConfigError(f"model.embedding={embedding!r}: expected 'learned' or 'bert'")
        if min(hidden_size, num_layers, embedding_size) < 1 or any(d < 1 for d in [*mlp_dims, *entity_mlp_dims]):
            raise ConfigError("model.hidden_size, num_layers, embedding_size, mlp_dims and entity_mlp_dims must be positive")
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout={dropout} must be in [0, 1)")
        if not 0 <= entity_mix <= 1 or entity_loss_weight < 0:
            raise ConfigError(f"model.entity_mix={entity_mix} must be in [0, 1] and model.entity_loss_weight >= 0")
        self.embedding, self.bert_path, self.endef = embedding, bert_path, endef
        if embedding == "bert":
            if embeddings is None:
                raise ConfigError(
                    "model.embedding=bert needs the BERT embeddings module: set model.bert_path (memexp.run loads it), "
                    "or pass embeddings= when building the model directly"
                )
            self.embed = embeddings.requires_grad_(finetune_embeddings)
            width = self.embed.word_embeddings.embedding_dim
            rows = self.embed.word_embeddings.num_embeddings
            if rows != vocab_size:
                raise ConfigError(
                    f"model.bert_path={bert_path}: its embeddings have {rows} rows but the data's vocabulary has "
                    f"{vocab_size} tokens; tokenise with that BERT's vocabulary (data.tokenizer={bert_path})"
                )
        else:
            self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id)
            width = embedding_size
        self.rnn = nn.GRU(width, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.pool = MaskedAttentionPool(2 * hidden_size)
        self.norm = nn.LayerNorm(2 * hidden_size) if layer_norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.head = mlp(2 * hidden_size, mlp_dims, dropout)
        self.dim = width  # the embedding width (a BERT's own, or embedding_size)
        self.entity_mix, self.entity_loss_weight = entity_mix, entity_loss_weight
        if endef:
            self.entity_cnn = EntityCNN(width, entity_kernel_sizes, entity_filters)
            self.entity_head = mlp(self.entity_cnn.out_dim, entity_mlp_dims, dropout)

    def content_logit(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask (a prefix of each row) -> (B,) logit of label 1 (fake)."""
        x = self.embed(ids)  # (B, L, D)
        lengths = mask.sum(-1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = run_recurrent(self.rnn, packed)  # padding never enters the GRU; float32 under autocast
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=ids.shape[1])  # (B, L, 2H)
        feature = self.drop(self.norm(self.pool(h, mask)))  # (B, 2H)
        return self.head(feature).squeeze(-1)

    def entity_logit(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, E) entity-string ids and mask -> (B,) logit of label 1 from the entities alone (endef only)."""
        return self.entity_head(self.entity_cnn(self.embed(ids), mask)).squeeze(-1)

    def forward(self, batch: dict) -> dict:
        c = self.content_logit(batch["content"], batch["content_mask"])
        if not (self.endef and self.training):
            return {"logits": c}
        e = self.entity_logit(batch["entity"], batch["entity_mask"])
        mixed = (1 - self.entity_mix) * c + self.entity_mix * e
        return {"logits": mixed, "aux": {"entity": (self.entity_loss_weight, e)}}
