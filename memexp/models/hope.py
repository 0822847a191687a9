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
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from memexp.errors import ConfigError

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


def memory_mlp(w: torch.Tensor, x: torch.Tensor, target: torch.Tensor | None = None):
    """M(x) = silu(x W1^T) W2^T / sqrt(Hm) for fast weights w (B', 2, Hm, D) = [W1, W2^T], x (B', N, D).

    W1 and W2^T share one (Hm, D) layout so an update touches one tensor and one bmm
    yields both gradients. Returns y (B', N, D), or y - target when a target is given,
    plus h = x W1^T, sig = sigmoid(h) and a = silu(h) (B', N, Hm) for the gradient.
    """
    h = torch.bmm(x, w[:, 0].transpose(1, 2))  # (B', N, Hm)
    sig = torch.sigmoid(h)
    a = h * sig
    s = w.shape[2] ** -0.5
    y = torch.bmm(a, w[:, 1]) * s if target is None else torch.baddbmm(target, a, w[:, 1], beta=-1.0, alpha=s)
    return y, h, sig, a


def memory_mlp_descent(w, k, h, sig, a, err, coef):
    """Minus the gradient of (1/n) sum_t theta_t ||M(k_t) - v_t||^2 with respect to w.

    w (B', 2, Hm, D), k (B', n, D) keys, h, sig, a (B', n, Hm) from `memory_mlp(w, k)`,
    err (B', n, D) = M(k) - v, coef (B', n) = -2 theta / (n sqrt(Hm)). With s = 1/sqrt(Hm)
    and dy = 2 s theta err / n:
        dW2^T = a^T dy,   dW1 = (dy W2 * silu'(h))^T k,   silu'(h) = sig (1 + h - a)
    Written by hand and differentiable, so second-order terms reach the outer optimiser.
    Returns (B', 2, Hm, D).
    """
    B, n, _ = k.shape
    dy = err * coef.unsqueeze(-1)  # (B', n, D), descent sign folded in
    dh = torch.bmm(dy, w[:, 1].transpose(1, 2)) * torch.addcmul(sig, sig, h - a)  # (B', n, Hm)
    lhs = torch.stack([dh, a], 1).view(2 * B, n, -1).transpose(1, 2)  # (2B', Hm, n)
    rhs = torch.stack([k, dy], 1).view(2 * B, n, -1)  # (2B', n, D)
    return torch.bmm(lhs, rhs).view(B, 2, -1, k.shape[-1])  # (B', 2, Hm, D)


class SlotMemory(nn.Module):
    """Top-k key/value slots per sequence, written where surprise is high."""

    def __init__(self, capacity: int, top_k: int, error_decay: float, error_update: int, usage_decay: float):
        super().__init__()
        self.capacity, self.top_k = capacity, top_k
        self.error_decay, self.error_update, self.usage_decay = error_decay, error_update, usage_decay
        # Keys and queries are unit vectors; a learned inverse temperature sharpens the top-k softmax.
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

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

    def read(self, keys, values, filled, q: torch.Tensor):
        """q (B, N, C) unit queries, slots keys / values (B, K, C), filled (B, K)
        -> read values (B, N, C) and dense read weights (B, N, K)."""
        sim = torch.bmm(q, keys.transpose(1, 2)) * self.log_scale.exp()  # (B, N, K)
        filled = filled.unsqueeze(1)  # (B, 1, K)
        sim = sim.masked_fill(filled == 0, torch.finfo(sim.dtype).min)
        top, idx = sim.topk(self.top_k, dim=-1)  # (B, N, k)
        w = torch.softmax(top, dim=-1) * filled.expand_as(sim).gather(-1, idx)  # empty slots weigh 0
        # w may be float32 where sim is bf16 (softmax runs in float32 under autocast): scatter needs one dtype.
        dense = torch.zeros_like(sim, dtype=w.dtype).scatter(-1, idx, w)  # (B, N, K)
        return torch.bmm(dense, values), dense

    def write(self, st: dict, k: torch.Tensor, v: torch.Tensor) -> dict:
        """Absorb one closed chunk: k (unit), v (B, n, C)."""
        B = k.shape[0]
        with torch.no_grad():  # surprise and usage only pick what to write and where
            r, dense = self.read(st["slot_keys"], st["slot_values"], st["slot_filled"], k)
            surprise = (r - v).pow(2).mean(-1)  # (B, n) prediction error of the read
            best_s, best_t = surprise.max(dim=1)  # (B,)
            filled = st["slot_filled"]
            usage = self.usage_decay * st["slot_usage"] + dense.sum(1)  # (B, K)
            # Empty slots first, then the least-used one.
            victim = usage.masked_fill(filled == 0, -1.0).argmin(dim=1)  # (B,)
            do_write = (best_s > st["slot_error"]) | (filled.min(dim=1).values == 0)  # (B,)
            sel = F.one_hot(victim, self.capacity).bool() & do_write.unsqueeze(1)  # (B, K)
            chunks = st["slot_chunks"] + 1
            refresh = (chunks % self.error_update) == 0
            err_ema = self.error_decay * st["slot_error"] + (1 - self.error_decay) * surprise.mean(dim=1)
            # A fresh slot gets the current top usage so it is not evicted at once.
            fresh_usage = usage.max(dim=1, keepdim=True).values.expand_as(usage)
        rows = torch.arange(B, device=k.device)
        k_best, v_best = k[rows, best_t].unsqueeze(1), v[rows, best_t].unsqueeze(1)  # (B, 1, C)
        sel3 = sel.unsqueeze(-1)
        return {
            "slot_keys": torch.where(sel3, k_best, st["slot_keys"]),  # written tensors keep their graph
            "slot_values": torch.where(sel3, v_best, st["slot_values"]),
            "slot_usage": torch.where(sel, fresh_usage, usage),
            "slot_filled": torch.where(sel, torch.ones_like(filled), filled),
            "slot_error": torch.where(refresh, err_ema, st["slot_error"]),
            "slot_chunks": chunks,
        }


