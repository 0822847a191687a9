"""HyperLSTM layer scans in PyTorch: the autograd reference and the hand-written BPTT.

Every scan runs one layer of `memexp.models.hyperlstm.HyperLSTMCell` over T steps from the
input terms the cell precomputed for the whole sequence, and returns
(hs (T, B, H), h, c, hh, hc). The arguments are documented once, on `_scan`:

- `_scan`: the reference, a plain loop differentiated by autograd (step_impl="python").
- `_fused_scan` / `_fused_scripted_scan` (`_FusedScan`): the same numbers; the forward loop
  runs without autograd and keeps what the backward needs, the backward loop carries only
  the gradients through time, and the weight gradients of all T steps are a few large
  matmuls. The step loops are `memexp.kernels.hyperlstm_fused`'s.

Shape legend as in memexp/models/hyperlstm.py: B batch, T time, H main units, N hyper
units, Z hyper embedding, G = 4 gates (i, j, f, o), P = PARTS * G scalings.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from memexp.kernels.hyperlstm_fused import GATES, ScanResult, _get_loops


def _scan(
    xm: Tensor,  # (T, G, B, H) main input term W_x x of every step
    xy: Tensor,  # (T, B, G*N) hyper input term of every step (x-half of [x; h], plus bias)
    mask: Tensor | None,  # (T, B, H) recurrent dropout mask on the candidate (scaled), or None
    h: Tensor,
    c: Tensor,
    hh: Tensor,
    hc: Tensor,
    w_h: Tensor,  # (H, G*H + G*N) [W_h of the main cell | h-half of the hyper input weights]
    w_hyper_h: Tensor,  # (N, G*N)
    w_z: Tensor,  # (N, PARTS*G*Z)
    b_z: Tensor,  # (PARTS*G*Z,) zero on the b part: z_b has no bias
    w_d: Tensor,  # (PARTS*G, Z, H)
    b_d: Tensor,  # (PARTS*G, 1, H) zero on the x and h parts, the main bias b on the b part
    gamma: Tensor | None,  # (G, 1, H) gate LayerNorm gains, None without layer norm
    shift: Tensor,  # (G, 1, H) gate LayerNorm shifts (+ forget bias); without LN only the forget bias
    ln_c_w: Tensor | None,  # (H,)
    ln_c_b: Tensor | None,  # (H,)
    hyper_gamma: Tensor | None,  # (G, N)
    hyper_shift: Tensor,  # (G, N); without LN zeros (the hyper bias is already in xy)
    hyper_ln_c_w: Tensor | None,  # (N,)
    hyper_ln_c_b: Tensor | None,  # (N,)
) -> ScanResult:
    """Run one layer over T steps from precomputed input terms; returns (hs (T, B, H), h, c, hh, hc)."""
    G = 4  # gates (TorchScript cannot read module globals)
    eps = 1e-3
    T = xm.shape[0]
    B = h.shape[0]
    H = h.shape[1]
    N = hh.shape[1]
    P = w_d.shape[0]
    Z = w_d.shape[1]
    # unbind once: indexing xm[t] inside the loop would make backward scatter each step's
    # gradient into a zero tensor of the full sequence (O(T^2) memory traffic)
    xms = xm.unbind(0)
    xys = xy.unbind(0)
    masks: list[Tensor] = [] if mask is None else mask.unbind(0)
    outs: list[Tensor] = []
    for t in range(T):
        # --- hyper LSTM on [x_t; h_{t-1}] ---
        hp = torch.mm(h, w_h)  # (B, G*H + G*N)
        hm = hp[:, : G * H].view(B, G, H).transpose(0, 1)  # (G, B, H)  W_h h
        gy = torch.addmm(xys[t] + hp[:, G * H :], hh, w_hyper_h).view(B, G, N)  # (B, G, N)
        if hyper_gamma is not None:
            gy = torch.addcmul(hyper_shift, F.layer_norm(gy, (N,), eps=eps), hyper_gamma)
        else:
            gy = gy + hyper_shift
        sy = torch.sigmoid(gy)
        hc = torch.addcmul(hc * sy[:, 2], sy[:, 0], torch.tanh(gy[:, 1]))
        if hyper_ln_c_w is not None:
            hh = torch.tanh(F.layer_norm(hc, (N,), hyper_ln_c_w, hyper_ln_c_b, eps)) * sy[:, 3]
        else:
            hh = torch.tanh(hc) * sy[:, 3]
        # --- scalings d (x, h parts) and additive term (b part) for all gates at once ---
        z = torch.addmm(b_z, hh, w_z).view(B, P, Z).transpose(0, 1)  # (P*G, B, Z)
        d = torch.baddbmm(b_d, z, w_d)  # (P*G, B, H)
        y = torch.addcmul(d[2 * G :], d[:G], xms[t])  # (G, B, H)
        y = torch.addcmul(y, d[G : 2 * G], hm)
        if gamma is not None:
            y = torch.addcmul(shift, F.layer_norm(y, (H,), eps=eps), gamma)
        else:
            y = y + shift
        s = torch.sigmoid(y)
        g = torch.tanh(y[1])
        if mask is not None:
            g = g * masks[t]
        c = torch.addcmul(c * s[2], s[0], g)
        if ln_c_w is not None:
            h = torch.tanh(F.layer_norm(c, (H,), ln_c_w, ln_c_b, eps)) * s[3]
        else:
            h = torch.tanh(c) * s[3]
        outs.append(h)
    return torch.stack(outs), h, c, hh, hc


class _FusedScan(torch.autograd.Function):
    """`_scan` with a hand-written backward (BPTT): same arguments, same numbers.

    Why: under autograd every small op of every step becomes a graph node, and each
    step's weight gradient (an outer product with only B rows) is computed and summed
    into the full weight separately, T times. Here the forward runs without autograd
    and keeps what backward needs; the backward loop computes only the gradients that
    flow through time, and the weight gradients of all steps are then a few large
    matmuls over T*B rows.
    """

    @staticmethod
    def forward(
        ctx: Any,
        script: bool,
        xm: Tensor,
        xy: Tensor,
        mask: Tensor | None,
        h: Tensor,
        c: Tensor,
        hh: Tensor,
        hc: Tensor,
        w_h: Tensor,
        w_hyper_h: Tensor,
        w_z: Tensor,
        b_z: Tensor,
        w_d: Tensor,
        b_d: Tensor,
        gamma: Tensor | None,
        shift: Tensor,
        ln_c_w: Tensor | None,
        ln_c_b: Tensor | None,
        hyper_gamma: Tensor | None,
        hyper_shift: Tensor,
        hyper_ln_c_w: Tensor | None,
        hyper_ln_c_b: Tensor | None,
    ) -> ScanResult:
        fwd, _ = _get_loops(script)
        ln, has_mask = gamma is not None, mask is not None
        none = h.new_empty(0)
        opt = lambda t: none if t is None else t  # noqa: E731  (placeholders for the scripted loops)
        ln_args = [opt(x) for x in (gamma, ln_c_w, hyper_gamma, hyper_ln_c_w)]
        hs, cs, hhs, hcs, saved = fwd(
            xm,
            xy,
            opt(mask),
            has_mask,
            ln,
            h,
            c,
            hh,
            hc,
            w_h,
            w_hyper_h,
            w_z,
            b_z,
            w_d,
            b_d,
            ln_args[0],
            shift,
            ln_args[1],
            opt(ln_c_b),
            ln_args[2],
            hyper_shift,
            ln_args[3],
            opt(hyper_ln_c_b),
        )
        ctx.script, ctx.ln, ctx.has_mask = script, ln, has_mask
        ctx.states, ctx.saved = (hs, cs, hhs, hcs), saved
        ctx.save_for_backward(xm, opt(mask), w_h, w_hyper_h, w_z, w_d, *ln_args)
        return torch.stack(hs[1:]), hs[-1].clone(), cs[-1].clone(), hhs[-1].clone(), hcs[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, d_hs: Tensor | None, dh: Tensor | None, dc: Tensor | None, dhh: Tensor | None, dhc: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        # One function on purpose: a hand-written backward that mirrors the forward step by step, in the same order.
        xm, mask, w_h, w_hyper_h, w_z, w_d, gamma, ln_c_w, hyper_gamma, hyper_ln_c_w = ctx.saved_tensors
        _, bwd = _get_loops(ctx.script)
        (hs, cs, hhs, hcs), saved = ctx.states, ctx.saved
        G = GATES
        T, (B, H), N = xm.shape[0], hs[0].shape, hhs[0].shape[1]
        P, Z = w_d.shape[0], w_d.shape[1]
        zero = lambda x, like: torch.zeros_like(like) if x is None else x  # noqa: E731
        d_hs = torch.zeros(T, B, H, dtype=xm.dtype, device=xm.device) if d_hs is None else d_hs
        # transposed weights made contiguous once: the per-step matmuls run faster on them
        w_h_t, w_hyper_h_t = w_h.t().contiguous(), w_hyper_h.t().contiguous()
        w_z_t, w_d_t = w_z.t().contiguous(), w_d.transpose(1, 2).contiguous()
        dh, dc, dhh, dhc, stacked = bwd(
            d_hs,
            zero(dh, hs[0]),
            zero(dc, cs[0]),
            zero(dhh, hhs[0]),
            zero(dhc, hcs[0]),
            xm,
            mask,
            ctx.has_mask,
            ctx.ln,
            cs,
            hcs,
            saved,
            w_h_t,
            w_hyper_h_t,
            w_z_t,
            w_d_t,
            gamma,
            ln_c_w,
            hyper_gamma,
            hyper_ln_c_w,
        )
        dxm, dhp, dzz, dd, dg, dtc, dgy, dtcy = stacked
        # weight gradients of all steps at once (rows = T*B)
        h_prev = torch.stack(hs[:-1]).reshape(T * B, H)
        hh_prev = torch.stack(hhs[:-1]).reshape(T * B, N)
        hh_new = torch.stack(hhs[1:]).reshape(T * B, N)
        dhp = dhp.reshape(T * B, -1)
        g_w_h = h_prev.t() @ dhp
        g_w_hyper_h = hh_prev.t() @ dhp[:, G * H :]
        g_w_z = hh_new.t() @ dzz.transpose(1, 2).reshape(T * B, P * Z)  # dzz (T, P, B, Z)
        g_b_z = dzz.sum(0).sum(1).reshape(P * Z)
        zz = torch.stack([sv[11] for sv in saved])  # (T, P, B, Z)
        g_w_d = torch.bmm(zz.permute(1, 3, 0, 2).reshape(P, Z, T * B), dd.transpose(0, 1).reshape(P, T * B, H))
        g_b_d = dd.sum(0).sum(1).unsqueeze(1)
        g_shift = dg.sum(0).sum(1).unsqueeze(1)  # dg (T, G, B, H)
        g_hyper_shift = dgy.sum(0).sum(0)  # dgy (T, B, G, N)
        g_gamma = g_ln_c_w = g_ln_c_b = g_hyper_gamma = g_hyper_ln_c_w = g_hyper_ln_c_b = None
        if ctx.ln:
            g_gamma = (dg * torch.stack([sv[14] for sv in saved])).sum(0).sum(1).unsqueeze(1)
            g_ln_c_w = (dtc * torch.stack([sv[19] for sv in saved])).sum(0).sum(0)
            g_ln_c_b = dtc.sum(0).sum(0)
            g_hyper_gamma = (dgy * torch.stack([sv[2] for sv in saved])).sum(0).sum(0)
            g_hyper_ln_c_w = (dtcy * torch.stack([sv[7] for sv in saved])).sum(0).sum(0)
            g_hyper_ln_c_b = dtcy.sum(0).sum(0)
        d_xy = dhp.view(T, B, -1)[:, :, G * H :]
        del ctx.states, ctx.saved
        return (
            None,
            dxm,
            d_xy,
            None,
            dh,
            dc,
            dhh,
            dhc,
            g_w_h,
            g_w_hyper_h,
            g_w_z,
            g_b_z,
            g_w_d,
            g_b_d,
            g_gamma,
            g_shift,
            g_ln_c_w,
            g_ln_c_b,
            g_hyper_gamma,
            g_hyper_shift,
            g_hyper_ln_c_w,
            g_hyper_ln_c_b,
        )


def _fused_scan(*args: Tensor | None) -> ScanResult:
    """`_scan`'s arguments and results; hand-written BPTT, loops in Python (step_impl="fused")."""
    return _FusedScan.apply(False, *args)


def _fused_scripted_scan(*args: Tensor | None) -> ScanResult:
    """`_scan`'s arguments and results; hand-written BPTT, loops in TorchScript (step_impl="fused_script")."""
    return _FusedScan.apply(True, *args)
