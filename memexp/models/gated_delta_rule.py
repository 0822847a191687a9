"""The gated delta rule, the core of Gated DeltaNet (memexp.models.gated_deltanet): the recurrence token by token,
and the same recurrence in chunks (the WY / UT form) with a hand-written backward.

Shape legend: B batch, T time, H heads, K key width per head, Dv value width per head, N chunks, L chunk length.

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T        o_t = S_t^T q_t      (S (K, Dv) per head)

The functions take q as it is (no scaling inside): the layer L2-normalises q and k and scales q by K^-0.5 first.
docs/gated_deltanet.md derives the chunked form and its backward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def gated_delta_rule_recurrent(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The recurrence token by token. q, k (B, H, T, K), v (B, H, T, Dv), g (B, H, T) log decay <= 0,
    beta (B, H, T) in (0, 1), state (B, H, K, Dv) or None (zeros) -> o (B, H, T, Dv), final state (B, H, K, Dv)."""
    B, H, T, K = k.shape
    S = k.new_zeros(B, H, K, v.shape[-1]) if state is None else state.to(k.dtype)
    decay, beta = g.exp()[..., None, None], beta[..., None, None]  # (B, H, T, 1, 1)
    q, k, v = q.unsqueeze(-2), k.unsqueeze(-2), v.unsqueeze(-2)  # (B, H, T, 1, .): rows
    outs = []
    for t in range(T):
        kt = k[:, :, t]  # (B, H, 1, K)
        S = S * decay[:, :, t]
        u = beta[:, :, t] * (v[:, :, t] - kt @ S)  # (B, H, 1, Dv): the delta rule's correction of the value read at k
        S = S + kt.transpose(-1, -2) @ u  # + k u^T
        outs.append(q[:, :, t] @ S)  # (B, H, 1, Dv)
    return (outs[0] if T == 1 else torch.cat(outs, dim=2)), S