class HopeMemory(nn.Module):
    """Titans neural memory (one MLP per attention head) + slot memory of one block.

    It shares the attention's q, k, v (as Infini-attention and Titans MAG do): the memory
    stores the segment's k -> v associations and answers the same queries, so attention
    covers the segment and the memory what lies before it, at no extra projection cost.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        hidden_mult: int,
        base_momentum: float,
        base_decay: float,
        memory_capacity: int,
        top_k: int,
        error_decay: float,
        error_update: int,
        usage_decay: float,
        read_scale_init: float = 1.0,
        max_step_norm: float | None = None,
    ):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.max_step_norm = max_step_norm
        hidden = hidden_mult * self.head_dim
        self.gates = nn.Linear(dim, 3 * heads)  # per head: theta (lr), eta (momentum), alpha (forget)
        # Learned initial fast weights [W1, W2^T], shared by all (sequence, head) rows; the outer
        # optimiser trains them through the unrolled updates. W1 k ~ N(0, 1) for unit-norm k;
        # W2 starts small so early reads are quiet.
        D = self.head_dim
        self.w = nn.Parameter(torch.stack([torch.randn(hidden, D), torch.randn(hidden, D) * 0.02]))
        self.slots = SlotMemory(memory_capacity, top_k, error_decay, error_update, usage_decay) if memory_capacity else None
        # Per-channel read-out scales of the two memories (added to the attention heads' output).
        self.neural_scale = nn.Parameter(torch.full((dim,), float(read_scale_init)))
        self.slot_scale = nn.Parameter(torch.full((dim,), float(read_scale_init))) if self.slots is not None else None
        self._gate_bias = (0.0, _logit(base_momentum), _logit(base_decay))
        self.reset_gates()

    def reset_gates(self) -> None:
        nn.init.zeros_(self.gates.weight)
        with torch.no_grad():
            self.gates.bias.copy_(torch.tensor(self._gate_bias).repeat(self.heads))

    def init_state(self, batch: int, like: torch.Tensor) -> dict:
        C = self.heads * self.head_dim
        st = {
            # (B', 2, Hm, D) fast weights [W1, W2^T], one memory per (sequence, head)
            "w": self.w.unsqueeze(0).expand(batch * self.heads, -1, -1, -1),
            "m": like.new_zeros(batch * self.heads, *self.w.shape),  # momentum S, same layout
            # k (unit per head), v and gates of the unfinished chunk's tokens (B, P, 2C + 3Hh)
            "pending": like.new_zeros(batch, 0, 2 * C + 3 * self.heads),
        }
        if self.slots is not None:
            st.update(self.slots.init_state(batch, C, like))
        return st

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, Hh * X) -> (B', N, X)"""
        B, N, _ = x.shape
        return x.view(B, N, self.heads, -1).transpose(1, 2).reshape(B * self.heads, N, -1)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B', N, D) -> (B, N, Hh * D)"""
        _, N, D = x.shape
        return x.view(-1, self.heads, N, D).transpose(1, 2).reshape(-1, N, self.heads * D)

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C): L2-normalise every head's slice (rms_norm / sqrt(D): two ops, not four)."""
        B, N, C = x.shape
        return (F.rms_norm(x.view(B, N, self.heads, -1), (self.head_dim,)) * self.head_dim**-0.5).view(B, N, C)

    def write(self, st: dict, k, v, theta, gates) -> dict:
        """Absorb one chunk into the neural memory: k, v (B', n, D), theta (B', n), gates (B', n, 3)."""
        n = k.shape[1]
        err, h, sig, a = memory_mlp(st["w"], k, target=v)  # err = M(k) - v under the old W
        coef = theta * (-2.0 / (n * math.sqrt(h.shape[-1])))
        eta = gates[..., 1].mean(dim=1).view(-1, 1, 1, 1)  # (B', 1, 1, 1)
        keep = 1 - gates[..., 2].mean(dim=1).view(-1, 1, 1, 1)  # 1 - alpha
        step = memory_mlp_descent(st["w"], k, h, sig, a, err, coef)  # -G (B', 2, Hm, D)
        if self.max_step_norm is not None:  # cap ||G|| per (sequence, head): test-time learning cannot run away
            norm = step.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            step = step * (self.max_step_norm / norm.clamp_min(1e-12)).clamp(max=1.0)
        m = torch.addcmul(step, eta, st["m"])  # S = eta S - G
        return {**st, "m": m, "w": torch.addcmul(m, keep, st["w"])}  # W = (1 - alpha) W + S

    def forward(self, u, q, k, v, st: dict, chunk: int, seg_end: bool, surprise_scale: float):
        """New tokens' block input u and attention q, k, v, all (B, T, C) -> memory read (B, T, C), new state.

        `chunk` is the chunk size; `seg_end` says the last of these tokens closes a segment,
        which closes the last chunk too even when it is short. Writes run chunk after chunk;
        the reads, which only need each chunk's starting state, then run in one batch.
        """
        B, T, C = q.shape
        Hh = self.heads
        q, k = self.unit(q), self.unit(k)
        g = torch.sigmoid(self.gates(u))  # (B, T, 3 Hh)
        # Pieces of these tokens that share one memory state: [start, end) and whether the chunk closes.
        pieces, start, P = [], 0, st["pending"].shape[1]
        while start < T:
            end = start + min(max(chunk - P, 1), T - start)
            pieces.append((start, end, P + end - start >= chunk or (seg_end and end == T)))
            P, start = 0, end
        # Writes, in head layout (B', ., .); the first chunk may start with earlier calls' tokens.
        kh, vh, gh = self.split_heads(k), self.split_heads(v), self.split_heads(g)
        theta = surprise_scale * gh[..., 0]  # (B', T)
        pend = st["pending"]
        if pend.shape[1]:
            pk, pv, pg = (self.split_heads(t) for t in pend.split([C, C, 3 * Hh], -1))
        # split (not slicing) so the backward is one cat, not a zero-filled (B', T, .) per chunk
        sizes = [e - s for s, e, _ in pieces]
        kh_c, vh_c, gh_c, th_c = (t.split(sizes, 1) for t in (kh, vh, gh, theta))
        k_c, v_c = k.split(sizes, 1), v.split(sizes, 1)
        read_states = []
        for i, (start, end, closes) in enumerate(pieces):
            read_states.append(st)
            if not closes:  # only the last piece of a call stays open: keep its tokens for the write
                kvg = torch.cat([k, v, g], -1)[:, start:end]  # (B, n, 2C + 3Hh)
                st = {**st, "pending": torch.cat([pend, kvg], 1)}
                continue
            kc, vc, gc, tc = kh_c[i], vh_c[i], gh_c[i], th_c[i]
            if i == 0 and pend.shape[1]:
                kc, vc, gc = torch.cat([pk, kc], 1), torch.cat([pv, vc], 1), torch.cat([pg, gc], 1)
                tc = torch.cat([surprise_scale * pg[..., 0], tc], 1)
            new = self.write(st, kc, vc, tc, gc)
            if self.slots is not None:
                kc_full, vc_full = k_c[i], v_c[i]
                if i == 0 and pend.shape[1]:
                    kc_full, vc_full = torch.cat([pend[..., :C], kc_full], 1), torch.cat([pend[..., C:2 * C], vc_full], 1)
                new.update(self.slots.write(st, kc_full * Hh**-0.5, vc_full))
            st = {**new, "pending": pend[:, :0]}
        return self.read(read_states, pieces, q), st

    def read(self, states: list[dict], pieces, q: torch.Tensor) -> torch.Tensor:
        """Every piece of q (B, T, C) reads the state it started from -> (B, T, C)."""
        B, T, C = q.shape
        n = pieces[0][1] - pieces[0][0]
        qs = q * self.heads**-0.5  # full-width unit queries for the slots
        if len(pieces) > 1 and all(e - s == n for s, e, _ in pieces):
            # Equal pieces: fold the piece index into the batch and read everything at once.
            N = len(pieces)
            w = torch.stack([s["w"] for s in states], 1).flatten(0, 1)  # (B' N, 2, Hm, D)
            qh = self.split_heads(q).reshape(B * self.heads * N, n, -1)  # (B' N, n, D)
            y = self.merge_heads(memory_mlp(w, qh)[0].reshape(B * self.heads, T, -1))  # (B, T, C)
            out = y * self.neural_scale
            if self.slots is not None:
                keys, values, filled = (torch.stack([s[f] for s in states], 1).flatten(0, 1)
                                        for f in ("slot_keys", "slot_values", "slot_filled"))
                r = self.slots.read(keys, values, filled, qs.reshape(B * N, n, C))[0]
                out = out + r.reshape(B, T, C) * self.slot_scale
            return out
        outs = []
        for st, (start, end, _) in zip(states, pieces):
            y = self.merge_heads(memory_mlp(st["w"], self.split_heads(q[:, start:end]))[0])
            out = y * self.neural_scale
            if self.slots is not None:
                r = self.slots.read(st["slot_keys"], st["slot_values"], st["slot_filled"], qs[:, start:end])[0]
                out = out + r * self.slot_scale
            outs.append(out)
        return torch.cat(outs, 1)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ----------------------------------------------------------------------------- blocks


