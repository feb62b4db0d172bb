"""The Hessian preparation every second-order method shares (SparseGPT, APT, structured OBS).

Owns, as the reference SparseGPT code does them: `revive_dead` (a copy of H = 2 X X^T / n in the
solver's dtype whose dead inputs, zero on the diagonal because they never fired, get a diagonal
of 1, with the mask of those inputs, whose weight columns the caller zeroes), `damped` (H plus
percdamp times the mean of its diagonal on the diagonal), `inverse_hessian_cholesky` (the upper
Cholesky factor of the damped inverse, SparseGPT's `Hinv`) and `with_damping_retries` (a solve
retried with ten times the damping when the Cholesky fails or the weights come out non-finite,
then one error naming the layer).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

from methods.base import PruneBenchError

log = logging.getLogger(__name__)
R = TypeVar("R")


def revive_dead(hessian: torch.Tensor, dtype: torch.dtype = torch.float32
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """hessian [in, in] -> (a copy in `dtype` with dead inputs' diagonal set to 1, dead [in])."""
    h = hessian.detach().to(dtype).clone()                  # [in, in]
    dead = torch.diag(h) == 0                               # [in]
    h[dead, dead] = 1.0
    return h, dead


def damped(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    """h [in, in] + percdamp * mean(diag h) * I, as a new tensor."""
    out = h.clone()
    out.diagonal().add_(percdamp * torch.mean(torch.diag(h)))
    return out


def inverse_hessian_cholesky(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """hessian [in, in] (dead inputs already revived) -> upper Cholesky factor U of
    (H + damp I)^-1, the reference's `Hinv`."""
    lower = torch.linalg.cholesky(damped(hessian, percdamp))
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def tenfold(value: float, times: int) -> float:
    """`value` multiplied by 10, `times` times over (the retry schedule, as the loop computes it)."""
    for _ in range(times):
        value *= 10
    return value


def with_damping_retries(method: str, name: str, solve: Callable[[int], R | None], retries: int,
                         damping: Callable[[int], str]) -> R:
    """solve(attempt) for attempt 0..retries, its damping growing with the attempt (`damping`
    describes it, e.g. "percdamp=0.01"); a failed Cholesky or a None (non-finite weights) is
    retried with a warning, and after the last attempt raised as one line naming the layer."""
    reason = ""
    for attempt in range(retries + 1):
        try:
            out = solve(attempt)
            if out is not None:
                return out
            reason = "non-finite weights"
        except torch.linalg.LinAlgError as exc:
            reason = f"Cholesky failed ({str(exc).splitlines()[0]})"
        if attempt < retries:
            log.warning("%s %s: %s at %s; retrying with %s", method, name, reason,
                        damping(attempt), damping(attempt + 1))
    raise PruneBenchError(f"{method}: layer {name} still has {reason} after {retries} damping "
                          f"increases (last {damping(retries)})")
