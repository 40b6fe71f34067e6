"""Chinchilla approach 2: one IsoFLOP profile per budget, and its minimum.

For one budget C, the usable runs give points (x = ln N, loss). The minimum
of the profile is found by

- `minimizer="parabola"` (default): least squares loss = a·x² + b·x + c on the
  points of a window of `window` model sizes (default 5) centred on the size
  of the lowest observed loss and shifted to stay inside the sampled sizes;
  `window=None` (or "all") fits every point. The vertex x* = −b/(2a) gives
  N_opt = e^x*, L_opt = the parabola at x*. A parabola through every point of
  a wide sweep is biased (the profile is not symmetric in ln N far from the
  minimum); the window is the default for that reason.
- `minimizer="akima"` (Porian et al. 2024; the default of `fit_sweep`, chosen
  by measurement on their 15 configurations, see README): an Akima spline
  through the mean loss of each sampled size (every size, no window),
  minimised exactly per cubic piece (`akima.py`) inside the sampled range.

Sizes closer than 2% in N are one size (`noise.size_groups`): near-duplicate
sizes would shrink a window to a sliver or make a spline overshoot.

D_opt is taken under the sweep's FLOP convention, from the budget's own
runs: each run carries its (N, D) pair, and within one budget ln D is a
smooth, nearly linear function of ln N (D = C / flops_per_token(N)). The
tokens relation ln D = u + v·ln N is fitted by least squares on every
usable run of the budget (not only the window) and evaluated at the vertex:
D_opt = exp(u + v·ln N_opt). On 6ND data (D = C/(6N)) v = −1 and
u = ln(C/6), so D_opt = C/(6·N_opt) exactly; under `exact` or
`6ND+attention` (attention and the output layer in the per-token count)
small models get fewer tokens than C/(6N), and D_opt follows. Without
tokens (`tokens=None`), D = C/(6N) is assumed.

Flags (stable strings; a flagged budget is reported and, by default, left
out of the frontier):

- ``too_few_points``: fewer than 3 distinct usable sizes (in the window).
- ``not_convex``: parabola curvature a ≤ 0 (no minimum).
- ``vertex_out_of_range``: the data do not bracket a minimum: N_opt is
  outside [smallest, largest] sampled N of the budget (all its usable runs,
  not only the window), or the lowest observed loss (mean per size) is at
  the smallest or largest sampled size (a monotone profile: the true optimum
  may lie outside even when a fitted vertex lands just inside). `in_range`
  is False. For Akima, also when the grid minimum sits on an end of the range.
- ``loss_out_of_range``: L_opt lower than any convex profile through the
  means could go (below the extensions of the neighbouring secants,
  `convex_floor`) by more than 6 noise standard errors, or above the highest
  mean: a spline overshoot between near sizes (−685 on Epoch's points at
  6e19) or a parabola missing a steep profile, never a minimum. Never
  enters a frontier, even with keep_flagged.
- ``flat``: every size's mean loss within half a noise standard error of
  the others (equal to 1e-6 when the noise is unknown or only bounded, see
  `fit_budget`'s flat_noise; 3 sizes of pure noise
  spread that little about 1 time in 20, a 2-standard-error rule flagged 7
  of 100 real 3-size budgets): no minimum to find.
  Never enters a frontier.
- ``vertex_near_edge``: N_opt within one grid step (the median spacing of
  the budget's sampled ln N), or a quarter of the sampled range if that is
  less (grids of 3–4 sizes), of the smallest or largest sampled N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

TOO_FEW_POINTS = "too_few_points"
NOT_CONVEX = "not_convex"
VERTEX_OUT_OF_RANGE = "vertex_out_of_range"
VERTEX_NEAR_EDGE = "vertex_near_edge"
LOSS_OUT_OF_RANGE = "loss_out_of_range"
FLAT = "flat"
FLAGS = (TOO_FEW_POINTS, NOT_CONVEX, VERTEX_OUT_OF_RANGE, LOSS_OUT_OF_RANGE, VERTEX_NEAR_EDGE, FLAT)
#: flags whose budgets have no usable vertex; never used, even with keep_flagged
FATAL_FLAGS = frozenset({TOO_FEW_POINTS, NOT_CONVEX, LOSS_OUT_OF_RANGE, FLAT})
#: per flag: (what it means, what to do); printed under the budgets table and in the README
FLAG_ADVICE = {
    TOO_FEW_POINTS: ("fewer than 3 usable sizes", "rerun the failed runs (isoflop retry)"),
    NOT_CONVEX: ("the profile has no minimum (parabola curvature ≤ 0)", "widen the span; look at the outliers"),
    VERTEX_OUT_OF_RANGE: ("the minimum lies outside the sampled N (or the lowest loss is at an end)",
                          "move the grid's centre toward it"),
    LOSS_OUT_OF_RANGE: ("L_opt below any convex profile through the points (by > 6σ), or above them",
                        "add sizes near the minimum; use the other minimizer"),
    VERTEX_NEAR_EDGE: ("the minimum is within one grid step of the smallest/largest N",
                       "add sizes on that side (or --keep-flagged to use it)"),
    FLAT: ("every size has the same loss within the noise: no minimum to find",
           "check the losses were logged per run; else widen the span"),
}
MINIMIZERS = ("parabola", "akima")


@dataclass(frozen=True)
class IsoflopFit:
    """The fitted IsoFLOP profile of one budget. NaN where there is no answer."""

    budget: float
    n_opt: float
    d_opt: float
    loss_opt: float
    points: int                 # usable runs of the budget
    points_used: int            # runs the minimiser used (the window)
    sizes: int                  # distinct usable model sizes of the budget
    n_min: float                # smallest sampled N (usable runs)
    n_max: float                # largest sampled N
    in_range: bool
    flags: tuple[str, ...]
    minimizer: str
    window: int | None
    grid_step: float            # median spacing of sampled ln N (NaN with < 2 sizes)
    coefficients: tuple[float, float, float] | None  # (a, b, c) of loss = a·u² + b·u + c, u = ln N − x0
    x0: float                   # centring of ln N for the coefficients
    used_n_min: float = math.nan
    used_n_max: float = math.nan
    #: (u, v) of the budget's tokens relation ln D = u + v·ln N (all usable runs); None without runs
    tokens_relation: tuple[float, float] | None = None

    @property
    def has_vertex(self) -> bool:
        return math.isfinite(self.n_opt) and not (set(self.flags) & FATAL_FLAGS)

    @property
    def curvature(self) -> float:
        return self.coefficients[0] if self.coefficients is not None else math.nan

    def tokens_at(self, params: np.ndarray) -> np.ndarray:
        """D under the budget's own tokens relation at N (C/(6N) when there is none)."""
        n = np.asarray(params, dtype=float)
        if self.tokens_relation is None:
            return self.budget / (6.0 * n)
        u, v = self.tokens_relation
        return np.exp(u + v * np.log(n))

    def loss_at(self, params: np.ndarray) -> np.ndarray:
        """The fitted parabola at N (NaN for Akima fits or when there is none)."""
        n = np.asarray(params, dtype=float)
        if self.coefficients is None:
            return np.full(n.shape, np.nan)
        a, b, c = self.coefficients
        u = np.log(n) - self.x0
        return a * u * u + b * u + c


