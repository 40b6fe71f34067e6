"""The compute-optimal frontier: power laws in C through the per-budget optima.

Least squares on ln N_opt = a·ln C + ln k (and the same for D_opt with
exponent b, and for L_opt), every budget alike. (Weighting budgets by the
bootstrap precision of their ln N_opt, as Porian et al. do, was measured and
rejected: on their 15 configurations it put 12, not 14, inside their
published intervals, and it raised the exponent's RMSE on synthetic sweeps,
the weights being as noisy as the minima.) Each budget's D_opt is taken under the sweep's
FLOP convention (its own tokens relation, see `isoflop.py`), so the tokens
law is a separate power law: b = 1 − a and k_D = 1/(6·k) only on 6ND data;
under `exact` or `6ND+attention` small models get fewer tokens than
C/(6N) (the overhead is relatively largest for small models), so D_opt
typically grows faster with C than C/(6·N_opt) and b > 1 − a.
Predictions of D_opt at new budgets use this law. Intervals come from the
bootstrap (`bootstrap.py`); without it they are None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .isoflop import IsoflopFit
from .lines import weighted_lines
from .losslaw import LossLaw


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient · C^exponent, fitted in log space."""

    exponent: float
    coefficient: float
    n_budgets: int
    exponent_ci: tuple[float, float] | None = None      # 5–95% bootstrap interval
    coefficient_ci: tuple[float, float] | None = None
    exponent_median: float | None = None
    coefficient_median: float | None = None
    residual_std: float = math.nan                       # std of ln-residuals

    @property
    def log_coefficient(self) -> float:
        return math.log(self.coefficient) if self.coefficient > 0 else -math.inf

    def __call__(self, compute: float | np.ndarray) -> np.ndarray:
        c = np.asarray(compute, dtype=float)
        return np.exp(self.log_coefficient + self.exponent * np.log(c))


@dataclass(frozen=True)
class Frontier:
    params: PowerLaw    # N_opt(C)
    tokens: PowerLaw    # D_opt(C)
    loss: PowerLaw      # L_opt(C) as a pure power law (kept for comparison; no irreducible term)
    budgets: tuple[float, ...]   # budgets used
    loss_law: LossLaw | None = None   # L_opt(C) = E + k·C^−γ (≥ 3 budgets): what predictions use


def line_fit(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """(slope, intercept, residual std) of least squares y = slope·x + intercept (weighted when given)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan, math.nan
    xm, ym = float((w * x).sum() / w.sum()), float((w * y).sum() / w.sum())
    sxx = float((w * (x - xm) ** 2).sum())
    if sxx <= 0:
        return math.nan, math.nan, math.nan
    slope = float((w * (x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    res = y - (slope * x + intercept)
    dof = len(x) - 2
    rstd = float(math.sqrt((res ** 2).sum() / dof)) if dof > 0 else math.nan
    return slope, intercept, rstd


def batched_line_fit(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept per row of y (R×B) over the columns where mask is nonzero.

    x: (B,) shared abscissae. mask: bool, or non-negative weights. Rows with
    fewer than 2 masked columns (or no spread in x) give NaN.
    """
    w = np.asarray(mask, dtype=float)
    intercept, slope, ok = weighted_lines(x, np.where(w > 0, y, 0.0), w)
    slope = np.where(ok, slope, np.nan)
    intercept = np.where(ok, intercept, np.nan)
    return slope, intercept


def fit_frontier(fits: Sequence[IsoflopFit], use: Sequence[bool] | None = None) -> Frontier | None:
    """Power laws through the budgets in `use` (default: all with a vertex). None with < 2 budgets."""
    if use is None:
        use = [f.has_vertex for f in fits]
    chosen = [f for f, u in zip(fits, use) if u]
    if len({f.budget for f in chosen}) < 2:
        return None
    lc = np.log([f.budget for f in chosen])
    laws = []
    for vals in ([f.n_opt for f in chosen], [f.d_opt for f in chosen], [f.loss_opt for f in chosen]):
        v = np.asarray(vals, dtype=float)
        if not np.all(v > 0):  # e.g. a non-positive loss: no power law in log space
            laws.append(PowerLaw(exponent=math.nan, coefficient=math.nan, n_budgets=len(chosen)))
            continue
        slope, icpt, rstd = line_fit(lc, np.log(v))
        laws.append(PowerLaw(exponent=slope, coefficient=math.exp(icpt) if math.isfinite(icpt) else math.nan, n_budgets=len(chosen), residual_std=rstd))
    return Frontier(params=laws[0], tokens=laws[1], loss=laws[2], budgets=tuple(f.budget for f in chosen))
