"""`fit_sweep`: the whole analysis of a sweep, as one frozen `FitReport`.

Pure: no I/O, no printing. `FitReport.to_json()` is what `isoflop fit --json`
prints; `render.render_report` draws it with rich; `plots.save_plots` draws it
with matplotlib.

Which budgets enter the frontier: those without flags. `vertex_near_edge`
is excluded by default too, because a vertex within one grid step of the
sampled edge is fixed mostly by the points on one side of it (and in a
bootstrap it often crosses the edge); `keep_flagged=("vertex_near_edge",)`
keeps such budgets, `keep_flagged=True` keeps every budget whose vertex lies
inside its sampled sizes. Budgets flagged too_few_points/not_convex/
loss_out_of_range never enter. Outliers (see noise.py) leave every fit and
are listed in `excluded` and `outliers`.

D_opt: per budget from the budget's own (N, D) pairs (FitTable.tokens) at
N_opt, see `isoflop.py`; a run whose FLOPs are known enters with its tokens
scaled to the budget, D·C/flops = C/flops_per_token(N), so a run 3% over its
budget does not shift D_opt by 3% (and published points snapped to ±10% of
a budget, with D = flops/(6N), give D_opt = C/(6·N_opt) exactly). In the
bootstrap: the same per-budget relation at each resample's N_opt. At new
budgets (predictions, backtest): the tokens power law `frontier.tokens`.
On 6ND data all three equal C/(6·N_opt).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from .bootstrap import BootstrapVertices, FrontierSamples, bootstrap_vertices, frontier_samples, interval
from .envelope import Envelope, fit_envelope
from .frontier import Frontier, PowerLaw, fit_frontier
from .isoflop import (MINIMIZERS, VERTEX_OUT_OF_RANGE, IsoflopFit, fit_budget, group_by_budget,
                      normalise_window, selected)
from .losslaw import LossLaw, fit_loss_law
from .noise import (NoiseEstimate, find_outliers, leave_out_sigmas, size_groups, size_means,
                    sweep_noise)
from .parametric import ParametricFit, fit_parametric, loss_opt_interval, lse_draws, optimum_of
from .table import FitTable, snap_budgets


@dataclass(frozen=True)
class Excluded:
    run_id: str
    budget: float
    reason: str


@dataclass(frozen=True)
class Prediction:
    """Frontier at a budget C. `n_opt` is the field the CLI passes to the planner."""

    budget: float
    n_opt: float
    d_opt: float
    loss_opt: float
    n_opt_ci: tuple[float, float] | None = None
    d_opt_ci: tuple[float, float] | None = None
    loss_opt_ci: tuple[float, float] | None = None
    n_opt_median: float | None = None
    d_opt_median: float | None = None
    loss_opt_median: float | None = None
    #: which model each value (and its interval) came from
    n_opt_model: str = "power law N_opt = k·C^a through the per-budget minima"
    d_opt_model: str = "power law D_opt = k·C^b through the per-budget minima"
    loss_opt_model: str = "power law L_opt = k·C^g through the per-budget minima (no irreducible term)"
    #: the parametric fit L(N, D) at the same budget (None without one)
    parametric_method: str | None = None
    n_opt_parametric: float | None = None
    d_opt_parametric: float | None = None
    loss_opt_parametric: float | None = None
    n_opt_parametric_ci: tuple[float, float] | None = None
    d_opt_parametric_ci: tuple[float, float] | None = None
    loss_opt_parametric_ci: tuple[float, float] | None = None
    #: the loss law E + k·C^−γ through the per-budget minima (whichever model loss_opt came from)
    loss_opt_law: float | None = None
    loss_opt_law_ci: tuple[float, float] | None = None
    #: why loss_opt is not to be trusted (then loss_opt_ci is None): "too_few_budgets: …" or
    #: "parametric_rejected: …"; None when it is a calibrated prediction
    loss_opt_flag: str | None = None
    #: whether the parametric fit passed its check (`ParametricCheck`) and gives L_opt; its optimum is
    #: reported either way, but when False it is not a prediction to act on
    parametric_used: bool | None = None

    @property
    def n_opt_estimate(self) -> float:
        """What to act on: the bootstrap median where there is one (see ESTIMATOR), else the fit."""
        return self.n_opt if self.n_opt_median is None else self.n_opt_median

    @property
    def d_opt_estimate(self) -> float:
        return self.d_opt if self.d_opt_median is None else self.d_opt_median


@dataclass(frozen=True)
class ParametricCheck:
    """Whether the parametric L(N, D) may give L_opt predictions: its L_opt at each used budget against
    the measured minimum, χ² over budgets with both uncertainties (bootstrap and linearised fit)."""

    used: bool
    chi2: float
    budgets: int
    p_value: float
    reason: str

    @property
    def marginal(self) -> bool:
        """p near the 0.01 threshold: the model behind L_opt is a coin toss (Epoch's points: Akima p = 0.0006
        → loss law 1.98, parabola p = 0.13 → parametric 2.05, non-overlapping intervals)."""
        return bool(math.isfinite(self.p_value) and 1e-4 <= self.p_value <= 0.2)


@dataclass(frozen=True)
class BacktestPoint:
    budget: float
    measured: IsoflopFit
    predicted: Prediction
    n_opt_error: float       # predicted / measured − 1
    d_opt_error: float
    loss_opt_error: float
    n_opt_in_ci: bool | None
    d_opt_in_ci: bool | None
    loss_opt_in_ci: bool | None


@dataclass(frozen=True)
class Backtest:
    holdout_top: int
    train_budgets: tuple[float, ...]
    frontier: Frontier | None
    points: tuple[BacktestPoint, ...]
    reason: str | None = None


@dataclass(frozen=True, eq=False)
class FitReport:
    budgets: tuple[IsoflopFit, ...]
    used: tuple[bool, ...]                     # per budget: enters the frontier
    frontier: Frontier | None
    frontier_reason: str | None
    excluded: tuple[Excluded, ...]
    predictions: tuple[Prediction, ...]
    parametric: tuple[ParametricFit, ...]
    parametric_reason: str | None
    backtest: Backtest | None
    envelope: Envelope | None
    settings: dict[str, Any]
    points: tuple[tuple[float, np.ndarray, np.ndarray], ...] = field(repr=False)  # (budget, N, loss) usable runs
    bootstrap: BootstrapVertices | None = field(default=None, repr=False)
    samples: FrontierSamples | None = field(default=None, repr=False)
    budget_ci: tuple[tuple[float, float] | None, ...] = ()   # per budget: 5–95% of N_opt (selected budgets)
    budget_d_ci: tuple[tuple[float, float] | None, ...] = ()  # per budget: 5–95% of D_opt (selected budgets)
    budget_median: tuple[float | None, ...] = ()              # per budget: bootstrap median of N_opt
    budget_loss_ci: tuple[tuple[float, float] | None, ...] = ()  # per budget: 5–95% of L_opt
    noise: NoiseEstimate | None = None                        # the noise model of the bootstrap
    #: does the parametric fit agree with the per-budget minima? (used, p-value, text); None without one
    parametric_check: ParametricCheck | None = None
    parametric_draws: np.ndarray | None = field(default=None, repr=False)   # (R, 5): E, A, B, α, β
    outliers: tuple[Excluded, ...] = ()                       # runs left out as outliers (also in excluded)
    #: fitted η*/B* per cell and their laws (hparams.HparamsReport); None when the sweep has no lr/batch grid
    hparams: Any = None

    def predict(self, compute: Sequence[float]) -> tuple[Prediction, ...]:
        return _predictions(self.frontier, self.samples, compute, self.parametric, self.parametric_draws,
                            self.parametric_check)

    def to_json(self) -> dict[str, Any]:
        return _clean(_report_json(self))


# ---------------------------------------------------------------------------- helpers
def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _ci(samples: np.ndarray) -> tuple[tuple[float, float] | None, float | None]:
    iv = interval(samples)
    if iv is None:
        return None, None
    med, lo, hi = iv
    return (lo, hi), med


def _hull(ci: tuple[float, float] | None, value: float) -> tuple[float, float] | None:
    """The interval stretched to contain its own estimate: a percentile interval of skewed draws (the
    parametric L_opt of a flat profile) can miss the point it is printed beside (3 of 20 synthetic sweeps)."""
    if ci is None or not math.isfinite(value):
        return ci
    return (min(ci[0], value), max(ci[1], value))


def _with_ci(law: PowerLaw, slopes: np.ndarray, icpts: np.ndarray) -> PowerLaw:
    from dataclasses import replace

    e_ci, e_med = _ci(slopes)
    c_ci, c_med = _ci(np.exp(icpts))
    return replace(law, exponent_ci=e_ci, exponent_median=e_med, coefficient_ci=c_ci, coefficient_median=c_med)


LOSS_LAW_MODEL = "L_opt = E + k·C^-γ through the per-budget minima"
TOO_FEW_BUDGETS = "too_few_budgets"


def _predictions(frontier: Frontier | None, samples: FrontierSamples | None,
                 compute: Sequence[float], parametric: Sequence[ParametricFit] = (),
                 par_draws: np.ndarray | None = None, check: ParametricCheck | None = None) -> tuple[Prediction, ...]:
    """The frontier at new budgets.

    N_opt and D_opt from the params and tokens power laws (D_opt from the
    tokens law fitted on each budget's D_opt under the sweep's own FLOP
    convention, not C/(6·N_opt): under `exact` or `6ND+attention` the tokens a
    run of N_opt gets are not C/(6·N_opt)). L_opt, in order of preference:
    the parametric fit L(N, D) when there is one and it agrees with the
    per-budget minima (`ParametricCheck`), with an interval from its
    linearised sampling distribution (`parametric.lse_draws`), centred on its
    L_opt (`parametric.loss_opt_interval`); else the loss
    law with an irreducible term E + k·C^−γ (≥ 3 budgets); else the pure
    power law. `loss_opt_model` names the one used; the others are reported
    beside it. Intervals are 5–95% percentiles over the seed-noise bootstrap
    resamples (or the parametric draws).
    """
    if frontier is None:
        return ()
    law = frontier.loss_law
    out = []
    for c in compute:
        c = float(c)
        kw: dict[str, Any] = {}
        loss_opt = float(frontier.loss(c))
        if law is not None:
            loss_opt = float(law(c))
            kw["loss_opt_model"] = LOSS_LAW_MODEL
            kw["loss_opt_law"] = loss_opt
        else:
            # a power law has no floor: through 2 budgets its extrapolation is biased low and its bootstrap
            # interval narrow (0/20 coverage at 10× on 2-budget synthetic sweeps), so it gets no interval
            kw["loss_opt_flag"] = (f"{TOO_FEW_BUDGETS}: {len(frontier.budgets)} usable budget(s); the loss floor E "
                                   "needs at least 3, a pure power law extrapolates too low (no interval)")
        if samples is not None and samples.ok.any():
            lc = math.log(c)
            ok = samples.ok
            ln = samples.slope_n[ok] * lc + samples.icpt_n[ok]
            ld = samples.slope_d[ok] * lc + samples.icpt_d[ok]
            if law is not None and samples.loss_E is not None:
                ll = samples.loss_E + samples.loss_k * np.exp(-samples.loss_gamma * (lc - math.log(samples.loss_c0)))
            else:
                ll = np.exp(samples.slope_l[ok] * lc + samples.icpt_l[ok])
            for key, vals in (("n_opt", np.exp(ln)), ("d_opt", np.exp(ld)), ("loss_opt", ll)):
                if key == "loss_opt" and law is None:
                    continue
                ci, med = _ci(vals)
                kw[f"{key}_ci"], kw[f"{key}_median"] = ci, med
            if law is not None:
                kw["loss_opt_law_ci"] = kw["loss_opt_ci"]
        for p in parametric[:1]:
            if math.isfinite(p.alpha) and p.alpha + p.beta > 0:
                n_p, d_p = p.optimum(c)
                kw.update(parametric_method=p.method, n_opt_parametric=float(n_p), d_opt_parametric=float(d_p),
                          loss_opt_parametric=float(p.loss(n_p, d_p)))
                if par_draws is not None:
                    nd, dd, _ = optimum_of(par_draws, c)
                    kw["n_opt_parametric_ci"] = _hull(_ci(nd)[0], n_p)
                    kw["d_opt_parametric_ci"] = _hull(_ci(dd)[0], d_p)
                    kw["loss_opt_parametric_ci"] = loss_opt_interval(p, par_draws, c)
                kw["parametric_used"] = bool(check is not None and check.used)
                if check is not None and check.used:
                    loss_opt = kw["loss_opt_parametric"]
                    kw["loss_opt_ci"] = kw.get("loss_opt_parametric_ci")
                    kw["loss_opt_median"] = None
                    kw["loss_opt_model"] = f"parametric {p.method}: L = E + A/N^α + B/D^β at its optimum"
        if kw.get("loss_opt_flag") is None:
            kw["loss_opt_ci"] = _hull(kw.get("loss_opt_ci"), loss_opt)
        out.append(Prediction(budget=c, n_opt=float(frontier.params(c)), d_opt=float(frontier.tokens(c)),
                              loss_opt=loss_opt, **kw))
    return tuple(out)


def _parametric_check(fit: ParametricFit, draws: np.ndarray | None, fits: Sequence[IsoflopFit],
                      sel_idx: list[int], bv: BootstrapVertices | None) -> ParametricCheck:
    """χ² of (parametric L_opt − measured L_opt) over the used budgets, each with both variances."""
    from scipy.stats import chi2 as chi2_dist

    measured = [(fits[i].loss_opt, fits[i].budget) for i in sel_idx if math.isfinite(fits[i].loss_opt)]
    if measured and math.isfinite(fit.E) and fit.E >= min(measured)[0]:
        lo, c_lo = min(measured)
        # its floor above a loss already reached: every prediction it makes is too high
        return ParametricCheck(False, math.nan, len(sel_idx), math.nan,
                               f"rejected: its irreducible loss E = {fit.E:.4g} is above the measured L_opt "
                               f"{lo:.4g} at C = {c_lo:.3g}; L_opt predictions use the loss law instead")
    if draws is None or bv is None or len(sel_idx) < 3:
        return ParametricCheck(False, math.nan, len(sel_idx), math.nan,
                               "no bootstrap to compare it with" if bv is None else "fewer than 3 budgets")
    z2 = []
    for col, i in enumerate(sel_idx):
        f = fits[i]
        n_p, d_p = fit.optimum(f.budget)
        l_par = float(fit.loss(n_p, d_p))
        _, _, l_draw = optimum_of(draws, f.budget)
        q = np.nanpercentile(np.concatenate([bv.loss[bv.valid[:, col], col]]), [25, 75])
        var_meas = ((q[1] - q[0]) / 1.349) ** 2
        qp = np.nanpercentile(l_draw, [25, 75])
        var_par = ((qp[1] - qp[0]) / 1.349) ** 2
        z2.append((l_par - f.loss_opt) ** 2 / max(var_meas + var_par, 1e-12))
    chi2 = float(np.sum(z2))
    g = len(z2)
    pv = float(chi2_dist.sf(chi2, g))
    if pv >= 0.01:
        return ParametricCheck(True, chi2, g, pv, f"agrees with the minima of {g} budgets (χ² {chi2:.1f}, p = {pv:.2g})")
    return ParametricCheck(False, chi2, g, pv, f"disagrees with the minima of {g} budgets (χ² {chi2:.1f}, "
                           f"p = {pv:.2g}): L_opt predictions use the loss law instead")


def _noise_and_outliers(groups: list[tuple[float, np.ndarray, np.ndarray]]
                        ) -> tuple[NoiseEstimate, list[list[tuple[int, float, float]]]]:
    """The sweep's noise model and, per budget, its outliers as (index into the group, loss, deviation/σ).

    σ is estimated, outliers found with it and left out, then σ estimated
    again without them (see noise.py).
    """
    prepared = []
    for _, params, y in groups:
        x = np.log(params)
        order = np.argsort(x, kind="stable")
        idx, ux = size_groups(x[order])
        prepared.append((order, idx, ux, y[order]))
    noise = sweep_noise([(idx, y, ux) for _, idx, ux, y in prepared])
    # each size is judged by a σ estimated without it (a far-off run would otherwise inflate its own σ)
    sigmas = leave_out_sigmas([(idx, y, ux) for _, idx, ux, y in prepared], noise)
    keep = [np.ones(len(p[0]), dtype=bool) for p in prepared]
    found: list[list[tuple[int, float, float]]] = []
    for (order, idx, ux, y), k, sig in zip(prepared, keep, sigmas):
        bad = find_outliers(ux, idx, y, sig)
        k[[j for j, _, _ in bad]] = False
        found.append([(int(order[j]), dev, z) for j, dev, z in bad])
    if any(found):
        noise = sweep_noise([(idx[k], y[k], ux) for (_, idx, ux, y), k in zip(prepared, keep)])
    return noise, found


# ---------------------------------------------------------------------------- the fit
def fit_sweep(table: FitTable, *, window: int | str | None = 5, minimizer: str = "akima",
              keep_flagged: bool | Sequence[str] = False, bootstrap: int = 1000, seed: int = 0,
              predict: Sequence[float] = (), holdout_top: int = 0, parametric: str | None = "auto",
              curves: Sequence[Any] | None = None, budgets: Sequence[float] | None = None,
              budget_tolerance: float = 0.10, n_starts: int | None = 20) -> FitReport:
    """Fit a sweep: per-budget optima, frontier with bootstrap intervals, predictions, extras.

    table: every run (failed ones included: they are reported, never fitted).
    budgets / budget_tolerance: how runs with an unknown budget (NaN) are
    snapped from their FLOPs (a list of budgets, or clustering when None).
    bootstrap: number of resamples (0 = no intervals).
    parametric: None, "auto" (lse when ≥ 3 budgets are used), "lse", "varpro" or
    "all"; fits every run the isoflop fits use (outliers left out).
    curves: training curves for the envelope (approach 1), see envelope.fit_envelope.
    """
    if minimizer not in MINIMIZERS:
        raise ValueError(f"minimizer must be one of {MINIMIZERS}, got {minimizer!r}")
    k = normalise_window(window)
    if parametric not in (None, "auto", "lse", "varpro", "all"):
        raise ValueError(f"parametric must be None, 'auto', 'lse', 'varpro' or 'all', got {parametric!r}")
    if int(bootstrap) < 0 or int(holdout_top) < 0:
        raise ValueError("bootstrap and holdout_top must be >= 0")
    reasons = table.exclusion_reasons()
    usable = np.array([r is None for r in reasons], dtype=bool)
    budget = table.budget.copy()
    unknown = ~np.isfinite(budget)
    if unknown.any():
        compute = table.compute
        snap_rows = unknown & usable
        snapped = snap_budgets(compute[snap_rows], budgets, budget_tolerance)
        budget[snap_rows] = snapped
        # failed runs: snap to the known budgets for reporting only
        known = np.unique(budget[np.isfinite(budget)])
        rest = unknown & ~usable
        if rest.any() and known.size:
            budget[rest] = snap_budgets(compute[rest], known, budget_tolerance)
    excluded: list[Excluded] = []
    for i, why in enumerate(reasons):
        if why is not None:
            excluded.append(Excluded(str(table.run_id[i]), float(budget[i]), why))
        elif not np.isfinite(budget[i]):
            c = float(table.compute[i])
            why = (f"FLOPs {c:.3g} not within ±{budget_tolerance:.0%} of a budget" if budgets is not None
                   else f"FLOPs {c:.3g}: fewer than 3 runs within ±{budget_tolerance:.0%}")
            excluded.append(Excluded(str(table.run_id[i]), math.nan, why))
    fit_rows = usable & np.isfinite(budget)
    n_all, y_all, b_all = table.params[fit_rows], table.loss[fit_rows], budget[fit_rows]
    # each run's tokens at exactly its budget: D·C/flops = C/flops_per_token(N) when the run's own FLOP
    # count is known (runs sit near, not at, their budget: rounding, or ±10% snapping of published points)
    f_all = table.flops[fit_rows]
    d_all = table.tokens[fit_rows] * np.where(np.isfinite(f_all) & (f_all > 0), b_all / f_all, 1.0)
    run_ids = table.run_id[fit_rows]
    by_budget = group_by_budget(b_all)
    groups = [(c, n_all[idx], y_all[idx]) for c, idx in by_budget]
    # the noise model first: it decides which runs are outliers, and the outliers leave every fit
    noise, found = _noise_and_outliers(groups)
    outliers: list[Excluded] = []
    for g, ((c, idx), bad) in enumerate(zip(list(by_budget), found)):
        for j, dev, z in bad:
            i = idx[j]
            outliers.append(Excluded(str(run_ids[i]), c, f"outlier: loss {y_all[i]:.4g} is {dev:+.3g} off its "
                                     f"neighbouring sizes ({z:.0f}σ, σ = {noise.sigma:.2g}; N = {n_all[i]:.4g})"))
        if bad:
            keep = np.ones(len(idx), dtype=bool)
            keep[[j for j, _, _ in bad]] = False
            by_budget[g] = (c, idx[keep])
    excluded.extend(outliers)
    groups = [(c, n_all[idx], y_all[idx]) for c, idx in by_budget]
    if noise.source == "none":
        noise = _parametric_noise(by_budget, n_all, d_all, y_all, noise)
    # D_opt under the sweep's convention: each budget's own (N, D) pairs (see isoflop.py)
    # σ from the L(N, D) residuals holds the law's misfit: an upper bound, too large to call a budget flat
    flat_noise = math.nan if noise.source == "parametric" else None
    fits = tuple(fit_budget(n_all[idx], y_all[idx], c, window=k, minimizer=minimizer, tokens=d_all[idx],
                            noise=noise.sigma, flat_noise=flat_noise) for c, idx in by_budget)
    use = tuple(selected(fits, keep_flagged))

    frontier = fit_frontier(fits, use)
    frontier_reason = None
    if frontier is None:
        frontier_reason = (f"{sum(use)} usable budget(s) of {len(fits)}; the frontier needs at least 2"
                           + ("" if not fits else " (flagged budgets are left out; --keep-flagged uses those with a minimum inside their sizes)"
                              if any(f.flags for f in fits) else ""))
    else:
        chosen = [f for f, u in zip(fits, use) if u]
        frontier = replace(frontier, loss_law=fit_loss_law(np.array([f.budget for f in chosen]),
                                                           np.array([f.loss_opt for f in chosen])))

    bv = samples = None
    budget_ci: list[tuple[float, float] | None] = [None] * len(fits)
    budget_d_ci: list[tuple[float, float] | None] = [None] * len(fits)
    budget_l_ci: list[tuple[float, float] | None] = [None] * len(fits)
    budget_med: list[float | None] = [None] * len(fits)
    sel_idx = [i for i, u in enumerate(use) if u]
    if frontier is not None and int(bootstrap) > 0 and np.isfinite(noise.sigma):
        bv = bootstrap_vertices([groups[i] for i in sel_idx], window=k, minimizer=minimizer,
                                n_resamples=int(bootstrap), seed=seed,
                                sigma=max(noise.sigma, _parabola_misfit([fits[i] for i in sel_idx],
                                                                        [groups[i] for i in sel_idx])),
                                tokens_relations=[fits[i].tokens_relation for i in sel_idx])
        samples = frontier_samples(bv)
        frontier = _frontier_with_ci(frontier, samples)
        for col, i in enumerate(sel_idx):
            v = bv.valid[:, col]
            if not v.any():
                continue
            budget_ci[i], budget_med[i] = _ci(np.exp(bv.log_n[v, col]))
            budget_d_ci[i], _ = _ci(np.exp(bv.log_d[v, col]))
            budget_l_ci[i], _ = _ci(bv.loss[v, col])

    par: tuple[ParametricFit, ...] = ()
    par_reason = None
    auto_parametric = parametric == "auto"
    if auto_parametric:
        parametric = "lse" if len(sel_idx) >= 3 else None
        if parametric is None:
            par_reason = (f"{TOO_FEW_BUDGETS}: {len(sel_idx)} usable budget(s); --method auto fits L(N, D) "
                          "with at least 3 (fewer cannot pin E; force one with --method lse)")
    elif parametric is None:
        par_reason = "not requested (--method none)"
    if parametric is not None:
        keep_rows = np.zeros(len(n_all), dtype=bool)
        for _, idx in by_budget:
            keep_rows[idx] = True
        pn, pd, py, pw = n_all[keep_rows], d_all[keep_rows], y_all[keep_rows], None
        if parametric == "lse" and auto_parametric:
            # by default, one point per (budget, size): the mean over its seeds, weighted by their number
            # (the same Huber sum where there is one run per size, and 25× cheaper on 25 seeds)
            pn, pd, py, pw = _size_means(by_budget, n_all, d_all, y_all)
        try:
            # by default the 3 best grid starts (2 missed the optimum on a few calibration sweeps)
            par = fit_parametric(pn, pd, py, method=parametric, weights=pw,
                                 n_starts=min(n_starts or 3, 3) if auto_parametric else n_starts)
        except ValueError as exc:
            par_reason = str(exc)

    par_draws = check = None
    if par and par[0].method == "lse" and math.isfinite(par[0].E) and par[0].E > 0 and np.isfinite(noise.sigma) \
            and int(bootstrap) > 0:
        par_draws = lse_draws(par[0], pn, pd, py, noise.sigma, int(bootstrap), seed, pw,
                              sigma_dof=noise.dof if noise.source != "none" else None)
    if par and frontier is not None:
        check = _parametric_check(par[0], par_draws, fits, sel_idx, bv)
    preds = _predictions(frontier, samples, predict, par, par_draws, check)

    backtest = None
    if int(holdout_top) > 0:
        backtest = _backtest(fits, sel_idx, int(holdout_top), bv)

    env = fit_envelope(curves) if curves is not None else None
    settings = dict(window=k, minimizer=minimizer, keep_flagged=keep_flagged if isinstance(keep_flagged, bool)
                    else list(keep_flagged), bootstrap=int(bootstrap), seed=seed, holdout_top=int(holdout_top),
                    parametric=parametric, budget_tolerance=budget_tolerance,
                    budgets=None if budgets is None else [float(b) for b in budgets])
    return FitReport(budgets=fits, used=use, frontier=frontier, frontier_reason=frontier_reason,
                     excluded=tuple(excluded), predictions=preds, parametric=par, parametric_reason=par_reason,
                     backtest=backtest, envelope=env, settings=settings, points=tuple(groups), bootstrap=bv,
                     samples=samples, budget_ci=tuple(budget_ci), budget_d_ci=tuple(budget_d_ci),
                     budget_median=tuple(budget_med), budget_loss_ci=tuple(budget_l_ci), noise=noise,
                     outliers=tuple(outliers), parametric_check=check, parametric_draws=par_draws)


def _parametric_noise(by_budget, n_all, d_all, y_all, fallback: NoiseEstimate) -> NoiseEstimate:
    """σ from the residuals of one L(N, D) fit over every budget, where no budget has the 4+ sizes (or
    the repeated seeds) that neighbour residuals need: 5 budgets of 3 sizes are 15 points, 10 degrees of
    freedom. It holds the law's misfit too, so it errs large (wider intervals), never small."""
    if len(by_budget) < 3:
        return fallback
    pn, pd, py, pw = _size_means(by_budget, n_all, d_all, y_all)
    dof = len(py) - 5
    if dof < 4:
        return fallback
    try:
        fit = fit_parametric(pn, pd, py, method="lse", weights=pw, n_starts=3)[0]
    except ValueError:
        return fallback
    r = py - fit.loss(pn, pd)
    if not np.isfinite(r).all():
        return fallback
    return NoiseEstimate(sigma=float(math.sqrt((pw * r * r).sum() / dof)), dof=dof, source="parametric")


