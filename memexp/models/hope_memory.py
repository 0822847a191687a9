"""HOPE's memories: the Titans neural memory (fast-weight MLPs written by gradient descent at test
time), the surprise-written slot memory, the continuum-memory levels (CMS), and the ramps that
schedule the memory's settings. The equations are in `memexp.models.hope`'s docstring.

Shape legend: B batch, T tokens in this call, n tokens of one chunk, C model width, Hh heads,
D = C / Hh head width, Hm = `mem_hidden_mult` * D memory hidden width, B' = B * Hh (one neural
memory per sequence and head), K slots (`memory_capacity`), k `top_k`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from memexp.errors import ConfigError
from memexp.models.autocast import at_least_float32
from memexp.models.hope_math import (
    CapNorm,
    ChunkStep,
    UnitHeads,
    _descent,
    _mlp,
    _mlp_unscaled,
    _plain_dtypes,
)


class SlotMemory(nn.Module):
    """Top-k key/value slots per sequence, written where surprise is high."""

    def __init__(self, *, memory_capacity: int, top_k: int, error_decay: float, error_update: int, slot_usage_decay: float):
        super().__init__()
        self.capacity, self.top_k = memory_capacity, top_k
        self.error_decay, self.error_update, self.usage_decay = error_decay, error_update, slot_usage_decay
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

    def read(
        self, keys: torch.Tensor, values: torch.Tensor, filled: torch.Tensor, q: torch.Tensor, used: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, N, C) unit queries, slots keys / values (B, K, C), filled (B, K)
        -> read values (B, N, C) and dense read weights (B, N, K') over the first K' slots.

        `used`, when known, says only the first `used` slots can be filled: the read looks at those
        alone (K' = used; K' = K when None) and mixes min(top_k, used) of them, the same result, since
        empty slots weigh 0 and add exp(-inf) = 0 to the softmax.
        """
        if used is not None and used < keys.shape[1]:
            if used == 0:  # nothing filled: reads 0, and nothing upstream gets a gradient from it
                return q.new_zeros(q.shape), q.new_zeros(*q.shape[:-1], 0)
            keys, values, filled = keys[:, :used], values[:, :used], filled[:, :used]
        sim = torch.bmm(q, keys.transpose(1, 2)) * self.log_scale.exp()  # (B, N, K')
        filled = filled.unsqueeze(1)  # (B, 1, K')
        sim = sim.masked_fill(filled == 0, torch.finfo(sim.dtype).min)
        top, idx = sim.topk(min(self.top_k, keys.shape[1]), dim=-1)  # (B, N, k)
        w = torch.softmax(top, dim=-1) * filled.expand_as(sim).gather(-1, idx)  # empty slots weigh 0
        # w may be float32 where sim is bf16 (softmax runs in float32 under autocast): scatter needs one dtype.
        dense = torch.zeros_like(sim, dtype=w.dtype).scatter(-1, idx, w)  # (B, N, K')
        return torch.bmm(dense, values), dense

    def write(self, st: dict, k: torch.Tensor, v: torch.Tensor, used: int | None = None) -> dict:
        """Absorb one closed chunk: k (unit), v (B, n, C).

        `used`, when known (a state from `init_state` after `used` < K writes), says exactly the first
        `used` slots are filled: empty slots go first and the first of them is the least used, so the
        write lands in slot `used` of every row; the read skips the empty slots. Same result as None.
        """
        B, K = k.shape[0], self.capacity
        known = used is not None and used < K
        filled = st["slot_filled"]
        with torch.no_grad():  # surprise and usage only pick what to write and where
            if known and used == 0:
                surprise = v.pow(2).mean(-1)  # (B, n): the read of empty slots is 0
                usage = self.usage_decay * st["slot_usage"]
            else:
                r, dense = self.read(st["slot_keys"], st["slot_values"], filled, k, used)
                surprise = (r - v).pow(2).mean(-1)  # (B, n) prediction error of the read
                usage = self.usage_decay * st["slot_usage"]  # (B, K)
                if dense.shape[-1] < K:
                    usage[:, : dense.shape[-1]] += dense.sum(1)
                else:
                    usage += dense.sum(1)
            best_s, best_t = surprise.max(dim=1)  # (B,)
            chunks = st["slot_chunks"] + 1
            refresh = (chunks % self.error_update) == 0
            err_ema = self.error_decay * st["slot_error"] + (1 - self.error_decay) * surprise.mean(dim=1)
            # A fresh slot gets the current top usage so it is not evicted at once.
            top_usage = usage.max(dim=1, keepdim=True).values  # (B, 1)
            if not known:
                # Empty slots first, then the least-used one.
                victim = usage.masked_fill(filled == 0, -1.0).argmin(dim=1)  # (B,)
                do_write = (best_s > st["slot_error"]) | (filled.min(dim=1).values == 0)  # (B,)
                sel = F.one_hot(victim, self.capacity).bool() & do_write.unsqueeze(1)  # (B, K)
        rows = torch.arange(B, device=k.device)
        k_best, v_best = k[rows, best_t].unsqueeze(1), v[rows, best_t].unsqueeze(1)  # (B, 1, C)
        new = {"slot_error": torch.where(refresh, err_ema, st["slot_error"]), "slot_chunks": chunks}
        if known:  # slot `used` of every row: a cat, whose backward is a split, in place of two where
            cut = lambda x, new_col: torch.cat([x[:, :used], new_col, x[:, used + 1 :]], 1)  # noqa: E731
            return {
                "slot_keys": cut(st["slot_keys"], k_best),
                "slot_values": cut(st["slot_values"], v_best),
                "slot_usage": cut(usage, top_usage),
                "slot_filled": cut(filled, torch.ones_like(top_usage)),
                **new,
            }
        sel3 = sel.unsqueeze(-1)
        return {
            "slot_keys": torch.where(sel3, k_best, st["slot_keys"]),  # written tensors keep their graph
            "slot_values": torch.where(sel3, v_best, st["slot_values"]),
            "slot_usage": torch.where(sel, top_usage.expand_as(usage), usage),
            "slot_filled": torch.where(sel, torch.ones_like(filled), filled),
            **new,
        }


