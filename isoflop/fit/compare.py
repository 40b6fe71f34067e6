"""Which of two sweeps scales better: `compare_sweeps(...) -> Comparison`.

Pure: no I/O, no printing. Each sweep is analysed by `fit_sweep` (the same
per-budget minima, frontier and seed-noise bootstrap as `isoflop fit`); a
pair is then compared resample by resample.

Joint bootstrap: every sweep is bootstrapped with the same resample count R;
sweep i draws its noise from seed + i (so the reference's frontier equals
`isoflop fit --seed S`, the next sweep's `fit --seed S+1`). Resample r of the
reference is paired with resample r of the other sweep and each quantity of
the pair (an exponent difference, a multiplier, a crossover) is computed per
pair of resamples; its 5–95% interval is taken over those R values. The two
sweeps' noise is independent (they are different runs), which is why their
streams are distinct: one stream for both would make two identical sweeps
agree exactly in every resample and give a zero-width interval.

Compute multiplier at C: with the reference's L_opt law L_ref and the other's
L_oth, the compute C' at which L_oth(C') = L_ref(C), as C'/C. > 1: the other
sweep needs more compute for the reference's loss (the reference is more
compute-efficient). The laws are each sweep's L_opt = E + k·(C/c0)^−γ (the
loss law with an irreducible term, `losslaw.py`; with fewer than 3 usable
budgets the pure power law k·C^g). Where L_ref(C) is at or below the other's
floor E, the other never reaches it: the multiplier is infinite (an open end
of its interval, `None` in JSON).

Crossover: where the two L_opt laws cross, i.e. the multiplier crosses 1,
searched from 1000× below the lowest to 1000× above the highest budget the
two share (the laws are not evidence farther out). Two laws E + k·C^−γ can
cross twice; each crossing of the fitted laws gets its own interval, taken
over the resamples that cross in its part of the range (up to halfway to the
neighbouring fitted crossing), so an interval never mixes resamples that found
different crossings. `crossover` is the one nearest the middle of the shared
range, `crossovers` all of them. With a single fitted crossing, a resample
whose laws do not cross counts as crossing beyond the end where the laws are
closer, so an interval end there reads "beyond the searched range" (None).

Budgets are matched one to one within ±10% (`MATCH`), nearest first; the
multiplier is reported only at budgets both sweeps have, plus each requested
prediction. A budget left without a partner is listed as such.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from .report import FitReport, _clean, _frontier_json, fit_sweep
from .table import FitTable

MATCH = math.log(1.10)        # budgets within ±10% are the same budget
SEARCH = math.log(1000.0)     # crossover search: this far beyond the shared budgets either way
LEVELS = (5.0, 95.0)
MIN_VALID = 0.5               # fewer valid joint resamples than this fraction: no interval


@dataclass(frozen=True)
class Estimate:
    value: float
    ci: tuple[float | None, float | None] | None = None   # 5–95%; None end: unbounded


@dataclass(frozen=True)
class MultiplierPoint:
    budget: float
    value: float                      # from the fitted laws; inf: the other never reaches that loss
    ci: tuple[float | None, float | None] | None
    kind: str                         # "shared" (a budget both sweeps ran) or "predict"


@dataclass(frozen=True)
class Crossover:
    budget: float
    ci: tuple[float | None, float | None] | None    # None end: beyond the searched range
    crossing: float | None           # fraction of resamples whose laws cross here (in the searched range)


@dataclass(frozen=True)
class PairComparison:
    reference: str
    other: str
    exponent_diff: dict[str, Estimate]           # params/tokens/loss: other − reference
    multiplier: tuple[MultiplierPoint, ...]
    crossover: Crossover | None                  # the crossing nearest the middle of the shared budgets
    verdict: str
    shared_budgets: tuple[float, ...]
    reference_only: tuple[float, ...]
    other_only: tuple[float, ...]
    laws: tuple[str, str]                        # which L_opt law each side used
    crossovers: tuple[Crossover, ...] = ()       # every crossing of the fitted laws, by C


@dataclass(frozen=True, eq=False)
class Comparison:
    names: tuple[str, ...]
    reports: tuple[FitReport, ...] = field(repr=False)
    pairs: tuple[PairComparison, ...]
    settings: dict[str, Any]
    #: per pair: (budgets grid, multiplier at the fit, 5%, 95%) for the plot
    curves: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...] = field(default=(), repr=False)

    @property
    def reference(self) -> str:
        return self.names[0]

    def to_json(self) -> dict[str, Any]:
        return _clean({
            "reference": self.reference,
            "sweeps": [{"name": n, "frontier": _frontier_json(r.frontier)} for n, r in zip(self.names, self.reports)],
            "pairs": [_pair_json(p) for p in self.pairs],
            "settings": self.settings,
        })


# ---------------------------------------------------------------------------- laws
@dataclass(frozen=True, eq=False)
class _Laws:
    """L_opt = E + k·(C/c0)^−γ: the fit (scalars) and per resample (arrays, NaN where dropped)."""

    model: str
    E: float
    k: float
    gamma: float
    c0: float
    rE: np.ndarray | None
    rk: np.ndarray | None
    rgamma: np.ndarray | None


def _laws(rep: FitReport) -> _Laws:
    fr, s = rep.frontier, rep.samples
    assert fr is not None
    if fr.loss_law is not None:
        ll = fr.loss_law
        re = rk = rg = None
        if s is not None and s.loss_E is not None:
            re, rk, rg = (np.asarray(a, float) for a in (s.loss_E, s.loss_k, s.loss_gamma))
            if not math.isclose(s.loss_c0, ll.c0, rel_tol=1e-9):   # same budgets, so the same c0
                rk = rk * np.exp(-rg * (math.log(ll.c0) - math.log(s.loss_c0)))
        return _Laws("E + k·(C/c0)^-gamma", ll.E, ll.k, ll.gamma, ll.c0, re, rk, rg)
    re = rk = rg = None
    if s is not None:
        ok = s.ok & np.isfinite(s.slope_l)
        re = np.where(ok, 0.0, np.nan)
        rk = np.where(ok, np.exp(s.icpt_l), np.nan)
        rg = np.where(ok, -s.slope_l, np.nan)
    return _Laws("k·C^g (fewer than 3 usable budgets: no irreducible term)",
                 0.0, fr.loss.coefficient, -fr.loss.exponent, 1.0, re, rk, rg)


def _loss(E, k, gamma, c0, log_c):
    """L at ln C; parameters broadcast (scalars or (R, 1) columns)."""
    return E + k * np.exp(-gamma * (log_c - math.log(c0)))


def _log_c_needed(E, k, gamma, c0, target):
    """ln C' with L(C') = target; +inf where target ≤ E (never reached), NaN for a flat or rising law."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = (np.asarray(target, float) - E) / k
        out = math.log(c0) - np.log(gap) / gamma
        out = np.where(gap <= 0, np.inf, out)
        return np.where((np.asarray(k) > 0) & (np.asarray(gamma) > 0), out, np.nan)