def _parabola_misfit(fits: Sequence[IsoflopFit], groups: Sequence[tuple[float, np.ndarray, np.ndarray]]) -> float:
    """Residual σ of the parabolas over the points they fit, pooled (0 for Akima fits, which interpolate).

    A parabola that misses the profile's shape (a wide window) leaves that
    misfit in its residuals; the bootstrap then draws noise at least this
    large, so its intervals widen where the model is wrong instead of staying
    narrow around a biased vertex. It helps only so far: a misfit is a bias, not
    noise (per-budget coverage at noise 0.003, 40 calibration sweeps: window 5
    83% → 87%, --window all 46% → 52%; the default Akima path: 92%).
    """
    ss, dof = 0.0, 0
    for f, (_, n, y) in zip(fits, groups):
        if f.coefficients is None:
            continue
        m = (n >= f.used_n_min * (1 - 1e-12)) & (n <= f.used_n_max * (1 + 1e-12))
        r = y[m] - f.loss_at(n[m])
        ss += float((r * r).sum())
        dof += int(m.sum()) - 3
    return math.sqrt(ss / dof) if dof > 0 else 0.0


def _size_means(by_budget, n_all, d_all, y_all):
    """(N, D, mean loss, runs) per (budget, merged size)."""
    cols: list[list[np.ndarray]] = [[], [], [], []]
    for _, idx in by_budget:
        x = np.log(n_all[idx])
        order = np.argsort(x, kind="stable")
        sid, ux = size_groups(x[order])
        means, k = size_means(sid, y_all[idx][order], len(ux))
        dm = np.bincount(sid, weights=np.log(d_all[idx][order]), minlength=len(ux)) / k
        for lst, v in zip(cols, (np.exp(ux), np.exp(dm), means, k)):
            lst.append(v)
    return tuple(np.concatenate(c) for c in cols)