def _unit_lower_inverse(A: Tensor) -> Tensor:
    """(I + A)^-1 for strictly lower triangular A (..., L, L)."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return torch.linalg.solve_triangular(A + eye, eye.expand_as(A), upper=False, unitriangular=True)


class _ChunkedRule(torch.autograd.Function):
    """The chunked gated delta rule with a hand-written backward (autograd through the chunk terms and the
    triangular solve cost 3x the forward on a CPU: many (L, L) temporaries and a per-matrix solve; this backward is
    a dozen batched matmuls). Inputs already in chunks: q, k (B, H, N, L, K), v (B, H, N, L, Dv), g, beta
    (B, H, N, L), S0 (B, H, K, Dv) -> o (B, H, N, L, Dv), final state. docs/gated_deltanet.md derives the terms;
    tests/test_gated_deltanet.py checks the gradients against autograd through `_chunked_autograd`."""

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, S0: Tensor
    ) -> tuple[Tensor, Tensor]:
        gamma = g.cumsum(-1)  # (B, H, N, L) cumulative log decay within the chunk
        L = k.shape[-2]
        incl = torch.ones(L, L, dtype=torch.bool, device=k.device).tril()
        D = (gamma.unsqueeze(-1) - gamma.unsqueeze(-2)).masked_fill_(~incl, float("-inf")).exp_()  # exp(g_i - g_j)
        KK = k @ k.transpose(-1, -2)
        A = (KK * D).mul_(beta.unsqueeze(-1)).tril_(-1)  # beta_i (k_i . k_j) D_ij, j < i
        Tinv = _unit_lower_inverse(A)
        eg = gamma.exp()
        R = beta.unsqueeze(-1) * torch.cat([v, eg.unsqueeze(-1) * k], dim=-1)  # (B, H, N, L, Dv + K)
        Wall = Tinv @ R
        Wv, Wk = Wall.split([v.shape[-1], k.shape[-1]], dim=-1)
        ekte = (gamma[..., -1:] - gamma).exp()
        kte, eL = k * ekte.unsqueeze(-1), eg[..., -1]
        S, starts, Ws = S0, [], []
        for Wv_n, Wk_n, kte_n, eL_n in zip(Wv.unbind(2), Wk.unbind(2), kte.unbind(2), eL.unbind(2)):
            starts.append(S)
            W = Wv_n - Wk_n @ S  # (B, H, L, Dv): the chunk's corrected values
            Ws.append(W)
            S = eL_n[..., None, None] * S + kte_n.transpose(-1, -2) @ W
        Sn, W = torch.stack(starts, dim=2), torch.stack(Ws, dim=2)  # (B, H, N, K, Dv), (B, H, N, L, Dv)
        qd = q * eg.unsqueeze(-1)
        P = (q @ k.transpose(-1, -2)).mul_(D)  # D is 0 above the diagonal
        o = qd @ Sn + P @ W
        ctx.save_for_backward(q, k, v, beta, D, KK, A, Tinv, eg, Wall, ekte, kte, Sn, W, qd, P)
        return o, S

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dO: Tensor | None, dS_final: Tensor | None) -> tuple[Tensor, ...]:  # noqa: D102
        q, k, v, beta, D, KK, A, Tinv, eg, Wall, ekte, kte, Sn, W, qd, P = ctx.saved_tensors
        dS = torch.zeros_like(Sn[:, :, 0]) if dS_final is None else dS_final
        dO = torch.zeros_like(W) if dO is None else dO
        PtdO, QtdO = P.transpose(-1, -2) @ dO, qd.transpose(-1, -2) @ dO
        eL, Wk = eg[..., -1], Wall[..., v.shape[-1] :]
        dWs, dSnext = [], []
        for n in reversed(range(W.shape[2])):  # back through the chunks: dS is the gradient of the state after n
            dSnext.append(dS)
            dW_n = PtdO[:, :, n] + kte[:, :, n] @ dS
            dWs.append(dW_n)
            dS = QtdO[:, :, n] + eL[:, :, n, None, None] * dS - Wk[:, :, n].transpose(-1, -2) @ dW_n
        dW, dSn = torch.stack(dWs[::-1], dim=2), torch.stack(dSnext[::-1], dim=2)
        grads = _ChunkedRule._input_grads(ctx.saved_tensors, dO, dW, dSn)
        return (*grads, dS)

    @staticmethod
    def _input_grads(saved: tuple[Tensor, ...], dO: Tensor, dW: Tensor, dSn: Tensor) -> tuple[Tensor, ...]:
        """dq, dk, dv, dg, dbeta from the output's gradient dO, the corrected values' dW and each chunk's
        end-state gradient dSn (the chunk loop's results)."""
        q, k, v, beta, D, KK, A, Tinv, eg, Wall, ekte, kte, Sn, W, _, P = saved
        Dv = v.shape[-1]
        dqd, dP = dO @ Sn.transpose(-1, -2), dO @ W.transpose(-1, -2)
        dkte = W @ dSn.transpose(-1, -2)
        deL = (Sn * dSn).sum((-2, -1))
        dR = Tinv.transpose(-1, -2) @ torch.cat([dW, -(dW @ Sn.transpose(-1, -2))], dim=-1)  # W = Wv - Wk S
        dA = (dR @ Wall.transpose(-1, -2)).neg_().tril_(-1)  # d(I + A)^-1 R = -(I + A)^-T dWall (T R)^T
        dRv, dRk = dR.split([Dv, k.shape[-1]], dim=-1)
        bk = beta.unsqueeze(-1)
        dv = bk * dRv
        dRk_k = (dRk * k).sum(-1)
        dbeta = (dRv * v).sum(-1) + eg * dRk_k
        deg = beta * dRk_k
        E = dA * D
        dbeta = dbeta + (E * KK).sum(-1)
        dKK = bk * E
        dQK = dP * D
        dk = bk * eg.unsqueeze(-1) * dRk + dKK @ k + dKK.transpose(-1, -2) @ k + dQK.transpose(-1, -2) @ q
        dk = dk + dkte * ekte.unsqueeze(-1)
        dq = dQK @ k + dqd * eg.unsqueeze(-1)
        deg = deg + (dqd * q).sum(-1)
        Z = dA * A + dP * P  # d/d(gamma_i - gamma_j) of A and P: each entry times its own D factor
        c = (dkte * kte).sum(-1)  # kte = k exp(gamma_L - gamma)
        dgamma = Z.sum(-1) - Z.sum(-2) - c + deg * eg
        dgamma[..., -1] += c.sum(-1) + deL * eg[..., -1]
        dg = dgamma.flip(-1).cumsum(-1).flip(-1)  # gamma = cumsum(g)
        return dq, dk, dv, dg, dbeta


def _chunked_autograd(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """The same computation as `_ChunkedRule` written with plain autograd (the test reference for its backward)."""
    L = k.shape[-2]
    gamma = g.cumsum(-1)
    incl = torch.ones(L, L, dtype=torch.bool, device=k.device).tril()
    D = (gamma.unsqueeze(-1) - gamma.unsqueeze(-2)).masked_fill(~incl, float("-inf")).exp()
    A = (beta.unsqueeze(-1) * (k @ k.transpose(-1, -2)) * D).tril(-1)
    eye = torch.eye(L, dtype=k.dtype, device=k.device)
    rhs = beta.unsqueeze(-1) * torch.cat([v, gamma.exp().unsqueeze(-1) * k], dim=-1)
    Wv, Wk = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True).split(
        [v.shape[-1], k.shape[-1]], dim=-1
    )
    P = (q @ k.transpose(-1, -2)) * D
    qd, kte, eL = q * gamma.exp().unsqueeze(-1), k * (gamma[..., -1:] - gamma).exp().unsqueeze(-1), gamma[..., -1].exp()
    outs = []
    for n in range(k.shape[2]):
        W = Wv[:, :, n] - Wk[:, :, n] @ S
        outs.append(qd[:, :, n] @ S + P[:, :, n] @ W)
        S = eL[:, :, n, None, None] * S + kte[:, :, n].transpose(-1, -2) @ W
    return torch.stack(outs, dim=2), S


def gated_delta_rule_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    state: Tensor | None = None,
    *,
    hand_backward: bool = True,
) -> tuple[Tensor, Tensor]:
    """The same recurrence in chunks of `chunk_size` tokens: within a chunk in parallel (matrix products and one
    unit triangular inverse), across chunks sequentially through the state. Same arguments and results as
    `gated_delta_rule_recurrent`. T is padded to a multiple of chunk_size with g = 0 and beta = 0 (and zero q, k, v),
    tokens that leave the state unchanged and whose outputs are dropped. `hand_backward=False` differentiates
    the plain autograd version instead (the reference the tests compare the hand-written backward with).

    With gamma the cumulative log decay within the chunk, D_ij = exp(gamma_i - gamma_j) for j <= i and
    A_ij = beta_i D_ij (k_i . k_j) for j < i, the chunk's corrected values are W = Wv - Wk S0 where
    (I + A) Wv = beta V and (I + A) Wk = beta diag(exp(gamma)) K; its outputs are q exp(gamma) S0 + ((Q K^T) * D) W
    and the state after it exp(gamma_L) S0 + (K exp(gamma_L - gamma))^T W."""
    B, H, T, K = k.shape
    Dv = v.shape[-1]
    L = chunk_size
    pad = (-T) % L
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    N = (T + pad) // L
    q, k, v = (x.reshape(B, H, N, L, x.shape[-1]) for x in (q, k, v))
    g, beta = g.reshape(B, H, N, L), beta.reshape(B, H, N, L)
    S = k.new_zeros(B, H, K, Dv) if state is None else state.to(k.dtype)
    o, S = (_ChunkedRule.apply if hand_backward else _chunked_autograd)(q, k, v, g, beta, S)
    return o.reshape(B, H, N * L, Dv)[:, :, :T], S
