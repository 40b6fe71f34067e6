"""Fitted hyperparameter laws: the optimal learning rate η* and batch size B* per cell, and how they scale.

A sweep with `lr_grid` (or `batch_grid`) trains each cell — one (budget C, size N) — at several
learning rates (batch sizes). Per cell:

- the loss of each η is the mean over its seeds, and where the cell also has several batch sizes
  the lowest over them (the profile over B); a parabola of loss in ln η through the (up to)
  `WINDOW` values around the lowest gives η* at its vertex. The same in ln B gives B* (tokens).
- flags (stable strings; a flagged cell enters no law): `too_few_values` (< 3 distinct values),
  `not_convex` (curvature ≤ 0), `at_low_edge` / `at_high_edge` (the lowest loss at the smallest /
  largest value of the grid, or the vertex beyond it: the optimum lies outside the grid). A cell
  at an edge reports its best grid value as the optimum, so `isoflop extend` knows where to go.

Laws, by least squares in log-log over the unflagged cells (each cell one point):
η*(C) = k·C^e and B*(C) (DeepSeek's form, keys "lr" and "batch"), η*(N) and B*(N) (Porian et
al.'s, keys "lr_n" and "batch_n"). Intervals (5–95%) come from a noise-model bootstrap as in
`bootstrap.py`: every run's loss gets Gaussian noise of the sweep's σ, every cell's optimum is
refitted (a resampled vertex beyond the grid is clipped to its edge), and the lines are refitted.
σ is pooled from the residuals of the cells' parabolas (cells with more than 3 values) — it
holds any misfit of the parabola too, so it errs wide — else the σ the caller passes (the
IsoFLOP fit's).

Pure: numpy arrays in, frozen dataclasses out. `read_hparam_columns` reads the optional `lr` and
`batch` columns of a `fit --csv` file.
"""
from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .noise import size_groups

TOO_FEW_VALUES = "too_few_values"
NOT_CONVEX = "not_convex"
AT_LOW_EDGE = "at_low_edge"
AT_HIGH_EDGE = "at_high_edge"
EDGE_FLAGS = (AT_LOW_EDGE, AT_HIGH_EDGE)
#: grid values around the lowest loss that a cell's parabola goes through (a wide lr grid is not a
#: parabola far from its optimum: divergence makes it steep on the high side)
WINDOW = 5
#: values of one axis closer than this in ln are one value (an lr rule in D moves with batch rounding)
VALUE_TOL = 0.01
KINDS = ("lr", "batch")


@dataclass(frozen=True)
class AxisFit:
    """One cell's optimum along one axis (lr or batch)."""

    opt: float                       # the vertex, or the best grid value when flagged at an edge; NaN: none
    flags: tuple[str, ...]
    values: tuple[float, ...]        # the grid values (η or B), increasing
    losses: tuple[float, ...]        # the cell's loss at each (mean over seeds, lowest over the other axis)
    coefficients: tuple[float, float, float] | None = None   # loss = a·u² + b·u + c, u = ln value − x0
    x0: float = math.nan
    residual_ss: float = 0.0         # parabola residuals' sum of squares (for σ)
    residual_dof: int = 0

    @property
    def usable(self) -> bool:
        return not self.flags and math.isfinite(self.opt)


@dataclass(frozen=True)
class Cell:
    budget: float
    params: float
    lr: AxisFit | None
    batch: AxisFit | None
    runs: int