def _frontier_with_ci(fr: Frontier, samples: FrontierSamples) -> Frontier:
    ok = samples.ok
    law = fr.loss_law
    if law is not None and samples.loss_E is not None:
        e_ci, _ = _ci(samples.loss_E)
        g_ci, _ = _ci(samples.loss_gamma)
        law = replace(law, E_ci=e_ci, gamma_ci=g_ci)
    return Frontier(params=_with_ci(fr.params, samples.slope_n[ok], samples.icpt_n[ok]),
                    tokens=_with_ci(fr.tokens, samples.slope_d[ok], samples.icpt_d[ok]),
                    loss=_with_ci(fr.loss, samples.slope_l[ok], samples.icpt_l[ok]),
                    budgets=fr.budgets, loss_law=law)


def _backtest(fits: Sequence[IsoflopFit], sel_idx: list[int], k: int, bv: BootstrapVertices | None) -> Backtest:
    if len(sel_idx) - k < 2:
        return Backtest(holdout_top=k, train_budgets=(), frontier=None, points=(),
                        reason=f"{len(sel_idx)} usable budget(s): holding out {k} leaves fewer than 2 to fit")
    train, held = sel_idx[:-k], sel_idx[-k:]
    use = [i in train for i in range(len(fits))]
    fr = fit_frontier(fits, use)
    train_fits = [fits[i] for i in train]
    fr = replace(fr, loss_law=fit_loss_law(np.array([f.budget for f in train_fits]),
                                           np.array([f.loss_opt for f in train_fits])))
    samples = None
    if bv is not None:
        cols = np.array([i in train for i in sel_idx])
        samples = frontier_samples(bv, cols)
        fr = _frontier_with_ci(fr, samples)
    preds = _predictions(fr, samples, [fits[i].budget for i in held])
    pts = []
    for i, p in zip(held, preds):
        m = fits[i]

        def inside(ci, v):
            return None if ci is None else bool(ci[0] <= v <= ci[1])

        pts.append(BacktestPoint(budget=m.budget, measured=m, predicted=p, n_opt_error=p.n_opt / m.n_opt - 1.0,
                                 d_opt_error=p.d_opt / m.d_opt - 1.0, loss_opt_error=p.loss_opt / m.loss_opt - 1.0,
                                 n_opt_in_ci=inside(p.n_opt_ci, m.n_opt), d_opt_in_ci=inside(p.d_opt_ci, m.d_opt),
                                 loss_opt_in_ci=inside(p.loss_opt_ci, m.loss_opt)))
    return Backtest(holdout_top=k, train_budgets=tuple(fits[i].budget for i in train), frontier=fr, points=tuple(pts))


