"""Figure of a Comparison (matplotlib imported here only, with the Agg backend).

One file with three panels: the IsoFLOP points of every sweep (one colour per
sweep, their per-budget minima as stars), N_opt and L_opt against C for every
sweep with the 5–95% bootstrap band of its law, and the compute multiplier of
each pair against C with its band (1 dashed; shared budgets marked).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .compare import Comparison


def save_compare_plot(cmp: Comparison, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from .plots import _log_ticks

    p = Path(path)
    if p.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"plot format must be .png, .svg or .pdf, got {p.suffix!r}")
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    cs = [f.budget for r in cmp.reports for f in r.budgets] + list(cmp.settings.get("predict") or [])
    grid = np.logspace(np.log10(min(cs)) - 0.1, np.log10(max(cs)) + 0.1, 100)
    lg = np.log(grid)
    for i, (name, rep) in enumerate(zip(cmp.names, cmp.reports)):
        colour = f"C{i}"
        ax = axes[0]
        for j, (f, (c, n, y)) in enumerate(zip(rep.budgets, rep.points)):
            ax.scatter(n, y, s=10, color=colour, alpha=0.6, label=name if j == 0 else None)
            if f.coefficients is not None:
                xs = np.exp(np.linspace(np.log(f.used_n_min), np.log(f.used_n_max), 60))
                ax.plot(xs, f.loss_at(xs), color=colour, lw=0.8)
            if np.isfinite(f.n_opt):
                ax.plot([f.n_opt], [f.loss_opt], marker="*", ms=9, color=colour, ls="none")
        fr, s = rep.frontier, rep.samples
        used = [f for f, u in zip(rep.budgets, rep.used) if u]
        for ax, key in ((axes[1], "n_opt"), (axes[2], "loss_opt")):
            ax.scatter([f.budget for f in used], [getattr(f, key) for f in used], color=colour, s=14)
        # the exponent the compare table prints: the bootstrap median where there is one
        a_est = fr.params.exponent if fr.params.exponent_median is None else fr.params.exponent_median
        axes[1].plot(grid, fr.params(grid), color=colour, label=f"{name}: a = {a_est:.3f}")
        law = fr.loss_law
        axes[2].plot(grid, law(grid) if law is not None else fr.loss(grid), color=colour, label=name)
        if s is not None and s.ok.any():
            vals = np.exp(s.slope_n[s.ok, None] * lg[None, :] + s.icpt_n[s.ok, None])
            axes[1].fill_between(grid, *np.percentile(vals, [5, 95], axis=0), color=colour, alpha=0.2)
            if law is not None and s.loss_E is not None:
                ll = s.loss_E[:, None] + s.loss_k[:, None] * np.exp(
                    -s.loss_gamma[:, None] * (lg[None, :] - np.log(s.loss_c0)))
            else:
                ll = np.exp(s.slope_l[s.ok, None] * lg[None, :] + s.icpt_l[s.ok, None])
            axes[2].fill_between(grid, *np.nanpercentile(ll, [5, 95], axis=0), color=colour, alpha=0.2)
    ax = axes[3]
    for i, (pair, (g, fit, lo, hi)) in enumerate(zip(cmp.pairs, cmp.curves)):
        colour = f"C{i + 1}"
        ax.plot(g, fit, color=colour, label=f"{pair.other} vs {pair.reference}")
        if np.isfinite(lo).any():
            ax.fill_between(g, lo, hi, color=colour, alpha=0.2)
        pts = [m for m in pair.multiplier if np.isfinite(m.value)]
        ax.scatter([m.budget for m in pts], [m.value for m in pts], color=colour, s=14)
    ax.axhline(1.0, color="0.4", ls="--", lw=1)
    ax.set_ylabel("compute multiplier (> 1: reference more efficient)")
    titles = ("IsoFLOP profiles (★ = minimum)", "N_opt vs C (5–95% band)", "L_opt vs C (5–95% band)",
              "compute multiplier vs C (5–95% band)")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        if ax is not axes[0]:
            ax.set_yscale("log")
        _log_ticks(ax, NullFormatter)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("params N" if ax is axes[0] else "compute C (FLOPs)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel("N_opt")
    axes[2].set_ylabel("L_opt")
    fig.tight_layout()
    fig.savefig(p)
    plt.close(fig)
    return p