def normalise_window(window: int | str | None) -> int | None:
    if window is None or (isinstance(window, str) and window.lower() == "all"):
        return None
    k = int(window)
    if k < 3:
        raise ValueError(f"window must be at least 3 model sizes (or None/'all'), got {window!r}")
    return k


def window_sizes(size_index: np.ndarray, loss: np.ndarray, n_sizes: int, window: int | None) -> tuple[int, int]:
    """[lo, hi) size indices of the window centred on the lowest observed loss."""
    if window is None or n_sizes <= window:
        return 0, n_sizes
    s_star = int(size_index[int(np.argmin(loss))])
    lo = min(max(s_star - (window - 1) // 2, 0), n_sizes - window)
    return lo, lo + window


def edge_flags(log_n_opt: float, x_min: float, x_max: float, step: float, *, at_edge: bool = False) -> tuple[bool, list[str]]:
    """in_range and flags for a vertex; at_edge: the lowest observed loss is at an end of the sizes."""
    flags: list[str] = []
    in_range = bool(x_min <= log_n_opt <= x_max) and not at_edge
    if not in_range:
        flags.append(VERTEX_OUT_OF_RANGE)
    # within one grid step of an end, or a quarter of the range on a grid of fewer than 5 sizes (on 3 sizes
    # every interior point is within one step of an end: a well-centred minimum was flagged in 100/100)
    elif math.isfinite(step) and (log_n_opt < x_min + (near := min(step, (x_max - x_min) / 4.0))
                                  or log_n_opt > x_max - near):
        flags.append(VERTEX_NEAR_EDGE)
    return in_range, flags


def tokens_relation(params: np.ndarray, tokens: np.ndarray | None, budget: float) -> tuple[float, float]:
    """(u, v) of ln D = u + v·ln N by least squares over one budget's runs.

    tokens=None means D = C/(6N): (ln(C/6), −1) exactly. With fewer than 2
    distinct sizes the slope cannot be fitted: v = −1 (the 6ND shape) and u
    the mean of ln D + ln N.
    """
    if tokens is None:
        return math.log(budget / 6.0), -1.0
    x = np.log(np.asarray(params, dtype=float))
    z = np.log(np.asarray(tokens, dtype=float))
    if x.shape != z.shape:
        raise ValueError(f"tokens has {z.shape[0]} rows, params has {x.shape[0]}")
    if x.size == 0:
        return math.log(budget / 6.0), -1.0
    xm = float(x.mean())
    sxx = float(((x - xm) ** 2).sum())
    if len(np.unique(x)) < 2 or not sxx > 0:
        return float(np.mean(z + x)), -1.0
    v = float(((x - xm) * (z - z.mean())).sum() / sxx)
    return float(z.mean() - v * xm), v


def convex_floor(ux: np.ndarray, means: np.ndarray) -> float:
    """The lowest value a convex profile through these points can take between them.

    On each interval [x_j, x_j+1] a convex function lies above the line through
    (x_j−1, x_j) extended to the right and above the line through
    (x_j+1, x_j+2) extended to the left; the floor is the lowest point of the
    higher of the two, over all intervals.
    """
    s = len(ux)
    lowest = math.inf
    for j in range(s - 1):
        lines = []
        if j >= 1:
            m = (means[j] - means[j - 1]) / (ux[j] - ux[j - 1])
            lines.append((m, means[j] - m * ux[j]))
        if j + 2 < s:
            m = (means[j + 2] - means[j + 1]) / (ux[j + 2] - ux[j + 1])
            lines.append((m, means[j + 1] - m * ux[j + 1]))
        if not lines:
            continue
        pts = [ux[j], ux[j + 1]]
        if len(lines) == 2 and lines[0][0] != lines[1][0]:
            t = (lines[1][1] - lines[0][1]) / (lines[0][0] - lines[1][0])
            if ux[j] < t < ux[j + 1]:
                pts.append(t)
        lowest = min(lowest, min(max(m * t + b for m, b in lines) for t in pts))
    return float(lowest)


def _d_at(relation: tuple[float, float], log_n: float) -> float:
    u, v = relation
    with np.errstate(over="ignore"):
        return float(np.exp(u + v * log_n))


def fit_budget(params: np.ndarray, loss: np.ndarray, budget: float, *, window: int | str | None = 5,
               minimizer: str = "parabola", tokens: np.ndarray | None = None, noise: float = math.nan,
               flat_noise: float | None = None) -> IsoflopFit:
    """Fit one budget's profile from its usable runs (params N > 0, finite loss).

    tokens: each run's D (same length as params); D_opt comes from the
    budget's tokens relation (see the module docstring). None: D = C/(6N).
    noise: σ of one run's loss (for `loss_out_of_range`; NaN: unknown, a quarter
    of the profile's loss range is allowed).
    flat_noise: the σ the `flat` test may use (None: noise). Pass NaN where σ
    is only an upper bound on the seed noise (`noise.source` "parametric": the
    L(N, D) residuals hold the law's misfit, 5–10× the seed noise on Porian et
    al.'s sweeps, and flagged 42 of 297 of their budgets cut to 3 sizes flat);
    the test then asks for equal losses to 1e-6 (the least relative spread of
    those real budgets is 2e-3).
    """
    if minimizer not in MINIMIZERS:
        raise ValueError(f"minimizer must be one of {MINIMIZERS}, got {minimizer!r}")
    from .noise import size_groups, size_means

    k = normalise_window(window)
    rel = tokens_relation(params, tokens, budget)
    x_all = np.log(np.asarray(params, dtype=float))
    y_all = np.asarray(loss, dtype=float)
    order = np.argsort(x_all, kind="stable")
    x_all, y_all = x_all[order], y_all[order]
    size_index, ux = size_groups(x_all)
    n_sizes = len(ux)
    step = float(np.median(np.diff(ux))) if n_sizes >= 2 else math.nan
    means, counts = size_means(size_index, y_all, n_sizes) if n_sizes else (y_all, y_all)
    lowest_at_edge = bool(n_sizes and int(np.argmin(means)) in (0, n_sizes - 1))
    nan = math.nan
    base = dict(budget=float(budget), points=int(len(x_all)), sizes=n_sizes,
                n_min=float(np.exp(x_all[0])) if n_sizes else nan, n_max=float(np.exp(x_all[-1])) if n_sizes else nan,
                minimizer=minimizer, window=k if minimizer == "parabola" else None, grid_step=step,
                tokens_relation=rel if len(x_all) else None)
    if n_sizes < 3:
        return IsoflopFit(n_opt=nan, d_opt=nan, loss_opt=nan, points_used=int(len(x_all)), in_range=False,
                          flags=(TOO_FEW_POINTS,), coefficients=None, x0=nan, **base)
    # all sizes equal within the noise (a logging bug, or a span far too narrow): any "minimum" is noise
    spread = float(means.max() - means.min())
    s_flat = noise if flat_noise is None else flat_noise
    if spread <= (0.5 * float(s_flat) / math.sqrt(float(counts.min())) if np.isfinite(s_flat) and s_flat > 0
                  else 1e-6 * max(1.0, abs(float(means.min())))):
        return IsoflopFit(n_opt=nan, d_opt=nan, loss_opt=float(means.min()), points_used=int(len(x_all)),
                          in_range=False, flags=(FLAT,), coefficients=None, x0=nan, **base)
    # how low may a minimum lie? A convex profile never dips below the extensions of its neighbouring
    # secants (`convex_floor`); noise moves those lines by a few σ. A spline overshoot (−685 on Epoch's
    # near-duplicate sizes) falls far below; a real minimum between two sparse sizes does not.
    if np.isfinite(noise) and noise > 0:
        margin = 6.0 * float(noise) / math.sqrt(float(counts.min()))
    else:  # noise unknown: a quarter of the profile's own loss range
        margin = 0.25 * float(means.max() - means.min())
    floor = min(convex_floor(ux, means), float(means.min()))

    def loss_flags(l_star: float) -> list[str]:
        tol = margin + 1e-9 * max(1.0, abs(float(means.min())))
        return [LOSS_OUT_OF_RANGE] if (l_star < floor - tol or l_star > means.max() + tol) else []

    if minimizer == "akima":
        from .akima import akima_minimum

        xs, ls = akima_minimum(ux, means[None, :])
        x_star, l_star = float(xs[0]), float(ls[0])
        in_range, flags = edge_flags(x_star, ux[0], ux[-1], step, at_edge=lowest_at_edge)
        flags = loss_flags(l_star) + flags
        return IsoflopFit(n_opt=math.exp(x_star), d_opt=_d_at(rel, x_star), loss_opt=l_star,
                          points_used=int(len(x_all)), in_range=in_range, flags=tuple(flags), coefficients=None,
                          x0=nan, used_n_min=float(np.exp(ux[0])), used_n_max=float(np.exp(ux[-1])), **base)

    lo, hi = window_sizes(np.arange(n_sizes), means, n_sizes, k)
    m = (size_index >= lo) & (size_index < hi)
    x, y = ux[size_index[m]], y_all[m]
    x0 = float(np.mean(ux))
    u = x - x0
    design = np.stack([u * u, u, np.ones_like(u)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    a, b, c = (float(v) for v in coef)
    common = dict(points_used=int(m.sum()), coefficients=(a, b, c), x0=x0,
                  used_n_min=float(np.exp(ux[lo])), used_n_max=float(np.exp(ux[hi - 1])), **base)
    if not a > 0:
        return IsoflopFit(n_opt=nan, d_opt=nan, loss_opt=nan, in_range=False, flags=(NOT_CONVEX,), **common)
    u_star = -b / (2 * a)
    x_star = x0 + u_star
    l_star = c - b * b / (4 * a)
    in_range, flags = edge_flags(x_star, ux[0], ux[-1], step, at_edge=lowest_at_edge)
    if in_range:
        flags = loss_flags(l_star) + flags
    n_opt = math.exp(x_star) if x_star < 700 else math.inf
    d_opt = _d_at(rel, x_star) if math.isfinite(n_opt) else 0.0
    return IsoflopFit(n_opt=n_opt, d_opt=d_opt, loss_opt=l_star, in_range=in_range,
                      flags=tuple(flags), **common)


def group_by_budget(budget: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(budget, indices) per distinct finite budget, ascending."""
    b = np.asarray(budget, dtype=float)
    ok = np.isfinite(b)
    out = []
    for c in np.unique(b[ok]):
        out.append((float(c), np.flatnonzero(b == c)))
    return out


def fit_isoflops(params: np.ndarray, loss: np.ndarray, budget: np.ndarray, *, window: int | str | None = 5,
                 minimizer: str = "parabola", tokens: np.ndarray | None = None) -> tuple[IsoflopFit, ...]:
    """Fit every budget (arrays of usable runs only). Ascending budget order. tokens: see fit_budget."""
    p = np.asarray(params, dtype=float)
    y = np.asarray(loss, dtype=float)
    d = None if tokens is None else np.asarray(tokens, dtype=float)
    return tuple(fit_budget(p[idx], y[idx], c, window=window, minimizer=minimizer,
                            tokens=None if d is None else d[idx])
                 for c, idx in group_by_budget(budget))


def selected(fits: Sequence[IsoflopFit], keep_flagged: bool | Sequence[str] = False) -> list[bool]:
    """Which budgets enter the frontier.

    Default: only unflagged budgets. keep_flagged=True: every budget with a
    vertex inside its sampled sizes (never too_few_points/not_convex/
    loss_out_of_range). keep_flagged=("vertex_near_edge",):
    unflagged budgets plus those whose only flags are in the list.
    """
    if keep_flagged is True:
        allowed = set(FLAGS) - FATAL_FLAGS
    elif not keep_flagged:
        allowed = set()
    else:
        allowed = set(keep_flagged)
        unknown = allowed - set(FLAGS)
        if unknown:
            raise ValueError(f"keep_flagged: unknown flag(s) {sorted(unknown)}; known: {list(FLAGS)}")
        allowed -= FATAL_FLAGS
    # a vertex outside the sampled sizes is an extrapolation, never a measured optimum
    return [f.has_vertex and math.isfinite(f.n_opt) and f.n_opt > 0 and set(f.flags) <= allowed
            and f.n_min * (1 - 1e-9) <= f.n_opt <= f.n_max * (1 + 1e-9) for f in fits]