# ---------------------------------------------------------------------------- JSON
ESTIMATOR = ("bootstrap median for N_opt, D_opt and exponents (lower RMSE than the fit on synthetic sweeps, "
             "benchmarks/fit_calibration.py); the fit itself for L_opt (resampled minima are biased low)")


def _median_or(median: float | None, value: float) -> float:
    return value if median is None else median


def _law_json(law: PowerLaw) -> dict[str, Any]:
    return {"exponent": law.exponent, "exponent_ci": law.exponent_ci, "exponent_median": law.exponent_median,
            "exponent_estimate": _median_or(law.exponent_median, law.exponent),
            "coefficient": law.coefficient, "coefficient_ci": law.coefficient_ci,
            "coefficient_median": law.coefficient_median, "residual_std": law.residual_std}


def _frontier_json(fr: Frontier | None) -> dict[str, Any] | None:
    if fr is None:
        return None
    ll = fr.loss_law
    return {"params": _law_json(fr.params), "tokens": _law_json(fr.tokens), "loss": _law_json(fr.loss),
            "budgets": list(fr.budgets),
            "loss_law": None if ll is None else {"model": "L_opt = E + k·(C/c0)^-gamma", "E": ll.E, "E_ci": ll.E_ci,
                                                 "k": ll.k, "gamma": ll.gamma, "gamma_ci": ll.gamma_ci, "c0": ll.c0,
                                                 "budgets": ll.n_budgets}}


