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
from torch.autograd.function import FunctionCtx

from memexp.errors import ConfigError


def memory_mlp(
    w: torch.Tensor, x: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """M(x) = silu(x W1^T) W2^T / sqrt(Hm) for fast weights w (B', 2, Hm, D) = [W1, W2^T], x (B', N, D).

    W1 and W2^T share one (Hm, D) layout so an update touches one tensor. Returns y (B', N, D),
    or y - target when a target is given, plus h = x W1^T, sig = sigmoid(h) and a = silu(h)
    (B', N, Hm) for the gradient.
    """
    return _mlp(*w.unbind(1), x, target)


def _mlp(
    w1: torch.Tensor, w2t: torch.Tensor, x: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`memory_mlp` on w's two halves w1, w2t (B', Hm, D): unbind once, where w[:, i] would zero-fill
    a (B', 2, Hm, D) gradient per use in the backward."""
    h = torch.bmm(x, w1.transpose(1, 2))  # (B', N, Hm)
    sig = torch.sigmoid(h)
    a = h * sig
    s = w1.shape[1] ** -0.5
    y = torch.bmm(a, w2t) * s if target is None else torch.baddbmm(target, a, w2t, beta=-1.0, alpha=s)
    return y, h, sig, a


def memory_mlp_descent(
    w: torch.Tensor,
    k: torch.Tensor,
    h: torch.Tensor,
    sig: torch.Tensor,
    a: torch.Tensor,
    err: torch.Tensor,
    coef: torch.Tensor,
) -> torch.Tensor:
    """Minus the gradient of (1/n) sum_t theta_t ||M(k_t) - v_t||^2 with respect to w.

    w (B', 2, Hm, D), k (B', n, D) keys, h, sig, a (B', n, Hm) from `memory_mlp(w, k)`,
    err (B', n, D) = M(k) - v, coef (B', n) = -2 theta / (n sqrt(Hm)). With s = 1/sqrt(Hm)
    and dy = 2 s theta err / n:
        dW2^T = a^T dy,   dW1 = (dy W2 * silu'(h))^T k,   silu'(h) = sig (1 + h - a)
    Written by hand and differentiable, so second-order terms reach the outer optimiser.
    Returns (B', 2, Hm, D).
    """
    return _descent(w.select(1, 1), k, h, sig, a, err, coef)


def _descent(
    w2t: torch.Tensor, k: torch.Tensor, h: torch.Tensor, sig: torch.Tensor, a: torch.Tensor, err: torch.Tensor, coef: torch.Tensor
) -> torch.Tensor:
    """`memory_mlp_descent` given w's second half w2t (B', Hm, D)."""
    dy = err * coef.unsqueeze(-1)  # (B', n, D), descent sign folded in
    dh = torch.bmm(dy, w2t.transpose(1, 2)) * torch.addcmul(sig, sig, h - a)  # (B', n, Hm)
    # Two bmm and a stack of their (B', Hm, D) results: cheaper than stacking the (B', n, .) operands.
    return torch.stack([torch.bmm(dh.transpose(1, 2), k), torch.bmm(a.transpose(1, 2), dy)], 1)


class CapNorm(torch.autograd.Function):
    """step (B', ...) -> step * min(1, c / max(||step||, 1e-12)), ||.|| per row, with a hand-written backward.

    Forward as autograd would compute it; backward, with f the factor and u = ||step||:
    d step = f g - [capped] c (g . step) / u^3 step, capped where c / max(u, 1e-12) <= 1 and u >= 1e-12
    (where clamp and clamp_min pass the gradient): three passes over step instead of autograd's dozen ops.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, step: torch.Tensor, c: float) -> torch.Tensor:
        norm = step.flatten(1).norm(dim=1)  # (B',)
        raw = c / norm.clamp_min(1e-12)
        f = raw.clamp(max=1.0)
        ctx.c = c
        ctx.save_for_backward(step, norm, raw, f)
        return step * f.view(-1, *(1,) * (step.dim() - 1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        step, norm, raw, f = ctx.saved_tensors
        shape = (-1, *(1,) * (step.dim() - 1))
        dot = (g * step).flatten(1).sum(1)  # (B',)
        capped = (raw <= 1.0) & (norm >= 1e-12)
        k = torch.where(capped, -ctx.c * dot / norm.clamp_min(1e-12).pow(3), torch.zeros_like(dot))
        return torch.addcmul(g * f.view(shape), step, k.view(shape)), None


class UnitHeads(torch.autograd.Function):
    """q, k (B, T, C) -> their per-head L2-normalised copies, in the layouts the memories read.

    Forward: y = x / sqrt(|x|^2 + D eps) per head slice (= rms_norm(x) / sqrt(D)), written straight into
    head layout yh (2, B, Hh, T, D) ([q, k]) and, for the slot memory, full width yf (2, B, T, C) scaled
    by 1/sqrt(Hh). Backward by hand: dx = r (g - y <g, y>) with r = 1/sqrt(|x|^2 + D eps) and
    g = dyh + dyf / sqrt(Hh): a handful of passes where autograd through rms_norm takes a dozen.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, q: torch.Tensor, k: torch.Tensor, heads: int, full: bool
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, T, C = q.shape
        D = C // heads
        eps = D * torch.finfo(q.dtype).eps
        yh = q.new_empty(2, B, heads, T, D)
        yf = q.new_empty(2, B, T, C) if full else None
        rs = []
        for i, x in enumerate((q, k)):
            x = x.view(B, T, heads, D)
            r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().add_(eps).rsqrt_()  # (B, T, Hh, 1)
            torch.mul(x, r, out=yh[i].permute(0, 2, 1, 3))
            if full:
                torch.mul(x, r * heads**-0.5, out=yf[i].view(B, T, heads, D))
            rs.append(r)
        ctx.heads, ctx.full = heads, full
        ctx.save_for_backward(yh, *rs)
        return (yh, yf) if full else yh

    @staticmethod
    def backward(
        ctx: FunctionCtx, gh: torch.Tensor, gf: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        yh, *rs = ctx.saved_tensors
        _, B, Hh, T, D = yh.shape
        out = []
        for i in range(2):
            y = yh[i].permute(0, 2, 1, 3)  # (B, T, Hh, D) views
            r = rs[i]
            if ctx.full:  # g / c with c = 1/sqrt(Hh), built in (B, T, Hh, D) order so dx needs no copy
                g = torch.add(gf[i].reshape(B, T, Hh, D), gh[i].permute(0, 2, 1, 3), alpha=Hh**0.5)
                r = r * Hh**-0.5
            else:
                g = gh[i].permute(0, 2, 1, 3)
            dot = (g * y).sum(-1, keepdim=True)  # (B, T, Hh, 1)
            out.append(torch.addcmul(g, y, dot, value=-1.0).mul_(r).reshape(B, T, Hh * D))
        return out[0], out[1], None, None


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
        self, keys: torch.Tensor, values: torch.Tensor, filled: torch.Tensor, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
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

    def write(self, st: dict, k: torch.Tensor, v: torch.Tensor, theta: torch.Tensor, gates: torch.Tensor) -> dict:
        """Absorb one chunk into the neural memory: k, v (B', n, D), theta (B', n), gates (B', n, 3)."""
        n = k.shape[1]
        w1, w2t = st["w"].unbind(1)  # (B', Hm, D) each
        err, h, sig, a = _mlp(w1, w2t, k, target=v)  # err = M(k) - v under the old W
        coef = theta * (-2.0 / (n * math.sqrt(h.shape[-1])))
        eta, alpha = gates[..., 1:].mean(dim=1).view(-1, 2, 1, 1, 1).unbind(1)  # (B', 1, 1, 1) each
        keep = 1 - alpha
        step = _descent(w2t, k, h, sig, a, err, coef)  # -G (B', 2, Hm, D)
        if self.max_step_norm is not None:  # cap ||G|| per (sequence, head): test-time learning cannot run away
            step = CapNorm.apply(step, self.max_step_norm)
        m = torch.addcmul(step, eta, st["m"])  # S = eta S - G
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
    ) -> tuple[torch.Tensor, dict]:
        """New tokens' block input u and attention q, k, v, all (B, T, C) -> memory read (B, T, C), new state.

        `chunk` is the chunk size; `seg_end` says the last of these tokens closes a segment,
        which closes the last chunk too even when it is short. Writes run chunk after chunk;
        the reads, which only need each chunk's starting state, then run in one batch.
        """
        B, T, C = q.shape
        Hh = self.heads
        # q, k unit per head: in head layout (B', T, D) for the neural memory, and full width / sqrt(Hh)
        # (unit vectors, B, T, C) for the slot memory.
        if self.slots is not None:
            yh, yf = UnitHeads.apply(q, k, Hh, True)
            qs, ks = yf.unbind(0)
        else:
            yh, qs, ks = UnitHeads.apply(q, k, Hh, False), None, None
        qh, kh = (t.view(B * Hh, T, -1) for t in yh.unbind(0))
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
        read_states = []
        for i, (start, end, closes) in enumerate(pieces):
            read_states.append(st)
            if not closes:  # only the last piece of a call stays open: keep its tokens for the write
                kvg = torch.cat([self.merge_heads(kh_c[i]), v[:, start:end], g[:, start:end]], -1)  # (B, n, 2C + 3Hh)
                st = {**st, "pending": torch.cat([pend, kvg], 1)}
                continue
            kc, vc, gc, tc = kh_c[i], vh_c[i], gh_c[i], th_c[i]
            if i == 0 and pend.shape[1]:
                kc, vc, gc = torch.cat([pk, kc], 1), torch.cat([pv, vc], 1), torch.cat([pg, gc], 1)
                tc = torch.cat([surprise_scale * pg[..., 0], tc], 1)
            new = self.write(st, kc, vc, tc, gc)
            if self.slots is not None:
                kc_full, vc_full = ks[:, start:end], v[:, start:end]
                if i == 0 and pend.shape[1]:
                    kc_full = torch.cat([pend[..., :C] * Hh**-0.5, kc_full], 1)
                    vc_full = torch.cat([pend[..., C : 2 * C], vc_full], 1)
                new.update(self.slots.write(st, kc_full, vc_full))
            st = {**new, "pending": pend[:, :0]}
        return self.read(read_states, pieces, qh, qs), st

    def read(
        self, states: list[dict], pieces: list[tuple[int, int, bool]], qh: torch.Tensor, qs: torch.Tensor | None
    ) -> torch.Tensor:
        """Every piece of the queries reads the state it started from: qh (B', T, D) unit per head,
        qs (B, T, C) the same / sqrt(Hh) for the slots -> (B, T, C)."""
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
                keys, values, filled = (
                    torch.stack([s[f] for s in states], 1).flatten(0, 1) for f in ("slot_keys", "slot_values", "slot_filled")
                )
                r = self.slots.read(keys, values, filled, qs.reshape(B * N, n, -1))[0].view(B, T, -1)
        else:
            y = torch.cat([_mlp_unscaled(st["w"], qh[:, s:e]) for st, (s, e, _) in zip(states, pieces)], 1).view(B, Hh, T, -1)
            if self.slots is not None:
                r = torch.cat(
                    [
                        self.slots.read(st["slot_keys"], st["slot_values"], st["slot_filled"], qs[:, s:e])[0]
                        for st, (s, e, _) in zip(states, pieces)
                    ],
                    1,
                )
        # M's 1/sqrt(Hm) folded into the per-channel read-out scale; the head merge rides on the last op.
        scale = (self.neural_scale * self.w.shape[1] ** -0.5).view(Hh, -1)  # (Hh, D)
        y = y.permute(0, 2, 1, 3)  # (B, T, Hh, D) view
        if self.slots is None:
            return (y * scale).reshape(B, T, -1)
        return torch.addcmul((r * self.slot_scale).view(B, T, Hh, -1), y, scale).view(B, T, -1)


def _mlp_unscaled(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sqrt(Hm) M(x) = silu(x W1^T) W2^T: w (B', 2, Hm, D), x (B', N, D) -> (B', N, D)."""
    w1, w2t = w.unbind(1)
    return torch.bmm(F.silu(torch.bmm(x, w1.transpose(1, 2))), w2t)


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


# ----------------------------------------------------------------------------- continuum memory


class CMSLevel(nn.Module):
    """One continuum-memory level: LN + MLP, residual; stepped every `period` optimizer steps."""

    def __init__(self, dim: int, hidden: int, dropout: float, bias: bool, period: int):
        super().__init__()
        self.period = period
        self.ln = nn.LayerNorm(dim, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, dim, bias=bias))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> the level's residual update (B, T, C)."""
        return self.dropout(self.mlp(self.ln(x)))
