"""GPT-style causal transformer: the baseline every memory model is compared with.

Shape legend: B batch, T time (tokens in this call), S cached + new tokens,
C model width (`dim`), H heads, D head width (C // H), V vocabulary.

Pre-LayerNorm blocks, causal `scaled_dot_product_attention`, learned positions,
tied input/output embeddings, and a KV cache so generation costs O(T) per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memexp.errors import ConfigError
from memexp.models.attention import cached_causal_attention


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens seen so far."""

    keys: list[torch.Tensor]  # per layer (B, H, S, D)
    values: list[torch.Tensor]  # per layer (B, H, S, D)

    @property
    def length(self) -> int:
        return 0 if not self.keys else self.keys[0].shape[2]


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, S, D)
            v = torch.cat([past[1], v], dim=2)
        y = cached_causal_attention(q, k, v, self.dropout if self.training else 0.0)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, dim: int, ff_mult: int, dropout: float, bias: bool):
        super().__init__()
        self.fc = nn.Linear(dim, ff_mult * dim, bias=bias)
        self.proj = nn.Linear(ff_mult * dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim, bias=bias)
        self.attn = CausalSelfAttention(dim, heads, dropout, bias)
        self.ln_mlp = nn.LayerNorm(dim, bias=bias)
        self.mlp = MLP(dim, ff_mult, dropout, bias)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, C), past (k, v) each (B, H, S - T, D) or None -> (B, T, C), new (k, v) each (B, H, S, D)."""
        a, kv = self.attn(self.ln_attn(x), past)
        x = x + a
        x = x + self.mlp(self.ln_mlp(x))
        return x, kv


class Transformer(nn.Module):
    """GPT-style causal LM.

    Args:
        vocab_size: tokens in the vocabulary (set from the data).
        dim: model width.
        depth: number of transformer blocks.
        heads: attention heads; must divide `dim`.
        ff_mult: MLP hidden width as a multiple of `dim`.
        max_len: longest context (learned positions); windows must fit in it.
        dropout: dropout on attention weights, residual branches and embeddings.
        bias: biases in Linear and LayerNorm layers.
    """

    task_kind = "causal_lm"
    carries_state = False  # the KV cache is for generation, never carried across training windows

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        ff_mult: int = 4,
        max_len: int = 256,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        if dim % heads != 0:
            raise ConfigError(f"model.dim={dim} must be divisible by model.heads={heads} (each head gets dim/heads channels)")
        for field, value in (("vocab_size", vocab_size), ("dim", dim), ("depth", depth), ("max_len", max_len)):
            if value < 1:
                raise ConfigError(f"model.{field}={value} must be a positive integer")
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, ff_mult, dropout, bias) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim, bias=bias)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied embeddings
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by depth so the residual stream keeps unit variance.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * depth))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, state: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """idx (B, T) -> logits (B, T, V) and the KV cache extended by these T tokens."""
        x, cache = self.features(idx, state)
        return self.readout(x), cache  # (B, T, V)

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., C) from `features` -> logits (..., V)."""
        return self.head(self.ln_f(x))

    def features(self, idx: torch.Tensor, state: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """idx (B, T) -> the last block's output (B, T, C) (before the final norm) and the extended KV cache."""
        B, T = idx.shape
        start = 0 if state is None else state.length
        if start + T > self.max_len:
            raise ConfigError(
                f"context of {start + T} tokens exceeds model.max_len={self.max_len}; raise model.max_len or use shorter windows"
            )
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            past = None if state is None else (state.keys[i], state.values[i])
            x, (k, v) = block(x, past)
            keys.append(k)
            values.append(v)
        return x, KVCache(keys, values)

    def num_flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B style: 6N + 12 L C T."""
        n = sum(p.numel() for p in self.parameters()) - self.pos_emb.weight.numel()
        depth, dim = len(self.blocks), self.tok_emb.embedding_dim
        return 6 * n + 12 * depth * dim * seq_len