def _pred_json(p: Prediction) -> dict[str, Any]:
    return {"budget": p.budget, "n_opt": p.n_opt, "n_opt_ci": p.n_opt_ci, "n_opt_median": p.n_opt_median,
            "d_opt": p.d_opt, "d_opt_ci": p.d_opt_ci, "d_opt_median": p.d_opt_median,
            "loss_opt": p.loss_opt, "loss_opt_ci": p.loss_opt_ci, "loss_opt_median": p.loss_opt_median,
            "n_opt_estimate": _median_or(p.n_opt_median, p.n_opt),
            "d_opt_estimate": _median_or(p.d_opt_median, p.d_opt), "loss_opt_estimate": p.loss_opt,
            "n_opt_model": p.n_opt_model, "d_opt_model": p.d_opt_model, "loss_opt_model": p.loss_opt_model,
            "loss_opt_law": p.loss_opt_law, "loss_opt_law_ci": p.loss_opt_law_ci,
            "loss_opt_flag": p.loss_opt_flag,
            "parametric": None if p.parametric_method is None else {
                "method": p.parametric_method, "n_opt": p.n_opt_parametric, "n_opt_ci": p.n_opt_parametric_ci,
                "d_opt": p.d_opt_parametric, "d_opt_ci": p.d_opt_parametric_ci,
                "loss_opt": p.loss_opt_parametric, "loss_opt_ci": p.loss_opt_parametric_ci,
                "used_for_loss": p.parametric_used}}


