"""HOPE (Nested Learning): a transformer whose blocks keep learning at test time.

Shape legend: B batch, T tokens in this call, L segment length (`seq_len`),
n tokens of one chunk (`mem_write`), C model width (`dim`), Hm memory hidden width
(`mem_hidden_mult * dim`), K slots (`memory_capacity`), k `top_k`, V vocabulary,
H heads, S cached tokens of the current segment + new tokens, D head width.

One HOPE block, pre-LayerNorm, every branch residual:

    x = x + Attention(LN x)                      attention sees the current segment only
    x = x + Memory(LN x)                         Titans MLP memory + slot memory, both per-sequence
    x = x + CMS_l(LN x)    for l = 1..levels     MLPs whose parameters the outer optimiser
                                                 steps every C_l steps (`cms_frequencies`)

Neural memory (Titans, arXiv 2501.00663). Per sequence, fast weights W = (W1 (Hm, C),
W2 (C, Hm)) of M(x) = W2 silu(W1 x) / sqrt(Hm), initialised from learned parameters.
Tokens are taken in chunks of `mem_write`; every token of a chunk reads the memory as it
stood before the chunk (y_t = M(q_t)), then the chunk writes it:

    G = (1/n) sum_t theta_t grad_W ||M(k_t) - v_t||^2      theta_t = surprise_scale * sigmoid(.)
    S <- eta S - G                                         eta   = mean_t sigmoid(.)  (momentum)
    W <- (1 - alpha) W + S                                 alpha = mean_t sigmoid(.)  (forgetting)

with q, k L2-normalised projections of the token and theta, eta, alpha gates computed
from it (their biases start at logit(0.5), logit(base_momentum), logit(base_decay)).
The gradient is written out by hand (two bmm per weight), so a chunk costs a few batched
matmuls and the whole unrolled update stays differentiable for the outer optimiser.

Slot memory (the source document's `memory_capacity / top_k / error_decay`): K key/value
slots per sequence. A read takes the top_k most similar filled slots and mixes their
values with a softmax. Surprise of a token is ||read(k_t) - v_t||^2 / C; its chunk mean is
tracked as an EMA (`error_decay`, refreshed every `error_update` chunks). After each chunk
the most surprising token is written, when its surprise is above that EMA (or a slot is
still empty), into the least-used slot (usage is an EMA of read weight).

Long inputs are cut into segments of `seq_len`: attention (and the learned positions)
restart every segment, the memories carry on. The same state also serves generation one
token at a time: it holds the current segment's KV cache and the tokens of the current
chunk that the memory has not yet absorbed.

Not implemented: the paper's fully self-modifying variant, where the k/v/gate projections
are themselves fast memories; here they are ordinary (outer-learned) Linear layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from memexp.errors import ConfigError
from memexp.models.transformer import MLP, CausalSelfAttention

State = dict  # {"layers": [per-layer dict of tensors]}; see HOPE.forward


# ----------------------------------------------------------------------------- schedules


class Ramp:
    """Linear ramp from `start` to `end` over `warmup_steps` optimizer steps, then flat."""

    def __init__(self, start: float, end: float, warmup_steps: int):
        if warmup_steps < 0:
            raise ConfigError(f"warmup_steps={warmup_steps} must be >= 0")
        self.start, self.end, self.warmup_steps = float(start), float(end), int(warmup_steps)

    def value(self, step: int) -> float:
        if self.warmup_steps == 0 or step >= self.warmup_steps:
            return self.end
        frac = max(step, 0) / self.warmup_steps
        return self.start + frac * (self.end - self.start)

    def __repr__(self) -> str:
        return f"Ramp({self.start}, {self.end}, {self.warmup_steps})"


# ----------------------------------------------------------------------------- CMS gradient gate


class CMSGradientGate:
    """Lets CMS level l's parameters move only every C_l optimizer steps.

    Call `apply(step)` after `backward()` and before `optimizer.step()`, with `step` the
    0-based global optimizer step. For a level of period C it adds the fresh gradients to
    a buffer and leaves `p.grad = None` (torch optimizers skip such parameters: no update,
    no weight decay, no moment change); on steps with `(step + 1) % C == 0` it hands the
    buffered gradients back (their mean over the C steps, or their sum with
    `reduce="sum"`, as in Nested Learning eq. 31) and clears the buffer.
    """

    def __init__(self, schedule: Iterable[tuple[Sequence[nn.Parameter], int]], reduce: str = "mean"):
        if reduce not in ("mean", "sum"):
            raise ConfigError(f"reduce={reduce!r} must be 'mean' or 'sum'")
        self.schedule = [(list(params), int(period)) for params, period in schedule]
        self.reduce = reduce
        self._sums: dict[int, torch.Tensor] = {}  # id(param) -> summed grad

    def apply(self, step: int) -> None:
        for params, period in self.schedule:
            if period <= 1:
                continue
            release = (step + 1) % period == 0
            for p in params:
                if p.grad is not None:
                    g = p.grad.detach()
                    prev = self._sums.get(id(p))
                    self._sums[id(p)] = g.clone() if prev is None else prev + g
                if release:
                    total = self._sums.pop(id(p), None)
                    p.grad = None if total is None else (total / period if self.reduce == "mean" else total)
                else:
                    p.grad = None

    def state_dict(self) -> dict:
        """Pending gradient sums, in schedule order (None where empty), for checkpoints."""
        return {"sums": [[self._sums.get(id(p)) for p in params] for params, _ in self.schedule]}

    def load_state_dict(self, state: dict) -> None:
        self._sums = {}
        for (params, _), sums in zip(self.schedule, state["sums"]):
            for p, s in zip(params, sums):
                if s is not None:
                    self._sums[id(p)] = s.clone()


# ----------------------------------------------------------------------------- neural memory


def memory_mlp(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor):
    """M(x) = W2 silu(W1 x) / sqrt(Hm). w1 (B, Hm, C), w2 (B, C, Hm), x (B, N, C).

    Returns y (B, N, C) and the pre-activation h (B, N, Hm) for the hand-written gradient.
    """
    h = torch.bmm(x, w1.transpose(1, 2))  # (B, N, Hm)
    y = torch.bmm(F.silu(h), w2.transpose(1, 2)) * w2.shape[-1] ** -0.5  # (B, N, C)
    return y, h


def memory_mlp_grads(w1, w2, k, h, err, theta):
    """Gradient of (1/n) sum_t theta_t ||M(k_t) - v_t||^2 with respect to (W1, W2).

    k (B, n, C) keys, h (B, n, Hm) = k W1^T, err (B, n, C) = M(k) - v, theta (B, n).
    Written by hand: dy = 2 theta err / n; dW2 = dy^T silu(h) s; dW1 = (dy W2 s * silu'(h))^T k
    with s = 1/sqrt(Hm). Differentiable (second order flows to the outer optimiser).
    """
    n = k.shape[1]
    scale = w2.shape[-1] ** -0.5
    dy = err * (2.0 * scale / n) * theta.unsqueeze(-1)  # (B, n, C), scale folded in
    sig = torch.sigmoid(h)
    a = h * sig  # silu(h)                               (B, n, Hm)
    dw2 = torch.bmm(dy.transpose(1, 2), a)  # (B, C, Hm)
    dh = torch.bmm(dy, w2) * (sig * (1 + h * (1 - sig)))  # (B, n, Hm)
    dw1 = torch.bmm(dh.transpose(1, 2), k)  # (B, Hm, C)
    return dw1, dw2


class SlotMemory(nn.Module):
    """Top-k key/value slots per sequence, written where surprise is high (no own parameters)."""

    def __init__(self, capacity: int, top_k: int, error_decay: float, error_update: int, usage_decay: float):
        super().__init__()
        self.capacity, self.top_k = capacity, top_k
        self.error_decay, self.error_update, self.usage_decay = error_decay, error_update, usage_decay

    def init_state(self, batch: int, dim: int, like: torch.Tensor) -> dict:
        z = like.new_zeros
        return {
            "slot_keys": z(batch, self.capacity, dim),
            "slot_values": z(batch, self.capacity, dim),
            "slot_usage": z(batch, self.capacity),
            "slot_filled": z(batch, self.capacity),
            "slot_error": z(batch),
            "slot_chunks": torch.zeros((), dtype=torch.long, device=like.device),
        }

    def read(self, st: dict, q: torch.Tensor):
        """q (B, N, C) -> values (B, N, C) and dense read weights (B, N, K)."""
        sim = torch.bmm(q, st["slot_keys"].transpose(1, 2)) * q.shape[-1] ** -0.5  # (B, N, K)
        filled = st["slot_filled"].unsqueeze(1)  # (B, 1, K)
        sim = sim.masked_fill(filled == 0, torch.finfo(sim.dtype).min)
        top, idx = sim.topk(self.top_k, dim=-1)  # (B, N, k)
        w = torch.softmax(top, dim=-1) * filled.expand_as(sim).gather(-1, idx)  # empty slots weigh 0
        dense = torch.zeros_like(sim).scatter(-1, idx, w)  # (B, N, K)
        return torch.bmm(dense, st["slot_values"]), dense

    def write(self, st: dict, k, v, surprise, usage) -> dict:
        """After a chunk: k, v (B, n, C), surprise (B, n) detached, usage (B, K) read mass."""
        B = k.shape[0]
        best_s, best_t = surprise.max(dim=1)  # (B,)
        filled = st["slot_filled"]
        usage_new = self.usage_decay * st["slot_usage"] + usage
        # Empty slots first, then the least-used one.
        victim = usage_new.masked_fill(filled == 0, -1.0).argmin(dim=1)  # (B,)
        do_write = (best_s > st["slot_error"]) | (filled.min(dim=1).values == 0)  # (B,)
        sel = F.one_hot(victim, self.capacity).bool() & do_write.unsqueeze(1)  # (B, K)
        rows = torch.arange(B, device=k.device)
        k_best, v_best = k[rows, best_t].unsqueeze(1), v[rows, best_t].unsqueeze(1)  # (B, 1, C)
        sel3 = sel.unsqueeze(-1)
        chunks = st["slot_chunks"] + 1
        refresh = (chunks % self.error_update) == 0
        err_ema = self.error_decay * st["slot_error"] + (1 - self.error_decay) * surprise.mean(dim=1)
        # A fresh slot gets the current top usage so it is not evicted at once.
        fresh_usage = usage_new.max(dim=1, keepdim=True).values.expand_as(usage_new)
        return {
            "slot_keys": torch.where(sel3, k_best, st["slot_keys"]),
            "slot_values": torch.where(sel3, v_best, st["slot_values"]),
            "slot_usage": torch.where(sel, fresh_usage, usage_new),
            "slot_filled": torch.where(sel, torch.ones_like(filled), filled),
            "slot_error": torch.where(refresh, err_ema, st["slot_error"]),
            "slot_chunks": chunks,
        }


class HopeMemory(nn.Module):
    """Titans neural memory + slot memory of one block; reads are added to the residual."""

    def __init__(
        self,
        dim: int,
        hidden_mult: int,
        base_momentum: float,
        base_decay: float,
        memory_capacity: int,
        top_k: int,
        error_decay: float,
        error_update: int,
        usage_decay: float,
        bias: bool,
    ):
        super().__init__()
        hidden = hidden_mult * dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.gates = nn.Linear(dim, 3)  # theta (lr), eta (momentum), alpha (forget)
        # Learned initial fast weights: the outer optimiser trains them through the unrolled updates.
        self.w1 = nn.Parameter(torch.randn(hidden, dim))  # W1 k ~ N(0, 1) for unit-norm k
        self.w2 = nn.Parameter(torch.randn(dim, hidden) * 0.02)
        self.slots = SlotMemory(memory_capacity, top_k, error_decay, error_update, usage_decay) if memory_capacity else None
        self.proj = nn.Linear(2 * dim if self.slots else dim, dim, bias=bias)
        self._gate_bias = (0.0, _logit(base_momentum), _logit(base_decay))
        self.reset_gates()

    def reset_gates(self) -> None:
        nn.init.zeros_(self.gates.weight)
        with torch.no_grad():
            self.gates.bias.copy_(torch.tensor(self._gate_bias))

    def init_state(self, batch: int, like: torch.Tensor) -> dict:
        C = self.w2.shape[0]
        st = {
            "w1": self.w1.unsqueeze(0).expand(batch, -1, -1),  # (B, Hm, C)
            "w2": self.w2.unsqueeze(0).expand(batch, -1, -1),  # (B, C, Hm)
            "m1": like.new_zeros(batch, *self.w1.shape),  # momentum S
            "m2": like.new_zeros(batch, *self.w2.shape),
            "pending": like.new_zeros(batch, 0, C),  # inputs of the unfinished chunk (B, P, C)
        }
        if self.slots is not None:
            st.update(self.slots.init_state(batch, C, like))
        return st

    def project(self, u: torch.Tensor):
        """u (B, N, C) -> q, k, v (B, N, C) and gates (B, N, 3) in (0, 1)."""
        q, k, v = self.qkv(u).chunk(3, dim=-1)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, torch.sigmoid(self.gates(u))

    def write(self, st: dict, k, v, gates, h, y_k, surprise_scale: float) -> dict:
        """Absorb one chunk: k, v (B, n, C), gates (B, n, 3), h / y_k the MLP on k under the old W."""
        theta = surprise_scale * gates[..., 0]  # (B, n)
        eta = gates[..., 1].mean(dim=1).view(-1, 1, 1)  # (B, 1, 1)
        alpha = gates[..., 2].mean(dim=1).view(-1, 1, 1)
        g1, g2 = memory_mlp_grads(st["w1"], st["w2"], k, h, y_k - v, theta)
        m1 = eta * st["m1"] - g1
        m2 = eta * st["m2"] - g2
        return {**st, "m1": m1, "m2": m2, "w1": (1 - alpha) * st["w1"] + m1, "w2": (1 - alpha) * st["w2"] + m2}

    def forward(self, u: torch.Tensor, st: dict, chunk: int, seg_end: bool, surprise_scale: float):
        """u (B, T, C) normalised block input of new tokens -> memory read (B, T, C), new state.

        `chunk` is the chunk size; `seg_end` says the last of these tokens closes a segment,
        which closes the last chunk too even when it is short.
        """
        B, T, C = u.shape
        q_new, k_new, v_new, g_new = self.project(u)
        pend = st["pending"]
        P = pend.shape[1]
        if P:
            _, k_old, v_old, g_old = self.project(pend)
        reads, start = [], 0
        while start < T:
            take = min(max(chunk - P, 1), T - start)
            end = start + take
            closes = P + take >= chunk or (seg_end and end == T)
            q = q_new[:, start:end]
            if P:
                k = torch.cat([k_old, k_new[:, start:end]], 1)
                v = torch.cat([v_old, v_new[:, start:end]], 1)
                g = torch.cat([g_old, g_new[:, start:end]], 1)
            else:
                k, v, g = k_new[:, start:end], v_new[:, start:end], g_new[:, start:end]
            n_q = q.shape[1]
            if closes:
                # One pass of the MLP for the reads (q) and the write's keys (k), both under the old W.
                y, h = memory_mlp(st["w1"], st["w2"], torch.cat([q, k], 1))
                y_q, y_k, h_k = y[:, :n_q], y[:, n_q:], h[:, n_q:]
            else:
                y_q, _ = memory_mlp(st["w1"], st["w2"], q)
            out = [y_q]
            if self.slots is not None:
                if closes:
                    r, dense = self.slots.read(st, torch.cat([q, k], 1))
                    r_q, r_k = r[:, :n_q], r[:, n_q:]
                    # How much the chunk's keys hit each slot (earlier calls' tokens included).
                    usage = dense[:, n_q:].detach().sum(1)
                else:
                    r_q, _ = self.slots.read(st, q)
                out.append(r_q)
            reads.append(torch.cat(out, -1))
            if closes:
                new = self.write(st, k, v, g, h_k, y_k, surprise_scale)
                if self.slots is not None:
                    surprise = (r_k - v).detach().pow(2).mean(-1)  # (B, n)
                    new.update(self.slots.write(st, k, v, surprise, usage))
                st = {**new, "pending": u.new_zeros(B, 0, C)}
                P = 0
            else:
                # Only the last piece of a call can stay open: keep its inputs; their k, v and
                # gates are recomputed when the chunk closes in a later call.
                st = {**st, "pending": torch.cat([st["pending"], u[:, start:end]], 1)}
            start = end
        return self.proj(torch.cat(reads, 1)), st


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ----------------------------------------------------------------------------- blocks


class CMSLevel(nn.Module):
    """One continuum-memory level: LN + MLP, residual; stepped every `period` optimizer steps."""

    def __init__(self, dim: int, hidden: int, dropout: float, bias: bool, period: int):
        super().__init__()
        self.period = period
        self.ln = nn.LayerNorm(dim, bias=bias)
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(self.ln(x)))))


class HopeBlock(nn.Module):
    def __init__(self, dim, heads, dropout, bias, memory: HopeMemory | None, cms_hidden, cms_frequencies):
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim, bias=bias)
        self.attn = CausalSelfAttention(dim, heads, dropout, bias)
        self.ln_mem = nn.LayerNorm(dim, bias=bias) if memory is not None else None
        self.memory = memory
        self.mem_dropout = nn.Dropout(dropout)
        self.cms = nn.ModuleList(CMSLevel(dim, cms_hidden, dropout, bias, f) for f in cms_frequencies)

    def forward(self, x, st: dict, chunk: int, seg_end: bool, surprise_scale: float):
        a, (k, v) = self.attn(self.ln_attn(x), (st["attn_k"], st["attn_v"]))
        x = x + a
        new = {"attn_k": k[:, :, :0] if seg_end else k, "attn_v": v[:, :, :0] if seg_end else v}
        if self.memory is not None:
            m, mem_st = self.memory(self.ln_mem(x), st["memory"], chunk, seg_end, surprise_scale)
            x = x + self.mem_dropout(m)
            new["memory"] = mem_st
        for level in self.cms:
            x = x + level(x)
        return x, new


# ----------------------------------------------------------------------------- model


class HOPE(nn.Module):
    """HOPE causal LM: attention over `seq_len` segments, memories carried across them.

    Args:
        vocab_size: tokens in the vocabulary (256 for the byte tokenizer).
        dim: model width.
        depth: number of HOPE blocks.
        num_heads: attention heads; must divide `dim`.
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
        mem_write: chunk size: the memories are written every `mem_write` tokens.
        error_update: the surprise EMA is refreshed every `error_update` chunks.
        cms_frequencies: period C_l (in optimizer steps) of each CMS level, e.g. (1, 4, 16);
            see `cms_update_schedule` and `CMSGradientGate`.
        mem_hidden_mult: neural memory MLP hidden width as a multiple of `dim`.
        memory_layers: indices of blocks that get a memory; None = all.
        cms_hidden_mult: hidden width multiple of every CMS level; None = ff_mult / levels.
        slot_usage_decay: EMA decay of slot usage (eviction picks the least used slot).
        schedules: optional ramps, {"surprise_scale": {"start", "end", "warmup_steps"},
            "mem_write": {...}}; applied by `set_training_step`.
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
        num_heads: int = 4,
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
        mem_write: int = 16,
        error_update: int = 1,
        cms_frequencies: Sequence[int] = (1, 4, 16),
        mem_hidden_mult: int = 2,
        memory_layers: Sequence[int] | None = None,
        cms_hidden_mult: float | None = None,
        slot_usage_decay: float = 0.9,
        schedules: Mapping[str, Mapping[str, float]] | None = None,
        bias: bool = True,
    ):
        super().__init__()
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

        def memory():
            return HopeMemory(dim, mem_hidden_mult, base_momentum, base_decay, memory_capacity, top_k,
                              error_decay, error_update, slot_usage_decay, bias)

        self.blocks = nn.ModuleList(
            HopeBlock(dim, num_heads, dropout, bias, memory() if i in memory_layers else None, cms_hidden, cms_frequencies)
            for i in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim, bias=bias)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied embeddings
        self._init_weights(depth)

    @staticmethod
    def _validate(a: dict) -> None:
        for f in ("vocab_size", "dim", "depth", "num_heads", "ff_mult", "max_len", "seq_len", "mem_write",
                  "error_update", "mem_hidden_mult"):
            if int(a[f]) < 1:
                raise ConfigError(f"model.{f}={a[f]} must be a positive integer")
        if a["dim"] % a["num_heads"]:
            raise ConfigError(f"model.dim={a['dim']} must be divisible by model.num_heads={a['num_heads']} "
                              f"(each head gets dim/num_heads channels)")
        if a["max_len"] < a["seq_len"]:
            raise ConfigError(f"model.max_len={a['max_len']} must be >= model.seq_len={a['seq_len']} "
                              f"(the position table must cover one segment)")
        if a["memory_capacity"] < 0:
            raise ConfigError(f"model.memory_capacity={a['memory_capacity']} must be >= 0 (0 disables slot memory)")
        if a["memory_capacity"] and not 1 <= a["top_k"] <= a["memory_capacity"]:
            raise ConfigError(f"model.top_k={a['top_k']} must be between 1 and "
                              f"model.memory_capacity={a['memory_capacity']}")
        for f in ("error_decay", "dropout"):
            if not 0 <= a[f] < 1:
                raise ConfigError(f"model.{f}={a[f]} must be in [0, 1)")
        for f in ("base_momentum", "base_decay", "slot_usage_decay"):
            if not 0 < a[f] < 1:
                raise ConfigError(f"model.{f}={a[f]} must be strictly between 0 and 1")
        if a["surprise_scale"] < 0:
            raise ConfigError(f"model.surprise_scale={a['surprise_scale']} must be >= 0")
        if not a["cms_frequencies"] or min(a["cms_frequencies"]) < 1:
            raise ConfigError(f"model.cms_frequencies={a['cms_frequencies']} must be a non-empty list of "
                              f"positive update periods (optimizer steps), e.g. [1, 4, 16]")
        bad = [i for i in a["memory_layers"] if not 0 <= i < a["depth"]]
        if bad or len(set(a["memory_layers"])) != len(a["memory_layers"]):
            raise ConfigError(f"model.memory_layers={a['memory_layers']} must hold distinct block indices in "
                              f"[0, {a['depth']}) (model.depth={a['depth']})")
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
                raise ConfigError(f"model.schedules.mem_write start/end must be >= 1 (chunk sizes in tokens)")
            if name == "surprise_scale" and min(r["start"], r["end"]) < 0:
                raise ConfigError(f"model.schedules.surprise_scale start/end must be >= 0")

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
            H = b.attn.heads
            empty = like.new_zeros(batch, H, 0, self.tok_emb.embedding_dim // H)
            st = {"attn_k": empty, "attn_v": empty}
            if b.memory is not None:
                st["memory"] = b.memory.init_state(batch, like)
            layers.append(st)
        return {"layers": layers}

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """idx (B, T) -> logits (B, T, V) and the state after these tokens.

        state = {"layers": [ {"attn_k", "attn_v": (B, H, S, D) current segment's KV cache,
                              "memory": {"w1" (B, Hm, C), "w2" (B, C, Hm), "m1", "m2" momenta,
                                         "pending" (B, P, C) inputs of the unfinished chunk,
                                         "slot_keys"/"slot_values" (B, K, C), "slot_usage",
                                         "slot_filled" (B, K), "slot_error" (B,), "slot_chunks" ()}
                             } per block ]}   ("memory" only in `memory_layers`)
        """
        B, T = idx.shape
        if state is None:
            state = self.init_state(B)
        layers = state["layers"]
        pos = layers[0]["attn_k"].shape[2]  # tokens of the current segment seen so far
        logits, start = [], 0
        while start < T:
            take = min(self.seq_len - pos, T - start)
            seg_end = pos + take == self.seq_len
            x = self.tok_emb(idx[:, start : start + take]) + self.pos_emb(torch.arange(pos, pos + take, device=idx.device))
            x = self.drop(x)  # (B, take, C)
            new_layers = []
            for block, st in zip(self.blocks, layers):
                x, st = block(x, st, self.mem_write_now, seg_end, self.surprise_now)
                new_layers.append(st)
            layers = new_layers
            logits.append(self.head(self.ln_f(x)))  # (B, take, V)
            start += take
            pos = 0 if seg_end else pos + take
        return torch.cat(logits, 1), {"layers": layers}
