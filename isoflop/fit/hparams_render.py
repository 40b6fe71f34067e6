"""Drawing the hyperparameter laws (`hparams.HparamsReport`): a rich table, and a matplotlib figure."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from .hparams import HparamsReport

NAMES = {"lr": "η*(C)", "batch": "B*(C) tokens", "lr_n": "η*(N)", "batch_n": "B*(N) tokens"}


def _g(v: float) -> str:
    return f"{v:.4g}" if v is not None and math.isfinite(v) else "-"


def render_hparams(h: HparamsReport, console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"Hyperparameter laws (per-cell optimum, 5–95% bootstrap, σ = {h.sigma:.3g} from "
                    f"{h.sigma_source})", title_justify="left")
    for c in ("law", "exponent", "exponent 5–95%", "coefficient", "coefficient 5–95%", "cells used"):
        t.add_column(c, justify="right")
    for key, law in h.laws.items():
        e, k = law.exponent_ci, law.coefficient_ci
        t.add_row(NAMES.get(key, key), _g(law.exponent), f"{_g(e[0])} – {_g(e[1])}" if e else "-",
                  _g(law.coefficient), f"{_g(k[0])} – {_g(k[1])}" if k else "-",
                  f"{law.cells}/{len(h.cells)}")
    console.print(t)
    for key, why in h.reasons.items():
        console.print(f"{NAMES.get(key, key)}: {why}")
    for kind in ("lr", "batch"):
        flags = Counter(f for c in h.cells if getattr(c, kind) is not None for f in getattr(c, kind).flags)
        if flags:
            console.print(f"{kind} cells left out: " + ", ".join(f"{n} {f}" for f, n in sorted(flags.items()))
                          + ("  (`isoflop extend SWEEP` plans the next multiplier beyond an edge)"
                             if flags.get("at_low_edge") or flags.get("at_high_edge") else ""))
    if len(h.cells) <= 60:
        ct = Table(title="Cells (budget, size): optimum per axis", title_justify="left", show_edge=False)
        axes = [k for k in ("lr", "batch") if any(getattr(c, k) is not None for c in h.cells)]
        ct.add_column("budget", justify="right")
        ct.add_column("N", justify="right")
        for k in axes:
            ct.add_column("η*" if k == "lr" else "B* tokens", justify="right")
            ct.add_column(f"{k} flags")
        for c in h.cells:
            row = [f"{c.budget:.3g}", f"{c.params:.3g}"]
            for k in axes:
                a = getattr(c, k)
                row += [_g(a.opt) if a else "-", ",".join(a.flags) if a else ""]
            ct.add_row(*row)
        console.print(ct)


def _sparse_minor_labels(axis: Any) -> None:
    """Minor tick labels on a log axis only at 2× and 5× (every one, 3×10^-4 4×10^-4 …, ran into each
    other), and none where the axis spans a decade or more (its major labels suffice)."""
    from matplotlib.ticker import LogLocator, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and hi / lo >= 10:
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))


def save_hparams_plot(h: HparamsReport, path: str | Path) -> Path:
    """X-hparams.png: per axis the sweep has (η, B), one row: loss against the value per cell (left),
    the optimum against C with the law and its band (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D

    p = Path(path)
    out = p.with_name(f"{p.stem}-hparams{p.suffix}")
    kinds = [k for k in ("lr", "batch") if any(getattr(c, k) is not None for c in h.cells)] or ["lr"]
    fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 4.5 * len(kinds)), squeeze=False)
    budgets = sorted({c.budget for c in h.cells})
    cmap = plt.get_cmap("viridis")

    def colour(b: float):
        return cmap(budgets.index(b) / max(1, len(budgets) - 1))

    for (ax1, ax2), kind in zip(axes, kinds):
        for c in h.cells:
            a = getattr(c, kind)
            if a is None:
                continue
            ax1.plot(a.values, a.losses, "o-", color=colour(c.budget), alpha=0.6, ms=3, lw=0.8)
            if a.usable:
                ax1.plot([a.opt], [min(a.losses)], "k|", ms=8)
        ax1.set_xscale("log")
        _sparse_minor_labels(ax1.xaxis)
        ax1.set_xlabel("learning rate η" if kind == "lr" else "batch B (tokens)")
        ax1.set_ylabel("final loss")
        ax1.set_title("loss per cell (| : the cell's optimum)")
        ax1.legend([Line2D([], [], color=colour(b), marker="o", ms=3) for b in budgets],
                   [f"C = {b:.3g}" for b in budgets], fontsize=7, title="budget", title_fontsize=7)
        use = [c for c in h.cells if getattr(c, kind) is not None and getattr(c, kind).usable]
        if not use:  # every cell flagged: nothing to put on log axes
            ax2.text(0.5, 0.5, "no unflagged cell: no law", ha="center", va="center", transform=ax2.transAxes)
            continue
        ax2.scatter([c.budget for c in use], [getattr(c, kind).opt for c in use], s=12,
                    c=[colour(c.budget) for c in use], label="cell optimum")
        law = h.laws.get(kind)
        if law is not None:
            xs = np.geomspace(min(budgets), max(budgets) * 4, 50)
            ax2.plot(xs, law(xs), "k-", label=f"{NAMES[kind]} = {law.coefficient:.3g}·C^{law.exponent:.3f}")
            band = law.band(xs)
            if band is not None:
                ax2.fill_between(xs, band[0], band[1], color="k", alpha=0.15, label="5–95%")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        _sparse_minor_labels(ax2.yaxis)
        ax2.set_xlabel("budget C (FLOPs)")
        ax2.set_ylabel(NAMES[kind])
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
