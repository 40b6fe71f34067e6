"""Adaptive planning: which runs to add to a sweep, from what its fit found. Pure (no store, no fit).

`isoflop extend SWEEP` (isoflop/iterate.py) fits the sweep and passes the results here:

- sizes: for every budget whose minimum is at or beyond an edge of its sizes (flags
  `vertex_out_of_range`, `vertex_near_edge`), sizes beyond that edge at the budget's own grid
  spacing, until at least `BRACKET` sizes lie beyond the fitted minimum on that side. Where the
  lowest loss sits on the edge the fit cannot place the minimum, so extend predicts it (the
  frontier of the bracketed budgets, or a parabola through the sizes nearest the edge: the farther
  of the two) and plans past the prediction; with no prediction beyond the edge, or one beyond
  `MAX_NEW_SIZES` steps, it says to run `extend` again after these finish. Each new size runs at
  the sweep's rules and grids.
- multipliers: for every cell (budget, size) whose optimal η (or B) is at an edge of its grid,
  the next multiplier beyond it (the grid's own ratio), at that size.
- a budget (`--budget C`): `points` sizes centred on the predicted N_opt at C and spanning at
  least its 5–95% interval (and the spec's span), with η and B from the sweep's fitted laws
  η*(C), B*(C) where it has them (the lr/batch grids still multiply them), else from its rules.

Everything comes back as `spec.Extension` entries: the planner turns them into runs like any
other, so run ids are stable and existing runs untouched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..spec import Extension, Spec
from .grid import PlanError, family_of
from .shapes import Candidates, ShapeError, candidates, pick_shapes

#: sizes wanted on each side of a budget's minimum
BRACKET = 2
#: flags (fit/isoflop.py) of a budget whose minimum is at or beyond an edge of its sizes
EDGE_BUDGET_FLAGS = ("vertex_out_of_range", "vertex_near_edge")
#: at most this many sizes added to one budget per round (a vertex extrapolated far away is no target)
MAX_NEW_SIZES = 4


@dataclass(frozen=True)
class SizeRow:
    """One planned size of a budget (any of its runs): what the store knows."""

    budget: float
    point: int
    n_layer: int
    d_model: int
    params: float


@dataclass(frozen=True)
class BudgetFit:
    """What extend needs of one budget's IsoFLOP fit."""

    budget: float
    n_opt: float               # the fitted minimum (NaN: none)
    flags: tuple[str, ...]
    lowest_params: float       # N of the lowest mean loss
    predicted: float = math.nan  # where the minimum probably is when it is beyond the edge (NaN: unknown)


@dataclass(frozen=True)
class CellEdge:
    """A cell whose optimal lr (or batch) is at an edge of its grid."""

    budget: float
    n_layer: int
    d_model: int
    point: int
    kind: str                  # "lr" | "batch"
    side: str                  # "low" | "high"
    mults: tuple[float, ...]   # multipliers the cell has
    lr: float | None = None    # the base lr / batch of an extension cell (None: the rules)
    batch: float | None = None


def grid_ratio(grid: Sequence[float], default: float = 2.0) -> float:
    """The geometric step of a multiplier grid (its median ratio); `default` for a one-value grid."""
    g = sorted(set(float(x) for x in grid))
    if len(g) < 2:
        return default
    return float(math.exp(np.median(np.diff(np.log(g)))))


def _subset(c: Candidates, mask: np.ndarray) -> Candidates:
    return Candidates(c.n_layer[mask], c.d_model[mask], c.log_params[mask], c.aspect_cost[mask])


def _budget_step(spec: Spec, budget: float) -> float:
    """ln of the spacing of the budget's planned grid."""
    lo, hi = spec.grid.param_range(budget)
    k = spec.grid.points
    return math.log(hi / lo) / (k - 1) if k > 1 and hi > lo else math.log(2.0)


def _pick_beyond(spec: Spec, targets: list[float], *, above: float | None = None,
                 below: float | None = None, step: float) -> list[tuple[int, int, float]]:
    fam = family_of(spec)
    try:
        c = candidates(fam, spec.params, min(targets), max(targets))
    except ShapeError as e:
        raise PlanError(str(e)) from None
    mask = np.ones(len(c.log_params), dtype=bool)
    if above is not None:
        mask &= c.log_params > math.log(above) + 1e-9
    if below is not None:
        mask &= c.log_params < math.log(below) - 1e-9
    try:
        return pick_shapes(_subset(c, mask), sorted(targets), max(step / 2, math.log(1.1)))
    except (ShapeError, ValueError, IndexError) as e:
        raise PlanError(f"no free shape of the model family beyond the grid: {e}") from None


def edge_parabola_vertex(params: Sequence[float], means: Sequence[float]) -> float:
    """N of the vertex of a parabola in ln N through the 3 sizes nearest the lowest mean loss when that
    lowest loss is at an edge: an extrapolated guess of where the minimum lies beyond it (NaN: the
    parabola is not convex or its vertex is not beyond that edge)."""
    x, y = np.log(np.asarray(params, float)), np.asarray(means, float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) < 3:
        return math.nan
    i = int(np.argmin(y))
    if i == 0:
        xs, ys = x[:3], y[:3]
    elif i == len(x) - 1:
        xs, ys = x[-3:], y[-3:]
    else:
        return math.nan
    a, b, _ = np.polyfit(xs - xs.mean(), ys, 2)
    if not a > 0:
        return math.nan
    v = float(xs.mean() - b / (2 * a))
    beyond = v < x[0] if i == 0 else v > x[-1]
    return math.exp(v) if beyond and abs(v) < 700 else math.nan