class CMSLevel(nn.Module):
    """One continuum-memory level: LN + MLP, residual; stepped every `period` optimizer steps."""

    def __init__(self, dim: int, hidden: int, dropout: float, bias: bool, period: int):
        super().__init__()
        self.period = period
        self.ln = nn.LayerNorm(dim, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, dim, bias=bias))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.mlp(self.ln(x)))


class HopeBlock(nn.Module):
    """Causal attention over the segment, plus the memory's reads of what lies before it, then CMS."""

    def __init__(self, dim, heads, dropout, bias, memory: HopeMemory | None, cms_hidden, cms_frequencies):
        super().__init__()
        self.heads = heads
        self.ln_attn = nn.LayerNorm(dim, bias=bias)
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.memory = memory
        self.cms = nn.ModuleList(CMSLevel(dim, cms_hidden, dropout, bias, f) for f in cms_frequencies)

    def attend(self, q, k, v, st):
        """q, k, v (B, T, C) -> (B, T, C) attention over the cached segment + these tokens, new cache."""
        B, T, C = q.shape
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        k = torch.cat([st["attn_k"], k], 2)  # (B, H, S, D)
        v = torch.cat([st["attn_v"], v], 2)
        S, p = k.shape[2], (self.dropout if self.training else 0.0)
        if S == T:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:  # new tokens sit at the end of the cache: token i sees cache positions <= S - T + i
            allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        return y.transpose(1, 2).reshape(B, T, C), k, v

    def forward(self, x, st: dict, chunk: int, seg_end: bool, surprise_scale: float):
        u = self.ln_attn(x)  # (B, T, C)
        q, k, v = self.qkv(u).chunk(3, dim=-1)  # each (B, T, C)
        y, ck, cv = self.attend(q, k, v, st)
        new = {"attn_k": ck[:, :, :0] if seg_end else ck, "attn_v": cv[:, :, :0] if seg_end else cv}
        if self.memory is not None:
            m, new["memory"] = self.memory(u, q, k, v, st["memory"], chunk, seg_end, surprise_scale)
            y = y + m
        x = x + self.resid_dropout(self.proj(y))
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
        mem_write: chunk size: the memories are written every `mem_write` tokens (64: two writes per
            default segment; 32 writes twice as often at ~15% more step time, same recall in the demo).
        error_update: the surprise EMA is refreshed every `error_update` chunks.
        cms_frequencies: period C_l (in optimizer steps) of each CMS level, e.g. (1, 4, 16);
            see `cms_update_schedule` and `CMSGradientGate`.
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
            return HopeMemory(dim, num_heads, mem_hidden_mult, base_momentum, base_decay, memory_capacity, top_k,
                              error_decay, error_update, slot_usage_decay, memory_read_init, mem_max_step_norm)

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
        if a["memory_read_init"] < 0:
            raise ConfigError(f"model.memory_read_init={a['memory_read_init']} must be >= 0")
        if a["mem_max_step_norm"] is not None and a["mem_max_step_norm"] <= 0:
            raise ConfigError(f"model.mem_max_step_norm={a['mem_max_step_norm']} must be > 0 or None (no cap)")
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
            H = b.heads
            empty = like.new_zeros(batch, H, 0, self.tok_emb.embedding_dim // H)
            st = {"attn_k": empty, "attn_v": empty}
            if b.memory is not None:
                st["memory"] = b.memory.init_state(batch, like)
            layers.append(st)
        return {"layers": layers}

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """idx (B, T) -> logits (B, T, V) and the state after these tokens.

        state = {"layers": [ {"attn_k", "attn_v": (B, H, S, D) current segment's KV cache,
                              "memory": {"w" (B, 2, Hm, C) fast weights [W1, W2^T], "m" its momentum,
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
