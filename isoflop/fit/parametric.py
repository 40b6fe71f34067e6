"""Chinchilla approach 3: L(N, D) = E + A/N^α + B/D^β.

`method="lse"` — Epoch AI's refit (Besiroglu et al. 2024) of Hoffmann et al.:
minimise Σ Huber_δ(LSE(a − α·ln N, b − β·ln D, e) − ln L), δ = 1e-3, with
A = e^a, B = e^b, E = e^e, by L-BFGS-B (scipy, analytic gradient) from a grid
of starts: α, β ∈ {0, .5, …, 2}, e ∈ {−1, −.5, …, 1}, a, b ∈ {0, 5, …, 25}
(4500 starts). The objective is evaluated on the whole grid at once and
L-BFGS-B runs from the `n_starts` best grid points (default 20; `n_starts=None`
runs all 4500, ~25 s on 240 points). On Epoch's 240 points the best 5 grid
starts already reach the best optimum found from all 4500 (objective 1.01827e-3).

`method="varpro"` — variable projection: for fixed (α, β) the model is linear
in (E, A, B), solved with E, A, B ≥ 0 by non-negative least squares
(scipy.optimize.nnls) on L ≈ E + A·N^−α + B·D^−β; only (α, β) are searched,
on a grid (0.02 … 2 by 0.02) then refined by Nelder–Mead. It minimises a
different objective from `lse`: the plain sum of squared errors in L (not
Huber on ln L), so every point counts by its squared error in nats and the
largest losses (the smallest runs) weigh most, where `lse` weighs relative
errors and caps outliers. Its search is cheaper and has no 5-dimensional
ridge to wander along, but it is not the same estimate: on Epoch's 240
Chinchilla points it gives a = 0.545 where `lse` gives 0.514 (Epoch's
published 0.513). Use `lse` to compare with published fits; `varpro` is a
second opinion under squared error, not a better-conditioned `lse`.

`method="all"` returns both. a = β/(α+β) is N_opt's exponent implied by the fit.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

METHODS = ("lse", "varpro")
HUBER_DELTA = 1e-3


@dataclass(frozen=True)
class ParametricFit:
    method: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int
    converged: bool

    @property
    def a(self) -> float:
        """Implied exponent of N_opt ∝ C^a: β/(α+β)."""
        s = self.alpha + self.beta
        return self.beta / s if s > 0 else math.nan

    @property
    def b(self) -> float:
        s = self.alpha + self.beta
        return self.alpha / s if s > 0 else math.nan

    def loss(self, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        n = np.asarray(params, dtype=float)
        d = np.asarray(tokens, dtype=float)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def optimum(self, compute: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N_opt, D_opt minimising L at C = 6ND (closed form, Hoffmann et al. eq. 4)."""
        c = np.asarray(compute, dtype=float)
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        n = g * (c / 6.0) ** self.a
        return n, c / (6.0 * n)


