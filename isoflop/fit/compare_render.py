"""Draw a Comparison in the terminal with rich (tables only; no computation here)."""
from __future__ import annotations

import math
from typing import Any

from .compare import Comparison
from .render import _g


def _ci(ci: Any) -> str:
    if ci is None:
        return "—"
    return f"{_open(ci[0], low=True)} – {_open(ci[1])}"


def _open(v: Any, low: bool = False) -> str:
    """An open interval end (None) is unbounded: below, 'beyond range' is read from the column title."""
    return ("…" if low else "∞") if v is None else _g(v)


def render_comparison(cmp: Comparison, console: Any) -> None:
    from rich.table import Table

    s = cmp.settings
    console.print(f"[bold]IsoFLOP compare[/bold] — reference {cmp.reference}; joint seed-noise bootstrap, "
                  f"{s['bootstrap']} resamples per sweep (seeds {', '.join(map(str, s['seeds']))}), 5–95% intervals")
    t = Table(title="Frontiers (as `isoflop fit`)")
    for col in ("sweep", "budgets used", "a (N_opt)", "b (D_opt)", "L_opt law"):
        t.add_column(col, justify="left" if col in ("sweep", "L_opt law") else "right")
    for name, rep in zip(cmp.names, cmp.reports):
        fr = rep.frontier
        ll = fr.loss_law
        law = (f"{_g(ll.E)} + {_g(ll.k)}·(C/{_g(ll.c0, 2)})^-{_g(ll.gamma)}" if ll is not None
               else f"{_g(fr.loss.coefficient)}·C^{_g(fr.loss.exponent)}")
        est = lambda p: p.exponent if p.exponent_median is None else p.exponent_median  # noqa: E731
        t.add_row(name, str(len(fr.budgets)), f"{est(fr.params):.3f} ({_ci(fr.params.exponent_ci)})",
                  f"{est(fr.tokens):.3f} ({_ci(fr.tokens.exponent_ci)})", law)
    console.print(t)
    for p in cmp.pairs:
        t = Table(title=f"{p.other} against {p.reference}: compute multiplier "
                        f"(> 1: {p.other} needs more compute for {p.reference}'s loss)")
        for col in ("budget C", "", "multiplier", "5–95%"):
            t.add_column(col, justify="right")
        for m in p.multiplier:
            t.add_row(_g(m.budget), "both ran" if m.kind == "shared" else "predicted",
                      "∞" if not math.isfinite(m.value) else _g(m.value), _ci(m.ci))
        console.print(t)
        d = p.exponent_diff
        console.print("exponent difference (" + p.other + " − " + p.reference + "): " + ", ".join(
            f"{k} {d[k].value:+.4f} ({_ci(d[k].ci)})" for k in ("params", "tokens", "loss")))
        c = p.crossover
        if c is None:
            console.print("crossover: the fitted L_opt laws do not cross within 1000× of the shared budgets")
        elif len(p.crossovers) <= 1:
            frac = "" if c.crossing is None else f"; {c.crossing:.0%} of resamples cross in the searched range"
            console.print(f"crossover: C = {_g(c.budget)} ({_ci(c.ci)}; '…'/'∞': beyond the searched range{frac})")
        else:
            # each crossing's interval is over the resamples that cross near it, never a span of both
            console.print(f"crossovers: the fitted L_opt laws cross {len(p.crossovers)} times within 1000× of the "
                          "shared budgets, each with the 5–95% of the resamples that cross there:")
            for x in p.crossovers:
                frac = "" if x.crossing is None else f"; {x.crossing:.0%} of resamples cross here"
                ci = "too few resamples cross here for an interval" if x.ci is None else _ci(x.ci)
                console.print(f"  C = {_g(x.budget)} ({ci}{frac})")
        if p.reference_only or p.other_only:
            console.print(f"[yellow]budgets without a partner[/]: {p.reference} "
                          f"{', '.join(_g(b) for b in p.reference_only) or '—'}; {p.other} "
                          f"{', '.join(_g(b) for b in p.other_only) or '—'} (compared only where both ran)")
        console.print(f"[bold]verdict[/bold]: {p.verdict}")
