"""The arithmetic of HOPE's neural memory: the fast-weight MLP M(x) and its gradient-descent step on a chunk,
and the hand-written autograd functions the memory's inner loop runs on (a chunk's write step, the step-norm cap,
the per-head unit normalisation of q and k). Written by hand because each replaces a dozen small autograd ops per
chunk with a few matrix products (issue 16's profile); each is checked against autograd in float64
(tests/test_hope_model.py). Shapes: see memexp.models.hope_memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx


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


def _descent(
    w2t: torch.Tensor, k: torch.Tensor, h: torch.Tensor, sig: torch.Tensor, a: torch.Tensor, err: torch.Tensor, coef: torch.Tensor
) -> torch.Tensor:
    """Minus the gradient of (1/n) sum_t theta_t ||M(k_t) - v_t||^2 with respect to w = [W1, W2^T], given w's
    second half w2t (B', Hm, D), k (B', n, D) keys, h, sig, a (B', n, Hm) from `memory_mlp(w, k)`,
    err (B', n, D) = M(k) - v and coef (B', n) = -2 theta / (n sqrt(Hm)). With s = 1/sqrt(Hm)
    and dy = 2 s theta err / n:
        dW2^T = a^T dy,   dW1 = (dy W2 * silu'(h))^T k,   silu'(h) = sig (1 + h - a)
    Written by hand and differentiable, so second-order terms reach the outer optimiser.
    Returns (B', 2, Hm, D)."""
    dy = err * coef.unsqueeze(-1)  # (B', n, D), descent sign folded in
    dh = torch.bmm(dy, w2t.transpose(1, 2)) * torch.addcmul(sig, sig, h - a)  # (B', n, Hm)
    # Two bmm and a stack of their (B', Hm, D) results: cheaper than stacking the (B', n, .) operands.
    return torch.stack([torch.bmm(dh.transpose(1, 2), k), torch.bmm(a.transpose(1, 2), dy)], 1)


class ChunkStep(torch.autograd.Function):
    """w1, w2t (B', Hm, D), k, v (B', n, D), coef (B', n) -> the chunk's descent step -G (B', 2, Hm, D),
    `_descent` of `_mlp(w1, w2t, k, v)`, with a hand-written backward.

    Forward (per row; s = 1/sqrt(Hm), c = coef): h = k W1^T, a = silu(h), sp = silu'(h),
    err = s a W2t - v, dy = c err, gz = dy W2t^T, dh = gz sp, step = [dh^T k, a^T dy].
    Backward, from g = [g1, g2]:
        g_dh = k g1^T,  g_gz = g_dh sp,  g_dy = a g2 + g_gz W2t,  g_err = c g_dy
        g_a = dy g2^T + s g_err W2t^T,   g_h = g_a sp + g_dh gz silu''(h)
        g_W1 = g_h^T k,  g_W2t = g_gz^T dy + s a^T g_err,  g_k = dh g1 + g_h W1,
        g_v = -g_err,  g_coef = sum_D g_dy err,    silu'' = sig (1 - sig)(1 + h - a) + sig (1 - sp)
    Ten bmm and a few elementwise passes, where autograd through the pieces takes twice the ops.
    Not differentiable twice (the outer optimiser needs the first derivative only).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, w1: torch.Tensor, w2t: torch.Tensor, k: torch.Tensor, v: torch.Tensor, coef: torch.Tensor
    ) -> torch.Tensor:
        err, h, sig, a = _mlp(w1, w2t, k, target=v)
        dy = err * coef.unsqueeze(-1)
        sp = torch.addcmul(sig, sig, h - a)  # silu'(h)
        gz = torch.bmm(dy, w2t.transpose(1, 2))  # (B', n, Hm)
        dh = gz * sp
        ctx.save_for_backward(w1, w2t, k, coef, h, sig, a, sp, err, dy, gz, dh)
        return torch.stack([torch.bmm(dh.transpose(1, 2), k), torch.bmm(a.transpose(1, 2), dy)], 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w1, w2t, k, coef, h, sig, a, sp, err, dy, gz, dh = ctx.saved_tensors
        s = w1.shape[1] ** -0.5
        g1, g2 = g.unbind(1)  # (B', Hm, D) each
        g_dh = torch.bmm(k, g1.transpose(1, 2))  # (B', n, Hm)
        g_gz = g_dh * sp
        g_dy = torch.baddbmm(torch.bmm(a, g2), g_gz, w2t)  # (B', n, D)
        g_err = g_dy * coef.unsqueeze(-1)
        g_coef = (g_dy * err).sum(-1)
        g_a = torch.baddbmm(torch.bmm(dy, g2.transpose(1, 2)), g_err, w2t.transpose(1, 2), alpha=s)
        # silu''(h) = sig (1 - sig)(1 + h - a) + sig (1 - sp) = sp (1 - sig) + sig (1 - sp)
        d2 = torch.addcmul(sig, sp, 1 - 2 * sig)
        g_h = torch.addcmul(g_a * sp, g_dh * gz, d2)
        g_w1 = torch.bmm(g_h.transpose(1, 2), k)
        g_w2t = torch.baddbmm(torch.bmm(g_gz.transpose(1, 2), dy), a.transpose(1, 2), g_err, alpha=s)
        g_k = torch.baddbmm(torch.bmm(dh, g1), g_h, w1)
        return g_w1, g_w2t, g_k, -g_err, g_coef


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
    head layout qh, kh (B, Hh, T, D) and, for the slot memory (`full`), full width qf, kf (B, T, C) scaled
    by 1/sqrt(Hh); returns (qh, kh, qf, kf) or (qh, kh), separate tensors (outputs stacked and unbound
    would cost a stack of their gradients). Backward by hand: dx = r (g - y <g, y>) with
    r = 1/sqrt(|x|^2 + D eps) and g = dyh + dyf / sqrt(Hh): a handful of passes where autograd through
    rms_norm takes a dozen.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, q: torch.Tensor, k: torch.Tensor, heads: int, full: bool) -> tuple[torch.Tensor, ...]:
        B, T, C = q.shape
        D = C // heads
        eps = D * torch.finfo(q.dtype).eps
        outs, ys, rs = [], [], []
        for x in (q, k):
            x = x.view(B, T, heads, D)
            r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().add_(eps).rsqrt_()  # (B, T, Hh, 1)
            yh = q.new_empty(B, heads, T, D)
            torch.mul(x, r, out=yh.permute(0, 2, 1, 3))
            outs.append(yh)
            ys.append(yh)
            rs.append(r)
        if full:
            for x, r in zip((q, k), rs):
                outs.append(torch.mul(x.view(B, T, heads, D), r * heads**-0.5).view(B, T, C))
        ctx.heads, ctx.full = heads, full
        ctx.save_for_backward(*ys, *rs)
        return tuple(outs)

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        *ys, rq, rk = ctx.saved_tensors
        B, Hh, T, D = ys[0].shape
        out = []
        for i, r in enumerate((rq, rk)):
            y = ys[i].permute(0, 2, 1, 3)  # (B, T, Hh, D) views
            gh = grads[i].permute(0, 2, 1, 3)
            if ctx.full:  # g / c with c = 1/sqrt(Hh), built in (B, T, Hh, D) order so dx needs no copy
                g = torch.add(grads[2 + i].reshape(B, T, Hh, D), gh, alpha=Hh**0.5)
                r = r * Hh**-0.5
            else:
                g = gh
            dot = (g * y).sum(-1, keepdim=True)  # (B, T, Hh, 1)
            out.append(torch.addcmul(g, y, dot, value=-1.0).mul_(r).reshape(B, T, Hh * D))
        return out[0], out[1], None, None


def _mlp_unscaled(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sqrt(Hm) M(x) = silu(x W1^T) W2^T: w (B', 2, Hm, D), x (B', N, D) -> (B', N, D)."""
    w1, w2t = w.unbind(1)
    return torch.bmm(F.silu(torch.bmm(x, w1.transpose(1, 2))), w2t)


def _plain_dtypes(*xs: torch.Tensor) -> bool:
    """All of xs share one dtype and no autocast is on: a hand-written backward can take them as they are."""
    return len({x.dtype for x in xs}) == 1 and not torch.is_autocast_enabled(xs[0].device.type)
