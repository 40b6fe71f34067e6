"""Draw a FitReport in the terminal with rich (tables only; no computation here)."""
from __future__ import annotations

import math
from typing import Any

from .report import FitReport


def _g(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "—"
    return f"{f:.{digits}g}"


def _ci(ci: Any, digits: int = 3) -> str:
    return "—" if ci is None else f"{_g(ci[0], digits)} – {_g(ci[1], digits)}"


def _pct(v: Any, digits: int) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return f"{f:+.{digits}%}" if math.isfinite(f) else "—"


def render_report(report: FitReport, console: Any) -> None:
    from rich.table import Table

    s = report.settings
    minimizer = s.get("minimizer")
    how = ("Akima spline minimum" if minimizer == "akima"
           else "parabola on " + ("all points" if s.get("window") is None else f"{s['window']} sizes"))
    boot = report.bootstrap is not None
    console.print(f"[bold]IsoFLOP fit[/bold] — {how}, seed-noise bootstrap {s.get('bootstrap')} resamples, "
                  f"seed {s.get('seed')}")
    if report.noise is not None:
        nz = report.noise
        src = {"seeds": "repeated runs per size: seeds, or sizes within 2% merged", "residuals": "residuals of neighbouring sizes",
               "parametric": "residuals of one L(N, D) fit: too few sizes per budget for neighbours",
               "none": "too few sizes or budgets to estimate it: no intervals"}[nz.source]
        console.print(f"noise per run σ = {_g(nz.sigma)} (from {src}, {nz.dof} degrees of freedom)")
    if boot:
        console.print("estimates: bootstrap median for N_opt, D_opt and exponents; the fit for L_opt "
                      "(see README, 'Which estimate')")

    t = Table(title="Budgets (per-budget optimum; D_opt from the budget's own tokens at N_opt)")
    for col in ("budget C", "N_opt", "N_opt 5–95%", "D_opt", "D_opt 5–95%", "L_opt", "points", "used", "flags"):
        t.add_column(col, justify="left" if col == "flags" else "right")
    for i, f in enumerate(report.budgets):
        ci = report.budget_ci[i] if report.budget_ci else None
        dci = report.budget_d_ci[i] if report.budget_d_ci else None
        med = report.budget_median[i] if report.budget_median else None
        n_est = f.n_opt if med is None else med
        d_est = f.d_opt if med is None else float(f.tokens_at(med))
        used = report.used[i]
        style = None if used else "dim"
        t.add_row(_g(f.budget), _g(n_est), _ci(ci), _g(d_est), _ci(dci), _g(f.loss_opt, 4),
                  f"{f.points_used}/{f.points}", "yes" if used else "no",
                  ", ".join(f.flags) if f.flags else "", style=style)
    console.print(t)
    from .isoflop import FLAG_ADVICE

    for flag in sorted({fl for f in report.budgets for fl in f.flags}):
        meaning, advice = FLAG_ADVICE.get(flag, ("", ""))
        console.print(f"  [dim]{flag}[/dim]: {meaning} — {advice}")
    if report.outliers:
        console.print(f"[yellow]{len(report.outliers)} outlier run(s) left out of every fit:[/yellow]")
        for e in report.outliers:
            console.print(f"  {e.run_id} (C = {_g(e.budget)}): {e.reason}")

    if report.frontier is None:
        console.print(f"[bold red]No frontier:[/bold red] {report.frontier_reason}")
    else:
        fr = report.frontier
        t = Table(title=f"Frontier (power laws in C over {len(fr.budgets)} budgets; 5–95% bootstrap)")
        for col in ("quantity", "exponent", "exponent 5–95%", "coefficient", "coefficient 5–95%"):
            t.add_column(col, justify="right")
        for name, law in (("N_opt (a)", fr.params), ("D_opt (b)", fr.tokens),
                          ("L_opt, pure power law", fr.loss)):
            est = law.exponent if law.exponent_median is None else law.exponent_median
            t.add_row(name, _g(est, 4), _ci(law.exponent_ci, 4), _g(law.coefficient, 4),
                      _ci(law.coefficient_ci, 3))
        console.print(t)
        ll = fr.loss_law
        if ll is not None:
            console.print(f"loss law L_opt = E + k·(C/{_g(ll.c0)})^−γ: E = {_g(ll.E, 4)} ({_ci(ll.E_ci, 4)}), "
                          f"k = {_g(ll.k, 4)}, γ = {_g(ll.gamma, 3)} ({_ci(ll.gamma_ci, 3)})")
        if report.samples is not None and report.samples.dropped:
            console.print(f"[yellow]{report.samples.dropped} bootstrap resample(s) had fewer than 2 usable "
                          f"budgets and were dropped[/yellow]")

    if report.predictions:
        t = Table(title="Predictions (5–95%)")
        for col in ("budget C", "N_opt", "N_opt 5–95%", "D_opt", "D_opt 5–95%", "L_opt", "L_opt 5–95%",
                    "L_opt model"):
            t.add_column(col, justify="left" if col == "L_opt model" else "right")
        for p in report.predictions:
            t.add_row(_g(p.budget), _g(p.n_opt_estimate), _ci(p.n_opt_ci), _g(p.d_opt_estimate), _ci(p.d_opt_ci),
                      _g(p.loss_opt, 4), _ci(p.loss_opt_ci, 4),
                      "parametric fit" if p.loss_opt_model.startswith("parametric") else
                      ("E + k·C^−γ law" if p.loss_opt_law is not None else
                       "power law (no floor), flagged too_few_budgets"))
        console.print(t)
        flagged = next((p.loss_opt_flag for p in report.predictions if p.loss_opt_flag), None)
        if flagged:
            console.print(f"[yellow]L_opt not a prediction:[/yellow] {flagged}")
        console.print("N_opt, D_opt: power laws in C through the per-budget minima (approach 2).")
        chk = report.parametric_check
        if chk is not None:
            console.print(f"parametric fit {chk.reason}")
            if chk.marginal:
                console.print("[yellow]the check is marginal[/yellow] (p = 0.0001–0.2, its threshold 0.01): "
                              "another minimizer or a few more runs may flip which model gives L_opt; the table "
                              "below has both values; treat the range between them as the uncertainty")
        pp = [p for p in report.predictions if p.parametric_method is not None]
        if pp:
            used = bool(pp[0].parametric_used)
            t = Table(title=f"The parametric fit's own optimum ({pp[0].parametric_method}; 5–95% linearised)"
                      if used else f"The parametric fit's own optimum ({pp[0].parametric_method}) — NOT USED: it "
                      "failed its check (above), so these are not predictions and get no intervals")
            for col in ("budget C", "N_opt", "N_opt 5–95%", "D_opt", "L_opt", "L_opt 5–95%", "loss law L_opt",
                        "5–95%"):
                t.add_column(col, justify="right")
            for p in pp:
                t.add_row(_g(p.budget), _g(p.n_opt_parametric), _ci(p.n_opt_parametric_ci if used else None),
                          _g(p.d_opt_parametric), _g(p.loss_opt_parametric, 4),
                          _ci(p.loss_opt_parametric_ci if used else None), _g(p.loss_opt_law, 4),
                          _ci(p.loss_opt_law_ci, 4))
            console.print(t)

    if report.parametric or report.parametric_reason:
        if report.parametric_reason:
            console.print(f"[yellow]No parametric fit:[/yellow] {report.parametric_reason}")
        t = Table(title="Parametric fit L = E + A/N^α + B/D^β")
        for col in ("method", "E", "A", "B", "α", "β", "a = β/(α+β)", "objective", "points"):
            t.add_column(col, justify="right")
        for p in report.parametric:
            t.add_row(p.method, _g(p.E, 4), _g(p.A, 4), _g(p.B, 4), _g(p.alpha, 4), _g(p.beta, 4), _g(p.a, 4),
                      _g(p.objective, 6), str(p.n_points))
        if report.parametric:
            console.print(t)

    if report.envelope is not None:
        e = report.envelope
        if e.params_law is None:
            console.print("[yellow]Envelope: too few usable FLOP levels for a power law[/yellow]")
        else:
            console.print(f"Envelope (approach 1): N_opt ∝ C^{e.params_law.exponent:.4f} over "
                          f"{int(e.used.sum())} FLOP levels ({e.censored} censored at the smallest/largest N)")

    if report.backtest is not None:
        bt = report.backtest
        if bt.reason:
            console.print(f"[yellow]Backtest:[/yellow] {bt.reason}")
        else:
            t = Table(title=f"Backtest: fit without the top {bt.holdout_top} budget(s)")
            for col in ("budget C", "N_opt measured", "N_opt predicted", "error", "in 5–95%",
                        "D_opt measured", "D_opt predicted", "error", "in 5–95%",
                        "L_opt measured", "L_opt predicted", "error", "in 5–95%"):
                t.add_column(col, justify="right")

            def yes_no(v: bool | None) -> str:
                return "—" if v is None else ("yes" if v else "no")

            for p in bt.points:
                t.add_row(_g(p.budget), _g(p.measured.n_opt), _g(p.predicted.n_opt), _pct(p.n_opt_error, 1),
                          yes_no(p.n_opt_in_ci),
                          _g(p.measured.d_opt), _g(p.predicted.d_opt), _pct(p.d_opt_error, 1), yes_no(p.d_opt_in_ci),
                          _g(p.measured.loss_opt, 4), _g(p.predicted.loss_opt, 4), _pct(p.loss_opt_error, 2),
                          yes_no(p.loss_opt_in_ci))
            console.print(t)
            first = bt.points[0].predicted if bt.points else None
            if first is not None:
                console.print(f"backtest L_opt from: {first.loss_opt_model}"
                              + (f" ({first.loss_opt_flag})" if first.loss_opt_flag else ""))

    if report.excluded:
        t = Table(title=f"Excluded runs ({len(report.excluded)})")
        t.add_column("run")
        t.add_column("budget", justify="right")
        t.add_column("reason")
        for e in report.excluded[:50]:
            t.add_row(e.run_id, _g(e.budget), e.reason)
        if len(report.excluded) > 50:
            t.add_row("…", "", f"{len(report.excluded) - 50} more (see --json)")
        console.print(t)