@dataclass(frozen=True)
class HLaw:
    """opt = coefficient · X^exponent over the unflagged cells; X = C or N."""

    kind: str                        # "lr" | "batch"
    of: str                          # "C" | "N"
    exponent: float
    coefficient: float
    cells: int                       # cells used
    exponent_ci: tuple[float, float] | None = None
    coefficient_ci: tuple[float, float] | None = None
    excluded: tuple[tuple[float, float, str], ...] = ()   # (budget, params, flags) of cells left out
    exponent_samples: np.ndarray | None = field(default=None, repr=False, compare=False)
    coefficient_samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __call__(self, x: float | np.ndarray) -> np.ndarray:
        return self.coefficient * np.asarray(x, dtype=float) ** self.exponent

    def band(self, x: float | np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """5–95% of the law's value at x over the bootstrap resamples (None without them)."""
        if self.exponent_samples is None or len(self.exponent_samples) < 20:
            return None
        lx = np.log(np.atleast_1d(np.asarray(x, dtype=float)))
        v = np.log(self.coefficient_samples)[:, None] + self.exponent_samples[:, None] * lx[None, :]
        lo, hi = np.percentile(np.exp(v), [5.0, 95.0], axis=0)
        return lo, hi

    def to_json(self) -> dict[str, Any]:
        return {"of": self.of, "exponent": self.exponent, "exponent_ci": self.exponent_ci,
                "coefficient": self.coefficient, "coefficient_ci": self.coefficient_ci, "cells": self.cells,
                "excluded": [{"budget": b, "params": n, "reason": r} for b, n, r in self.excluded]}


@dataclass(frozen=True)
class HparamsReport:
    cells: tuple[Cell, ...]
    laws: dict[str, HLaw]            # "lr", "batch" (of C), "lr_n", "batch_n" (of N); absent without a grid
    sigma: float
    sigma_source: str
    reasons: dict[str, str]          # law key -> why it is absent although the sweep has the grid
    bootstrap: int = 0

    def to_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return float(v) if v is not None and math.isfinite(v) else None

        cells = [{"budget": c.budget, "params": c.params, "runs": c.runs,
                  "lr_opt": num(c.lr.opt) if c.lr else None, "lr_flags": list(c.lr.flags) if c.lr else None,
                  "lr_values": list(c.lr.values) if c.lr else None,
                  "batch_opt": num(c.batch.opt) if c.batch else None,
                  "batch_flags": list(c.batch.flags) if c.batch else None,
                  "batch_values": list(c.batch.values) if c.batch else None} for c in self.cells]
        return {"cells": cells, "laws": {k: v.to_json() for k, v in self.laws.items()},
                "law_reasons": dict(self.reasons), "sigma": num(self.sigma), "sigma_source": self.sigma_source,
                "bootstrap": self.bootstrap}


# ---------------------------------------------------------------------------- one axis of one cell
def _clusters(log_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value index per run, ln value per index), values within VALUE_TOL merged."""
    order = np.argsort(log_v, kind="stable")
    idx_sorted, ux = size_groups(log_v[order], tol=VALUE_TOL)
    idx = np.empty_like(idx_sorted)
    idx[order] = idx_sorted
    return idx, ux


def _profile(y: np.ndarray, axis_idx: np.ndarray, other_idx: np.ndarray, n_axis: int, n_other: int) -> np.ndarray:
    """Loss per axis value: mean over seeds of each (axis, other) pair, lowest over the other axis.
    y: (R, runs) -> (R, n_axis), NaN where the axis value has no run."""
    combo = axis_idx * n_other + other_idx
    m = n_axis * n_other
    counts = np.bincount(combo, minlength=m).astype(float)
    sums = np.zeros((y.shape[0], m))
    np.add.at(sums.T, combo, y.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan).reshape(y.shape[0], n_axis, n_other)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # an axis value without any run: NaN, dropped later
        return np.nanmin(means, axis=2)


def _parabolas(x: np.ndarray, ys: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ys (R, m) over x (m,): (vertex x clipped to [x0, x_m], convex?, beyond the grid?) of the
    parabola through the `window` values around the row's lowest."""
    r, m = ys.shape
    j = np.argmin(ys, axis=1)
    if m <= window:
        lo = np.zeros(r, dtype=int)
    else:
        lo = np.clip(j - (window - 1) // 2, 0, m - window)
    pos = np.arange(m)[None, :]
    w = ((pos >= lo[:, None]) & (pos < (lo + min(window, m))[:, None])).astype(float)
    x0 = float(x.mean())
    u = x - x0
    upow = np.stack([np.ones_like(u), u, u * u, u ** 3, u ** 4], axis=1)
    mom = w @ upow
    t = (w * ys) @ upow[:, :3]
    a_mat = np.stack([np.stack([mom[:, 4], mom[:, 3], mom[:, 2]], -1),
                      np.stack([mom[:, 3], mom[:, 2], mom[:, 1]], -1),
                      np.stack([mom[:, 2], mom[:, 1], mom[:, 0]], -1)], axis=1)
    rhs = np.stack([t[:, 2], t[:, 1], t[:, 0]], -1)
    coef = np.linalg.solve(a_mat, rhs[..., None])[..., 0]
    a, b = coef[:, 0], coef[:, 1]
    convex = a > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        u_star = np.where(convex, -b / (2 * a), u[j])
    edge = (j == 0) | (j == m - 1) | (u_star < u[0]) | (u_star > u[-1])
    return x0 + np.clip(u_star, u[0], u[-1]), convex, edge


def fit_axis(values: np.ndarray, loss: np.ndarray, other: np.ndarray | None = None) -> AxisFit:
    """One cell's optimum along one axis from its runs: values (η or B per run), loss, other (the other
    axis's value per run, whose lowest is taken per value; None: one value)."""
    lv = np.log(np.asarray(values, dtype=float))
    y = np.asarray(loss, dtype=float)
    idx, ux = _clusters(lv)
    if other is None:
        oidx, n_other = np.zeros(len(y), dtype=int), 1
    else:
        oidx, uo = _clusters(np.log(np.asarray(other, dtype=float)))
        n_other = len(uo)
    prof = _profile(y[None, :], idx, oidx, len(ux), n_other)[0]
    keep = np.isfinite(prof)
    ux, prof = ux[keep], prof[keep]
    vals = tuple(float(v) for v in np.exp(ux))
    losses = tuple(float(v) for v in prof)
    if len(ux) < 3:
        best = float(np.exp(ux[int(np.argmin(prof))])) if len(ux) else math.nan
        return AxisFit(best, (TOO_FEW_VALUES,), vals, losses)
    xs, convex, edge = _parabolas(ux, prof[None, :])
    j = int(np.argmin(prof))
    # the parabola's own coefficients and residuals (for σ and plots)
    m = len(ux)
    lo = 0 if m <= WINDOW else min(max(j - (WINDOW - 1) // 2, 0), m - WINDOW)
    sel = slice(lo, lo + min(WINDOW, m))
    x0 = float(ux.mean())
    c = np.polyfit(ux[sel] - x0, prof[sel], 2)
    res = prof[sel] - np.polyval(c, ux[sel] - x0)
    coefs = (float(c[0]), float(c[1]), float(c[2]))
    dof = int(min(WINDOW, m) - 3)
    flags: list[str] = []
    if not convex[0]:
        flags.append(NOT_CONVEX)
    if edge[0]:
        # which edge: where the lowest loss sits, else where the vertex went
        u_star = -coefs[1] / (2 * coefs[0]) + x0 if coefs[0] > 0 else ux[j]
        low = j == 0 or (j != m - 1 and u_star < ux[0])
        flags.append(AT_LOW_EDGE if low else AT_HIGH_EDGE)
    opt = float(np.exp(ux[j])) if flags else float(np.exp(xs[0]))
    return AxisFit(opt, tuple(flags), vals, losses, coefs, x0, float((res * res).sum()), dof)


# ---------------------------------------------------------------------------- cells and laws
@dataclass(frozen=True)
class _CellData:
    budget: float
    params: float
    rows: np.ndarray                  # indices into the input arrays
    axes: dict[str, tuple[np.ndarray, np.ndarray, int, int]]   # kind -> (axis idx, other idx, n_axis, n_other)


def _cells(budget: np.ndarray, params: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
    out = []
    for c in np.unique(budget):
        rows = np.flatnonzero(budget == c)
        x = np.log(params[rows])
        order = np.argsort(x, kind="stable")
        sid, ux = size_groups(x[order])
        for s in range(len(ux)):
            r = rows[order[sid == s]]
            out.append((float(c), float(np.exp(ux[s])), r))
    return out


def _varies(budget: np.ndarray, params: np.ndarray, v: np.ndarray) -> bool:
    """Whether v takes more than one value (beyond VALUE_TOL) among runs of the same budget and N (within
    the size tolerance, coarsely: N rounded to 1% in ln)."""
    if len(v) < 2:
        return False
    key = np.stack([budget, np.round(np.log(params) / 0.01)])
    _, inv = np.unique(key, axis=1, return_inverse=True)
    inv = inv.reshape(-1)
    lv = np.log(v)
    lo = np.full(inv.max() + 1, np.inf)
    hi = np.full(inv.max() + 1, -np.inf)
    np.minimum.at(lo, inv, lv)
    np.maximum.at(hi, inv, lv)
    return bool(((hi - lo) > VALUE_TOL).any())


def _line(lx: np.ndarray, ly: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept per row of ly (R, k) over lx (k,), only where mask (R, k)."""
    w = mask.astype(float)
    n = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * lx).sum(1) / n
        my = (w * np.where(mask, ly, 0.0)).sum(1) / n
        dx = lx[None, :] - mx[:, None]
        sxx = (w * dx * dx).sum(1)
        slope = (w * dx * (np.where(mask, ly, 0.0) - my[:, None])).sum(1) / sxx
    slope = np.where(sxx > 1e-12, slope, np.nan)
    return slope, my - slope * mx


def _ci(s: np.ndarray) -> tuple[float, float] | None:
    s = s[np.isfinite(s)]
    if s.size < 20:
        return None
    lo, hi = np.percentile(s, [5.0, 95.0])
    return float(lo), float(hi)


def fit_hparams(budget: np.ndarray, params: np.ndarray, loss: np.ndarray, lr: np.ndarray | None,
                batch: np.ndarray | None, *, sigma: float = math.nan, bootstrap: int = 1000,
                seed: int = 0) -> HparamsReport | None:
    """Per-cell η* and B*, and their laws in C and N. Inputs: the usable runs (finite loss), every
    variant of every cell. lr / batch: None (or all NaN) when the sweep has no such column. Returns None
    when no cell has more than one value on either axis (no grid: nothing to fit)."""
    budget, params, loss = (np.asarray(a, dtype=float) for a in (budget, params, loss))
    cols: dict[str, np.ndarray] = {}
    for kind, v in (("lr", lr), ("batch", batch)):
        if v is not None:
            a = np.asarray(v, dtype=float)
            if np.isfinite(a).all() and (a > 0).all():
                cols[kind] = a
    ok = np.isfinite(loss) & np.isfinite(budget) & (params > 0)
    for a in cols.values():
        ok &= np.isfinite(a) & (a > 0)
    budget, params, loss = budget[ok], params[ok], loss[ok]
    cols = {k: a[ok] for k, a in cols.items()}
    # which axes vary within some cell: the sweep's grids (checked at once: most sweeps have none)
    kinds = [k for k in KINDS if k in cols and _varies(budget, params, cols[k])]
    if not kinds:
        return None
    raw = _cells(budget, params)
    prepared: list[_CellData] = []
    cells: list[Cell] = []
    for c, n, rows in raw:
        axes, fits = {}, {}
        for kind in kinds:
            other = [k for k in kinds if k != kind]
            aidx, ux = _clusters(np.log(cols[kind][rows]))
            if other:
                oidx, uo = _clusters(np.log(cols[other[0]][rows]))
            else:
                oidx, uo = np.zeros(len(rows), dtype=int), np.zeros(1)
            axes[kind] = (aidx, oidx, len(ux), len(uo))
            fits[kind] = fit_axis(cols[kind][rows], loss[rows], cols[other[0]][rows] if other else None)
        prepared.append(_CellData(c, n, rows, axes))
        cells.append(Cell(c, n, fits.get("lr"), fits.get("batch"), len(rows)))
    # σ: pooled parabola residuals, else the caller's
    ss = sum(getattr(cl, k).residual_ss for cl in cells for k in kinds if getattr(cl, k) is not None
             and getattr(cl, k).coefficients is not None)
    dof = sum(getattr(cl, k).residual_dof for cl in cells for k in kinds if getattr(cl, k) is not None
              and getattr(cl, k).coefficients is not None)
    if dof >= 3:
        sig, source = math.sqrt(ss / dof), f"residuals of the cells' parabolas ({dof} degrees of freedom)"
    else:
        sig, source = float(sigma), "the IsoFLOP fit's noise estimate"
    laws: dict[str, HLaw] = {}
    reasons: dict[str, str] = {}
    r_n = int(bootstrap) if math.isfinite(sig) and sig > 0 else 0
    rng = np.random.default_rng(seed)
    for kind in kinds:
        use = np.array([getattr(cl, kind).usable for cl in cells])
        excluded = tuple((cl.budget, cl.params, ",".join(getattr(cl, kind).flags)) for cl in cells
                         if not getattr(cl, kind).usable)
        opt = np.log(np.array([getattr(cl, kind).opt for cl in cells], dtype=float))
        samples = None
        if r_n and use.sum() >= 2:
            samples = np.full((r_n, len(cells)), np.nan)
            for j, (cd, cl) in enumerate(zip(prepared, cells)):
                if not use[j]:
                    continue
                aidx, oidx, na, no = cd.axes[kind]
                y = loss[cd.rows][None, :] + sig * rng.standard_normal((r_n, len(cd.rows)))
                prof = _profile(y, aidx, oidx, na, no)
                present = np.isfinite(prof[0])
                ux = np.log(np.array(getattr(cl, kind).values))
                xs, _, _ = _parabolas(ux, prof[:, present])
                samples[:, j] = xs
        for of in ("C", "N"):
            key = kind if of == "C" else f"{kind}_n"
            x = np.log(np.array([cl.budget if of == "C" else cl.params for cl in cells]))
            if len(np.unique(np.round(x[use], 6))) < 2:
                reasons[key] = (f"{int(use.sum())} unflagged cell(s) at fewer than 2 distinct "
                                f"{'budgets' if of == 'C' else 'sizes'}: no law")
                continue
            slope, icpt = _line(x[use], opt[use][None, :], np.ones((1, int(use.sum())), dtype=bool))
            e_ci = c_ci = es = cs = None
            if samples is not None:
                es, ic = _line(x[use], samples[:, use], np.isfinite(samples[:, use]))
                cs = np.exp(ic)
                e_ci, c_ci = _ci(es), _ci(cs)
            laws[key] = HLaw(kind, of, float(slope[0]), float(math.exp(icpt[0])), int(use.sum()), e_ci, c_ci,
                             excluded, es, cs)
    return HparamsReport(tuple(cells), laws, sig, source, reasons, r_n)


# ---------------------------------------------------------------------------- inputs
def best_variant_states(budget: np.ndarray, params: np.ndarray, loss: np.ndarray, lr: np.ndarray | None,
                        batch: np.ndarray | None, seed_key: Sequence[Any] | None = None) -> list[str | None]:
    """Per run: None when it is its cell's best (lowest loss per (budget, size, seed key)), else the reason
    it is not (what the store's fit rows do: the IsoFLOP fit sees one variant per cell)."""
    budget, params, loss = (np.asarray(a, dtype=float) for a in (budget, params, loss))
    out: list[str | None] = [None] * len(loss)
    keys = list(seed_key) if seed_key is not None else [0] * len(loss)
    finite = np.isfinite(loss) & np.isfinite(budget) & (params > 0)
    for c, n, rows in _cells(np.where(finite, budget, np.nan), params):
        by_key: dict[Any, list[int]] = {}
        for i in rows:
            by_key.setdefault(keys[i], []).append(int(i))
        for idx in by_key.values():
            b = min(idx, key=lambda i: loss[i])
            for i in idx:
                if i != b:
                    what = ", ".join(f"{k} {v[i]:.4g}" for k, v in (("lr", lr), ("batch", batch)) if v is not None)
                    out[i] = f"not_best: {what} lost to " + ", ".join(
                        f"{k} {v[b]:.4g}" for k, v in (("lr", lr), ("batch", batch)) if v is not None)
    return out


LR_ALIASES = ("lr", "learning_rate", "eta", "peak_lr")
BATCH_ALIASES = ("batch", "batch_tokens", "batch_size_tokens")


def read_hparam_columns(path: str | Path, *, config: str | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The optional lr and batch (tokens) columns of a `fit --csv` file, row-aligned with csvio.read_csv
    (same config filter); None for a column the file lacks. Empty cells are NaN."""
    from .csvio import CSVError

    p = Path(path)
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        lower = {name.strip().lower(): name for name in (reader.fieldnames or [])}
        rows = list(reader)
    if config is not None and "config" in lower:
        rows = [r for r in rows if r[lower["config"]] == config]
    out: list[np.ndarray | None] = []
    for aliases in (LR_ALIASES, BATCH_ALIASES):
        name = next((lower[a] for a in aliases if a in lower), None)
        if name is None:
            out.append(None)
            continue
        vals = []
        for i, r in enumerate(rows):
            t = (r[name] or "").strip()
            if t == "":
                vals.append(math.nan)
                continue
            try:
                v = float(t)
            except ValueError:
                raise CSVError(f"{p}: line {i + 2}: column {name!r} has non-numeric value {t!r}") from None
            if not (math.isfinite(v) and v > 0):
                raise CSVError(f"{p}: line {i + 2}: column {name!r} must be a positive number, got {t!r}")
            vals.append(v)
        out.append(np.array(vals, dtype=float))
    return out[0], out[1]


def mark_best_variants(table: Any, lr: np.ndarray | None, batch: np.ndarray | None) -> Any:
    """A FitTable in which every run that lost its cell to another (lr, batch) variant is `not_best`
    (for `fit --csv` with lr/batch columns: the IsoFLOP fit takes one variant per cell, as from the store)."""
    from .table import FitTable, snap_budgets

    if lr is None and batch is None:
        return table
    usable = table.usable_mask()
    budget = table.budget.copy()
    unknown = ~np.isfinite(budget) & usable
    if unknown.any():
        budget[unknown] = snap_budgets(table.compute[unknown])
    why = best_variant_states(np.where(usable, budget, np.nan), table.params, np.where(usable, table.loss, np.nan),
                              lr, batch)
    state = [("not_best" if w else s) for s, w in zip(table.state, why)]
    reason = [(w.removeprefix("not_best: ") if w else r) for r, w in zip(table.reason, why)]
    return FitTable(budget=table.budget, params=table.params, tokens=table.tokens, loss=table.loss, flops=table.flops,
                    run_id=table.run_id, state=state, reason=reason)


def hparams_of_table(table: Any, lr: np.ndarray | None, batch: np.ndarray | None, budgets: Sequence[float], *,
                     sigma: float = math.nan, bootstrap: int = 1000, seed: int = 0,
                     tolerance: float = 0.10) -> HparamsReport | None:
    """`fit_hparams` over a FitTable's completed runs and their `not_best` siblings (budgets unknown in the
    table are snapped to `budgets`, the IsoFLOP fit's)."""
    from .table import COMPLETED_STATES, snap_budgets

    if lr is None and batch is None:
        return None
    st = np.array([str(s).strip().lower() for s in table.state])
    ok = (np.isin(st, list(COMPLETED_STATES)) | (st == "") | (st == "not_best")) & np.isfinite(table.loss) \
        & (table.loss > 0)
    budget = table.budget.copy()
    unknown = ~np.isfinite(budget)
    if unknown.any() and len(budgets):
        budget[unknown] = snap_budgets(table.compute[unknown], list(budgets), tolerance)
    ok &= np.isfinite(budget)
    if not ok.any():
        return None
    return fit_hparams(budget[ok], table.params[ok], table.loss[ok], None if lr is None else np.asarray(lr, float)[ok],
                       None if batch is None else np.asarray(batch, float)[ok], sigma=sigma,
                       bootstrap=bootstrap, seed=seed)


def row_columns(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The lr and batch columns of the store's fit rows (store/results.fit_rows)."""
    def col(key: str) -> np.ndarray | None:
        v = [r.get(key) for r in rows]
        return None if all(x is None for x in v) else np.array([math.nan if x is None else x for x in v], float)

    return col("lr"), col("batch")
