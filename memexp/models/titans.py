"""Titans (Behrouz, Zhong, Mirrokni 2025, arXiv 2501.00663), MAG variant, built from HOPE's own parts.

Titans = HOPE minus its continuum memory (CMS) levels and slot memory: every block is HOPE's block
(`memexp.models.hope.HopeBlock`) with HOPE's neural memory (`HopeMemory`, slot memory off:
`memory_capacity=0`) and one ordinary feed-forward MLP (a CMS level of period 1, i.e. updated every
optimiser step, which is what a transformer's MLP is), plus the two things Titans' MAG adds:

    x~ = [p_1 .. p_P] || x                       P persistent memory tokens (learned K/V per head and block)
    y  = Attention(x~) over the current segment  (HOPE's segment attention, restarting every `seq_len`)
    o  = LN(y) * sigmoid(LN(M(q)))               the gate: both branches normalised with learned vector
                                                 weights, the memory's through a sigmoid (paper, section 4.2)
    x  = x + Proj(o);   x = x + MLP(LN x)

Why MAG and not MAC: HOPE runs attention and its memory side by side on the same tokens (the memory
answers the attention's own queries, and its read is combined with the attention's output, per channel,
before the output projection); it never feeds the memory's retrieval to attention as extra context. That
is memory as a gate (MAG). MAC would prepend M(q) of the segment to the attention's input, which HOPE
does not do. So `model=titans` is the variant HOPE extends, and comparing it with `model=hope` is the
ablation of HOPE's CMS levels and slot memory (and of its additive read for MAG's gate).

The neural memory is HOPE's, unchanged (equations in `memexp.models.hope`): per sequence and head fast
weights W = (W1, W2) of M(x) = W2 silu(W1 x) / sqrt(Hm), chunks of `mem_write` tokens, every token of a
chunk reads the memory as it stood before the chunk, then the chunk writes it with momentum and forgetting
(S <- eta S - G, W <- (1 - alpha) W + S). Where this differs from the paper and from titans-pytorch
(per-chunk gates, shared q/k/v with attention, segment rather than sliding-window attention, ...): the
fidelity table in docs/hope.md, each row pinned by a test (tests/test_titans.py, tests/test_titans_reference.py).

State and streaming are HOPE's: forward(idx, state) -> (logits, state), the state a dict of tensors
(attention cache of the current segment, fast weights, momentum, the unfinished chunk's inputs), so
one call, several calls and token-by-token generation give the same logits.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from memexp.errors import ConfigError
from memexp.models.hope import HOPE, HopeBlock
from memexp.models.hope_memory import HopeMemory

# HOPE's settings that Titans fixes: no slot memory, one MLP of period 1 in place of the CMS levels, no ramps
_FIXED = dict(
    memory_capacity=0,
    top_k=1,
    error_decay=0.9,
    error_update=1,
    slot_usage_decay=0.9,
    cms_frequencies=[1],
    cms_hidden_mult=None,
    schedules=None,
)


class Titans(nn.Module):
    """Titans (MAG) causal LM: segment attention with persistent memory, gated by a neural memory carried across
    segments and calls.

    Args:
        vocab_size: tokens in the vocabulary.
        dim: model width.
        depth: number of blocks.
        heads: attention heads; must divide `dim` (also the number of neural memories per block).
        ff_mult: hidden width of each block's MLP as a multiple of `dim`.
        max_len: size of the learned position table; must be >= `seq_len`.
        seq_len: attention segment: attention restarts every `seq_len` tokens, the neural memory carries on.
        dropout: dropout on attention, residual branches and embeddings.
        persistent_tokens: learned persistent-memory key/value pairs per head and block (0: none).
        surprise_scale: scale of the memory's data-dependent learning rate theta.
        base_momentum: initial momentum eta of the memory (gate bias logit).
        base_decay: initial forgetting alpha of the memory (gate bias logit).
        mem_write: chunk size: the memory is written every `mem_write` tokens.
        mem_hidden_mult: hidden width of each head's memory MLP as a multiple of its head width.
        memory_layers: indices of blocks that get a memory; None = all (a block without one is a plain
            attention block with persistent tokens).
        mem_max_step_norm: cap on the Frobenius norm of each chunk's memory step (None: no cap), as HOPE's.
        bias: biases in Linear and LayerNorm layers.
    """

    task_kind = "causal_lm"
    carries_state = True
    max_len = None  # unbounded: inputs longer than seq_len are split into segments

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        ff_mult: int = 4,
        max_len: int = 128,
        seq_len: int = 128,
        dropout: float = 0.0,
        persistent_tokens: int = 4,
        surprise_scale: float = 1.0,
        base_momentum: float = 0.9,
        base_decay: float = 0.01,
        mem_write: int = 64,
        mem_hidden_mult: int = 1,
        memory_layers: Sequence[int] | None = None,
        mem_max_step_norm: float | None = 5.0,
        bias: bool = True,
    ):
        super().__init__()
        memory_layers = list(range(depth)) if memory_layers is None else [int(i) for i in memory_layers]
        if int(persistent_tokens) < 0:
            raise ConfigError(f"model.persistent_tokens={persistent_tokens} must be >= 0 (0: no persistent memory)")
        HOPE._validate(locals() | _FIXED | dict(heads_key="heads", memory_read_init=1.0))
        self.seq_len, self.pos_len = seq_len, max_len
        self.memory_layers = memory_layers
        # HOPE.forward reads the chunk size and theta's scale of the current step; Titans has no ramps
        self.surprise_scale = self.surprise_now = float(surprise_scale)
        self.mem_write = self.mem_write_now = int(mem_write)

        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            HopeBlock(
                dim=dim,
                heads=heads,
                dropout=dropout,
                bias=bias,
                cms_hidden=ff_mult * dim,
                cms_frequencies=[1],  # one MLP, trained every step: no continuum memory
                persistent_tokens=int(persistent_tokens),
                gate=True,
                memory=HopeMemory(
                    dim=dim,
                    heads=heads,
                    mem_hidden_mult=mem_hidden_mult,
                    base_momentum=base_momentum,
                    base_decay=base_decay,
                    memory_capacity=0,  # no slot memory
                    top_k=1,
                    error_decay=0.9,
                    error_update=1,
                    slot_usage_decay=0.9,
                    memory_read_init=1.0,  # the gate's LayerNorm rescales the read anyway
                    mem_max_step_norm=mem_max_step_norm,
                )
                if i in memory_layers
                else None,
            )
            for i in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim, bias=bias)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied embeddings
        HOPE._init_weights(self, depth)

    # HOPE's state layout, segment loop and readout, unchanged: {"layers": [{"attn_k", "attn_v", "memory": {"w", "m",
    # "pending"}}]} (no slot entries, since memory_capacity=0); see HOPE.forward.
    init_state = HOPE.init_state
    forward = HOPE.forward
    features = HOPE.features
    readout = HOPE.readout

    def memories(self) -> list[HopeMemory]:
        """The blocks' neural memories, in block order (the differential tests reach them here)."""
        return [b.memory for b in self.blocks if b.memory is not None]