def _report_json(r: FitReport) -> dict[str, Any]:
    budgets = []
    for i, f in enumerate(r.budgets):
        deg = None
        if r.bootstrap is not None and r.used[i]:
            col = [j for j, u in enumerate(r.used) if u].index(i)
            deg = r.bootstrap.degenerate[col]
        rel = f.tokens_relation
        budgets.append({"budget": f.budget, "n_opt": f.n_opt, "n_opt_ci": r.budget_ci[i] if r.budget_ci else None,
                        "d_opt": f.d_opt, "d_opt_ci": r.budget_d_ci[i] if r.budget_d_ci else None,
                        "tokens_relation": None if rel is None else {"intercept": rel[0], "slope": rel[1]},
                        "loss_opt": f.loss_opt, "points": f.points, "points_used": f.points_used,
                        "sizes": f.sizes, "n_min": f.n_min, "n_max": f.n_max, "in_range": f.in_range,
                        "flags": list(f.flags), "used": r.used[i], "curvature": f.curvature,
                        "minimizer": f.minimizer, "window": f.window, "bootstrap_degenerate": deg,
                        "n_opt_median": r.budget_median[i] if r.budget_median else None,
                        "n_opt_estimate": _median_or(r.budget_median[i] if r.budget_median else None, f.n_opt),
                        "loss_opt_ci": r.budget_loss_ci[i] if r.budget_loss_ci else None})
    out: dict[str, Any] = {
        "budgets": budgets,
        "frontier": _frontier_json(r.frontier),
        "frontier_reason": r.frontier_reason,
        "excluded": [{"run_id": e.run_id, "budget": e.budget, "reason": e.reason} for e in r.excluded],
        "predictions": [_pred_json(p) for p in r.predictions],
        "settings": r.settings,
        "estimator": ESTIMATOR if r.bootstrap is not None else "the fit (no bootstrap)",
        "noise": None if r.noise is None else {"sigma": r.noise.sigma, "dof": r.noise.dof, "source": r.noise.source},
        "outliers": [{"run_id": e.run_id, "budget": e.budget, "reason": e.reason} for e in r.outliers],
    }
    if r.bootstrap is not None and r.samples is not None:
        out["bootstrap"] = {"resamples": r.bootstrap.n_resamples, "seed": r.bootstrap.seed,
                            "dropped": r.samples.dropped, "interval": [5, 95]}
    # always present (null / [] when there is no parametric fit, with the reason)
    out["parametric"], out["parametric_reason"], out["parametric_check"] = [], r.parametric_reason, None
    if r.parametric:
        out["parametric"] = [{"method": p.method, "E": p.E, "A": p.A, "B": p.B, "alpha": p.alpha, "beta": p.beta,
                              "a": p.a, "b": p.b, "objective": p.objective, "points": p.n_points,
                              "converged": p.converged} for p in r.parametric]
        out["parametric_reason"] = r.parametric_reason
        c = r.parametric_check
        out["parametric_check"] = None if c is None else {"used_for_loss": c.used, "chi2": c.chi2,
                                                           "budgets": c.budgets, "p_value": c.p_value,
                                                           "reason": c.reason, "marginal": c.marginal}
    if r.backtest is not None:
        bt = r.backtest
        out["backtest"] = {
            "holdout_top": bt.holdout_top, "train_budgets": list(bt.train_budgets), "reason": bt.reason,
            "frontier": _frontier_json(bt.frontier),
            "held_out": [{"budget": p.budget, "n_opt_measured": p.measured.n_opt, "n_opt_predicted": p.predicted.n_opt,
                          "n_opt_ci": p.predicted.n_opt_ci, "n_opt_error": p.n_opt_error, "n_opt_in_ci": p.n_opt_in_ci,
                          "d_opt_measured": p.measured.d_opt, "d_opt_predicted": p.predicted.d_opt,
                          "d_opt_ci": p.predicted.d_opt_ci, "d_opt_error": p.d_opt_error, "d_opt_in_ci": p.d_opt_in_ci,
                          "loss_opt_measured": p.measured.loss_opt, "loss_opt_predicted": p.predicted.loss_opt,
                          "loss_opt_ci": p.predicted.loss_opt_ci, "loss_opt_error": p.loss_opt_error,
                          "loss_opt_in_ci": p.loss_opt_in_ci, "loss_opt_model": p.predicted.loss_opt_model,
                          "loss_opt_flag": p.predicted.loss_opt_flag} for p in bt.points],
        }
    if r.hparams is not None:
        out["hparams"] = r.hparams.to_json()
    if r.envelope is not None:
        e = r.envelope
        out["envelope"] = {"params": None if e.params_law is None else _law_json(e.params_law),
                           "tokens": None if e.tokens_law is None else _law_json(e.tokens_law),
                           "levels": int(len(e.flops)), "levels_used": int(e.used.sum()),
                           "censored": e.censored, "uncovered": e.uncovered}
    return out
