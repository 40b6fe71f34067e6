"""Figures of a FitReport (matplotlib is imported here only, with the Agg backend).

`save_plots(report, path)` writes `<stem>-isoflops.<ext>` (loss vs N per
budget: points, fitted parabola, vertex; flagged budgets hollow and grey
with their flags in the legend) and `<stem>-frontier.<ext>` (N_opt and D_opt
vs C, log-log: the bootstrap median of each power law, as the text prints
it, with its 5–95% band (the fit where there is no bootstrap; D_opt's from
the tokens law, under the sweep's FLOP convention) and the predictions'
printed estimates; minor tick labels are hidden on log axes). The
extension of `path` picks the format (.png, .svg, .pdf); returns the paths.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .report import FitReport


def _log_ticks(ax, null_formatter) -> None:
    """No labels on minor ticks of both log axes (a span of few decades otherwise labels every
    minor tick: "3×10^11 4×10^11 ...", overlapping). Where the view holds fewer than 2 powers of
    ten, the major ticks are 1, 2, 5 × 10^k instead, so the axis still has labels."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator

    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        lo, hi = sorted(lim)
        if lo > 0 and np.floor(np.log10(hi)) - np.ceil(np.log10(lo)) < 1:
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
            axis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(np.inf, np.inf)))
        axis.set_minor_formatter(null_formatter())


def save_plots(report: FitReport, path: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    p = Path(path)
    ext = p.suffix.lower() or ".png"
    if ext not in (".png", ".svg", ".pdf"):
        raise ValueError(f"plot format must be .png, .svg or .pdf, got {ext!r}")
    stem = p.with_suffix("")
    out = [Path(f"{stem}-isoflops{ext}"), Path(f"{stem}-frontier{ext}")]

    # ---- IsoFLOP curves
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("viridis")
    nb = max(len(report.budgets), 1)
    for i, (f, (c, n, y)) in enumerate(zip(report.budgets, report.points)):
        used = report.used[i]
        colour = cmap(i / max(nb - 1, 1)) if used else "0.6"
        label = f"C={c:.2g}" + ("" if used else f" ({', '.join(f.flags) or 'not used'})")
        ax.scatter(n, y, s=14, facecolors=colour if used else "none", edgecolors=colour, label=label)
        if f.coefficients is not None:
            xs = np.exp(np.linspace(np.log(f.used_n_min), np.log(f.used_n_max), 100))
            ax.plot(xs, f.loss_at(xs), color=colour, lw=1, ls="-" if used else "--")
        if np.isfinite(f.n_opt) and np.isfinite(f.loss_opt):
            ax.plot([f.n_opt], [f.loss_opt], marker="*", ms=10, color=colour,
                    mfc=colour if used else "none", ls="none")
    ax.set_xscale("log")
    ax.set_xlabel("params N")
    ax.set_ylabel("loss")
    ax.set_title("IsoFLOP profiles (★ = minimum; hollow grey = flagged, not used)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out[0])
    plt.close(fig)

    # ---- frontier
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    fr = report.frontier
    used = [f for f, u in zip(report.budgets, report.used) if u]
    unused = [f for f, u in zip(report.budgets, report.used) if not u and np.isfinite(f.n_opt)]
    cs = [f.budget for f in report.budgets] + [pr.budget for pr in report.predictions]
    if cs:
        grid = np.logspace(np.log10(min(cs)) - 0.1, np.log10(max(cs)) + 0.1, 100)
    for ax, key, name in ((axes[0], "n_opt", "N_opt (params)"), (axes[1], "d_opt", "D_opt (tokens)")):
        ax.scatter([f.budget for f in used], [getattr(f, key) for f in used], color="C0", label="budget optimum")
        if unused:
            ax.scatter([f.budget for f in unused], [getattr(f, key) for f in unused], facecolors="none",
                       edgecolors="0.5", label="flagged (not used)")
        if fr is not None and cs:
            law = fr.params if key == "n_opt" else fr.tokens
            s = report.samples
            if s is not None and s.ok.any():
                # what the text prints: the bootstrap median (line and exponent) with its 5–95% band
                lg = np.log(grid)
                slope, icpt = (s.slope_n, s.icpt_n) if key == "n_opt" else (s.slope_d, s.icpt_d)
                vals = np.exp(slope[s.ok, None] * lg[None, :] + icpt[s.ok, None])
                lo, mid, hi = np.percentile(vals, [5, 50, 95], axis=0)
                a = law.exponent if law.exponent_median is None else law.exponent_median
                ax.plot(grid, mid, color="C1", label=f"bootstrap median: exponent {a:.3f}")
                ax.fill_between(grid, lo, hi, color="C1", alpha=0.2, label="5–95% bootstrap")
            else:
                ax.plot(grid, law(grid), color="C1", label=f"fit: exponent {law.exponent:.3f}")
            for pr in report.predictions:
                v = getattr(pr, f"{key}_estimate")
                ci = getattr(pr, f"{key}_ci")
                yerr = None if ci is None else [[max(v - ci[0], 0.0)], [max(ci[1] - v, 0.0)]]
                ax.errorbar([pr.budget], [v], yerr=yerr, fmt="D", color="C3", ms=5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_ticks(ax, NullFormatter)
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    if fr is None:
        fig.suptitle(f"no frontier: {report.frontier_reason}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out[1])
    plt.close(fig)
    return out