class HopeMemory(nn.Module):
    """Titans neural memory (one MLP per attention head) + slot memory of one block.

    It shares the attention's q, k, v (as Infini-attention and Titans MAG do): the memory
    stores the segment's k -> v associations and answers the same queries, so attention
    covers the segment and the memory what lies before it, at no extra projection cost.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        mem_hidden_mult: int,
        base_momentum: float,
        base_decay: float,
        memory_capacity: int,
        top_k: int,
        error_decay: float,
        error_update: int,
        slot_usage_decay: float,
        memory_read_init: float = 1.0,
        mem_max_step_norm: float | None = None,
    ):
        """Arguments as HOPE's, under the same names (see `HOPE`); keyword-only."""
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.max_step_norm = mem_max_step_norm
        hidden = mem_hidden_mult * self.head_dim
        self.gates = nn.Linear(dim, 3 * heads)  # per head: theta (lr), eta (momentum), alpha (forget)
        # Learned initial fast weights [W1, W2^T], shared by all (sequence, head) rows; the outer
        # optimiser trains them through the unrolled updates. W1 k ~ N(0, 1) for unit-norm k;
        # W2 starts small so early reads are quiet.
        D = self.head_dim
        self.w = nn.Parameter(torch.stack([torch.randn(hidden, D), torch.randn(hidden, D) * 0.02]))
        self.slots = None
        if memory_capacity:
            self.slots = SlotMemory(
                memory_capacity=memory_capacity,
                top_k=top_k,
                error_decay=error_decay,
                error_update=error_update,
                slot_usage_decay=slot_usage_decay,
            )
        # Per-channel read-out scales of the two memories (added to the attention heads' output).
        self.neural_scale = nn.Parameter(torch.full((dim,), float(memory_read_init)))
        self.slot_scale = nn.Parameter(torch.full((dim,), float(memory_read_init))) if self.slots is not None else None
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

    def write(
        self, st: dict, k: torch.Tensor, v: torch.Tensor, theta: torch.Tensor, gates: torch.Tensor, m_zero: bool = False
    ) -> dict:
        """Absorb one chunk into the neural memory: k, v (B', n, D), theta (B', n), gates (B', n, 3).
        `m_zero`: the momentum st["m"] is known to be 0 (a state from `init_state`), so S = -G."""
        n = k.shape[1]
        w1, w2t = st["w"].unbind(1)  # (B', Hm, D) each
        coef = theta * (-2.0 / (n * math.sqrt(w1.shape[1])))
        eta, alpha = gates[..., 1:].mean(dim=1).view(-1, 2, 1, 1, 1).unbind(1)  # (B', 1, 1, 1) each
        keep = 1 - alpha
        if _plain_dtypes(w1, k, v, coef):
            step = ChunkStep.apply(w1, w2t, k, v, coef)  # -G (B', 2, Hm, D)
        else:  # mixed dtypes (autocast): autograd through the pieces
            err, h, sig, a = _mlp(w1, w2t, k, target=v)  # err = M(k) - v under the old W
            step = _descent(w2t, k, h, sig, a, err, coef)
        if self.max_step_norm is not None:  # cap ||G|| per (sequence, head): test-time learning cannot run away
            step = CapNorm.apply(step, self.max_step_norm)
        # under autocast the inner gradient's matmuls ran in bf16; momentum and weights accumulate in float32 (at least)
        step, eta, keep = at_least_float32(step), at_least_float32(eta), at_least_float32(keep)
        m = step if m_zero else torch.addcmul(step, eta, st["m"])  # S = eta S - G
        return {**st, "m": m, "w": torch.addcmul(m, keep, st["w"])}  # W = (1 - alpha) W + S

    def forward(
        self,
        u: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        st: dict,
        chunk: int,
        seg_end: bool,
        surprise_scale: float,
        fresh: bool = False,
    ) -> tuple[torch.Tensor, dict]:
        """New tokens' block input u and attention q, k, v, all (B, T, C) -> memory read (B, T, C), new state.

        `chunk` is the chunk size; `seg_end` says the last of these tokens closes a segment,
        which closes the last chunk too even when it is short. Writes run chunk after chunk;
        the reads, which only need each chunk's starting state, then run in one batch.
        `fresh` says `st` is `init_state`'s (momentum 0, slots empty): the same result, with the work
        on zero momentum and on empty slots skipped.
        """
        B, T, C = q.shape
        Hh = self.heads
        # q, k unit per head: in head layout (B', T, D) for the neural memory, and full width / sqrt(Hh)
        # (unit vectors, B, T, C) for the slot memory.
        if self.slots is not None:
            qh, kh, qs, ks = UnitHeads.apply(q, k, Hh, True)
        else:
            (qh, kh), qs, ks = UnitHeads.apply(q, k, Hh, False), None, None
        qh, kh = qh.view(B * Hh, T, -1), kh.view(B * Hh, T, -1)
        g = torch.sigmoid(self.gates(u))  # (B, T, 3 Hh)
        # Pieces of these tokens that share one memory state: [start, end) and whether the chunk closes.
        pieces, start, P = [], 0, st["pending"].shape[1]
        while start < T:
            end = start + min(max(chunk - P, 1), T - start)
            pieces.append((start, end, P + end - start >= chunk or (seg_end and end == T)))
            P, start = 0, end
        # Writes, in head layout (B', ., .); the first chunk may start with earlier calls' tokens.
        vh, gh = self.split_heads(v), self.split_heads(g)
        theta = surprise_scale * gh[..., 0]  # (B', T)
        pend = st["pending"]
        if pend.shape[1]:
            pk, pv, pg = (self.split_heads(t) for t in pend.split([C, C, 3 * Hh], -1))
        # split (not slicing) so the backward is one cat, not a zero-filled (B', T, .) per chunk
        sizes = [e - s for s, e, _ in pieces]
        kh_c, vh_c, gh_c, th_c = (t.split(sizes, 1) for t in (kh, vh, gh, theta))
        read_states, used = [], []
        n_used = 0 if fresh else None  # slots known filled: exactly the first n_used (None: unknown)
        for i, (start, end, closes) in enumerate(pieces):
            read_states.append(st)
            used.append(n_used)
            if not closes:  # only the last piece of a call stays open: keep its tokens for the write
                kvg = torch.cat([self.merge_heads(kh_c[i]), v[:, start:end], g[:, start:end]], -1)  # (B, n, 2C + 3Hh)
                # st's pending: the call's earlier tokens when no chunk closed before this piece, else empty
                st = {**st, "pending": torch.cat([st["pending"], kvg], 1)}
                continue
            kc, vc, gc, tc = kh_c[i], vh_c[i], gh_c[i], th_c[i]
            if i == 0 and pend.shape[1]:
                kc, vc, gc = torch.cat([pk, kc], 1), torch.cat([pv, vc], 1), torch.cat([pg, gc], 1)
                tc = torch.cat([surprise_scale * pg[..., 0], tc], 1)
            new = self.write(st, kc, vc, tc, gc, m_zero=fresh and i == 0)
            if self.slots is not None:
                kc_full, vc_full = ks[:, start:end], v[:, start:end]
                if i == 0 and pend.shape[1]:
                    kc_full = torch.cat([pend[..., :C] * Hh**-0.5, kc_full], 1)
                    vc_full = torch.cat([pend[..., C : 2 * C], vc_full], 1)
                new.update(self.slots.write(st, kc_full, vc_full, n_used))
                if n_used is not None:
                    n_used = min(n_used + 1, self.slots.capacity)
            st = {**new, "pending": pend[:, :0]}
        return self.read(read_states, pieces, qh, qs, used), st

    def read(
        self,
        states: list[dict],
        pieces: list[tuple[int, int, bool]],
        qh: torch.Tensor,
        qs: torch.Tensor | None,
        used: list[int | None] | None = None,
    ) -> torch.Tensor:
        """Every piece of the queries reads the state it started from: qh (B', T, D) unit per head,
        qs (B, T, C) the same / sqrt(Hh) for the slots -> (B, T, C). used[i]: the slots known filled
        in states[i] (the first used[i]; None: unknown), as `SlotMemory.read` takes it."""
        used = used or [None] * len(states)
        Bh, T, _ = qh.shape
        Hh = self.heads
        B = Bh // Hh
        n = pieces[0][1] - pieces[0][0]
        if len(pieces) > 1 and all(e - s == n for s, e, _ in pieces):
            # Equal pieces: fold the piece index into the batch and read everything at once.
            N = len(pieces)
            w = torch.stack([s["w"] for s in states], 1).flatten(0, 1)  # (B' N, 2, Hm, D)
            y = _mlp_unscaled(w, qh.reshape(Bh * N, n, -1)).view(B, Hh, T, -1)
            if self.slots is not None:
                r = self._read_slots_batched(states, used, qs, n)
        else:
            y = torch.cat([_mlp_unscaled(st["w"], qh[:, s:e]) for st, (s, e, _) in zip(states, pieces)], 1).view(B, Hh, T, -1)
            if self.slots is not None:
                r = torch.cat(
                    [
                        self.slots.read(st["slot_keys"], st["slot_values"], st["slot_filled"], qs[:, s:e], u)[0]
                        for st, (s, e, _), u in zip(states, pieces, used)
                    ],
                    1,
                )
        # M's 1/sqrt(Hm) folded into the per-channel read-out scale; the head merge rides on the last op.
        scale = (self.neural_scale * self.w.shape[1] ** -0.5).view(Hh, -1)  # (Hh, D)
        y = y.permute(0, 2, 1, 3)  # (B, T, Hh, D) view
        if self.slots is None:
            return (y * scale).reshape(B, T, -1)
        return torch.addcmul((r * self.slot_scale).view(B, T, Hh, -1), y, scale).view(B, T, -1)

    def _read_slots_batched(self, states: list[dict], used: list[int | None], qs: torch.Tensor, n: int) -> torch.Tensor:
        """The slot reads of N equal pieces of n queries qs (B, T = N n, C), each from its own state,
        with the piece index folded into the batch -> (B, T, C). Leading pieces whose slots are known
        empty read 0 and are left out; when every count is known, only the first max(used) slots are read."""
        B, T, C = qs.shape
        z = 0
        while z < len(states) and used[z] == 0:
            z += 1
        if z == len(states):
            return qs.new_zeros(B, T, C)
        f = None if any(u is None for u in used[z:]) else max(used[z:])
        keys, values, filled = (
            torch.stack([s[name] if f is None else s[name][:, :f] for s in states[z:]], 1).flatten(0, 1)
            for name in ("slot_keys", "slot_values", "slot_filled")
        )
        N = len(states) - z
        r = self.slots.read(keys, values, filled, qs[:, z * n :].reshape(B * N, n, C), f)[0].view(B, N * n, C)
        return r if z == 0 else torch.cat([qs.new_zeros(B, z * n, C), r], 1)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


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