def _log_multiplier(ref: tuple, oth: tuple, log_c: np.ndarray) -> np.ndarray:
    """ln(C'/C) at each ln C (last axis); ref/oth: (E, k, γ, c0) with scalars or (R, 1) columns."""
    target = _loss(*ref, log_c)
    return _log_c_needed(*oth, target) - log_c


def _percentiles(x: np.ndarray, valid: np.ndarray) -> tuple[float, float] | None:
    """5–95% of x over the valid rows, ±inf kept (an end at ±inf is open); None when too few rows."""
    v = x[valid & ~np.isnan(x)]
    if v.size < max(2, MIN_VALID * valid.size):
        return None
    lo, hi = np.percentile(v, LEVELS, method="inverted_cdf")   # no interpolation: ±inf stays ±inf
    return float(lo), float(hi)


def _exp_ci(ci: tuple[float, float] | None) -> tuple[float | None, float | None] | None:
    """An interval in ln space back to values; an infinite end becomes None (open)."""
    if ci is None:
        return None
    return tuple(math.exp(v) if math.isfinite(v) else None for v in ci)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- crossover
def _zeros(diff: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, change) of diff (R, G) over the ln C grid: change[r, j] where the sign flips between grid
    points j and j+1, x its zero there (linear between the points)."""
    s = np.sign(diff)
    # strict sign changes only: laws that coincide (identical sweeps) do not cross
    change = s[:, :-1] * s[:, 1:] < 0
    a, b = diff[:, :-1], diff[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(a == b, 0.0, a / (a - b))
    return grid[None, :-1] + np.clip(t, 0, 1) * (grid[1] - grid[0]), change


def _crossings(diff: np.ndarray, grid: np.ndarray, centre: float, lo: float = -np.inf, hi: float = np.inf,
               beyond: bool = True) -> np.ndarray:
    """Per row of diff (R, G) over ln C grid: the zero in [lo, hi) nearest `centre`. A row without
    one: with beyond, +inf if |diff| is smaller at the upper end (it would cross beyond it), else −inf;
    without, NaN."""
    x, change = _zeros(diff, grid)
    dist = np.where(change & (x >= lo) & (x < hi), np.abs(x - centre), np.inf)
    j = np.argmin(dist, axis=1)
    rows = np.arange(diff.shape[0])
    has = np.isfinite(dist[rows, j])
    none = np.where(np.abs(diff[:, -1]) < np.abs(diff[:, 0]), np.inf, -np.inf) if beyond else np.nan
    out = np.where(has, x[rows, j], none)
    return np.where(np.isfinite(diff).all(axis=1), out, np.nan)


def _crossovers(diff_fit: np.ndarray, diff_r: np.ndarray | None, valid: np.ndarray | None,
                grid: np.ndarray) -> list[Crossover]:
    """Every crossing of the fitted laws (diff_fit: (1, G)), each with the interval of the resamples
    (diff_r: (R, G), rows valid) that cross in its own part of the range: from halfway to the fitted
    crossing below to halfway to the one above. One crossing: its part is the whole range and a
    resample that does not cross counts as beyond an end (see `_crossings`)."""
    x, change = _zeros(diff_fit, grid)
    xs = sorted(float(v) for v in x[0][change[0]])
    edges = [-np.inf, *((a + b) / 2 for a, b in zip(xs, xs[1:])), np.inf]
    out = []
    for i, xi in enumerate(xs):
        ci = frac = None
        if diff_r is not None and valid is not None:
            single = len(xs) == 1
            cs = np.where(valid, _crossings(diff_r, grid, xi, edges[i], edges[i + 1], beyond=single), np.nan)
            if single:
                ci = _exp_ci(_percentiles(cs, ~np.isnan(cs)))
                ok = ~np.isnan(cs)
                frac = float(np.isfinite(cs[ok]).mean()) if ok.any() else None
            else:   # only the resamples that found this crossing: no interval when too few did
                ci = _exp_ci(_percentiles(cs, valid))
                frac = float(np.isfinite(cs[valid]).mean()) if valid.any() else None
        out.append(Crossover(budget=math.exp(xi), ci=ci, crossing=frac))
    return out


# ---------------------------------------------------------------------------- pairs
def _match(a: Sequence[float], b: Sequence[float]) -> tuple[list[float], list[float], list[float]]:
    """(shared (a's values), a only, b only): budgets paired one to one within ±10%, the closest pairs
    first, so a budget near two of the other's has one partner and the other one is listed alone."""
    la, lb = np.log(np.asarray(a, float)), np.log(np.asarray(b, float))
    close = sorted((abs(x - y), i, j) for i, x in enumerate(la) for j, y in enumerate(lb) if abs(x - y) <= MATCH)
    pa: set[int] = set()
    pb: set[int] = set()
    for _, i, j in close:
        if i not in pa and j not in pb:
            pa.add(i)
            pb.add(j)
    shared = [c for i, c in enumerate(a) if i in pa]
    a_only = [c for i, c in enumerate(a) if i not in pa]
    b_only = [c for j, c in enumerate(b) if j not in pb]
    return shared, a_only, b_only


def _fmt(x: float | None) -> str:
    return "∞" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _side(ci) -> str:
    """'ref' if the interval lies above 1, 'other' below 1, 'tie' if it holds 1 (or there is none)."""
    if ci is None:
        return "tie"
    lo, hi = ci
    if lo is not None and lo > 1:
        return "ref"
    if hi is not None and hi < 1:
        return "other"
    return "tie"


def _verdict(ref: str, oth: str, points: Sequence[MultiplierPoint], has_ci: bool,
             shared: Sequence[float], ref_only: Sequence[float], oth_only: Sequence[float]) -> str:
    """One sentence that claims no more than the intervals support."""
    pre = ""
    if ref_only or oth_only:
        pre = (f"compared only at the {len(shared)} budget(s) both sweeps ran "
               f"({_fmt(min(shared))}–{_fmt(max(shared))}; {len(ref_only)} of {ref}'s and "
               f"{len(oth_only)} of {oth}'s budgets have no partner): ")
    shared_pts = [p for p in points if p.kind == "shared"]
    head = points[-1] if any(p.kind == "predict" for p in points) else shared_pts[-1]
    if not has_ci:
        return (pre + f"without a bootstrap (--bootstrap 0) nothing is claimed; the fitted multiplier at "
                f"{_fmt(head.budget)} is {_fmt(head.value)}.")
    sides = [_side(p.ci) for p in shared_pts]
    span = f"({_fmt(shared_pts[0].budget)}–{_fmt(shared_pts[-1].budget)})"
    if all(s == "ref" for s in sides):
        first = f"{ref} is more compute-efficient than {oth} at every budget both ran {span}"
    elif all(s == "other" for s in sides):
        first = f"{oth} is more compute-efficient than {ref} at every budget both ran {span}"
    elif all(s == "tie" for s in sides):
        first = f"the data cannot tell {ref} and {oth} apart at any budget both ran {span}"
    else:
        first = (f"{ref} is more efficient at {sides.count('ref')}, {oth} at {sides.count('other')} and neither "
                 f"at {sides.count('tie')} of the {len(sides)} budgets both ran {span}")
    lo, hi = head.ci if head.ci is not None else (None, None)
    where = "predicted at" if head.kind == "predict" else "at"
    if _side(head.ci) == "tie" and head.kind == "shared":
        # the first clause already said the data cannot tell them apart there
        second = f"at {_fmt(head.budget)} the multiplier is {_fmt(head.value)} ({_fmt(lo)}–{_fmt(hi)})"
    elif _side(head.ci) == "tie":
        second = (f"the data cannot tell them apart {where} {_fmt(head.budget)} "
                  f"(multiplier {_fmt(head.value)}, {_fmt(lo)}–{_fmt(hi)})")
    else:
        second = f"the multiplier {where} {_fmt(head.budget)} is {_fmt(head.value)} ({_fmt(lo)}–{_fmt(hi)})"
    return pre + first + "; " + second + "."


def _pair(ref_name: str, oth_name: str, ref: FitReport, oth: FitReport, predict: Sequence[float]
          ) -> tuple[PairComparison, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    shared, ref_only, oth_only = _match([f.budget for f in ref.budgets], [f.budget for f in oth.budgets])
    if not shared:
        raise UserError(f"{ref_name} and {oth_name} share no budget (±10%): {ref_name} ran "
                        f"{', '.join(_fmt(f.budget) for f in ref.budgets)}; {oth_name} ran "
                        f"{', '.join(_fmt(f.budget) for f in oth.budgets)}")
    la, lb = _laws(ref), _laws(oth)
    fa, fb = ref.frontier, oth.frontier
    assert fa is not None and fb is not None
    sa, sb = ref.samples, oth.samples
    has_ci = sa is not None and sb is not None
    if has_ci:
        assert sa is not None and sb is not None
        valid = sa.ok & sb.ok

    # exponent differences, other − reference: of the fitted exponents (`exponent` in `fit --json`), not of
    # the two bootstrap medians, which come from different noise streams and differ for identical sweeps
    diffs: dict[str, Estimate] = {}
    for key, sl in (("params", "slope_n"), ("tokens", "slope_d"), ("loss", "slope_l")):
        ci = _percentiles(getattr(sb, sl) - getattr(sa, sl), valid) if has_ci else None
        diffs[key] = Estimate(float(getattr(fb, key).exponent - getattr(fa, key).exponent), ci)

    # multipliers
    cs = sorted(shared) + [float(c) for c in predict]
    kinds = ["shared"] * len(shared) + ["predict"] * len(predict)
    lc = np.log(np.asarray(cs, float))
    fit_a = (la.E, la.k, la.gamma, la.c0)
    fit_b = (lb.E, lb.k, lb.gamma, lb.c0)
    point = _log_multiplier(fit_a, fit_b, lc)
    lo_s, hi_s = math.log(min(shared)), math.log(max(shared))
    grid = np.linspace(lo_s - SEARCH, hi_s + SEARCH, 601)
    plot_grid = np.linspace(min(lo_s, lc.min()) - 0.3, max(hi_s, lc.max()) + 0.3, 120)
    curve_fit = np.exp(_log_multiplier(fit_a, fit_b, plot_grid))
    curve_lo = curve_hi = np.full(plot_grid.shape, np.nan)
    cis: list = [None] * len(cs)
    diff_r = v = None
    if has_ci and la.rE is not None and lb.rE is not None:
        col = lambda a: np.asarray(a, float)[:, None]  # noqa: E731
        ra = (col(la.rE), col(la.rk), col(la.rgamma), la.c0)
        rb = (col(lb.rE), col(lb.rk), col(lb.rgamma), lb.c0)
        v = valid & np.isfinite(la.rE) & np.isfinite(lb.rE)
        draws = _log_multiplier(ra, rb, lc[None, :])
        cis = [_exp_ci(_percentiles(draws[:, j], v)) for j in range(len(cs))]
        pd = _log_multiplier(ra, rb, plot_grid[None, :])[v]
        if pd.size:
            curve_lo, curve_hi = np.exp(np.nanpercentile(np.where(np.isnan(pd), np.nan, np.clip(pd, -700, 700)),
                                                         LEVELS, axis=0))
        diff_r = _loss(*rb, grid[None, :]) - _loss(*ra, grid[None, :])
    mult = tuple(MultiplierPoint(budget=c, value=float(math.exp(p)) if p < 700 else math.inf, ci=ci, kind=k)
                 for c, p, ci, k in zip(cs, point, cis, kinds))

    diff_fit = _loss(*fit_b, grid[None, :]) - _loss(*fit_a, grid[None, :])
    crossovers = _crossovers(diff_fit, diff_r, v, grid)
    middle = 0.5 * (lo_s + hi_s)
    crossover = min(crossovers, key=lambda c: abs(math.log(c.budget) - middle)) if crossovers else None

    verdict = _verdict(ref_name, oth_name, mult, has_ci, sorted(shared), ref_only, oth_only)
    pair = PairComparison(reference=ref_name, other=oth_name, exponent_diff=diffs, multiplier=mult,
                          crossover=crossover, verdict=verdict, shared_budgets=tuple(sorted(shared)),
                          reference_only=tuple(ref_only), other_only=tuple(oth_only), laws=(la.model, lb.model),
                          crossovers=tuple(crossovers))
    return pair, (np.exp(plot_grid), curve_fit, np.asarray(curve_lo), np.asarray(curve_hi))


def compare_sweeps(sweeps: Sequence[tuple[str, FitTable]], *, window: int | None = 5, minimizer: str = "akima",
                   keep_flagged: bool | Sequence[str] = False, bootstrap: int = 1000, seed: int = 0,
                   predict: Sequence[float] = (), curves: Sequence[Any] | None = None) -> Comparison:
    """Fit every sweep as `fit_sweep` does and compare each with the first (the reference).

    sweeps: (name, runs) pairs, at least two, names distinct. Sweep i is
    bootstrapped with seed + i and the same `bootstrap` resample count (see
    the module docstring). Raises UserError for input that cannot be
    compared (fewer than two sweeps, a sweep without a frontier, no shared
    budget).
    """
    if len(sweeps) < 2:
        raise UserError("compare needs at least two sweeps (the first is the reference)")
    names = [n for n, _ in sweeps]
    if len(set(names)) != len(names):
        raise UserError(f"each sweep may be named once, got {', '.join(names)}")
    reports = []
    for i, (name, table) in enumerate(sweeps):
        rep = fit_sweep(table, window=window, minimizer=minimizer, keep_flagged=keep_flagged, bootstrap=bootstrap,
                        seed=(seed + i) % 2**32, predict=predict, parametric=None,
                        curves=None if curves is None else curves[i])
        if rep.frontier is None:
            raise UserError(f"{name}: no frontier to compare ({rep.frontier_reason})")
        reports.append(rep)
    pairs, plot_curves = [], []
    for name, rep in zip(names[1:], reports[1:]):
        p, c = _pair(names[0], name, reports[0], rep, predict)
        pairs.append(p)
        plot_curves.append(c)
    settings = dict(window=window, minimizer=minimizer, bootstrap=int(bootstrap),
                    seeds=[(seed + i) % 2**32 for i in range(len(sweeps))], interval=list(LEVELS),
                    keep_flagged=keep_flagged if isinstance(keep_flagged, bool) else list(keep_flagged),
                    predict=[float(c) for c in predict], budget_match=0.10,
                    crossover_search=[1 / 1000, 1000])
    return Comparison(names=tuple(names), reports=tuple(reports), pairs=tuple(pairs), settings=settings,
                      curves=tuple(plot_curves))


def _pair_json(p: PairComparison) -> dict[str, Any]:
    return {
        "reference": p.reference, "other": p.other,
        "exponent_diff": {k: {"value": e.value, "ci": e.ci} for k, e in p.exponent_diff.items()},
        "compute_multiplier": [{"budget": m.budget, "value": m.value, "ci": m.ci, "kind": m.kind}
                               for m in p.multiplier],
        "crossover": None if p.crossover is None else _crossover_json(p.crossover),
        "crossovers": [_crossover_json(c) for c in p.crossovers],
        "verdict": p.verdict,
        "budgets": {"shared": list(p.shared_budgets), "reference_only": list(p.reference_only),
                    "other_only": list(p.other_only)},
        "loss_laws": {"reference": p.laws[0], "other": p.laws[1]},
    }


def _crossover_json(c: Crossover) -> dict[str, Any]:
    return {"budget": c.budget, "ci": c.ci, "crossing": c.crossing}
