"""Sweeps drawn from a stated loss surface L(N, D) = E + A/N^α + B/D^β, and its true frontier.

For calibration and tests: the truth is known, so intervals can be checked
against it. Pure (the caller passes the numpy Generator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .table import FitTable


@dataclass(frozen=True)
class Law:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    def loss(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    def n_opt(self, compute: float | np.ndarray) -> np.ndarray:
        """N minimising L at C = 6ND (Hoffmann et al. eq. 4)."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return g * (np.asarray(compute, float) / 6.0) ** self.a

    def loss_opt(self, compute: float | np.ndarray) -> np.ndarray:
        n = self.n_opt(compute)
        return self.loss(n, np.asarray(compute, float) / (6.0 * n))


#: laws the calibration draws from: Hoffmann et al.'s, Epoch's refit, and two with other exponents/floors
LAWS = (
    Law(1.69, 406.4, 410.7, 0.34, 0.28),
    Law(1.8172, 477.8, 2143.0, 0.3473, 0.3672),
    Law(2.2, 250.0, 900.0, 0.30, 0.36),
    Law(1.5, 900.0, 300.0, 0.40, 0.26),
)


def draw_sweep(law: Law, rng: np.random.Generator, *, budgets: np.ndarray | None = None, sizes: int = 7,
               span: float = math.log(4.0), offset: float = 0.35, noise: float = 0.01, seeds: int = 1) -> FitTable:
    """One sweep: per budget `sizes` model sizes log-spaced over N_opt·e^(±span), shifted by a random
    offset in [−offset, offset] e-folds (the optimum is rarely centred), `seeds` runs per size,
    Gaussian noise of σ = noise on every loss; D = C/(6N). Default budgets: 5 over two decades.
    The default grid is the starter template's: 7 sizes over a 16× range of N."""
    cs = np.logspace(17, 19, 5) if budgets is None else np.asarray(budgets, float)
    rows_c, rows_n, rows_l = [], [], []
    for c in cs:
        n = law.n_opt(c) * np.exp(np.linspace(-span, span, sizes) + rng.uniform(-offset, offset))
        n = np.repeat(n, seeds)
        rows_c.append(np.full(n.shape, c))
        rows_n.append(n)
        rows_l.append(law.loss(n, c / (6.0 * n)) + rng.normal(0.0, noise, n.shape))
    c = np.concatenate(rows_c)
    n = np.concatenate(rows_n)
    return FitTable(budget=c, params=n, tokens=c / (6.0 * n), loss=np.concatenate(rows_l))
