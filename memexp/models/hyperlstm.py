"""HyperLSTM (Ha, Dai, Le 2016): a small LSTM generates the weight scalings of the main LSTM.

Shape legend: B batch, T time (tokens in this call), I input width of a layer,
H main hidden units (`hidden_size`), N hyper units (`hyper_num_units`),
Z hyper embedding (`hyper_embedding_size`), V vocabulary, G = 4 gates (i, j, f, o).

One step of a layer (paper eq. 11-12, with the reference initialisation of
hardmaru/supercell):

    hyper:  (ĥ, ĉ) = LN-LSTM_N([x; h], (ĥ, ĉ))                    reads the main state
    for each gate y in (i, j, f, o):
        z_x = Wzx ĥ + bzx     z_h = Wzh ĥ + bzh     z_b = Wzb ĥ     (N -> Z)
        d_x = Wdx z_x         d_h = Wdh z_h         β   = Wdb z_b    (Z -> H)
        y   = LN_y(d_x ⊙ W_x x + d_h ⊙ W_h h + β + b)
    c' = σ(f + forget_bias) c + σ(i) dropout(tanh(j));   h' = σ(o) tanh(LN_c(c'))

Initial values: Wzx = Wzh = 0 with bias 1 and Wdx = Wdh = 0.1/Z, so every scaling d
starts at exactly 0.1 (Cooijmans' recurrent-norm init); Wzb ~ N(0, 0.01), Wdb = 0 and
b = 0, so the additive term starts at 0; W_h orthogonal per gate; W_x Glorot uniform.
The hyper cell is a layer-normed LSTM (plain when `use_layer_norm=False`) without
recurrent dropout, as in the reference.

Why the code looks the way it does: the time loop is sequential, so its cost is the
number of small ops per step, not FLOPs. Everything that does not depend on the
previous step is hoisted out of the loop: the input projections of the whole sequence
(main W_x x and the x-half of the hyper input) are one matmul; the main recurrent matmul
and the h-half of the hyper input are one (H, 4H + 4N) matmul; the 12 z-projections are
one (N, 12Z) matmul; the 12 d-projections are one batched matmul over a (12, Z, H)
stack; biases and the forget bias are folded into the LayerNorm shifts. The fused
step_impls then run the loop without autograd and differentiate it by hand: the
backward loop carries only the gradients through time and the weight gradients of all T
steps are a few large matmuls. The default on CPU ("auto" -> "cpp", `_CppScan`) runs
both loops in C++ (hyperlstm_ext.cpp, built at first use): per step every matmul goes
through a register-blocked small-batch GEMM (faster than at::mm at a dozen rows) and one
hand-written loop over (B, units) does everything element-wise (~1.7x faster than
TorchScript in experiments/bench_hyperlstm.py). Where it does not apply (no
compiler: one warning; GPU; other dtypes) "fused_script" runs: the same BPTT
(`_FusedScan`) as TorchScript loops (deprecated, but the cheapest op dispatch; Python if
unavailable). torch.compile of the per-step bodies was measured and gave no gain worth
its ~50 s compile on CPU, so it is not offered. "python" is the plain autograd loop
(reference).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memexp.errors import ConfigError

LN_EPS = 1e-3  # the reference's epsilon (inside the square root, as in F.layer_norm)
GATES = 4  # i (input gate), j (candidate), f (forget gate), o (output gate)
PARTS = 3  # what the hyper LSTM modulates: x (input term), h (recurrent term), b (bias)
STEP_IMPLS = ("auto", "cpp", "fused_script", "fused", "python")

LayerState = tuple[Tensor, Tensor, Tensor, Tensor]  # (h (B, H), c (B, H), hyper_h (B, N), hyper_c (B, N))


def _scan(
    xm: Tensor,  # (T, G, B, H) main input term W_x x of every step
    xy: Tensor,  # (T, B, G*N) hyper input term of every step (x-half of [x; h], plus bias)
    mask: Optional[Tensor],  # (T, B, H) recurrent dropout mask on the candidate (scaled), or None
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
    gamma: Optional[Tensor],  # (G, 1, H) gate LayerNorm gains, None without layer norm
    shift: Tensor,  # (G, 1, H) gate LayerNorm shifts (+ forget bias); without LN only the forget bias
    ln_c_w: Optional[Tensor],  # (H,)
    ln_c_b: Optional[Tensor],  # (H,)
    hyper_gamma: Optional[Tensor],  # (G, N)
    hyper_shift: Tensor,  # (G, N); without LN zeros (the hyper bias is already in xy)
    hyper_ln_c_w: Optional[Tensor],  # (N,)
    hyper_ln_c_b: Optional[Tensor],  # (N,)
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
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
    hm, ay, ny, my, ry, sy, ggy = saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6]
    hcn, mhc, rhc, tcy, zz, d, a = saved[7], saved[8], saved[9], saved[10], saved[11], saved[12], saved[13]
    n, m, r, s, gj, cn, mc, rc, tc = saved[14], saved[15], saved[16], saved[17], saved[18], saved[19], saved[20], saved[21], saved[22]
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


_scripted_loops = None


def _get_loops(script: bool):
    """The fused loops, as TorchScript (no Python between ops) or plain Python."""
    global _scripted_loops
    if not script:
        return _fused_forward_loop, _fused_backward_loop
    if _scripted_loops is None:
        import warnings

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
    def forward(ctx, script, xm, xy, mask, h, c, hh, hc, w_h, w_hyper_h, w_z, b_z, w_d, b_d, gamma, shift,
                ln_c_w, ln_c_b, hyper_gamma, hyper_shift, hyper_ln_c_w, hyper_ln_c_b):
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
    def backward(ctx, d_hs, dh, dc, dhh, dhc):
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


def _fused_scan(*args):
    return _FusedScan.apply(False, *args)


def _fused_scripted_scan(*args):
    return _FusedScan.apply(True, *args)


_cpp_ext = None  # the compiled module, False when it could not be built


def _load_cpp_ext():
    """Build (once; cached under ~/.cache/memexp/ext) and load the C++ loops, or None with a warning."""
    global _cpp_ext
    if _cpp_ext is None:
        try:
            import hashlib
            import os
            import platform
            from pathlib import Path

            from torch.utils.cpp_extension import load_inline

            source = (Path(__file__).with_name("hyperlstm_ext.cpp")).read_text()
            flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]  # -fopenmp: at::parallel_for is inline OpenMP
            # -march=native: the build is for this CPU, so the cache key names it
            cpu = platform.processor() + platform.machine()
            try:
                cpu += next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
            except (OSError, StopIteration):
                pass
            key = hashlib.sha1((source + " ".join(flags) + cpu + torch.__version__).encode()).hexdigest()[:12]
            build_dir = Path(os.environ.get("MEMEXP_EXT_DIR", Path.home() / ".cache" / "memexp" / "ext")) / key
            build_dir.mkdir(parents=True, exist_ok=True)
            _cpp_ext = load_inline(
                name=f"memexp_hyperlstm_{key}",
                cpp_sources=[source],
                functions=["hyperlstm_forward", "hyperlstm_backward"],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],  # torch's own libgomp.so.1 (same soname) serves it
                build_directory=str(build_dir),
                verbose=False,
            )
        except Exception as e:  # no compiler, no headers, ...: the TorchScript loops compute the same
            import warnings

            warnings.warn(f"HyperLSTM: the C++ loops could not be built ({type(e).__name__}: {e}); "
                          f"using step_impl='fused_script' instead", RuntimeWarning, stacklevel=3)
            _cpp_ext = False
    return _cpp_ext or None


class _CppScan(torch.autograd.Function):
    """`_scan` with both loops in C++ (hyperlstm_ext.cpp): per step only the matmuls go through ATen.

    Takes the input terms as one (T, B, 4H + 4N) tensor `xin` ([W_x x | hyper input]); the weight
    gradients of all steps are computed here from what the loops save, as in `_FusedScan`.
    """

    @staticmethod
    def forward(ctx, xin, mask, h, c, hh, hc, w_h, w_hyper_h, w_z, b_z, w_d, b_d, gamma, shift, ln_c_w, ln_c_b,
                hyper_gamma, hyper_shift, hyper_ln_c_w, hyper_ln_c_b):
        ext = _cpp_ext
        ln, has_mask = gamma is not None, mask is not None
        none = h.new_empty(0)
        opt = lambda t: none if t is None else t.contiguous()  # noqa: E731
        xin = xin.contiguous()
        w_h, w_hyper_h, w_z, w_d = w_h.contiguous(), w_hyper_h.contiguous(), w_z.contiguous(), w_d.contiguous()
        ln_args = [opt(x) for x in (gamma, ln_c_w, hyper_gamma, hyper_ln_c_w)]
        w_zy = torch.cat([w_z, w_hyper_h], 1)  # (N, P*Z + G*N): one matmul per step for both
        b_zy = torch.cat([b_z, b_z.new_zeros(w_hyper_h.shape[1])])
        saved = ext.hyperlstm_forward(xin, opt(mask), has_mask, ln, h.contiguous(), c.contiguous(),
                                      hh.contiguous(), hc.contiguous(), w_h, w_hyper_h, w_zy, b_zy,
                                      w_d, b_d.contiguous(), ln_args[0], shift.contiguous(), ln_args[1],
                                      opt(ln_c_b), ln_args[2], hyper_shift.contiguous(), ln_args[3],
                                      opt(hyper_ln_c_b))
        ctx.ln, ctx.has_mask, ctx.saved = ln, has_mask, saved
        ctx.save_for_backward(xin, opt(mask), w_h, w_hyper_h, w_z, w_d, *ln_args)
        h_all, c_all, hh_all, hc_all = saved[:4]
        return h_all[1:], h_all[-1].clone(), c_all[-1].clone(), hh_all[-1].clone(), hc_all[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_hs, dh, dc, dhh, dhc):
        xin, mask, w_h, w_hyper_h, w_z, w_d, gamma, ln_c_w, hyper_gamma, hyper_ln_c_w = ctx.saved_tensors
        saved = ctx.saved
        h_all, c_all, hh_all, hc_all, hp, zy, dxh, n, act, rstd, cn, rstd_c, tc, ny = saved[:14]
        hcn = saved[16]
        G, (T, B, _), H, N = GATES, xin.shape, h_all.shape[2], hh_all.shape[2]
        P, Z = w_d.shape[0], w_d.shape[1]
        zero = lambda x, like: torch.zeros_like(like) if x is None else x.contiguous()  # noqa: E731
        d_hs = torch.zeros(T, B, H, dtype=xin.dtype, device=xin.device) if d_hs is None else d_hs.contiguous()
        grads = _cpp_ext.hyperlstm_backward(
            d_hs, zero(dh, h_all[0]), zero(dc, c_all[0]), zero(dhh, hh_all[0]), zero(dhc, hc_all[0]), xin, mask,
            ctx.has_mask, ctx.ln, saved, w_h.t().contiguous(), w_hyper_h.t().contiguous(),
            torch.cat([w_z, w_hyper_h], 1).t().contiguous(),
            w_d.transpose(1, 2).contiguous(), gamma, ln_c_w, hyper_gamma, hyper_ln_c_w)
        dh, dc, dhh, dhc, dxin, dhp, dzz, dd, dg, dtc, dgy, dtcy = grads
        # weight gradients of all steps at once (rows = T*B)
        TB = T * B
        dhp = dhp.view(TB, -1)
        g_w_h = h_all[:-1].reshape(TB, H).t() @ dhp
        g_w_hyper_h = hh_all[:-1].reshape(TB, N).t() @ dhp[:, G * H :]
        dzz = dzz.view(TB, P * Z)
        g_w_z = hh_all[1:].reshape(TB, N).t() @ dzz
        g_b_z = dzz.sum(0)
        dd = dd.view(TB, P, H)
        zz = zy.view(TB, -1)[:, : P * Z].reshape(TB, P, Z)
        g_w_d = torch.bmm(zz.permute(1, 2, 0), dd.transpose(0, 1))  # (P, Z, H)
        g_b_d = dd.sum(0).unsqueeze(1)
        dg = dg.view(TB, G, H)
        g_shift = dg.sum(0).unsqueeze(1)
        dgy = dgy.view(TB, G, N)
        g_hyper_shift = dgy.sum(0)
        g_gamma = g_ln_c_w = g_ln_c_b = g_hyper_gamma = g_hyper_ln_c_w = g_hyper_ln_c_b = None
        if ctx.ln:
            dtc, dtcy = dtc.view(TB, H), dtcy.view(TB, N)
            g_gamma = (dg * n.view(TB, G, H)).sum(0).unsqueeze(1)
            g_ln_c_w = (dtc * cn.view(TB, H)).sum(0)
            g_ln_c_b = dtc.sum(0)
            g_hyper_gamma = (dgy * ny.view(TB, G, N)).sum(0)
            g_hyper_ln_c_w = (dtcy * hcn.view(TB, N)).sum(0)
            g_hyper_ln_c_b = dtcy.sum(0)
        del ctx.saved
        return (dxin, None, dh, dc, dhh, dhc, g_w_h, g_w_hyper_h, g_w_z, g_b_z, g_w_d, g_b_d, g_gamma, g_shift,
                g_ln_c_w, g_ln_c_b, g_hyper_gamma, g_hyper_shift, g_hyper_ln_c_w, g_hyper_ln_c_b)


def _orthogonal_per_gate_(w: Tensor) -> None:
    """w (rows, G*units): an independent orthogonal block for each gate (the reference's init)."""
    for block in w.chunk(GATES, dim=1):
        nn.init.orthogonal_(block)


class HyperLSTMCell(nn.Module):
    """One HyperLSTM layer: a main LSTM of `hidden_size` whose gate terms are scaled by a hyper LSTM.

    Args:
        input_size: width I of the input at each step.
        hidden_size: main LSTM units H.
        hyper_num_units: hyper LSTM units N.
        hyper_embedding_size: width Z of the hyper embeddings z.
        use_layer_norm: layer-normalise every gate and the cell (main and hyper LSTM).
        use_recurrent_dropout: dropout on the main candidate tanh(j) (Semeniuta et al.), training only.
        dropout_keep_prob: keep probability of the recurrent dropout.
        forget_bias: added to the forget gate before its sigmoid.
        step_impl: how the per-step loop runs: "auto" (= "cpp" where it applies), "cpp" (hand-written BPTT,
            loops in C++ built at first use; CPU float32/float64 only, else falls back to "fused_script"),
            "fused_script" (the same BPTT, loops in TorchScript), "fused" (loops in Python) or "python"
            (plain autograd).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        hyper_num_units: int = 128,
        hyper_embedding_size: int = 16,
        use_layer_norm: bool = True,
        use_recurrent_dropout: bool = False,
        dropout_keep_prob: float = 0.9,
        forget_bias: float = 1.0,
        step_impl: str = "auto",
    ):
        super().__init__()
        I, H, N, Z = input_size, hidden_size, hyper_num_units, hyper_embedding_size
        self.input_size, self.hidden_size, self.hyper_num_units, self.hyper_embedding_size = I, H, N, Z
        self.use_layer_norm = use_layer_norm
        self.use_recurrent_dropout = use_recurrent_dropout
        self.dropout_keep_prob = dropout_keep_prob
        self.forget_bias = forget_bias
        self.step_impl = step_impl

        # main LSTM
        self.weight_x = nn.Parameter(torch.empty(I, GATES * H))  # W_x, gate blocks i|j|f|o
        self.weight_h = nn.Parameter(torch.empty(H, GATES * H))  # W_h
        self.bias = nn.Parameter(torch.zeros(GATES * H))  # b (b0 of eq. 12)
        # hyper LSTM, input [x; h]
        self.hyper_weight_x = nn.Parameter(torch.empty(I + H, GATES * N))
        self.hyper_weight_h = nn.Parameter(torch.empty(N, GATES * N))
        # hyper -> z, column blocks (part, gate) in the order x_i x_j x_f x_o h_i .. h_o b_i .. b_o
        self.z_weight = nn.Parameter(torch.empty(N, PARTS * GATES * Z))
        self.z_bias = nn.Parameter(torch.ones(2 * GATES * Z))  # z_x and z_h only; z_b has no bias
        # z -> d (x, h parts: scalings) and z -> β (b part: additive term), one (Z, H) block each
        self.d_weight = nn.Parameter(torch.empty(PARTS * GATES, Z, H))
        if use_layer_norm:
            self.ln_gates_weight = nn.Parameter(torch.ones(GATES, H))
            self.ln_gates_bias = nn.Parameter(torch.zeros(GATES, H))
            self.ln_cell_weight = nn.Parameter(torch.ones(H))
            self.ln_cell_bias = nn.Parameter(torch.zeros(H))
            self.hyper_ln_gates_weight = nn.Parameter(torch.ones(GATES, N))
            self.hyper_ln_gates_bias = nn.Parameter(torch.zeros(GATES, N))
            self.hyper_ln_cell_weight = nn.Parameter(torch.ones(N))
            self.hyper_ln_cell_bias = nn.Parameter(torch.zeros(N))
        else:  # the reference's plain hyper LSTM has a bias; with LN the LN shift plays that role
            self.hyper_bias = nn.Parameter(torch.zeros(GATES * N))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        I, H, N, Z = self.input_size, self.hidden_size, self.hyper_num_units, self.hyper_embedding_size
        nn.init.xavier_uniform_(self.weight_x)
        _orthogonal_per_gate_(self.weight_h)
        self.bias.zero_()
        nn.init.xavier_uniform_(self.hyper_weight_x)
        _orthogonal_per_gate_(self.hyper_weight_h)
        self.z_weight.zero_()  # z_x, z_h: W = 0, bias 1 -> z = 1
        nn.init.normal_(self.z_weight[:, 2 * GATES * Z :], std=0.01)  # z_b ~ N(0, 0.01)
        self.z_bias.fill_(1.0)
        self.d_weight[: 2 * GATES].fill_(0.1 / Z)  # d = 0.1 at start
        self.d_weight[2 * GATES :].zero_()  # additive term starts at 0
        for name, p in self.named_parameters():
            if name.endswith("ln_gates_weight") or name.endswith("ln_cell_weight"):
                p.fill_(1.0)
            elif name.endswith("ln_gates_bias") or name.endswith("ln_cell_bias") or name == "hyper_bias":
                p.zero_()

    def zero_state(self, batch_size: int, device=None, dtype=None) -> LayerState:
        H, N = self.hidden_size, self.hyper_num_units
        dtype = dtype or self.weight_x.dtype
        device = device or self.weight_x.device
        return tuple(torch.zeros(batch_size, n, device=device, dtype=dtype) for n in (H, H, N, N))

    def _forget_shift(self, units: int) -> Tensor:
        """(G, units): forget_bias on the f gate, zero elsewhere."""
        s = torch.zeros(GATES, units, device=self.weight_x.device, dtype=self.weight_x.dtype)
        s[2] = self.forget_bias
        return s

    def forward(self, x: Tensor, state: Optional[LayerState] = None) -> tuple[Tensor, LayerState]:
        """x (B, T, I) -> hidden states (B, T, H) and the final state (h, c, hyper_h, hyper_c)."""
        B, T, I = x.shape
        H, N = self.hidden_size, self.hyper_num_units
        if state is None:
            state = self.zero_state(B, x.device, x.dtype)
        h, c, hh, hc = state
        ln = self.use_layer_norm

        # Input terms of the whole sequence in one matmul: [W_x x | x-half of the hyper input (+ bias)].
        w_in = torch.cat([self.weight_x, self.hyper_weight_x[:I]], dim=1)  # (I, G*H + G*N)
        hyper_in_bias = torch.zeros(GATES * N, device=x.device, dtype=x.dtype) if ln else self.hyper_bias
        if not ln:  # without LN the forget bias rides along with the input term
            hyper_in_bias = hyper_in_bias + self._forget_shift(N).flatten()
        b_in = torch.cat([torch.zeros(GATES * H, device=x.device, dtype=x.dtype), hyper_in_bias])
        xin = torch.addmm(b_in, x.transpose(0, 1).reshape(T * B, I), w_in).view(T, B, -1)  # time-major

        w_h = torch.cat([self.weight_h, self.hyper_weight_x[I:]], dim=1)  # (H, G*H + G*N)
        b_z = torch.cat([self.z_bias, self.z_bias.new_zeros(GATES * self.hyper_embedding_size)])
        b_d = torch.cat([self.bias.new_zeros(2 * GATES, 1, H), self.bias.view(GATES, 1, H)])  # (P*G, 1, H)
        if ln:
            gamma = self.ln_gates_weight.unsqueeze(1)  # (G, 1, H)
            shift = (self.ln_gates_bias + self._forget_shift(H)).unsqueeze(1)
            hyper_gamma, hyper_shift = self.hyper_ln_gates_weight, self.hyper_ln_gates_bias + self._forget_shift(N)
            ln_c = (self.ln_cell_weight, self.ln_cell_bias, self.hyper_ln_cell_weight, self.hyper_ln_cell_bias)
        else:
            gamma, shift = None, self._forget_shift(H).unsqueeze(1)
            hyper_gamma, hyper_shift = None, torch.zeros_like(self._forget_shift(N))
            ln_c = (None, None, None, None)

        mask = None
        if self.use_recurrent_dropout and self.training and self.dropout_keep_prob < 1.0:
            keep = self.dropout_keep_prob
            mask = torch.bernoulli(torch.full((T, B, H), keep, device=x.device, dtype=x.dtype)) / keep

        weights = (w_h, self.hyper_weight_h, self.z_weight, b_z, self.d_weight, b_d, gamma, shift, ln_c[0], ln_c[1],
                   hyper_gamma, hyper_shift, ln_c[2], ln_c[3])
        if self._uses_cpp(x):
            hs, h, c, hh, hc = _CppScan.apply(xin, mask, h, c, hh, hc, *weights)
        else:
            xm = xin[..., : GATES * H].reshape(T, B, GATES, H).transpose(1, 2).contiguous()  # (T, G, B, H)
            xy = xin[..., GATES * H :]  # (T, B, G*N)
            hs, h, c, hh, hc = self._scan_fn()(xm, xy, mask, h, c, hh, hc, *weights)
        return hs.transpose(0, 1), (h, c, hh, hc)

    def _uses_cpp(self, x: Tensor) -> bool:
        """C++ loops for "cpp"/"auto" on CPU float32/float64, when they build; else the TorchScript loops."""
        return (self.step_impl in ("auto", "cpp") and x.device.type == "cpu"
                and x.dtype in (torch.float32, torch.float64) and _load_cpp_ext() is not None)

    def _scan_fn(self):
        if self.step_impl == "fused":
            return _fused_scan
        if self.step_impl == "python":
            return _scan
        return _fused_scripted_scan  # "fused_script", and "auto"/"cpp" where the C++ loops do not apply


class HyperLSTM(nn.Module):
    """Character/byte-level causal LM: embedding -> stacked HyperLSTM layers -> Linear head.

    Args:
        vocab_size: tokens in the vocabulary (set from the data).
        embedding_size: width of the token embedding fed to the first layer.
        hidden_size: main LSTM units per layer.
        num_layers: stacked HyperLSTM layers, each with its own hyper LSTM.
        hyper_num_units: units of each hyper LSTM (paper: 128 on PTB, 256 on enwik8).
        hyper_embedding_size: width of the hyper embeddings z (paper: 4, or 16 "large embedding").
        use_layer_norm: layer norm on gates and cells of main and hyper LSTMs.
        use_recurrent_dropout: dropout on the candidate tanh(j) of the main LSTMs, training only.
        dropout_keep_prob: keep probability of that recurrent dropout (the paper's convention).
        dropout: dropout probability on the outputs of every layer but the last.
        forget_bias: added to the forget gates before their sigmoid.
        step_impl: per-step loop: "auto" (default: "cpp" on CPU when the C++ loops build, else
            "fused_script"), "cpp" (hand-written BPTT in C++), "fused_script" (the same in TorchScript),
            "fused" (in Python) or "python" (plain autograd).
    """

    task_kind = "causal_lm"
    carries_state = True  # the recurrent state may be carried across training windows (TBPTT)
    max_len = None  # unbounded context

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int = 64,
        hidden_size: int = 352,
        num_layers: int = 1,
        hyper_num_units: int = 128,
        hyper_embedding_size: int = 16,
        use_layer_norm: bool = True,
        use_recurrent_dropout: bool = False,
        dropout_keep_prob: float = 0.9,
        dropout: float = 0.0,
        forget_bias: float = 1.0,
        step_impl: str = "auto",
    ):
        super().__init__()
        for field, value in (
            ("vocab_size", vocab_size),
            ("embedding_size", embedding_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("hyper_num_units", hyper_num_units),
            ("hyper_embedding_size", hyper_embedding_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{field}={value!r} must be a positive integer")
        if not 0.0 < dropout_keep_prob <= 1.0:
            raise ConfigError(
                f"model.dropout_keep_prob={dropout_keep_prob} must be in (0, 1]: it is the probability "
                f"of KEEPING a unit (0.9 drops 10%)"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} must be in [0, 1): it is the probability of dropping a unit")
        if not math.isfinite(forget_bias):
            raise ConfigError(f"model.forget_bias={forget_bias} must be a finite number (the reference uses 1.0)")
        if step_impl not in STEP_IMPLS:
            raise ConfigError(f"model.step_impl={step_impl!r} must be one of {', '.join(map(repr, STEP_IMPLS))}")
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.layers = nn.ModuleList(
            HyperLSTMCell(
                embedding_size if i == 0 else hidden_size,
                hidden_size,
                hyper_num_units=hyper_num_units,
                hyper_embedding_size=hyper_embedding_size,
                use_layer_norm=use_layer_norm,
                use_recurrent_dropout=use_recurrent_dropout,
                dropout_keep_prob=dropout_keep_prob,
                forget_bias=forget_bias,
                step_impl=step_impl,
            )
            for i in range(num_layers)
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: Tensor, state: Optional[tuple[LayerState, ...]] = None) -> tuple[Tensor, tuple[LayerState, ...]]:
        """idx (B, T) long -> logits (B, T, V) and the state after these T tokens (one 4-tuple per layer)."""
        x = self.embedding(idx)  # (B, T, E)
        new_state = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.drop(x)  # between layers only
            x, s = layer(x, None if state is None else state[i])  # (B, T, H)
            new_state.append(s)
        return self.head(x), tuple(new_state)  # (B, T, V)
