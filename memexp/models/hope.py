"""HOPE (Nested Learning): a transformer whose blocks keep learning at test time.

Shape legend: B batch, T tokens in this call, L segment length (`seq_len`),
n tokens of one chunk (`mem_write`), C model width (`dim`), Hh = H attention heads (the memory has one per head),
D = C / Hh memory head width, Hm = `mem_hidden_mult` * D memory hidden width,
B' = B * Hh (one neural memory per sequence and head), K slots (`memory_capacity`),
k `top_k`, V vocabulary, H attention heads, S cached + new tokens of the current segment.

One HOPE block, pre-LayerNorm, every branch residual:

    x = x + Attention(LN x)                      attention sees the current segment only
    x = x + Memory(LN x)                         Titans MLP memory + slot memory, both per-sequence
    x = x + CMS_l(LN x)    for l = 1..levels     MLPs whose parameters the outer optimiser
                                                 steps every C_l steps (`cms_frequencies`)

Neural memory (Titans, arXiv 2501.00663). Per sequence and head, fast weights
W = (W1 (Hm, D), W2 (D, Hm)) of M(x) = W2 silu(W1 x) / sqrt(Hm), initialised from learned
parameters. Tokens are taken in chunks of `mem_write`; every token of a chunk reads the
memory as it stood before the chunk (y_t = M(q_t)), then the chunk writes it:

    G = (1/n) sum_t theta_t grad_W ||M(k_t) - v_t||^2      theta_t = surprise_scale * sigmoid(.)
    S <- eta S - G                                         eta   = mean_t sigmoid(.)  (momentum)
    W <- (1 - alpha) W + S                                 alpha = mean_t sigmoid(.)  (forgetting)

with q, k L2-normalised (per head) projections of the token and the theta, eta, alpha
gates computed from it (biases start at logit(0.5), logit(base_momentum), logit(base_decay)).
The gradient is written out by hand (three bmm per chunk), so a chunk costs a few batched
matmuls and the whole unrolled update stays differentiable for the outer optimiser.

Slot memory (the source document's `memory_capacity / top_k / error_decay`): K key/value
slots per sequence, full width. A read takes the top_k most similar filled slots and mixes
their values with a softmax. Surprise of a token is ||read(k_t) - v_t||^2 / C; its chunk
mean is tracked as an EMA (`error_decay`, refreshed every `error_update` chunks). After each
chunk the most surprising token is written, when its surprise is above that EMA (or a slot
is still empty), into the least-used slot (usage: EMA of the read weight the chunk's keys
put on each slot).

Long inputs are cut into segments of `seq_len`: attention (and the learned positions)
restart every segment, the memories carry on. The same state also serves generation one
token at a time: it holds the current segment's KV cache and the tokens of the current
chunk that the memory has not yet absorbed.

Not implemented: the paper's fully self-modifying variant, where the k/v/gate projections
are themselves fast memories; here they are ordinary (outer-learned) Linear layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from memexp.errors import ConfigError
from memexp.models.hope_block import HopeBlock
from memexp.models.hope_memory import HopeMemory, Ramp
from memexp.models.renamed import renamed_argument

State = dict  # {"layers": [per-layer dict of tensors]}; see HOPE.forward


# ----------------------------------------------------------------------------- model


class HOPE(nn.Module):
    """HOPE causal LM: attention over `seq_len` segments, memories carried across them.

    Args:
        vocab_size: tokens in the vocabulary (256 for the byte tokenizer).
        dim: model width.
        depth: number of HOPE blocks.
        heads: attention heads; must divide `dim` (also the number of neural memories per layer).
        ff_mult: MLP width multiple; the CMS levels share `ff_mult * dim` hidden units
            between them unless `cms_hidden_mult` is set.
        max_len: size of the learned position table; must be >= `seq_len`.
        seq_len: segment length: attention window, and the stride at which longer inputs
            are cut; memories carry across segments.
        dropout: dropout on attention, residual branches and embeddings.
        memory_capacity: key/value slots of the slot memory per layer (0 disables it).
        top_k: slots mixed per slot-memory read; 1 <= top_k <= memory_capacity.
        error_decay: EMA decay of the slot memory's surprise baseline.
        surprise_scale: scale of the neural memory's data-dependent learning rate theta.
        base_momentum: initial momentum eta of the neural memory (gate bias logit).
        base_decay: initial forgetting alpha of the neural memory (gate bias logit).
        mem_write: chunk size: the memories are written every `mem_write` tokens (64: two writes per
            default segment; 32 writes twice as often at ~15% more step time, same recall in the demo).
        error_update: the surprise EMA is refreshed every `error_update` chunks.
        cms_frequencies: period C_l (in optimizer steps) of each CMS level, e.g. (1, 4, 16);
            see `cms_update_schedule` and `memexp.tasks.cms_gate.CMSGradientGate`.
        mem_hidden_mult: hidden width of each head's memory MLP as a multiple of its head width.
        memory_layers: indices of blocks that get a memory; None = all.
        cms_hidden_mult: hidden width multiple of every CMS level; None = ff_mult / levels.
        slot_usage_decay: EMA decay of slot usage (eviction picks the least used slot).
        mem_max_step_norm: cap on the Frobenius norm of each chunk's memory step G (per sequence
            and head; None: no cap). Trained models take steps of norm ~0.05-2; without a cap, inputs
            unlike the training data can make the inner gradient descent diverge (measured: a HOPE
            trained on tasks A -> B -> C read 1e27 and then NaN on task A's data).
        memory_read_init: initial per-channel scale of the memories' reads (added to attention's
            output). 0 (default) starts HOPE as a plain transformer that learns how much to read:
            at nanoGPT's budget 1.0 ended 0.09 nats behind the transformer, 0.0 ahead (docs/hope.md).
        schedules: optional ramps, {"surprise_scale": {"start", "end", "warmup_steps"},
            "mem_write": {...}}; applied by `set_training_step`.
        bias: biases in Linear and LayerNorm layers.
        num_heads: deprecated name of `heads` (accepted, with a warning, until memexp 0.3).
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
        memory_capacity: int = 64,
        top_k: int = 4,
        error_decay: float = 0.9,
        surprise_scale: float = 1.0,
        base_momentum: float = 0.9,
        base_decay: float = 0.01,
        mem_write: int = 64,
        error_update: int = 1,
        cms_frequencies: Sequence[int] = (1, 4, 16),
        mem_hidden_mult: int = 1,
        memory_layers: Sequence[int] | None = None,
        cms_hidden_mult: float | None = None,
        slot_usage_decay: float = 0.9,
        mem_max_step_norm: float | None = 5.0,
        memory_read_init: float = 0.0,
        schedules: Mapping[str, Mapping[str, float]] | None = None,
        bias: bool = True,
        num_heads: int | None = None,
    ):
        super().__init__()
        heads, heads_key = renamed_argument("num_heads", num_heads, "heads", heads)
        cms_frequencies = [int(f) for f in cms_frequencies]
        memory_layers = list(range(depth)) if memory_layers is None else [int(i) for i in memory_layers]
        self._validate(locals())
        self.seq_len, self.pos_len = seq_len, max_len
        self.cms_frequencies = cms_frequencies
        self.memory_layers = memory_layers
        self.surprise_scale, self.mem_write = float(surprise_scale), int(mem_write)
        self.ramps = {name: Ramp(r["start"], r["end"], r["warmup_steps"]) for name, r in (schedules or {}).items()}
        self.set_training_step(0)

        cms_hidden = max(1, round((cms_hidden_mult or ff_mult / len(cms_frequencies)) * dim))
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)

        memory_kwargs = dict(
            dim=dim,
            heads=heads,
            mem_hidden_mult=mem_hidden_mult,
            base_momentum=base_momentum,
            base_decay=base_decay,
            memory_capacity=memory_capacity,
            top_k=top_k,
            error_decay=error_decay,
            error_update=error_update,
            slot_usage_decay=slot_usage_decay,
            memory_read_init=memory_read_init,
            mem_max_step_norm=mem_max_step_norm,
        )
        self.blocks = nn.ModuleList(
            HopeBlock(
                dim=dim,
                heads=heads,
                dropout=dropout,
                bias=bias,
                cms_hidden=cms_hidden,
                cms_frequencies=cms_frequencies,
                memory=HopeMemory(**memory_kwargs) if i in memory_layers else None,
            )
            for i in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim, bias=bias)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied embeddings
        self._init_weights(depth)

    @staticmethod
    def _validate(a: dict) -> None:
        heads_key = a["heads_key"]
        for f in (
            "vocab_size",
            "dim",
            "depth",
            "heads",
            "ff_mult",
            "max_len",
            "seq_len",
            "mem_write",
            "error_update",
            "mem_hidden_mult",
        ):
            if int(a[f]) < 1:
                raise ConfigError(f"model.{heads_key if f == 'heads' else f}={a[f]} must be a positive integer")
        if a["dim"] % a["heads"]:
            raise ConfigError(
                f"model.dim={a['dim']} must be divisible by model.{heads_key}={a['heads']} "
                f"(each head gets dim/{heads_key} channels)"
            )
        if a["max_len"] < a["seq_len"]:
            raise ConfigError(
                f"model.max_len={a['max_len']} must be >= model.seq_len={a['seq_len']} "
                f"(the position table must cover one segment)"
            )
        if a["memory_capacity"] < 0:
            raise ConfigError(f"model.memory_capacity={a['memory_capacity']} must be >= 0 (0 disables slot memory)")
        if a["memory_capacity"] and not 1 <= a["top_k"] <= a["memory_capacity"]:
            raise ConfigError(f"model.top_k={a['top_k']} must be between 1 and model.memory_capacity={a['memory_capacity']}")
        for f in ("error_decay", "dropout"):
            if not 0 <= a[f] < 1:
                raise ConfigError(f"model.{f}={a[f]} must be in [0, 1)")
        for f in ("base_momentum", "base_decay", "slot_usage_decay"):
            if not 0 < a[f] < 1:
                raise ConfigError(f"model.{f}={a[f]} must be strictly between 0 and 1")
        if a["memory_read_init"] < 0:
            raise ConfigError(f"model.memory_read_init={a['memory_read_init']} must be >= 0")
        if a["mem_max_step_norm"] is not None and a["mem_max_step_norm"] <= 0:
            raise ConfigError(f"model.mem_max_step_norm={a['mem_max_step_norm']} must be > 0 or None (no cap)")
        if a["surprise_scale"] < 0:
            raise ConfigError(f"model.surprise_scale={a['surprise_scale']} must be >= 0")
        if not a["cms_frequencies"] or min(a["cms_frequencies"]) < 1:
            raise ConfigError(
                f"model.cms_frequencies={a['cms_frequencies']} must be a non-empty list of "
                f"positive update periods (optimizer steps), e.g. [1, 4, 16]"
            )
        bad = [i for i in a["memory_layers"] if not 0 <= i < a["depth"]]
        if bad or len(set(a["memory_layers"])) != len(a["memory_layers"]):
            raise ConfigError(
                f"model.memory_layers={a['memory_layers']} must hold distinct block indices in "
                f"[0, {a['depth']}) (model.depth={a['depth']})"
            )
        if a["cms_hidden_mult"] is not None and a["cms_hidden_mult"] <= 0:
            raise ConfigError(f"model.cms_hidden_mult={a['cms_hidden_mult']} must be > 0 or None")
        for name, r in (a["schedules"] or {}).items():
            if name not in ("surprise_scale", "mem_write"):
                raise ConfigError(f"model.schedules.{name} is unknown; schedules ramp 'surprise_scale' and 'mem_write'")
            missing = {"start", "end", "warmup_steps"} - set(r)
            if missing:
                raise ConfigError(f"model.schedules.{name} needs start, end and warmup_steps (missing {sorted(missing)})")
            if r["warmup_steps"] < 0:
                raise ConfigError(f"model.schedules.{name}.warmup_steps={r['warmup_steps']} must be >= 0")
            if name == "mem_write" and min(r["start"], r["end"]) < 1:
                raise ConfigError("model.schedules.mem_write start/end must be >= 1 (chunk sizes in tokens)")
            if name == "surprise_scale" and min(r["start"], r["end"]) < 0:
                raise ConfigError("model.schedules.surprise_scale start/end must be >= 0")

    def _init_weights(self, depth: int) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # residual projections, GPT-2 style
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * depth))
        for b in self.blocks:
            if b.memory is not None:
                b.memory.reset_gates()

    # --- schedules and CMS ------------------------------------------------------------

    def set_training_step(self, step: int) -> None:
        """Apply `schedules` for global optimizer step `step` (the task calls this each step)."""
        self.step = step
        self.surprise_now = self.ramps["surprise_scale"].value(step) if "surprise_scale" in self.ramps else self.surprise_scale
        self.mem_write_now = max(1, round(self.ramps["mem_write"].value(step))) if "mem_write" in self.ramps else self.mem_write

    def cms_update_schedule(self) -> list[tuple[list[nn.Parameter], int]]:
        """Per CMS level (across all blocks): its parameters and update period C_l in optimizer steps."""
        return [([p for b in self.blocks for p in b.cms[l].parameters()], f) for l, f in enumerate(self.cms_frequencies)]

    # --- forward ------------------------------------------------------------------------

    def init_state(self, batch: int, like: torch.Tensor | None = None) -> State:
        """Empty segment, memories at their learned initial values."""
        like = self.tok_emb.weight if like is None else like
        layers = []
        for b in self.blocks:
            H = b.heads
            empty = like.new_zeros(batch, H, 0, self.tok_emb.embedding_dim // H)
            st = {"attn_k": empty, "attn_v": empty}
            if b.memory is not None:
                st["memory"] = b.memory.init_state(batch, like)
            layers.append(st)
        return {"layers": layers}

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """idx (B, T) -> logits (B, T, V) and the state after these tokens (its layout: `features`)."""
        x, state = self.features(idx, state)
        return self.readout(x), state  # (B, T, V)

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., C) from `features` -> logits (..., V)."""
        return self.head(self.ln_f(x))

    def features(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """idx (B, T) -> the last block's output (B, T, C) (before the final norm) and the state after these tokens.

        state = {"layers": [ {"attn_k", "attn_v": (B, H, S, D) current segment's KV cache,
                              "memory": {"w" (B, 2, Hm, C) fast weights [W1, W2^T], "m" its momentum,
                                         "pending" (B, P, C) inputs of the unfinished chunk,
                                         "slot_keys"/"slot_values" (B, K, C), "slot_usage",
                                         "slot_filled" (B, K), "slot_error" (B,), "slot_chunks" ()}
                             } per block ]}   ("memory" only in `memory_layers`)
        """
        B, T = idx.shape
        fresh = state is None  # until the first segment's memories are written
        if fresh:
            state = self.init_state(B)
        layers = state["layers"]
        pos = layers[0]["attn_k"].shape[2]  # tokens of the current segment seen so far
        out, start = [], 0
        while start < T:
            take = min(self.seq_len - pos, T - start)
            seg_end = pos + take == self.seq_len
            x = self.tok_emb(idx[:, start : start + take]) + self.pos_emb(torch.arange(pos, pos + take, device=idx.device))
            x = self.drop(x)  # (B, take, C)
            new_layers = []
            for block, st in zip(self.blocks, layers):
                x, st = block(x, st, self.mem_write_now, seg_end, self.surprise_now, fresh)
                new_layers.append(st)
            layers = new_layers
            out.append(x)  # (B, take, C)
            start += take
            pos = 0 if seg_end else pos + take
            fresh = False
        return torch.cat(out, 1), {"layers": layers}
