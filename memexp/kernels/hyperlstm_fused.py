"""HyperLSTM layer scans in PyTorch: the autograd reference and the hand-written BPTT.

Every scan runs one layer of `memexp.models.hyperlstm.HyperLSTMCell` over T steps from the
input terms the cell precomputed for the whole sequence, and returns
(hs (T, B, H), h, c, hh, hc). The arguments are documented once, on `_scan`:

- `_scan`: the reference, a plain loop differentiated by autograd (step_impl="python").
- `_fused_scan` / `_fused_scripted_scan` (`_FusedScan`): the same numbers; the forward loop
  runs without autograd and keeps what the backward needs, the backward loop carries only
  the gradients through time, and the weight gradients of all T steps are a few large
  matmuls. The loops run as Python (step_impl="fused") or TorchScript ("fused_script", and
  the fallback of "cpp" wherever the C++ loops of `hyperlstm_cpp` do not apply).

Shape legend as in memexp/models/hyperlstm.py: B batch, T time, H main units, N hyper
units, Z hyper embedding, G = 4 gates (i, j, f, o), P = PARTS * G scalings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

LN_EPS = 1e-3  # the reference's epsilon (inside the square root, as in F.layer_norm)
GATES = 4  # i (input gate), j (candidate), f (forget gate), o (output gate)
PARTS = 3  # what the hyper LSTM modulates: x (input term), h (recurrent term), b (bias)

LayerState = tuple[Tensor, Tensor, Tensor, Tensor]  # (h (B, H), c (B, H), hyper_h (B, N), hyper_c (B, N))
ScanResult = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # (hs (T, B, H), h, c, hh, hc)


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


def _fused_forward_step(xm_t: Tensor, xy_t: Tensor, mask_t: Tensor, has_mask: bool, ln: bool, h: Tensor,
                        c: Tensor, hh: Tensor, hc: Tensor, w_h: Tensor, w_hyper_h: Tensor, w_z: Tensor,
                        b_z: Tensor, w_d: Tensor, b_d: Tensor, gamma: Tensor, shift: Tensor, ln_c_w: Tensor,
                        ln_c_b: Tensor, hyper_gamma: Tensor, hyper_shift: Tensor, hyper_ln_c_w: Tensor,
                        hyper_ln_c_b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """One step of `_scan` without autograd: the new state and what the backward step needs.

    Without layer norm (ln=False) the LN arguments are ignored placeholders, and so are
    the LN entries of the saved list; without recurrent dropout mask_t is a placeholder.
    """
    G = 4
    eps = 1e-3
    B, H, N = h.shape[0], h.shape[1], hh.shape[1]
    P, Z = w_d.shape[0], w_d.shape[1]
    none = h.new_empty(0)
    hp = torch.mm(h, w_h)  # (B, G*H + G*N)
    hm = hp[:, : G * H].view(B, G, H).transpose(0, 1)  # (G, B, H)
    ay = torch.addmm(xy_t + hp[:, G * H :], hh, w_hyper_h).view(B, G, N)
    ny, my, ry, hcn, mhc, rhc, n, m, r, cn, mc, rc = none, none, none, none, none, none, none, none, none, none, none, none
    if ln:
        ny, my, ry = torch.native_layer_norm(ay, [N], None, None, eps)
        gy = torch.addcmul(hyper_shift, ny, hyper_gamma)
    else:
        gy = ay + hyper_shift
    sy = torch.sigmoid(gy)
    ggy = torch.tanh(gy[:, 1])
    hc_new = torch.addcmul(hc * sy[:, 2], sy[:, 0], ggy)
    if ln:
        hcn, mhc, rhc = torch.native_layer_norm(hc_new, [N], None, None, eps)
        tcy = torch.tanh(torch.addcmul(hyper_ln_c_b, hcn, hyper_ln_c_w))
    else:
        tcy = torch.tanh(hc_new)
    hh_new = tcy * sy[:, 3]
    zz = torch.addmm(b_z, hh_new, w_z).view(B, P, Z).transpose(0, 1)  # (P, B, Z)
    d = torch.baddbmm(b_d, zz, w_d)  # (P, B, H)
    a = torch.addcmul(torch.addcmul(d[2 * G :], d[:G], xm_t), d[G : 2 * G], hm)  # (G, B, H)
    if ln:
        n, m, r = torch.native_layer_norm(a, [H], None, None, eps)
        g = torch.addcmul(shift, n, gamma)
    else:
        g = a + shift
    s = torch.sigmoid(g)
    gj = torch.tanh(g[1])
    gjm = gj * mask_t if has_mask else gj
    c_new = torch.addcmul(c * s[2], s[0], gjm)
    if ln:
        cn, mc, rc = torch.native_layer_norm(c_new, [H], None, None, eps)
        tc = torch.tanh(torch.addcmul(ln_c_b, cn, ln_c_w))
    else:
        tc = torch.tanh(c_new)
    h_new = tc * s[3]
    saved = [hm, ay, ny, my, ry, sy, ggy, hcn, mhc, rhc, tcy, zz, d, a, n, m, r, s, gj, cn, mc, rc, tc]
    return h_new, c_new, hh_new, hc_new, saved


def _fused_backward_step(dh: Tensor, dc: Tensor, dhh: Tensor, dhc: Tensor, xm_t: Tensor, mask_t: Tensor,
                         has_mask: bool, ln: bool, c: Tensor, hc: Tensor, c_new: Tensor, hc_new: Tensor,
                         saved: list[Tensor], w_h_t: Tensor, w_hyper_h_t: Tensor, w_z_t: Tensor, w_d_t: Tensor,
                         gamma: Tensor, ln_c_w: Tensor, hyper_gamma: Tensor,
                         hyper_ln_c_w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """Gradients through one step, given those of its outputs (dh, dc, dhh, dhc).

    Returns the gradients of the previous state, and [dxm_t, dhp, dzz, dd, dg, dtc, dgy, dtcy]:
    the gradient of the step's input term and of the pre-activations whose products with
    the step's inputs make the weight gradients.
    """
    G = 4
    # the whole saved layout by name (the forward step's list), used or not
    hm, ay, ny, my, ry, sy, ggy = saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6]  # noqa: F841
    hcn, mhc, rhc, tcy, zz, d, a = saved[7], saved[8], saved[9], saved[10], saved[11], saved[12], saved[13]  # noqa: F841
    n, m, r, s, gj, cn, mc, rc, tc = saved[14], saved[15], saved[16], saved[17], saved[18], saved[19], saved[20], saved[21], saved[22]  # noqa: F841
    B, H, N = dh.shape[0], dh.shape[1], dhh.shape[1]
    P, Z = d.shape[0], zz.shape[2]
    only_input = [True, False, False]
    # main cell: h' = σ(o) tanh(LN(c')),  c' = σ(f) c + σ(i) mask ⊙ tanh(j)
    dtc = dh * s[3] * (1 - tc * tc)  # grad of the (LN'd) cell before tanh
    if ln:
        dc = dc + torch.ops.aten.native_layer_norm_backward(dtc, c_new, [H], mc, rc, ln_c_w, None, only_input)[0]
    else:
        dc = dc + dtc
    gjm = gj * mask_t if has_mask else gj
    dgj = dc * s[0] * (1 - gj * gj)
    if has_mask:
        dgj = dgj * mask_t
    sg = s * (1 - s)
    dg = torch.stack([dc * gjm * sg[0], dgj, dc * c * sg[2], dh * tc * sg[3]])  # (G, B, H) grad of the gates
    dc = dc * s[2]
    if ln:
        da = torch.ops.aten.native_layer_norm_backward(dg * gamma, a, [H], m, r, None, None, only_input)[0]
    else:
        da = dg
    dd = torch.cat([da * xm_t, da * hm, da])  # (P, B, H) grads of d_x, d_h and the additive term
    dxm_t = da * d[:G]
    dhm = (da * d[G : 2 * G]).transpose(0, 1).reshape(B, G * H)
    dzz = torch.bmm(dd, w_d_t)  # (P, B, Z)
    dhh = dhh + torch.mm(dzz.transpose(0, 1).reshape(B, P * Z), w_z_t)
    # hyper cell
    dtcy = dhh * sy[:, 3] * (1 - tcy * tcy)
    if ln:
        dhc = dhc + torch.ops.aten.native_layer_norm_backward(dtcy, hc_new, [N], mhc, rhc, hyper_ln_c_w, None,
                                                              only_input)[0]
    else:
        dhc = dhc + dtcy
    sgy = sy * (1 - sy)
    dgy = torch.stack([dhc * ggy * sgy[:, 0], dhc * sy[:, 0] * (1 - ggy * ggy), dhc * hc * sgy[:, 2],
                       dhh * tcy * sgy[:, 3]], 1)  # (B, G, N)
    dhc = dhc * sy[:, 2]
    if ln:
        day = torch.ops.aten.native_layer_norm_backward(dgy * hyper_gamma, ay, [N], my, ry, None, None,
                                                        only_input)[0]
    else:
        day = dgy
    dhp = torch.cat([dhm, day.reshape(B, G * N)], 1)  # (B, G*H + G*N)
    dh = torch.mm(dhp, w_h_t)
    dhh = torch.mm(dhp[:, G * H :], w_hyper_h_t)
    return dh, dc, dhh, dhc, [dxm_t, dhp, dzz, dd, dg, dtc, dgy, dtcy]


def _fused_forward_loop(xm: Tensor, xy: Tensor, mask: Tensor, has_mask: bool, ln: bool, h: Tensor, c: Tensor,
                        hh: Tensor, hc: Tensor, w_h: Tensor, w_hyper_h: Tensor, w_z: Tensor, b_z: Tensor,
                        w_d: Tensor, b_d: Tensor, gamma: Tensor, shift: Tensor, ln_c_w: Tensor, ln_c_b: Tensor,
                        hyper_gamma: Tensor, hyper_shift: Tensor, hyper_ln_c_w: Tensor, hyper_ln_c_b: Tensor
                        ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[list[Tensor]]]:
    """States after 0..T steps (lists of T+1) and the saved tensors of each step."""
    xms, xys = xm.unbind(0), xy.unbind(0)
    masks = mask.unbind(0) if has_mask else [mask for _ in range(xm.shape[0])]
    hs, cs, hhs, hcs = [h], [c], [hh], [hc]
    saved: list[list[Tensor]] = []
    for t in range(xm.shape[0]):
        h, c, hh, hc, sv = _fused_forward_step(xms[t], xys[t], masks[t], has_mask, ln, h, c, hh, hc, w_h,
                                               w_hyper_h, w_z, b_z, w_d, b_d, gamma, shift, ln_c_w, ln_c_b,
                                               hyper_gamma, hyper_shift, hyper_ln_c_w, hyper_ln_c_b)
        hs.append(h)
        cs.append(c)
        hhs.append(hh)
        hcs.append(hc)
        saved.append(sv)
    return hs, cs, hhs, hcs, saved


def _fused_backward_loop(d_hs: Tensor, dh: Tensor, dc: Tensor, dhh: Tensor, dhc: Tensor, xm: Tensor, mask: Tensor,
                         has_mask: bool, ln: bool, cs: list[Tensor], hcs: list[Tensor], saved: list[list[Tensor]],
                         w_h_t: Tensor, w_hyper_h_t: Tensor, w_z_t: Tensor, w_d_t: Tensor, gamma: Tensor,
                         ln_c_w: Tensor, hyper_gamma: Tensor, hyper_ln_c_w: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """BPTT from the last step to the first: gradients of the initial state and the stacked per-step grads."""
    T = xm.shape[0]
    xms, d_hss = xm.unbind(0), d_hs.unbind(0)
    masks = mask.unbind(0) if has_mask else [mask for _ in range(T)]
    per_step: list[list[Tensor]] = []
    for t in range(T - 1, -1, -1):
        dh = dh + d_hss[t]
        dh, dc, dhh, dhc, rest = _fused_backward_step(dh, dc, dhh, dhc, xms[t], masks[t], has_mask, ln, cs[t],
                                                      hcs[t], cs[t + 1], hcs[t + 1], saved[t], w_h_t,
                                                      w_hyper_h_t, w_z_t, w_d_t, gamma, ln_c_w, hyper_gamma,
                                                      hyper_ln_c_w)
        per_step.append(rest)
    per_step.reverse()
    stacked = [torch.stack([g[k] for g in per_step]) for k in range(len(per_step[0]))]
    return dh, dc, dhh, dhc, stacked


_scripted_loops: tuple[Callable[..., Any], Callable[..., Any]] | None = None  # compiled at first use


def _get_loops(script: bool) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The fused (forward, backward) loops, as TorchScript (no Python between ops) or plain Python."""
    global _scripted_loops
    if not script:
        return _fused_forward_loop, _fused_backward_loop
    if _scripted_loops is None:
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but still the cheapest op dispatch on CPU
                warnings.simplefilter("ignore")
                _scripted_loops = (torch.jit.script(_fused_forward_loop), torch.jit.script(_fused_backward_loop))
        except Exception:  # a torch without TorchScript: same loops, run by Python
            _scripted_loops = (_fused_forward_loop, _fused_backward_loop)
    return _scripted_loops


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
    def forward(ctx: Any, script: bool, xm: Tensor, xy: Tensor, mask: Tensor | None, h: Tensor, c: Tensor,
                hh: Tensor, hc: Tensor, w_h: Tensor, w_hyper_h: Tensor, w_z: Tensor, b_z: Tensor, w_d: Tensor,
                b_d: Tensor, gamma: Tensor | None, shift: Tensor, ln_c_w: Tensor | None,
                ln_c_b: Tensor | None, hyper_gamma: Tensor | None, hyper_shift: Tensor,
                hyper_ln_c_w: Tensor | None, hyper_ln_c_b: Tensor | None) -> ScanResult:
        fwd, _ = _get_loops(script)
        ln, has_mask = gamma is not None, mask is not None
        none = h.new_empty(0)
        opt = lambda t: none if t is None else t  # noqa: E731  (placeholders for the scripted loops)
        ln_args = [opt(x) for x in (gamma, ln_c_w, hyper_gamma, hyper_ln_c_w)]
        hs, cs, hhs, hcs, saved = fwd(xm, xy, opt(mask), has_mask, ln, h, c, hh, hc, w_h, w_hyper_h, w_z, b_z,
                                      w_d, b_d, ln_args[0], shift, ln_args[1], opt(ln_c_b), ln_args[2], hyper_shift,
                                      ln_args[3], opt(hyper_ln_c_b))
        ctx.script, ctx.ln, ctx.has_mask = script, ln, has_mask
        ctx.states, ctx.saved = (hs, cs, hhs, hcs), saved
        ctx.save_for_backward(xm, opt(mask), w_h, w_hyper_h, w_z, w_d, *ln_args)
        return torch.stack(hs[1:]), hs[-1].clone(), cs[-1].clone(), hhs[-1].clone(), hcs[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, d_hs: Tensor | None, dh: Tensor | None, dc: Tensor | None,
                 dhh: Tensor | None, dhc: Tensor | None) -> tuple[Tensor | None, ...]:
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
        dh, dc, dhh, dhc, stacked = bwd(d_hs, zero(dh, hs[0]), zero(dc, cs[0]), zero(dhh, hhs[0]), zero(dhc, hcs[0]),
                                        xm, mask, ctx.has_mask, ctx.ln, cs, hcs, saved, w_h_t, w_hyper_h_t, w_z_t,
                                        w_d_t, gamma, ln_c_w, hyper_gamma, hyper_ln_c_w)
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
        return (None, dxm, d_xy, None, dh, dc, dhh, dhc, g_w_h, g_w_hyper_h, g_w_z, g_b_z, g_w_d, g_b_d,
                g_gamma, g_shift, g_ln_c_w, g_ln_c_b, g_hyper_gamma, g_hyper_shift, g_hyper_ln_c_w, g_hyper_ln_c_b)


def _fused_scan(*args: Tensor | None) -> ScanResult:
    """`_scan`'s arguments and results; hand-written BPTT, loops in Python (step_impl="fused")."""
    return _FusedScan.apply(False, *args)


def _fused_scripted_scan(*args: Tensor | None) -> ScanResult:
    """`_scan`'s arguments and results; hand-written BPTT, loops in TorchScript (step_impl="fused_script")."""
    return _FusedScan.apply(True, *args)
