"""A Hugging Face Qwen3 decoder as a suite causal LM (`model=qwen3`).

It trains from random weights at any size the suite can afford on a CPU, and is the backbone
that `model=explicit_lm` freezes: the knowledge study pretrains one here, then hands its
checkpoint to ExplicitLM (`model.backbone=<its last.ckpt>`). Real Qwen3 weights are loaded by
the layer above (`memexp.memory.backbone`); this file never reads a file.

Shape legend: B batch, T tokens in this call, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM

from memexp.errors import ConfigError


def qwen3_config(
    vocab_size: int,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ff_mult: int = 2,
    max_len: int = 512,
    pad_id: int | None = None,
    rope_theta: float = 10_000.0,
) -> Qwen3Config:
    """A Qwen3 configuration in the suite's vocabulary (dim, depth, heads, ff_mult, max_len)."""
    for name, value in (("dim", dim), ("depth", depth), ("heads", heads), ("kv_heads", kv_heads), ("max_len", max_len)):
        if value < 1:
            raise ConfigError(f"model.{name}={value}: must be >= 1")
    if dim % heads:
        raise ConfigError(f"model.dim={dim} must be divisible by model.heads={heads}")
    if heads % kv_heads:
        raise ConfigError(f"model.heads={heads} must be divisible by model.kv_heads={kv_heads}")
    pad = pad_id if pad_id is not None and 0 <= pad_id < vocab_size else None
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=dim // heads,
        intermediate_size=ff_mult * dim,
        max_position_embeddings=max_len,
        rope_theta=rope_theta,
        tie_word_embeddings=True,
        pad_token_id=pad,
        bos_token_id=None,
        eos_token_id=None,
    )


class Qwen3LM(nn.Module):
    """A randomly initialised Qwen3ForCausalLM with the suite's causal-LM contract.

    Args:
        vocab_size: token ids (from the data's tokenizer).
        dim, depth, heads, kv_heads, ff_mult, max_len: width, layers, query heads, key/value
            heads (grouped-query attention), MLP multiple, longest context.
        pad_id: the data's padding id (kept in the HF config).
    """

    task_kind = "causal_lm"
    carries_state = False

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        kv_heads: int = 2,
        ff_mult: int = 2,
        max_len: int = 512,
        pad_id: int | None = None,
    ):
        super().__init__()
        self.hf = Qwen3ForCausalLM(qwen3_config(vocab_size, dim, depth, heads, kv_heads, ff_mult, max_len, pad_id))
        self.max_len = max_len

    def forward(self, idx: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        """idx (B, T) -> logits (B, T, V) and the KV cache (a transformers Cache) to continue from."""
        use_cache = state is not None or not self.training
        out = self.hf(input_ids=idx, cache=state, use_cache=use_cache)
        return out.logits, out.cache if use_cache else None

    def features(self, idx: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        """forward without the LM head: the decoder's last hidden states (B, T, C) (after its final norm) and the cache."""
        use_cache = state is not None or not self.training
        out = self.hf.model(input_ids=idx, cache=state, use_cache=use_cache)
        return out.last_hidden_state, out.cache if use_cache else None

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., C) from `features` -> logits (..., V)."""
        return self.hf.lm_head(h)
