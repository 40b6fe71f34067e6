"""Sweep design before spending GPU-hours: simulate a planned sweep many times, fit each, and see
how precise its answers would be.

`design(spec, surface, target=C)` plans the spec (the real planner, so the real shapes, tokens,
batches and learning rates), draws every run's final loss from the stated surface
(`train.simulate_run.Surface`: L(N, D) + optional lr/batch penalty + Gaussian noise) `sims`
times, runs the real `fit_sweep` on each draw, and reports per variant of the spec:

- the expected 5–95% interval width of the N_opt exponent a (median over the simulations of each
  fit's own bootstrap interval), and of N_opt and L_opt at the target budget (as ln(hi/lo) and
  hi − lo);
- the spread those intervals should match: 5–95% of the estimates themselves across simulations;
- the share of budgets flagged (edge, not convex, ...) and of simulations without a frontier;
- the runs, FLOPs and GPU-hours (at the spec's `throughput`) of the real sweep.

Variants are the spec with one thing changed: points per budget, seeds, span, one budget more
above or the smallest left out. Each simulation of each variant draws its own noise; the same
`seed` gives the same report. Simulations are cheap because the fit is: no parametric L(N, D)
fit (L_opt comes from the loss law E + k·C^−γ), `bootstrap` resamples per fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import UserError
from .train.simulate_run import Surface, surface_of

LAW_KEYS = ("E", "A", "B", "alpha", "beta")
#: a median interval width and the spread of the estimates further apart than this: the intervals mislead
DISAGREE = 1.5
#: intervals that hold the truth in fewer simulations than this are called overconfident (nominal 90%)
MIN_COVERAGE = 0.8


class DesignError(UserError, ValueError):
    """A design request that cannot be simulated; one line."""


def parse_law(text: str) -> dict[str, float]:
    """'E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28' -> dict (every key required, positive numbers)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if "=" not in part:
            raise DesignError(f"--law: {part!r} is not KEY=VALUE (keys: {', '.join(LAW_KEYS)})")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in LAW_KEYS:
            raise DesignError(f"--law: unknown key {k!r} (keys: {', '.join(LAW_KEYS)})")
        if k in out:
            raise DesignError(f"--law: {k} is given twice")
        try:
            x = float(v)
        except ValueError:
            raise DesignError(f"--law: {k}={v!r} is not a number") from None
        if not (math.isfinite(x) and (x > 0 or (k in ("E", "A", "B") and x >= 0))):
            raise DesignError(f"--law: {k} must be a positive finite number, got {v}")
        out[k] = x
    missing = [k for k in LAW_KEYS if k not in out]
    if missing:
        raise DesignError(f"--law lacks {', '.join(missing)} (give E=…,A=…,B=…,alpha=…,beta=…)")
    return out


@dataclass(frozen=True)
class PlannedSweep:
    """What a simulation needs of a planned sweep: per run its budget, N, D, lr, batch, seed, FLOPs."""

    budget: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    lr: np.ndarray
    batch: np.ndarray
    seed: np.ndarray
    flops_exact: np.ndarray
    run_id: tuple[str, ...]
    gpu_hours: float | None

    @classmethod
    def of(cls, spec: Any) -> "PlannedSweep":
        from .plan.grid import gpu_hours, plan

        runs = plan(spec)
        return cls(budget=np.array([r.budget for r in runs], float), params=np.array([r.params for r in runs], float),
                   tokens=np.array([r.tokens for r in runs], float), lr=np.array([r.lr for r in runs], float),
                   batch=np.array([r.batch_tokens for r in runs], float), seed=np.array([r.seed for r in runs]),
                   flops_exact=np.array([r.ledger["flops_exact"] for r in runs], float),
                   run_id=tuple(r.run_id for r in runs), gpu_hours=gpu_hours(runs, spec.throughput))

    def mean_loss(self, surface: Surface) -> np.ndarray:
        return np.array([surface.mean_loss(params=n, tokens=d, compute=c, lr=lr, batch=b) for n, d, c, lr, b in
                         zip(self.params, self.tokens, self.budget, self.lr, self.batch)])

    def table(self, loss: np.ndarray):
        from .fit.table import FitTable

        return FitTable(budget=self.budget, params=self.params, tokens=self.tokens, loss=loss,
                        run_id=list(self.run_id))


