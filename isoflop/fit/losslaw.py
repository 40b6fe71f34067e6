"""L_opt(C) = E + k·C^−γ through the per-budget minima: a loss law with an irreducible term.

A pure power law in C (no E) bends the wrong way once losses approach their
floor, and predicted L_opt far beyond the data comes out too low with an
interval that misses the truth. With E free, the fit has three parameters
on a handful of budgets; where the data cannot pin E the resamples spread
over E and the prediction interval is wide, as it should be.

Solved by variable projection, for many rows (bootstrap resamples) at once:
for fixed γ the model is linear in (E, k), solved by least squares (with
E ≥ 0 and k ≥ 0 enforced by refitting on the boundary); γ is searched on a
log grid (GAMMA_GRID) and refined by a parabola through the best grid
point and its neighbours. In ln C the law is centred at the mean budget so
k stays of the order of the losses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .lines import weighted_lines

GAMMA_GRID = np.geomspace(1e-3, 2.0, 160)


@dataclass(frozen=True)
class LossLaw:
    """L_opt(C) = E + k·(C/C0)^−γ, C0 the geometric mean of the budgets fitted."""

    E: float
    k: float
    gamma: float
    c0: float
    n_budgets: int
    E_ci: tuple[float, float] | None = None
    gamma_ci: tuple[float, float] | None = None

    def __call__(self, compute: float | np.ndarray) -> np.ndarray:
        c = np.asarray(compute, dtype=float)
        return self.E + self.k * np.exp(-self.gamma * (np.log(c) - math.log(self.c0)))


def _solve(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: E ≥ 0, k ≥ 0 minimising Σ w·(y − E − k·z)², and its SSE. z: (G,) or (R, G); y, w: (R, G)."""
    e, k, ok = weighted_lines(z, y, w)
    wz = w * z
    with np.errstate(invalid="ignore", divide="ignore"):
        # boundaries: E = 0 (pure power law) or k = 0 (flat)
        k_e0 = np.maximum((wz * y).sum(1) / (wz * z).sum(1), 0.0)
        e_k0 = (w * y).sum(1) / w.sum(1)
    zz = np.broadcast_to(z, y.shape)
    interior = ok & (k >= 0) & (e >= 0) & np.isfinite(k)
    sse_e0 = (w * (y - k_e0[:, None] * zz) ** 2).sum(1)
    sse_k0 = (w * (y - e_k0[:, None]) ** 2).sum(1)
    use_e0 = ~interior & (sse_e0 <= sse_k0)
    e = np.where(interior, e, np.where(use_e0, 0.0, e_k0))
    k = np.where(interior, k, np.where(use_e0, k_e0, 0.0))
    sse = (w * (y - e[:, None] - k[:, None] * zz) ** 2).sum(1)
    return e, k, sse


def fit_loss_laws(log_c: np.ndarray, loss: np.ndarray, weights: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(E, k, γ) per row of loss (R, G) over budgets ln C (G,), and C0. NaN rows where G < 3."""
    lc = np.asarray(log_c, dtype=float)
    y = np.atleast_2d(np.asarray(loss, dtype=float))
    w = np.ones_like(y) if weights is None else np.broadcast_to(np.asarray(weights, float), y.shape).copy()
    w = np.where(np.isfinite(y), w, 0.0)
    y = np.where(np.isfinite(y), y, 0.0)
    lc0 = float(lc.mean())
    r = y.shape[0]
    if len(lc) < 3:
        nan = np.full(r, np.nan)
        return nan, nan, nan, math.exp(lc0)
    sse = np.empty((len(GAMMA_GRID), r))
    for j, g in enumerate(GAMMA_GRID):
        sse[j] = _solve(np.exp(-g * (lc - lc0)), y, w)[2]
    j = np.argmin(sse, axis=0)
    # parabolic refinement in ln γ between the grid neighbours
    lg = np.log(GAMMA_GRID)
    jl, jr = np.clip(j - 1, 0, len(lg) - 1), np.clip(j + 1, 0, len(lg) - 1)
    cols = np.arange(r)
    fl, f0, fr = sse[jl, cols], sse[j, cols], sse[jr, cols]
    denom = fl - 2 * f0 + fr
    step = lg[1] - lg[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where((denom > 0) & (jl != j) & (jr != j), 0.5 * (fl - fr) / denom, 0.0)
    gamma = np.exp(lg[j] + np.clip(off, -1.0, 1.0) * step)
    # the refined γ differs per row: every row with its own z in one pass
    e, k, ok = weighted_lines(np.exp(-gamma[:, None] * (lc[None, :] - lc0)), y, w)
    bad = ~(ok & (k >= 0) & (e >= 0) & np.isfinite(k))
    if bad.any():  # the refined γ left the feasible interior: keep the grid answer for those rows
        gamma[bad] = GAMMA_GRID[j[bad]]
        e[bad], k[bad], _ = _solve(np.exp(-gamma[bad, None] * (lc[None, :] - lc0)), y[bad], w[bad])
    return e, k, gamma, math.exp(lc0)


def fit_loss_law(budgets: np.ndarray, loss: np.ndarray, weights: np.ndarray | None = None) -> LossLaw | None:
    """The law through one set of per-budget minima; None with fewer than 3 budgets."""
    c = np.asarray(budgets, dtype=float)
    if len(np.unique(c)) < 3:
        return None
    e, k, g, c0 = fit_loss_laws(np.log(c), np.asarray(loss, dtype=float)[None, :], weights)
    return LossLaw(E=float(e[0]), k=float(k[0]), gamma=float(g[0]), c0=c0, n_budgets=len(c))
