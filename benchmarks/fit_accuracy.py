"""Our fits vs published values on the shared public data sets (a table).

    .venv/bin/python benchmarks/fit_accuracy.py

Data: /work/shared/data (see its README): Epoch AI's 240 digitised Chinchilla
points, Porian et al.'s headline IsoFLOP configuration.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from isoflop.fit import fit_parametric, fit_sweep, read_csv

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HEADLINE = "rw/tuned/short/const/standard/val"
HOFFMANN = [6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21]


def main() -> None:
    rows: list[tuple[str, str, str]] = []
    t0 = time.perf_counter()
    epoch = read_csv(DATA / "epoch_chinchilla_svg.csv")
    epoch = epoch.subset(np.sort(np.argsort(epoch.loss, kind="stable")[:-5]))
    lse, vp = fit_parametric(epoch.params, epoch.tokens, epoch.loss, method="all")
    ref = dict(E=1.8172, A=477.8, B=2143, alpha=0.3473, beta=0.3672, a=0.514)
    for k, v in ref.items():
        rows.append((f"Epoch 240 pts, approach 3 LSE+Huber: {k}", f"{getattr(lse, k):.4g}", f"{v:.4g}"))
    rows.append(("Epoch approach 3 LSE objective", f"{lse.objective:.6g}", "1.01827e-3"))
    for k in ("E", "A", "B", "alpha", "beta", "a"):
        rows.append((f"Epoch approach 3 varpro (NNLS): {k}", f"{getattr(vp, k):.4g}", "(no published value)"))
    rep = fit_sweep(epoch, budgets=HOFFMANN, window=None, bootstrap=1000)
    f20 = [f for f in rep.budgets if f.budget == 1e20][0]
    rows.append(("Epoch snapped to Hoffmann's 9 budgets: points", str(sum(f.points for f in rep.budgets)), "124"))
    rows.append(("Epoch 1e20 budget flags", ",".join(f20.flags), "vertex_out_of_range"))
    fr = rep.frontier.params
    rows.append((f"Epoch approach 2 (all points, {len(rep.frontier.budgets)} budgets used): a", f"{fr.exponent:.3f} ({fr.exponent_ci[0]:.3f}-{fr.exponent_ci[1]:.3f})",
                 "0.49 (Hoffmann)"))
    porian = read_csv(DATA / "porian2024_isoflops.csv", config=HEADLINE)
    with (DATA / "porian2024_published_fits.csv").open() as fh:
        pub = next(r for r in csv.DictReader(fh) if r["config"] == HEADLINE)
    pub_ci = f"{float(pub['a_paper']):.3f} ({float(pub['a_ci95_lo']):.3f}-{float(pub['a_ci95_hi']):.3f}, 95%)"
    for label, kw, published in (("all-points parabola", dict(window=None), "0.514 (README)"),
                                 ("5-size window parabola (default)", dict(window=5), "0.501 (README)"),
                                 ("Akima minimum", dict(minimizer="akima"), pub_ci)):
        r = fit_sweep(porian, bootstrap=1000, **kw)
        p = r.frontier.params
        rows.append((f"Porian {HEADLINE} {label}: a", f"{p.exponent:.3f} ({p.exponent_ci[0]:.3f}-{p.exponent_ci[1]:.3f}, 5-95%)",
                     published))
    elapsed = time.perf_counter() - t0
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'quantity':<{w0}}  {'ours':<{w1}}  published")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
    print(f"(total {elapsed:.1f} s; our intervals: bootstrap of runs within budgets, 1000 resamples, seed 0)")


if __name__ == "__main__":
    main()