def best_of_cells(sweep: PlannedSweep, loss: np.ndarray):
    """The FitTable the IsoFLOP fit sees: one (lr, batch) variant per (budget, size, seed) cell, as the store
    gives it (`fit.hparams.best_variant_states`)."""
    from .fit.hparams import best_variant_states
    from .fit.table import FitTable

    why = best_variant_states(sweep.budget, sweep.params, loss, sweep.lr, sweep.batch, seed_key=list(sweep.seed))
    return FitTable(budget=sweep.budget, params=sweep.params, tokens=sweep.tokens, loss=loss,
                    run_id=list(sweep.run_id), state=["not_best" if w else "completed" for w in why],
                    reason=[w or "" for w in why])


@dataclass(frozen=True)
class Outcome:
    """One variant's simulated precision (widths are medians over simulations of each fit's 5–95% interval)."""

    name: str
    runs: int
    flops: float
    gpu_hours: float | None
    sims: int
    exponent_width: float            # a's interval: hi − lo
    exponent_spread: float           # 5–95% of the a estimates across simulations
    n_opt_width: float               # ln(hi/lo) of N_opt at the target
    n_opt_spread: float
    loss_opt_width: float            # hi − lo of L_opt at the target
    loss_opt_spread: float
    flagged_share: float             # budgets flagged, over all simulated budgets
    no_frontier: float               # share of simulations without a frontier
    exponent_true: float
    n_opt_true: float
    loss_opt_true: float
    exponent_bias: float             # median estimate − truth
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    coverage: dict[str, float] = field(default_factory=dict)  # share of simulations whose interval holds the truth

    @property
    def cost(self) -> float:
        return self.gpu_hours if self.gpu_hours is not None else self.flops

    def disagreeing(self) -> dict[str, str]:
        """Quantities whose median interval width and the spread of the estimates differ by more than
        `DISAGREE`×: "overconfident" (too narrow: they hold the truth in under `MIN_COVERAGE` of the
        simulations, or coverage unknown), "heavy-tailed" (a few simulations are far off but their own
        intervals are wide and hold the truth), or "wide"."""
        out = {}
        for q in ("exponent", "n_opt", "loss_opt"):
            w, sp = getattr(self, f"{q}_width"), getattr(self, f"{q}_spread")
            if math.isfinite(w) and math.isfinite(sp) and w > 0 and sp > 0:
                if sp > DISAGREE * w:
                    cov = self.coverage.get(q, math.nan)
                    out[q] = "heavy-tailed" if math.isfinite(cov) and cov >= MIN_COVERAGE else "overconfident"
                elif w > DISAGREE * sp:
                    out[q] = "wide"
        return out

    @property
    def exponent_precision(self) -> float:
        """The a width to rank by: the larger of the intervals' width and the estimates' spread (a narrow
        interval that the spread contradicts buys nothing)."""
        vals = [v for v in (self.exponent_width, self.exponent_spread) if math.isfinite(v)]
        return max(vals) if vals else math.nan

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("name", "runs", "flops", "gpu_hours", "sims", "exponent_width",
                                           "exponent_spread", "n_opt_width", "n_opt_spread", "loss_opt_width",
                                           "loss_opt_spread", "flagged_share", "no_frontier", "exponent_true",
                                           "n_opt_true", "loss_opt_true", "exponent_bias")}
        d["exponent_precision"] = self.exponent_precision
        d["disagreeing"] = self.disagreeing()
        d["coverage"] = {k: (v if math.isfinite(v) else None) for k, v in self.coverage.items()}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _width(ci: Any) -> float:
    return float(ci[1] - ci[0]) if ci is not None else math.nan


def _spread(x: np.ndarray, log: bool = False) -> float:
    x = x[np.isfinite(x)]
    if x.size < 5:
        return math.nan
    lo, hi = np.percentile(np.log(x) if log else x, [5.0, 95.0])
    return float(hi - lo)


