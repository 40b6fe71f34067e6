"""Bootstrap of the whole approach-2 pipeline: resample runs, refit parabolas and frontier.

Each resample draws, within every budget, as many runs as it has, with
replacement (seeded `numpy.random.default_rng(seed)`), and refits what the
main fit did: the window around the lowest resampled loss, the parabola (or
the Akima minimum), and then the frontier power laws through the resampled
optima.

D_opt per resample comes from the budget's tokens relation ln D = u + v·ln N
(see `isoflop.py`), fitted once on the full data: a run's D is a
deterministic function of its N under the sweep's FLOP convention, not a
noisy measurement, so resampling it would only add the error of the
relation's fit. ln D_opt = u + v·ln N_opt of each resample; the tokens
frontier (exponent b, coefficient) is refitted per resample from these, like
the params frontier. On 6ND data v = −1, u = ln(C/6), and b = 1 − a in every
resample.

Vectorised: a resample is a vector of counts per run, so a weighted parabola
is a 3×3 system built from count-weighted moments Σw·u^k (k ≤ 4), Σw·u^k·y;
all resamples of one budget are solved at once (`np.linalg.solve` on a
stack), and the frontier lines of all resamples at once from weighted sums.
The Python loop runs over budgets only. (Akima minima are computed per
resample in a loop: slower, about 0.2 ms per budget and resample.)

Degenerate resamples are explicit: a budget whose resample has fewer than 3
distinct sizes in its window, a non-convex parabola, or (unless
`allow_out_of_range`) an unbracketed minimum (vertex outside the resample's
sampled range, or its lowest mean loss at an end of its sizes), is left
out of that resample's frontier and counted by reason per budget. A resample
left with fewer than 2 budgets gives no frontier; it is counted in
`dropped` and the intervals use the rest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .frontier import batched_line_fit
from .isoflop import NOT_CONVEX, TOO_FEW_POINTS, VERTEX_OUT_OF_RANGE

AKIMA_BOOT_GRID = 2_001


@dataclass(frozen=True, eq=False)
class BootstrapVertices:
    """Per resample (rows) and budget (columns): ln N_opt, ln D_opt and L_opt; `valid` marks usable ones."""

    budgets: np.ndarray          # (G,)
    log_n: np.ndarray            # (R, G)
    loss: np.ndarray             # (R, G)
    valid: np.ndarray            # (R, G) bool
    degenerate: tuple[dict[str, int], ...]   # per budget: reason -> count of resamples
    n_resamples: int
    seed: int
    log_d: np.ndarray = None     # (R, G): u + v·ln N_opt of the budget's tokens relation  # type: ignore[assignment]
    tokens_relations: np.ndarray = None   # (G, 2): (u, v) per budget  # type: ignore[assignment]

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


def _resample_counts(rng: np.random.Generator, n: int, r: int) -> np.ndarray:
    idx = rng.integers(0, n, size=(r, n))
    flat = idx + (np.arange(r) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=r * n).reshape(r, n).astype(float)


def _parabola_budget(x: np.ndarray, y: np.ndarray, counts: np.ndarray, window: int | None,
                     allow_out_of_range: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    r = counts.shape[0]
    ux, starts, size_index = np.unique(x, return_index=True, return_inverse=True)
    s = len(ux)
    size_counts = np.add.reduceat(counts, starts, axis=1)          # (R, S)
    present = size_counts > 0
    rank = np.cumsum(present, axis=1) - 1
    n_present = present.sum(1)
    rows = np.arange(r)
    j = np.argmin(np.where(counts > 0, y[None, :], np.inf), axis=1)
    r_star = rank[rows, size_index[j]]
    if window is None:
        lo = np.zeros(r, dtype=int)
        hi = n_present
    else:
        lo = np.clip(r_star - (window - 1) // 2, 0, np.maximum(n_present - window, 0))
        hi = lo + window
    in_win = present & (rank >= lo[:, None]) & (rank < hi[:, None])   # (R, S)
    n_win = in_win.sum(1)
    w = counts * in_win[:, size_index]
    x0 = ux.mean()
    u = x - x0
    upow = np.stack([np.ones_like(u), u, u * u, u ** 3, u ** 4], axis=1)   # (n, 5)
    m = w @ upow                                                            # (R, 5)
    t = w @ (upow[:, :3] * y[:, None])                                      # (R, 3)
    a_mat = np.stack([np.stack([m[:, 4], m[:, 3], m[:, 2]], -1),
                      np.stack([m[:, 3], m[:, 2], m[:, 1]], -1),
                      np.stack([m[:, 2], m[:, 1], m[:, 0]], -1)], axis=1)   # (R, 3, 3)
    rhs = np.stack([t[:, 2], t[:, 1], t[:, 0]], -1)
    few = n_win < 3
    a_mat[few] = np.eye(3)
    rhs[few] = 0.0
    try:
        coef = np.linalg.solve(a_mat, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:  # pragma: no cover - exact singularity despite >= 3 sizes
        coef = np.stack([np.linalg.lstsq(a_mat[i], rhs[i], rcond=None)[0] for i in range(r)])
    a, b, c = coef[:, 0], coef[:, 1], coef[:, 2]
    convex = (a > 0) & ~few
    with np.errstate(divide="ignore", invalid="ignore"):
        u_star = np.where(convex, -b / (2 * a), np.nan)
        l_star = np.where(convex, c - b * b / (4 * a), np.nan)
    x_star = x0 + u_star
    first = np.argmax(present, axis=1)
    last = s - 1 - np.argmax(present[:, ::-1], axis=1)
    # the lowest resampled mean loss per size must not sit at an end of the present sizes
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.add.reduceat(counts * y[None, :], starts, axis=1) / size_counts
    k_low = np.argmin(np.where(present, means, np.inf), axis=1)
    inside = (x_star >= ux[first]) & (x_star <= ux[last]) & (k_low != first) & (k_low != last)
    valid = convex & np.isfinite(x_star) & (inside | allow_out_of_range)
    deg = {TOO_FEW_POINTS: int(few.sum()), NOT_CONVEX: int((~few & ~convex).sum()),
           VERTEX_OUT_OF_RANGE: int((convex & ~inside).sum()) if not allow_out_of_range else 0}
    return x_star, l_star, valid, deg


def _akima_budget(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    from scipy.interpolate import Akima1DInterpolator

    r = counts.shape[0]
    ux, starts, _ = np.unique(x, return_index=True, return_inverse=True)
    size_counts = np.add.reduceat(counts, starts, axis=1)
    size_sums = np.add.reduceat(counts * y[None, :], starts, axis=1)
    x_star = np.full(r, np.nan)
    l_star = np.full(r, np.nan)
    valid = np.zeros(r, dtype=bool)
    few = edge = 0
    for i in range(r):
        p = size_counts[i] > 0
        if p.sum() < 3:
            few += 1
            continue
        xs = ux[p]
        spline = Akima1DInterpolator(xs, size_sums[i, p] / size_counts[i, p])
        grid = np.linspace(xs[0], xs[-1], AKIMA_BOOT_GRID)
        vals = spline(grid)
        k = int(np.argmin(vals))
        x_star[i], l_star[i] = grid[k], vals[k]
        k_low = int(np.argmin(size_sums[i, p] / size_counts[i, p]))
        if k in (0, AKIMA_BOOT_GRID - 1) or k_low in (0, len(xs) - 1):
            edge += 1
            continue
        valid[i] = True
    return x_star, l_star, valid, {TOO_FEW_POINTS: few, NOT_CONVEX: 0, VERTEX_OUT_OF_RANGE: edge}


def bootstrap_vertices(groups: Sequence[tuple[float, np.ndarray, np.ndarray]], *, window: int | None,
                       minimizer: str = "parabola", n_resamples: int = 1000, seed: int = 0,
                       allow_out_of_range: bool = False,
                       tokens_relations: Sequence[tuple[float, float] | None] | None = None) -> BootstrapVertices:
    """Resampled optima of each budget. groups: (budget, params, loss) of usable runs.

    tokens_relations: per budget, (u, v) of ln D = u + v·ln N fitted on the
    full data (`isoflop.tokens_relation`, `IsoflopFit.tokens_relation`);
    None (or a None entry): D = C/(6N).
    """
    rng = np.random.default_rng(seed)
    r = int(n_resamples)
    g = len(groups)
    log_n = np.full((r, g), np.nan)
    loss = np.full((r, g), np.nan)
    valid = np.zeros((r, g), dtype=bool)
    degenerate = []
    for k, (_, params, y) in enumerate(groups):
        x = np.log(np.asarray(params, dtype=float))
        y = np.asarray(y, dtype=float)
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        counts = _resample_counts(rng, len(x), r)
        if minimizer == "akima":
            xs, ls, ok, deg = _akima_budget(x, y, counts)
        else:
            xs, ls, ok, deg = _parabola_budget(x, y, counts, window, allow_out_of_range)
        log_n[:, k], loss[:, k], valid[:, k] = xs, ls, ok
        degenerate.append(deg)
    budgets = np.array([c for c, _, _ in groups], dtype=float)
    rels = [None] * g if tokens_relations is None else list(tokens_relations)
    if len(rels) != g:
        raise ValueError(f"tokens_relations has {len(rels)} entries, groups has {g}")
    rel = np.array([(math.log(c / 6.0), -1.0) if t is None else (float(t[0]), float(t[1]))
                    for c, t in zip(budgets, rels)], dtype=float).reshape(g, 2)
    log_d = rel[None, :, 0] + rel[None, :, 1] * log_n
    return BootstrapVertices(budgets=budgets, log_n=log_n, loss=loss, valid=valid, degenerate=tuple(degenerate),
                             n_resamples=r, seed=seed, log_d=log_d, tokens_relations=rel)


def frontier_samples(bv: BootstrapVertices, columns: np.ndarray | None = None) -> FrontierSamples:
    """Refit the frontier lines in every resample over the chosen budget columns (bool mask over budgets)."""
    cols = np.ones(len(bv.budgets), dtype=bool) if columns is None else np.asarray(columns, dtype=bool)
    lc = np.log(bv.budgets[cols])
    mask = bv.valid[:, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        log_l = np.log(np.where(mask, bv.loss[:, cols], 1.0))
    mask = mask & np.isfinite(log_l)
    slope_n, icpt_n = batched_line_fit(lc, np.where(mask, bv.log_n[:, cols], 0.0), mask)
    slope_d, icpt_d = batched_line_fit(lc, np.where(mask, bv.log_d[:, cols], 0.0), mask)
    slope_l, icpt_l = batched_line_fit(lc, np.where(mask, log_l, 0.0), mask)
    ok = np.isfinite(slope_n) & np.isfinite(slope_d) & np.isfinite(slope_l)
    return FrontierSamples(slope_n=slope_n, icpt_n=icpt_n, slope_l=slope_l, icpt_l=icpt_l, ok=ok,
                           dropped=int((~ok).sum()), slope_d=slope_d, icpt_d=icpt_d)


def interval(samples: np.ndarray, lo: float = 5.0, hi: float = 95.0) -> tuple[float, float, float] | None:
    """(median, lo-percentile, hi-percentile) over finite samples; None when there are none."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return None
    med, a, b = np.percentile(s, [50.0, lo, hi])
    return float(med), float(a), float(b)
