"""Continual-learning metrics of a T x T result matrix (the driver is `memexp.runs.continual`).

Matrices R[i][j] = metric on task j's test split after training stage i (i, j in A, B, C).
With T tasks and the accuracy matrix:

    average forgetting  = mean_{j < T-1} ( max_{l in [j, T-2]} R[l][j] - R[T-1][j] )   (Chaudhry et al. 2018)
    backward transfer   = mean_{j < T-1} ( R[T-1][j] - R[j][j] )                        (Lopez-Paz & Ranzato 2017)
    average accuracy    = mean_j R[T-1][j]

(For the loss matrix, forgetting is the rise of the loss: R[T-1][j] - min_{l in [j, T-2]} R[l][j].)
"""

from __future__ import annotations

from collections.abc import Sequence

from memexp.errors import ConfigError


def continual_summary(acc: Sequence[Sequence[float]], loss: Sequence[Sequence[float]] | None = None) -> dict:
    """Average forgetting, backward transfer and final average accuracy of an accuracy matrix."""
    T = len(acc)
    if T < 2 or any(len(r) != T for r in acc):
        raise ConfigError(f"a continual matrix must be T x T with T >= 2; got {[len(r) for r in acc]}")
    earlier = range(T - 1)
    forgetting = sum(max(acc[l][j] for l in range(j, T - 1)) - acc[T - 1][j] for j in earlier) / (T - 1)
    bwt = sum(acc[T - 1][j] - acc[j][j] for j in earlier) / (T - 1)
    out = {"avg_forgetting": forgetting, "backward_transfer": bwt, "avg_final_accuracy": sum(acc[T - 1]) / T}
    if loss is not None:
        out["avg_loss_forgetting"] = sum(loss[T - 1][j] - min(loss[l][j] for l in range(j, T - 1)) for j in earlier) / (T - 1)
        out["avg_final_loss"] = sum(loss[T - 1]) / T
    return out