def simulate_variant(name: str, spec: Any, surface: Surface, target: float, *, sims: int, bootstrap: int,
                     seed: int, minimizer: str = "akima") -> Outcome:
    from .fit.report import fit_sweep
    from .fit.simulate import Law

    sweep = PlannedSweep.of(spec)
    mean = sweep.mean_loss(surface)
    rng = np.random.default_rng(seed)
    law = Law(surface.E, surface.A, surface.B, surface.alpha, surface.beta)
    a_est, a_w, n_est, n_w, l_est, l_w = ([] for _ in range(6))
    held: dict[str, list[bool]] = {"exponent": [], "n_opt": [], "loss_opt": []}
    n_true, l_true = float(law.n_opt(target)), float(law.loss_opt(target))

    def holds(q: str, ci: Any, truth: float) -> None:
        if ci is not None and all(math.isfinite(x) for x in ci):
            held[q].append(bool(ci[0] <= truth <= ci[1]))
    flagged = budgets = none = 0
    for i in range(sims):
        loss = mean + surface.noise * rng.standard_normal(mean.shape)
        rep = fit_sweep(best_of_cells(sweep, loss), bootstrap=bootstrap, seed=seed + i, predict=[target],
                        parametric=None, minimizer=minimizer)
        budgets += len(rep.budgets)
        flagged += sum(1 for f in rep.budgets if f.flags)
        if rep.frontier is None or not rep.predictions:
            none += 1
            continue
        law_n = rep.frontier.params
        a_est.append(law_n.exponent_median if law_n.exponent_median is not None else law_n.exponent)
        a_w.append(_width(law_n.exponent_ci))
        holds("exponent", law_n.exponent_ci, law.a)
        p = rep.predictions[0]
        holds("n_opt", p.n_opt_ci, n_true)
        holds("loss_opt", p.loss_opt_ci, l_true)
        n_est.append(p.n_opt_estimate)
        n_w.append(math.log(p.n_opt_ci[1] / p.n_opt_ci[0]) if p.n_opt_ci else math.nan)
        l_est.append(p.loss_opt)
        l_w.append(_width(p.loss_opt_ci))
    med = lambda v: float(np.nanmedian(v)) if len(v) and np.isfinite(v).any() else math.nan  # noqa: E731
    arr = {k: np.array(v, float) for k, v in (("exponent", a_est), ("exponent_width", a_w), ("n_opt", n_est),
                                              ("n_opt_width", n_w), ("loss_opt", l_est), ("loss_opt_width", l_w))}
    return Outcome(
        name=name, runs=len(sweep.budget), flops=float(sweep.flops_exact.sum()), gpu_hours=sweep.gpu_hours, sims=sims,
        exponent_width=med(arr["exponent_width"]), exponent_spread=_spread(arr["exponent"]),
        n_opt_width=med(arr["n_opt_width"]), n_opt_spread=_spread(arr["n_opt"], log=True),
        loss_opt_width=med(arr["loss_opt_width"]), loss_opt_spread=_spread(arr["loss_opt"]),
        flagged_share=flagged / budgets if budgets else math.nan, no_frontier=none / sims if sims else math.nan,
        exponent_true=law.a, n_opt_true=float(law.n_opt(target)), loss_opt_true=float(law.loss_opt(target)),
        exponent_bias=med(arr["exponent"]) - law.a, samples=arr,
        coverage={q: (float(np.mean(v)) if v else math.nan) for q, v in held.items()},
    )