def _check(params, tokens, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.asarray(params, dtype=float).ravel()
    d = np.asarray(tokens, dtype=float).ravel()
    y = np.asarray(loss, dtype=float).ravel()
    if not (n.shape == d.shape == y.shape):
        raise ValueError("params, tokens and loss must have the same length")
    ok = np.isfinite(n) & np.isfinite(d) & np.isfinite(y) & (n > 0) & (d > 0) & (y > 0)
    if not ok.all():
        raise ValueError(f"{int((~ok).sum())} point(s) with non-finite or non-positive params/tokens/loss")
    if len(y) < 5:
        raise ValueError(f"a parametric fit needs at least 5 points, got {len(y)}")
    return n, d, y


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def lse_grid() -> np.ndarray:
    """Epoch's 4500 starts as rows (a, b, e, alpha, beta)."""
    rng_ab = np.arange(0.0, 30.0, 5.0)
    rng_e = np.arange(-1.0, 1.5, 0.5)
    rng_exp = np.arange(0.0, 2.5, 0.5)
    return np.array(list(itertools.product(rng_ab, rng_ab, rng_e, rng_exp, rng_exp)), dtype=float)


def fit_lse(params, tokens, loss, *, delta: float = HUBER_DELTA, n_starts: int | None = 20,
            weights=None, polish: bool = True) -> ParametricFit:
    """weights: per point (e.g. the runs behind a size's mean loss); None: 1 each.

    polish: rerun the best start with tight tolerances (ftol 1e-15). Needed:
    scipy's default tolerances stop far from the optimum on this ridge (a off
    by 0.2 on some calibration sweeps).
    """
    from scipy.optimize import minimize

    n, d, y = _check(params, tokens, loss)
    ln, ld, ly = np.log(n), np.log(d), np.log(y)
    wt = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float).ravel()

    def fun(p: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, e, al, be = p
        t = np.stack([a - al * ln, b - be * ld, np.full_like(ln, e)])
        m = t.max(0)
        w = np.exp(t - m)
        s = w.sum(0)
        r = m + np.log(s) - ly
        w /= s
        g = np.clip(r, -delta, delta) * wt
        grad = np.array([(g * w[0]).sum(), (g * w[1]).sum(), (g * w[2]).sum(),
                         -(g * w[0] * ln).sum(), -(g * w[1] * ld).sum()])
        return float((wt * _huber(r, delta)).sum()), grad

    grid = lse_grid()
    if n_starts is None or n_starts >= len(grid):
        starts = grid
    else:
        # vectorised objective on the grid, in chunks to bound memory
        vals = np.empty(len(grid))
        for i in range(0, len(grid), 500):
            gch = grid[i:i + 500]
            t1 = gch[:, 0, None] - gch[:, 3, None] * ln[None, :]
            t2 = gch[:, 1, None] - gch[:, 4, None] * ld[None, :]
            pred = np.logaddexp(np.logaddexp(t1, t2), gch[:, 2, None])
            vals[i:i + 500] = (wt[None, :] * _huber(pred - ly[None, :], delta)).sum(1)
        starts = grid[np.argsort(vals, kind="stable")[: max(1, int(n_starts))]]
    best = None
    for x0 in starts:  # scipy's default tolerances from every start ...
        res = minimize(fun, x0, jac=True, method="L-BFGS-B")
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is not None and polish:  # ... then polish the best one with tight tolerances
        res = minimize(fun, best.x, jac=True, method="L-BFGS-B",
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
        if np.isfinite(res.fun) and res.fun <= best.fun:
            best = res
    if best is None:  # pragma: no cover
        return ParametricFit("lse", math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, len(y), False)
    a, b, e, al, be = (float(v) for v in best.x)
    if max(a, b, e) > 700:  # exp() overflows: the data hold no law of this form (e.g. a bowl in log N)
        raise ValueError(f"the L(N, D) fit ran off to infinity (ln A {a:.3g}, ln B {b:.3g}, ln E {e:.3g}): "
                         "the data do not support a law of this form")
    return ParametricFit(method="lse", E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=al, beta=be,
                         objective=float(best.fun), n_points=len(y), converged=bool(best.success))


def _varpro_solve(n, d, y, alpha, beta):
    from scipy.optimize import nnls

    x = np.stack([np.ones_like(n), n ** -alpha, d ** -beta], axis=1)
    scale = np.linalg.norm(x, axis=0)
    scale[scale == 0] = 1.0
    coef, rnorm = nnls(x / scale, y)
    return coef / scale, float(rnorm * rnorm)


def fit_varpro(params, tokens, loss, *, grid_step: float = 0.02, max_exponent: float = 2.0) -> ParametricFit:
    from scipy.optimize import minimize

    n, d, y = _check(params, tokens, loss)
    ys = y  # squared error in L
    grid = np.arange(grid_step, max_exponent + 1e-9, grid_step)
    # coarse pass every 5th point, then full resolution around the best coarse point
    coarse = grid[::5]
    best = (math.inf, 0.0, 0.0)
    for al in coarse:
        for be in coarse:
            _, sse = _varpro_solve(n, d, ys, al, be)
            if sse < best[0]:
                best = (sse, al, be)
    _, al0, be0 = best
    fine_a = grid[np.abs(grid - al0) <= 5 * grid_step + 1e-12]
    fine_b = grid[np.abs(grid - be0) <= 5 * grid_step + 1e-12]
    for al in fine_a:
        for be in fine_b:
            _, sse = _varpro_solve(n, d, ys, al, be)
            if sse < best[0]:
                best = (sse, al, be)

    def obj(p: np.ndarray) -> float:
        al, be = p
        if al <= 0 or be <= 0 or al > 3 * max_exponent or be > 3 * max_exponent:
            return math.inf
        return _varpro_solve(n, d, ys, al, be)[1]

    res = minimize(obj, np.array(best[1:]), method="Nelder-Mead",
                   options={"xatol": 1e-6, "fatol": 1e-14 * max(best[0], 1e-300), "maxiter": 2000})
    al, be = (float(v) for v in (res.x if res.fun <= best[0] else best[1:]))
    coef, sse = _varpro_solve(n, d, ys, al, be)
    return ParametricFit(method="varpro", E=float(coef[0]), A=float(coef[1]), B=float(coef[2]), alpha=al, beta=be,
                         objective=sse, n_points=len(y), converged=bool(res.success))


def fit_parametric(params, tokens, loss, *, method: str = "lse", n_starts: int | None = 20,
                   weights=None, polish: bool = True) -> tuple[ParametricFit, ...]:
    """Fit L(N, D); returns one fit per method (`method="all"`: lse then varpro).

    weights (lse only): per point, e.g. the number of runs behind a mean loss.
    """
    methods = METHODS if method == "all" else (method,)
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"parametric method must be one of {METHODS + ('all',)}, got {method!r}")
    out = []
    for m in methods:
        out.append(fit_lse(params, tokens, loss, n_starts=n_starts, weights=weights, polish=polish) if m == "lse"
                   else fit_varpro(params, tokens, loss))
    return tuple(out)


def lse_draws(fit: ParametricFit, params, tokens, loss, sigma: float, n_draws: int, seed: int = 0,
              weights=None, sigma_dof: int | None = None, delta: float = HUBER_DELTA) -> np.ndarray:
    """Draws of (E, A, B, α, β) around an `lse` fit from its linearised sampling distribution.

    The noise model is the bootstrap's: each run's loss has noise σ (a mean of
    k runs σ/√k), so ln L has s = σ/(L·√k). Linearising ln L̂ in (ln A, ln B,
    ln E, α, β) at the fit gives the Jacobian J, and Σ is the Huber
    M-estimator's sandwich (`_huber_cov`): least absolute deviations' π/2 times
    least squares' where the noise in ln L is far above δ = 1e-3 (σ 0.03),
    about 1.1 times where it is near δ (σ 0.003; π/2 there over-covered, 96%
    of nominal 90% in benchmarks/fit_calibration.py). Where the data cannot pin E
    (or A, B), Σ is large in that direction and so are the intervals: the
    draws of ln E spread, and E = e^(ln E) stays positive. Draws with α or
    β ≤ 0 are NaN rows. A pseudo-inverse keeps a rank-deficient fit finite
    (that direction then gets no spread: the caller checks the fit first).
    sigma_dof: the degrees of freedom behind σ; each draw then scales its
    deviation by √(dof/χ²_dof), σ's own uncertainty (unlike the bootstrap,
    these draws add no noise to noisy data, so nothing else widens them).
    """
    n, d, y = _check(params, tokens, loss)
    wt = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float).ravel()
    la, lb, le = math.log(fit.A), math.log(fit.B), math.log(fit.E)
    t = np.stack([la - fit.alpha * np.log(n), lb - fit.beta * np.log(d), np.full_like(n, le)])
    m = t.max(0)
    w = np.exp(t - m)
    w /= w.sum(0)
    jac = np.stack([w[0], w[1], w[2], -w[0] * np.log(n), -w[1] * np.log(d)], axis=1)   # ∂ln L̂/∂θ
    cov = _huber_cov(jac, sigma / (y * np.sqrt(wt)), wt, delta)
    rng = np.random.default_rng(seed)
    theta = np.array([la, lb, le, fit.alpha, fit.beta])
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2.0)
    root = evecs * np.sqrt(np.clip(evals, 0.0, None))
    dev = rng.standard_normal((int(n_draws), 5)) @ root.T
    if sigma_dof:   # σ is itself estimated: each draw gets its own σ* = σ·√(dof/χ²_dof)
        dev *= np.sqrt(sigma_dof / rng.chisquare(sigma_dof, size=int(n_draws)))[:, None]
    draws = theta[None, :] + dev
    with np.errstate(over="ignore"):
        out = np.stack([np.exp(draws[:, 2]), np.exp(draws[:, 0]), np.exp(draws[:, 1]), draws[:, 3], draws[:, 4]], 1)
    bad = ~((out[:, 3] > 0) & (out[:, 4] > 0) & np.isfinite(out).all(1))
    out[bad] = np.nan
    return out