def size_extensions(spec: Spec, fits: Sequence[BudgetFit], sizes: Sequence[SizeRow],
                    notes: list[str] | None = None) -> list[Extension]:
    """New sizes for every budget whose minimum is at or beyond an edge (see the module docstring);
    `notes` gets a line for each budget where one round may not be enough."""
    out: list[Extension] = []
    for f in fits:
        if not set(f.flags) & set(EDGE_BUDGET_FLAGS):
            continue
        own = sorted({(s.params, s.point, s.n_layer, s.d_model) for s in sizes if s.budget == f.budget})
        if len(own) < 2:
            continue
        ln = np.log([s[0] for s in own])
        x_low, x_high = float(ln[0]), float(ln[-1])
        x_best = math.log(f.lowest_params)
        x_star = math.log(f.n_opt) if math.isfinite(f.n_opt) and f.n_opt > 0 else x_best
        step = _budget_step(spec, f.budget)
        # a lowest loss on an edge: the minimum is at least there, and where it is predicted beyond
        # that edge, there (a quarter step further: a prediction short by a little still leaves it inside)
        x_pred = math.log(f.predicted) if math.isfinite(f.predicted) and f.predicted > 0 else math.nan
        unsure = False
        if abs(x_best - x_high) < 1e-9:
            x_star = max(x_star, x_high, x_pred + step / 4 if x_pred > x_high else x_high)
            unsure = not x_pred > x_high
        if abs(x_best - x_low) < 1e-9:
            x_star = min(x_star, x_low, x_pred - step / 4 if x_pred < x_low else x_low)
            unsure = not x_pred < x_low
        n_above = int((ln > x_star + 1e-9).sum())
        n_below = int((ln < x_star - 1e-9).sum())
        above_needed = BRACKET - n_above + (math.ceil((x_star - x_high) / step) if x_star > x_high + 1e-9 else 0)
        below_needed = BRACKET - n_below + (math.ceil((x_low - x_star) / step) if x_star < x_low - 1e-9 else 0)
        unsure = unsure or max(above_needed, below_needed) > MAX_NEW_SIZES
        above_needed = min(max(0, above_needed), MAX_NEW_SIZES)
        below_needed = min(max(0, below_needed), MAX_NEW_SIZES)
        if unsure and notes is not None and (above_needed or below_needed):
            notes.append(f"budget {f.budget:.3g}: its minimum may lie beyond the sizes added now; run "
                         "`isoflop extend` again after these finish")
        top_point = max(s[1] for s in own)
        low_point = min(s[1] for s in own)
        if above_needed:
            targets = [math.exp(x_high + step * j) for j in range(1, above_needed + 1)]
            picks = _pick_beyond(spec, targets, above=math.exp(x_high), step=step)
            for j, (L, d, n) in enumerate(picks, start=1):
                out.append(Extension(budget=f.budget, n_layer=L, d_model=d, point=top_point + j,
                                     why=f"budget {f.budget:.3g}: minimum at the large-N edge ({', '.join(f.flags)})"))
        if below_needed:
            targets = [math.exp(x_low - step * j) for j in range(below_needed, 0, -1)]
            picks = _pick_beyond(spec, targets, below=math.exp(x_low), step=step)
            for j, (L, d, n) in enumerate(reversed(picks), start=1):
                out.append(Extension(budget=f.budget, n_layer=L, d_model=d, point=low_point - j,
                                     why=f"budget {f.budget:.3g}: minimum at the small-N edge ({', '.join(f.flags)})"))
    return out


def multiplier_extensions(spec: Spec, edges: Sequence[CellEdge]) -> list[Extension]:
    """The next lr (batch) multiplier beyond the edge of each cell whose optimum sits there."""
    out: list[Extension] = []
    for e in edges:
        grid = spec.lr_grid if e.kind == "lr" else spec.batch_grid
        r = grid_ratio(grid)
        m = max(e.mults) * r if e.side == "high" else min(e.mults) / r
        m = float(f"{m:.6g}")
        kw = {"lr_grid": [m]} if e.kind == "lr" else {"batch_grid": [m]}
        out.append(Extension(budget=e.budget, n_layer=e.n_layer, d_model=e.d_model, point=e.point, lr=e.lr,
                             batch=e.batch, why=f"{e.kind} optimum at the {e.side} edge of x{min(e.mults):g}–"
                                                f"x{max(e.mults):g}: adds x{m:g}", **kw))
    return out


def budget_extension(spec: Spec, budget: float, n_opt: float, n_opt_ci: tuple[float, float] | None, *,
                     lr: float | None = None, batch: float | None = None, why: str = "") -> list[Extension]:
    """A new budget: `points` sizes centred on n_opt, spanning at least n_opt_ci and the spec's span."""
    if not (math.isfinite(n_opt) and n_opt > 0):
        raise PlanError(f"budget {budget:.4g}: no predicted N_opt to centre on")
    k = max(spec.grid.points, 3)
    span = spec.grid.span or 16.0
    if spec.grid.tokens_per_param is not None:
        lo_, hi_ = spec.grid.param_range(budget)
        span = hi_ / lo_
    if n_opt_ci is not None and n_opt_ci[0] > 0:
        # the interval need not be symmetric about the estimate: cover both of its ends
        span = max(span, (max(n_opt_ci[1] / n_opt, n_opt / n_opt_ci[0])) ** 2 * 1.0001)
    lo, hi = n_opt / math.sqrt(span), n_opt * math.sqrt(span)
    targets = [lo * (hi / lo) ** (i / (k - 1)) for i in range(k)]
    step = math.log(hi / lo) / (k - 1)
    picks = _pick_beyond(spec, targets, step=step)
    return [Extension(budget=budget, n_layer=L, d_model=d, point=i, lr=lr, batch=batch, why=why)
            for i, (L, d, _) in enumerate(picks)]