def variants(spec: Any) -> list[tuple[str, Any]]:
    """The spec and a few one-change variants of it (points, seeds, span, budgets)."""
    out: list[tuple[str, Any]] = [("as planned", spec)]
    g = spec.grid

    def with_grid(**kw: Any) -> Any:
        return spec.model_copy(update={"grid": g.model_copy(update=kw)})

    if g.points > 3:
        out.append((f"points {g.points - 2}", with_grid(points=g.points - 2)))
    out.append((f"points {g.points + 2}", with_grid(points=g.points + 2)))
    out.append((f"seeds ×2 ({2 * len(spec.seeds)})",
                spec.model_copy(update={"seeds": list(spec.seeds) + [max(spec.seeds) + 1 + i for i in range(len(spec.seeds))]})))
    if g.tokens_per_param is None and g.span:
        out.append((f"span {g.span * 2:g}", with_grid(span=g.span * 2)))
        if g.span / 2 > 1:
            out.append((f"span {g.span / 2:g}", with_grid(span=g.span / 2)))
    bs = spec.budget_values()
    if len(bs) >= 2:
        step = bs[-1] / bs[-2]
        out.append((f"+ budget {bs[-1] * step:.3g}",
                    spec.model_copy(update={"budgets": [*bs, float(f"{bs[-1] * step:.6g}")]})))
    if len(bs) >= 4:
        out.append((f"− budget {bs[0]:.3g}", spec.model_copy(update={"budgets": bs[1:]})))
    return out


@dataclass(frozen=True)
class DesignReport:
    target: float
    noise: float
    outcomes: tuple[Outcome, ...]
    skipped: tuple[tuple[str, str], ...]     # (variant, why it could not be planned)
    minimizer: str = "akima"

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "noise": self.noise, "variants": [o.to_json() for o in self.outcomes],
                "skipped": [{"variant": n, "reason": r} for n, r in self.skipped],
                "minimizer": self.minimizer, "simulated": True}


def design(spec: Any, law: dict[str, float], noise: float, *, target: float | None = None, sims: int = 16,
           bootstrap: int = 200, seed: int = 0, compare: bool = True, minimizer: str = "akima",
           progress: Callable[[str], None] | None = None) -> DesignReport:
    """Simulated precision of the spec (and, with compare, of its variants) under `law` and `noise`.
    target: the budget to predict at (default: 10× the largest budget)."""
    from .plan.grid import PlanError

    if not (math.isfinite(noise) and noise >= 0):
        raise DesignError(f"--noise must be a finite number >= 0, got {noise}")
    if minimizer not in ("akima", "parabola"):
        raise DesignError(f"--minimizer must be akima or parabola, got {minimizer!r}")
    vars_ = dict(spec.trainer.vars) if spec.trainer.template == "simulate" else {}
    vars_ = {k: v for k, v in vars_.items() if k not in ("law", "noise", "noise_seed")}
    surface = surface_of({**vars_, "law": law, "noise": noise})
    target = float(target) if target else 10.0 * max(spec.budget_values())
    outcomes, skipped = [], []
    for i, (name, sp) in enumerate(variants(spec) if compare else [("as planned", spec)]):
        if progress:
            progress(name)
        try:
            outcomes.append(simulate_variant(name, sp, surface, target, sims=sims, bootstrap=bootstrap,
                                             seed=seed + 1000 * i, minimizer=minimizer))
        except PlanError as e:
            if i == 0:
                raise
            skipped.append((name, str(e)))
    return DesignReport(target, noise, tuple(outcomes), tuple(skipped), minimizer)


