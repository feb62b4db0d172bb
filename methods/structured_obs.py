"""Second-order structured pruning of whole units (ZipLM-style OBS), as used by DarwinLM.

Owns the pure tensor maths behind structured (head / channel) pruning of one CONSUMING linear
(o_proj, down_proj, fc2, out_proj): W [out, in] sees inputs X whose Hessian is H = 2/n sum x x^T
[in, in]. A unit u (a head or KV group, an MLP channel, a Mamba inner channel) owns the contiguous
input columns [u*c, (u+1)*c); removing it zeroes those columns (the producing rows are deleted by
the caller). The objective is the reconstruction error  sum_rows dW H dW^T = trace(dW H dW^T).

- `removal_order`: greedy OBS. Each step removes the unit S with the smallest error increase
  sum_rows w_S (Hinv_SS)^-1 w_S^T and applies the optimal update of the remaining weights
  W -= W[:, S] (Hinv_SS)^-1 Hinv[S, :], then downdates Hinv the same way (Hinv = the inverse of the
  damped H restricted to the still-kept columns). Scoring is vectorised over all units per step.
- `reconstruct`: closed-form optimum on the kept columns K:  W_K' = W H[:, K] H_KK^-1.

Key fact: the objective is quadratic, so every OBS step is an exact H-orthogonal projection onto
the subspace {W' : W'_S = 0}; composing projections onto nested subspaces equals projecting onto
the smallest. Hence sequential OBS removal of a set S ends at the SAME weights as `reconstruct` on
the kept complement (up to float error), and the step errors sum to its error. A ladder of levels
is therefore stored as the removal order alone and any level is materialised with one solve
(`kept_units` + `reconstruct`). tests/methods/test_method_structured_obs.py checks this.

All maths is float64 on the input's device; results come back in W's dtype (errors as float32).
"""
from __future__ import annotations

import torch

from methods.hessian import damped, revive_dead

Tensor = torch.Tensor


def _damp64(H: Tensor, percdamp: float) -> tuple[Tensor, Tensor]:
    """H [in, in] -> (damped float64 H [in, in], dead-input mask [in])."""
    h, dead = revive_dead(H, torch.float64)
    return damped(h, percdamp), dead


def damp_hessian(H: Tensor, percdamp: float) -> Tensor:
    """H + percdamp * mean(diag) * I, with dead (zero-diagonal) inputs' diagonal first set to 1."""
    return _damp64(H, percdamp)[0].to(H.dtype)


def _check(W: Tensor, H: Tensor, unit_cols: int) -> int:
    if W.dim() != 2 or H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"expected W [out, in] and H [in, in], got {tuple(W.shape)} and "
                         f"{tuple(H.shape)}")
    if unit_cols < 1 or W.shape[1] % unit_cols:
        raise ValueError(f"unit_cols={unit_cols} must be >= 1 and divide in={W.shape[1]}")
    return W.shape[1] // unit_cols


def unit_columns(units: Tensor, unit_cols: int) -> Tensor:
    """units [k] -> their input columns [k * unit_cols], in the given unit order."""
    units = torch.as_tensor(units, dtype=torch.long)
    offs = torch.arange(unit_cols, dtype=torch.long, device=units.device)
    return (units[:, None] * unit_cols + offs[None, :]).reshape(-1)


def kept_units(order: Tensor, level: int, n_units: int) -> Tensor:
    """The units kept after removing the first `level` of `order`, ascending [n_units - level]."""
    keep = torch.ones(n_units, dtype=torch.bool)
    keep[torch.as_tensor(order[:level], dtype=torch.long).cpu()] = False
    return torch.nonzero(keep).flatten()