def _huber_cov(jac: np.ndarray, s: np.ndarray, wt: np.ndarray, delta: float) -> np.ndarray:
    """Covariance of the θ minimising Σ wt·Huber_δ(r) when each residual r is N(0, s²): A⁻¹·B·A⁻¹ with
    A = Σ wt·P(|r| ≤ δ)·J Jᵀ (the expected curvature) and B = Σ wt²·E[clip(r, ±δ)²]·J Jᵀ (the gradient's
    variance). A pseudo-inverse keeps a rank-deficient fit finite."""
    from scipy.special import erf

    k = delta / s
    p = erf(k / math.sqrt(2.0))                          # P(|r| ≤ δ)
    phi = np.exp(-0.5 * k * k) / math.sqrt(2.0 * math.pi)
    clip2 = s * s * (p - 2.0 * k * phi) + delta * delta * (1.0 - p)   # E[clip(r, ±δ)²]
    a_inv = np.linalg.pinv((jac * (wt * p)[:, None]).T @ jac)
    b = (jac * (wt * wt * clip2)[:, None]).T @ jac
    return a_inv @ b @ a_inv


def optimum_of(theta: np.ndarray, compute: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N_opt, D_opt, L_opt at C = 6ND for rows (E, A, B, α, β) of theta (closed form, Hoffmann et al.)."""
    e, a, b, al, be = theta.T
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        g = (al * a / (be * b)) ** (1.0 / (al + be))
        n = g * (compute / 6.0) ** (be / (al + be))
        d = compute / (6.0 * n)
        loss = e + a / n ** al + b / d ** be
    return n, d, loss



def loss_opt_interval(fit: ParametricFit, draws: np.ndarray, compute: float,
                      min_draws: int = 20) -> tuple[float, float] | None:
    """5–95% interval of L_opt at C: the spread of the draws' L_opt (5th to 95th percentile), centred on
    the fit's own L_opt; None with fewer than min_draws finite draws.

    Not the percentiles themselves: L_opt curves in the parameters, so the
    draws' L_opt is skewed upward (upper half 3.4× the lower, median over
    sweeps), while the fit's own error is not. The percentile interval then
    sat above the truth: at noise 0.03 the truth fell below it in 30 of 140
    sweeps and above it in 2, 77% coverage of a nominal 90%; centred on the fit,
    91% (280 sweeps, benchmarks/fit_calibration.py). The lower end stops at 0.
    """
    ll = optimum_of(draws, compute)[2]
    ll = ll[np.isfinite(ll)]
    if ll.size < min_draws:
        return None
    q5, q95 = np.percentile(ll, [5.0, 95.0])
    l0 = float(fit.loss(*fit.optimum(compute)))
    half = 0.5 * float(q95 - q5)
    return max(l0 - half, 0.0), l0 + half