def render_design(rep: DesignReport, console: Any) -> None:
    from rich.table import Table

    base = rep.outcomes[0]
    console.print(f"[bold magenta]SIMULATED[/] design: {base.sims} simulated sweeps per variant, noise σ = "
                  f"{rep.noise:g}, target C = {rep.target:.3g} (true a = {base.exponent_true:.4f}, "
                  f"N_opt = {base.n_opt_true:.3g}, L_opt = {base.loss_opt_true:.4g})")
    t = Table(title="expected 5–95% interval widths (median of the fits' own intervals; in brackets: the spread "
                    "of the estimates across simulations, which they should match)", title_justify="left")
    cost = "GPU-h" if base.gpu_hours is not None else "FLOPs"
    for c in ("variant", "runs", cost, "a width", "N_opt ×", "L_opt width", "flagged", "a width × √cost"):
        t.add_column(c, justify="left" if c == "variant" else "right")
    def f3(v: float, fmt: str = ".3f") -> str:
        return format(v, fmt) if math.isfinite(v) else "-"

    def eff(o: Outcome) -> float:
        return o.exponent_precision * math.sqrt(o.cost / base.cost)

    def mark(o: Outcome, q: str) -> str:
        return {"overconfident": " [red]![/]", "heavy-tailed": " [yellow]*[/]", "wide": " [dim]~[/]"}.get(
            o.disagreeing().get(q, ""), "")

    for o in rep.outcomes:
        t.add_row(o.name, str(o.runs), f"{o.cost:.3g}",
                  f"{f3(o.exponent_width)} ({f3(o.exponent_spread)}){mark(o, 'exponent')}",
                  f"{f3(math.exp(o.n_opt_width), '.2f')} ({f3(math.exp(o.n_opt_spread), '.2f')}){mark(o, 'n_opt')}"
                  if math.isfinite(o.n_opt_width) else "-",
                  f"{f3(o.loss_opt_width)} ({f3(o.loss_opt_spread)}){mark(o, 'loss_opt')}",
                  f"{o.flagged_share:.0%}" + (f", no frontier in {o.no_frontier:.0%}" if o.no_frontier else ""),
                  f3(eff(o)))
    console.print(t)
    if any(o.disagreeing() for o in rep.outcomes):
        console.print(f"[red]![/]: the spread of the estimates is over {DISAGREE:g}× the intervals' width and the "
                      f"intervals hold the truth in under {MIN_COVERAGE:.0%} of the simulations: overconfident for "
                      f"that design (trust the spread); [yellow]*[/]: over {DISAGREE:g}× too, but the intervals hold "
                      "the truth (a few simulations are far off, and their own intervals are wide); [dim]~[/]: the "
                      f"intervals are over {DISAGREE:g}× wider than the spread")
        names = {"exponent": "a", "n_opt": "N_opt", "loss_opt": "L_opt"}
        for o in rep.outcomes:
            for q, how in o.disagreeing().items():
                cov = o.coverage.get(q, math.nan)
                if how in ("overconfident", "heavy-tailed") and math.isfinite(cov):
                    console.print(f"  {o.name}: its {names[q]} intervals hold the truth in {cov:.0%} of the "
                                  "simulations (nominally 90%)")
    ranked = sorted((o for o in rep.outcomes if math.isfinite(eff(o))), key=eff)
    if ranked:
        console.print(f"most precise a per {'GPU-hour' if base.gpu_hours is not None else 'FLOP'}: "
                      f"{ranked[0].name!r} (ranked by the larger of the a width and its spread)")
    fewer = next((o for o in rep.outcomes if o.name.startswith("points ") and o.runs < base.runs), None)
    if (rep.minimizer == "akima" and fewer is not None and math.isfinite(fewer.exponent_precision)
            and fewer.exponent_precision < base.exponent_precision):
        # measured (5 vs 3 sizes, span 16, σ 0.01): a spread 0.092 vs 0.058 with akima, 0.039 vs 0.058 with parabola
        console.print(f"[yellow]fewer sizes look more precise here because of the minimizer[/]: akima (fit's default) "
                      "passes through every size's noisy mean, so its minimum rests on the 2–3 sizes around it, "
                      "which a denser grid at the same span puts closer together (noisier). `--minimizer parabola` "
                      "(and `isoflop fit --minimizer parabola`) fits up to 5 sizes and uses the denser grid")
    if base.no_frontier:
        console.print(f"[yellow]as planned, {base.no_frontier:.0%} of the simulated sweeps have no frontier[/] "
                      f"({base.flagged_share:.0%} of their budgets flagged): move the grid's centre (or widen its "
                      "span) before spending GPU-hours on it")
    console.print("a width × √cost (the larger of width and spread): lower buys more precision per "
                  f"{'GPU-hour' if base.gpu_hours is not None else 'FLOP'} (a width falls as 1/√cost when runs "
                  "are only repeated); N_opt ×: the interval's hi/lo ratio at the target")
    if base.gpu_hours is None:
        console.print("set `throughput:` (sustained FLOP/s per GPU) in the spec to see GPU-hours")
    for n, r in rep.skipped:
        console.print(f"variant {n!r} skipped: {r}")