def obs_remove(W: Tensor, H: Tensor, unit_cols: int, percdamp: float = 0.01,
               max_remove: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy sequential OBS removal. Returns (order [k], step errors [k], final W [out, in]).

    The final W has the removed units' columns zeroed and the rest optimally updated; dead inputs'
    columns are zeroed from the start (they never reach the output). Step errors are measured under
    the damped H (they sum to reconstruction_error(W, final W, damp_hessian(H, percdamp))). W is
    kept transposed (units = contiguous rows) and both W and Hinv are compacted whenever a quarter
    of their units is gone, so a full ladder of 1536 single columns costs seconds on a CPU.
    """
    n = _check(W, H, unit_cols)
    k = n if max_remove is None else max_remove
    if not 0 <= k <= n:
        raise ValueError(f"max_remove={max_remove} must be in [0, {n}]")
    c = unit_cols
    h, dead = _damp64(H, percdamp)
    wt = W.detach().to(torch.float64).T.contiguous()            # [in, out]: units are row blocks
    wt[dead] = 0
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))      # [in, in]
    uid = torch.arange(n, device=wt.device)                      # stored unit -> original unit
    alive = torch.ones(n, dtype=torch.bool, device=wt.device)    # [m] over stored units
    eye = torch.eye(c, dtype=torch.float64, device=wt.device)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=wt.device)
    order, errors = [], []
    for _ in range(k):
        if 4 * int(alive.sum()) <= 3 * uid.numel():             # compact: drop removed units
            rows = unit_columns(torch.nonzero(alive).flatten(), c)
            uid, wt, hinv = uid[alive], wt[rows], hinv[rows][:, rows]
            alive = torch.ones(uid.numel(), dtype=torch.bool, device=wt.device)
        m = uid.numel()
        if c == 1:
            d = torch.where(alive, torch.diagonal(hinv), 1.0)    # [m]
            score = torch.linalg.vector_norm(wt, dim=1) ** 2 / d
        else:
            ar = torch.arange(m, device=wt.device)
            blocks = hinv.view(m, c, m, c)[ar, :, ar, :]         # [m, c, c] = Hinv_SS per unit
            blocks = torch.where(alive[:, None, None], blocks, eye)
            lower, info = torch.linalg.cholesky_ex(blocks)       # [m, c, c]
            ok = info == 0
            lower = torch.where(ok[:, None, None], lower, eye)
            z = torch.linalg.solve_triangular(lower, wt.view(m, c, -1), upper=False)  # [m, c, out]
            score = torch.where(ok, (z * z).sum((1, 2)), inf)    # [m] sum_rows w_S Hinv_SS^-1 w_S
        score = torch.where(alive, score, inf)
        u = int(torch.argmin(score))
        cols = slice(u * c, (u + 1) * c)
        row = torch.linalg.solve(hinv[cols, cols], hinv[cols, :])  # [c, m*c] = Hinv_SS^-1 Hinv_S:
        wt.addmm_(row.T, wt[cols].clone(), alpha=-1.0)           # W -= W_S Hinv_SS^-1 Hinv_S:
        hinv.addmm_(hinv[cols, :].T.clone(), row, alpha=-1.0)    # Hinv symmetric
        wt[cols] = 0
        hinv[:, cols] = 0
        hinv[cols, :] = 0
        alive[u] = False
        order.append(int(uid[u]))
        errors.append(float(score[u]))
    full = torch.zeros(n * c, W.shape[0], dtype=torch.float64, device=wt.device)  # [in, out]
    full[unit_columns(uid, c).to(wt.device)] = wt
    return (torch.tensor(order, dtype=torch.long), torch.tensor(errors, dtype=torch.float32),
            full.T.contiguous().to(W.dtype))


def removal_order(W: Tensor, H: Tensor, unit_cols: int, percdamp: float = 0.01,
                  max_remove: int | None = None) -> tuple[Tensor, Tensor]:
    """Greedy ZipLM order of unit removal [k] and the error increase of each step [k]."""
    order, errors, _ = obs_remove(W, H, unit_cols, percdamp, max_remove)
    return order, errors


def reconstruct(W: Tensor, H: Tensor, keep_units: Tensor, unit_cols: int,
                percdamp: float = 0.01) -> Tensor:
    """Optimal weights on the kept units' columns: W [out, in] -> [out, len(keep) * unit_cols].

    W_K' = W H[:, K] H_KK^-1 (damped H, Cholesky solve); kept units in ascending order.
    """
    n = _check(W, H, unit_cols)
    keep = torch.unique(torch.as_tensor(keep_units, dtype=torch.long).cpu())  # sorted
    if keep.numel() and (keep[0] < 0 or keep[-1] >= n):
        raise ValueError(f"keep_units must lie in [0, {n})")
    h, dead = _damp64(H, percdamp)
    w = W.detach().to(torch.float64).clone()                     # [out, in]
    w[:, dead] = 0
    cols = unit_columns(keep, unit_cols).to(w.device)            # [kc]
    if cols.numel() == 0:
        return W.new_zeros(W.shape[0], 0)
    rhs = h[cols, :] @ w.T                                       # [kc, out] = (W H[:, K])^T
    lower = torch.linalg.cholesky(h[cols][:, cols])              # [kc, kc]
    return torch.cholesky_solve(rhs, lower).T.to(W.dtype)        # [out, kc]


def scatter_units(W_kept: Tensor, keep_units: Tensor, unit_cols: int, n_units: int) -> Tensor:
    """Kept-column weights [out, len(keep) * c] -> full [out, n_units * c], removed columns 0."""
    keep = torch.unique(torch.as_tensor(keep_units, dtype=torch.long).cpu())
    full = W_kept.new_zeros(W_kept.shape[0], n_units * unit_cols)
    full[:, unit_columns(keep, unit_cols).to(W_kept.device)] = W_kept
    return full


def reconstruction_error(W: Tensor, W_new_full: Tensor, H: Tensor) -> float:
    """trace((W - W') H (W - W')^T) in float64; W, W' [out, in], H [in, in]."""
    d = W.detach().to(torch.float64) - W_new_full.detach().to(torch.float64)
    return float(((d @ H.detach().to(torch.float64)) * d).sum())
