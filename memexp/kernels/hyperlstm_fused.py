"""HyperLSTM fused step loops: one step forward without autograd, one step backward by hand.

`_FusedScan` (memexp.kernels.hyperlstm_scan) runs these over T steps: the forward loop keeps
what the backward needs, the backward loop carries only the gradients through time. They run
as Python (step_impl="fused") or TorchScript (`_get_loops(script=True)`: "fused_script", and
the fallback of "cpp" wherever the C++ loops of `hyperlstm_cpp` do not apply). The arguments
are documented once, on `hyperlstm_scan._scan`. Forward and backward step sit side by side
here because each backward line undoes a forward line.

Shape legend as in memexp/models/hyperlstm.py: B batch, T time, H main units, N hyper
units, Z hyper embedding, G = 4 gates (i, j, f, o), P = PARTS * G scalings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

LN_EPS = 1e-3  # the reference's epsilon (inside the square root, as in F.layer_norm)
GATES = 4  # i (input gate), j (candidate), f (forget gate), o (output gate)
PARTS = 3  # what the hyper LSTM modulates: x (input term), h (recurrent term), b (bias)

LayerState = tuple[Tensor, Tensor, Tensor, Tensor]  # (h (B, H), c (B, H), hyper_h (B, N), hyper_c (B, N))
ScanResult = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # (hs (T, B, H), h, c, hh, hc)


def _fused_forward_step(
    xm_t: Tensor,
    xy_t: Tensor,
    mask_t: Tensor,
    has_mask: bool,
    ln: bool,
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
    gamma: Tensor,
    shift: Tensor,
    ln_c_w: Tensor,
    ln_c_b: Tensor,
    hyper_gamma: Tensor,
    hyper_shift: Tensor,
    hyper_ln_c_w: Tensor,
    hyper_ln_c_b: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
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


def _fused_backward_step(
    dh: Tensor,
    dc: Tensor,
    dhh: Tensor,
    dhc: Tensor,
    xm_t: Tensor,
    mask_t: Tensor,
    has_mask: bool,
    ln: bool,
    c: Tensor,
    hc: Tensor,
    c_new: Tensor,
    hc_new: Tensor,
    saved: list[Tensor],
    w_h_t: Tensor,
    w_hyper_h_t: Tensor,
    w_z_t: Tensor,
    w_d_t: Tensor,
    gamma: Tensor,
    ln_c_w: Tensor,
    hyper_gamma: Tensor,
    hyper_ln_c_w: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """Gradients through one step, given those of its outputs (dh, dc, dhh, dhc).

    Returns the gradients of the previous state, and [dxm_t, dhp, dzz, dd, dg, dtc, dgy, dtcy]:
    the gradient of the step's input term and of the pre-activations whose products with
    the step's inputs make the weight gradients.
    """
    G = 4
    # the whole saved layout by name (the forward step's list), used or not
    hm, ay, ny, my, ry, sy, ggy = saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6]  # noqa: F841
    hcn, mhc, rhc, tcy, zz, d, a = saved[7], saved[8], saved[9], saved[10], saved[11], saved[12], saved[13]  # noqa: F841
    n, m, r, s, gj, cn, mc, rc, tc = saved[14], saved[15], saved[16], saved[17], saved[18], saved[19], saved[20], saved[21], saved[22]  # fmt: skip # noqa: F841, E501
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
        dhc = dhc + torch.ops.aten.native_layer_norm_backward(dtcy, hc_new, [N], mhc, rhc, hyper_ln_c_w, None, only_input)[0]
    else:
        dhc = dhc + dtcy
    sgy = sy * (1 - sy)
    dgy = torch.stack(
        [dhc * ggy * sgy[:, 0], dhc * sy[:, 0] * (1 - ggy * ggy), dhc * hc * sgy[:, 2], dhh * tcy * sgy[:, 3]], 1
    )  # (B, G, N)
    dhc = dhc * sy[:, 2]
    if ln:
        day = torch.ops.aten.native_layer_norm_backward(dgy * hyper_gamma, ay, [N], my, ry, None, None, only_input)[0]
    else:
        day = dgy
    dhp = torch.cat([dhm, day.reshape(B, G * N)], 1)  # (B, G*H + G*N)
    dh = torch.mm(dhp, w_h_t)
    dhh = torch.mm(dhp[:, G * H :], w_hyper_h_t)
    return dh, dc, dhh, dhc, [dxm_t, dhp, dzz, dd, dg, dtc, dgy, dtcy]


def _fused_forward_loop(
    xm: Tensor,
    xy: Tensor,
    mask: Tensor,
    has_mask: bool,
    ln: bool,
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
    gamma: Tensor,
    shift: Tensor,
    ln_c_w: Tensor,
    ln_c_b: Tensor,
    hyper_gamma: Tensor,
    hyper_shift: Tensor,
    hyper_ln_c_w: Tensor,
    hyper_ln_c_b: Tensor,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[list[Tensor]]]:
    """States after 0..T steps (lists of T+1) and the saved tensors of each step."""
    xms, xys = xm.unbind(0), xy.unbind(0)
    masks = mask.unbind(0) if has_mask else [mask for _ in range(xm.shape[0])]
    hs, cs, hhs, hcs = [h], [c], [hh], [hc]
    saved: list[list[Tensor]] = []
    for t in range(xm.shape[0]):
        h, c, hh, hc, sv = _fused_forward_step(
            xms[t],
            xys[t],
            masks[t],
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
            gamma,
            shift,
            ln_c_w,
            ln_c_b,
            hyper_gamma,
            hyper_shift,
            hyper_ln_c_w,
            hyper_ln_c_b,
        )
        hs.append(h)
        cs.append(c)
        hhs.append(hh)
        hcs.append(hc)
        saved.append(sv)
    return hs, cs, hhs, hcs, saved


def _fused_backward_loop(
    d_hs: Tensor,
    dh: Tensor,
    dc: Tensor,
    dhh: Tensor,
    dhc: Tensor,
    xm: Tensor,
    mask: Tensor,
    has_mask: bool,
    ln: bool,
    cs: list[Tensor],
    hcs: list[Tensor],
    saved: list[list[Tensor]],
    w_h_t: Tensor,
    w_hyper_h_t: Tensor,
    w_z_t: Tensor,
    w_d_t: Tensor,
    gamma: Tensor,
    ln_c_w: Tensor,
    hyper_gamma: Tensor,
    hyper_ln_c_w: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """BPTT from the last step to the first: gradients of the initial state and the stacked per-step grads."""
    T = xm.shape[0]
    xms, d_hss = xm.unbind(0), d_hs.unbind(0)
    masks = mask.unbind(0) if has_mask else [mask for _ in range(T)]
    per_step: list[list[Tensor]] = []
    for t in range(T - 1, -1, -1):
        dh = dh + d_hss[t]
        dh, dc, dhh, dhc, rest = _fused_backward_step(
            dh,
            dc,
            dhh,
            dhc,
            xms[t],
            masks[t],
            has_mask,
            ln,
            cs[t],
            hcs[t],
            cs[t + 1],
            hcs[t + 1],
            saved[t],
            w_h_t,
            w_hyper_h_t,
            w_z_t,
            w_d_t,
            gamma,
            ln_c_w,
            hyper_gamma,
            hyper_ln_c_w,
        )
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
