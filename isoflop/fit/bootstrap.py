"""Seed-noise bootstrap of the whole approach-2 pipeline: perturb losses, refit minima and frontier.

A sweep has one run per size and budget, or a few seeds: resampling runs
within a budget cannot see the noise of a run's final loss (a resample of
one run per size only drops and repeats sizes). As Porian et al. (2024) do,
each resample instead draws new losses from a noise model: every run's loss
plus Gaussian noise of the sweep's seed noise σ (`noise.py`: from repeated
seeds where present, else from neighbour residuals). Per size the mean of
k runs gets σ/√k. σ is taken as estimated: drawing it per resample from
its χ² uncertainty (`noise_draws` with a dof) widened intervals past their
nominal level in benchmarks/fit_calibration.py, the noise-on-noise of this
bootstrap already errs wide. Each resample refits what the main fit
did: the minimiser per budget (Akima spline minimum, or the parabola on the
window around the lowest resampled mean) and the frontier through the
resampled optima.

No resample is dropped for where its minimum lands (dropping those at the
grid edge made intervals lopsided): an Akima minimum always lies inside the
sampled sizes; a parabola vertex outside them is clipped to the end it
passed (counted as `vertex_out_of_range`), and a non-convex resample takes
the size of its lowest mean (counted as `not_convex`). The counts say how
often the edge was hit; an interval that reaches the edge of the sampled
sizes is a bound, not a measurement.

D_opt per resample comes from the budget's tokens relation ln D = u + v·ln N
(see `isoflop.py`), fitted once on the full data: a run's D is a
deterministic function of its N under the sweep's FLOP convention.

Vectorised: all resamples of one budget at once (the parabola as a stack
of 3×3 systems from weighted moments; the Akima minimum in closed form per
cubic piece, `akima.py`), the frontier lines and the loss law of all
resamples at once. The Python loop runs over budgets only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .akima import akima_minimum
from .frontier import batched_line_fit
from .isoflop import NOT_CONVEX, TOO_FEW_POINTS, VERTEX_OUT_OF_RANGE
from .losslaw import fit_loss_laws
from .noise import size_groups, size_means


@dataclass(frozen=True, eq=False)
class BootstrapVertices:
    """Per resample (rows) and budget (columns): ln N_opt, ln D_opt and L_opt; `valid` marks usable ones."""

    budgets: np.ndarray          # (G,)
    log_n: np.ndarray            # (R, G)
    loss: np.ndarray             # (R, G)
    valid: np.ndarray            # (R, G) bool
    degenerate: tuple[dict[str, int], ...]   # per budget: reason -> count of resamples (kept, see module doc)
    n_resamples: int
    seed: int
    log_d: np.ndarray = None     # (R, G): u + v·ln N_opt of the budget's tokens relation  # type: ignore[assignment]
    tokens_relations: np.ndarray = None   # (G, 2): (u, v) per budget  # type: ignore[assignment]
    sigma: float = math.nan      # the noise model's σ per run

    def __post_init__(self) -> None:
        if self.tokens_relations is None:   # D = C/(6N)
            rel = np.stack([np.log(np.asarray(self.budgets, float) / 6.0), -np.ones(len(self.budgets))], axis=1)
            object.__setattr__(self, "tokens_relations", rel.reshape(-1, 2))
        if self.log_d is None:
            rel = self.tokens_relations
            object.__setattr__(self, "log_d", rel[None, :, 0] + rel[None, :, 1] * self.log_n)


@dataclass(frozen=True, eq=False)
class FrontierSamples:
    """Frontier refits per resample (NaN for dropped resamples)."""

    slope_n: np.ndarray
    icpt_n: np.ndarray
    slope_l: np.ndarray
    icpt_l: np.ndarray
    ok: np.ndarray
    dropped: int
    slope_d: np.ndarray      # tokens frontier ln D_opt = icpt_d + slope_d·ln C (b); 1 − slope_n on 6ND data
    icpt_d: np.ndarray
    loss_E: np.ndarray = None      # loss law L_opt = E + k·(C/C0)^−γ per resample (NaN with < 3 budgets)  # type: ignore[assignment]
    loss_k: np.ndarray = None      # type: ignore[assignment]
    loss_gamma: np.ndarray = None  # type: ignore[assignment]
    loss_c0: float = math.nan


def _parabola_budget(ux: np.ndarray, k: np.ndarray, ys: np.ndarray, window: int | None
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Vertex per row of size means ys (R, S) with k runs per size (weights)."""
    r, s = ys.shape
    rows = np.arange(r)
    j = np.argmin(ys, axis=1)
    if window is None or s <= window:
        lo = np.zeros(r, dtype=int)
        hi = np.full(r, s)
    else:
        lo = np.clip(j - (window - 1) // 2, 0, s - window)
        hi = lo + window
    pos = np.arange(s)[None, :]
    w = k[None, :] * ((pos >= lo[:, None]) & (pos < hi[:, None]))      # (R, S)
    x0 = ux.mean()
    u = ux - x0
    upow = np.stack([np.ones_like(u), u, u * u, u ** 3, u ** 4], axis=1)   # (S, 5)
    m = w @ upow                                                            # (R, 5)
    t = (w * ys) @ upow[:, :3]                                              # (R, 3)
    a_mat = np.stack([np.stack([m[:, 4], m[:, 3], m[:, 2]], -1),
                      np.stack([m[:, 3], m[:, 2], m[:, 1]], -1),
                      np.stack([m[:, 2], m[:, 1], m[:, 0]], -1)], axis=1)   # (R, 3, 3)
    rhs = np.stack([t[:, 2], t[:, 1], t[:, 0]], -1)
    coef = np.linalg.solve(a_mat, rhs[..., None])[..., 0]
    a, b, c = coef[:, 0], coef[:, 1], coef[:, 2]
    convex = a > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        u_star = np.where(convex, -b / (2 * a), u[j])
    u_clip = np.clip(u_star, u[0], u[-1])
    out = convex & (u_clip != u_star)
    l_star = np.where(convex, a * u_clip ** 2 + b * u_clip + c, ys[rows, j])
    return x0 + u_clip, l_star, {NOT_CONVEX: int((~convex).sum()), VERTEX_OUT_OF_RANGE: int(out.sum())}


def noise_draws(rng: np.random.Generator, r: int, sigma: float, dof: int | None) -> np.ndarray:
    """σ* per resample: σ·√(dof/χ²_dof) (σ's own uncertainty), or σ when dof is None."""
    if dof is None or dof < 1:
        return np.full(r, float(sigma))
    return float(sigma) * np.sqrt(dof / rng.chisquare(dof, size=r))


def bootstrap_vertices(groups: Sequence[tuple[float, np.ndarray, np.ndarray]], *, window: int | None,
                       minimizer: str = "akima", n_resamples: int = 1000, seed: int = 0,
                       allow_out_of_range: bool = False,
                       tokens_relations: Sequence[tuple[float, float] | None] | None = None,
                       sigma: float = math.nan, sigma_dof: int | None = None) -> BootstrapVertices:
    """Resampled optima of each budget. groups: (budget, params, loss) of the runs the fit used.

    sigma: noise per run (NaN or 0: no noise, every resample equals the data).
    sigma_dof: degrees of freedom behind sigma (None: sigma taken as exact).
    allow_out_of_range is accepted for compatibility: no resample is dropped
    for its position any more (see the module docstring).
    tokens_relations: per budget, (u, v) of ln D = u + v·ln N fitted on the
    full data; None (or a None entry): D = C/(6N).
    """
    del allow_out_of_range
    rng = np.random.default_rng(seed)
    r = int(n_resamples)
    g = len(groups)
    sig = noise_draws(rng, r, sigma if np.isfinite(sigma) else 0.0, sigma_dof)
    log_n = np.full((r, g), np.nan)
    loss = np.full((r, g), np.nan)
    valid = np.zeros((r, g), dtype=bool)
    degenerate = []
    for col, (_, params, y) in enumerate(groups):
        x = np.log(np.asarray(params, dtype=float))
        y = np.asarray(y, dtype=float)
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        idx, ux = size_groups(x)
        means, k = size_means(idx, y, len(ux))
        if len(ux) < 3:
            degenerate.append({TOO_FEW_POINTS: r, NOT_CONVEX: 0, VERTEX_OUT_OF_RANGE: 0})
            continue
        ys = means[None, :] + sig[:, None] * rng.standard_normal((r, len(ux))) / np.sqrt(k)[None, :]
        low = np.argmin(ys, axis=1)
        at_edge = int(((low == 0) | (low == len(ux) - 1)).sum())
        if minimizer == "akima":
            xs, ls = akima_minimum(ux, ys)
            deg = {TOO_FEW_POINTS: 0, NOT_CONVEX: 0, VERTEX_OUT_OF_RANGE: at_edge}
        else:
            xs, ls, deg = _parabola_budget(ux, k, ys, window)
            deg = {TOO_FEW_POINTS: 0, **deg}
            deg[VERTEX_OUT_OF_RANGE] = max(deg[VERTEX_OUT_OF_RANGE], at_edge)
        log_n[:, col], loss[:, col], valid[:, col] = xs, ls, True
        degenerate.append(deg)
    budgets = np.array([c for c, _, _ in groups], dtype=float)
    rels = [None] * g if tokens_relations is None else list(tokens_relations)
    if len(rels) != g:
        raise ValueError(f"tokens_relations has {len(rels)} entries, groups has {g}")
    rel = np.array([(math.log(c / 6.0), -1.0) if t is None else (float(t[0]), float(t[1]))
                    for c, t in zip(budgets, rels)], dtype=float).reshape(g, 2)
    log_d = rel[None, :, 0] + rel[None, :, 1] * log_n
    return BootstrapVertices(budgets=budgets, log_n=log_n, loss=loss, valid=valid, degenerate=tuple(degenerate),
                             n_resamples=r, seed=seed, log_d=log_d, tokens_relations=rel,
                             sigma=float(sigma) if np.isfinite(sigma) else math.nan)


def frontier_samples(bv: BootstrapVertices, columns: np.ndarray | None = None) -> FrontierSamples:
    """Refit the frontier in every resample over the chosen budget columns (bool mask over budgets).

    Each budget's resampled ln N_opt is first winsorised at its own 5th and
    95th percentiles. A noise-model bootstrap adds noise to data that already
    have it, so now and then a resample finds a spurious dip far from the
    minimum, more often than the data themselves would: those rare far
    resamples widened the exponent's interval past its nominal 90% (97–98%
    at noise 0.01–0.03 in benchmarks/fit_calibration.py; 90–95% once
    winsorised). Per-budget intervals (5–95%) are unchanged by it.
    """
    cols = np.ones(len(bv.budgets), dtype=bool) if columns is None else np.asarray(columns, dtype=bool)
    lc = np.log(bv.budgets[cols])
    mask = bv.valid[:, cols]
    log_n = np.where(mask, bv.log_n[:, cols], np.nan)
    has = mask.any(0)
    if has.any():
        lo, hi = np.nanpercentile(log_n[:, has], [5.0, 95.0], axis=0)
        log_n[:, has] = np.clip(log_n[:, has], lo, hi)
    rel = bv.tokens_relations[cols]
    log_d = rel[None, :, 0] + rel[None, :, 1] * log_n
    with np.errstate(invalid="ignore", divide="ignore"):
        log_l = np.log(np.where(mask, bv.loss[:, cols], 1.0))
    mask = mask & np.isfinite(log_l)
    slope_n, icpt_n = batched_line_fit(lc, np.where(mask, log_n, 0.0), mask)
    slope_d, icpt_d = batched_line_fit(lc, np.where(mask, log_d, 0.0), mask)
    slope_l, icpt_l = batched_line_fit(lc, np.where(mask, log_l, 0.0), mask)
    ok = np.isfinite(slope_n) & np.isfinite(slope_d)
    le, lk, lg, c0 = fit_loss_laws(lc, np.where(bv.valid[:, cols], bv.loss[:, cols], np.nan))
    return FrontierSamples(slope_n=slope_n, icpt_n=icpt_n, slope_l=slope_l, icpt_l=icpt_l, ok=ok,
                           dropped=int((~ok).sum()), slope_d=slope_d, icpt_d=icpt_d,
                           loss_E=le, loss_k=lk, loss_gamma=lg, loss_c0=c0)


#: fewer finite samples than this give no interval: a 5–95% interval of fewer than 20 draws has less than
#: one draw in each tail (`--bootstrap 1` printed "E = 1.678 (1.688 – 1.688)")
MIN_INTERVAL_SAMPLES = 20


def interval(samples: np.ndarray, lo: float = 5.0, hi: float = 95.0) -> tuple[float, float, float] | None:
    """(median, lo-percentile, hi-percentile) over finite samples; None when there are fewer than
    MIN_INTERVAL_SAMPLES."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size < MIN_INTERVAL_SAMPLES:
        return None
    med, a, b = np.percentile(s, [50.0, lo, hi])
    return float(med), float(a), float(b)
