"""Speed of `fit_sweep` with bootstrap on a 10,000-run sweep.

Sweep: 20 budgets (1e17 … 1e21, log-spaced) × 500 runs each (20 model sizes
log-spaced over ±1.5 e-folds around the true optimum × 25 seeds), losses from
L = E + A/N^α + B/D^β with Gaussian noise (σ = 0.01). Fit: the defaults —
noise model and outlier search, Akima minima, 1000 seed-noise bootstrap
resamples (minima, frontier and loss law refitted in each), the parametric
fit L(N, D) (lse on the 400 size means, 3 starts) with its linearised draws,
3 predictions. The default minimiser and the parabola are both timed.

Reference in the same run: the naive way — per resample, per budget,
numpy.polyfit on the resampled window — timed on 20 resamples and
extrapolated to 1000.

    .venv/bin/python benchmarks/fit_speed.py
"""
from __future__ import annotations

import time

import numpy as np

from isoflop.fit import FitTable, fit_sweep

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28


def make_sweep(n_budgets: int = 20, sizes: int = 20, seeds: int = 25, noise: float = 0.01, rng_seed: int = 0) -> FitTable:
    rng = np.random.default_rng(rng_seed)
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    rows_b, rows_n, rows_d, rows_l = [], [], [], []
    for c in np.logspace(17, 21, n_budgets):
        n_star = g * (c / 6) ** (BETA / (ALPHA + BETA))
        n = np.repeat(n_star * np.exp(np.linspace(-1.5, 1.5, sizes)), seeds)
        d = c / (6 * n)
        loss = E + A / n ** ALPHA + B / d ** BETA + rng.normal(0, noise, n.shape)
        rows_b.append(np.full(n.shape, c)); rows_n.append(n); rows_d.append(d); rows_l.append(loss)
    return FitTable(budget=np.concatenate(rows_b), params=np.concatenate(rows_n), tokens=np.concatenate(rows_d),
                    loss=np.concatenate(rows_l))


def naive_bootstrap(table: FitTable, resamples: int, window: int = 5, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    budgets = np.unique(table.budget)
    groups = [(c, np.log(table.params[table.budget == c]), table.loss[table.budget == c]) for c in budgets]
    t0 = time.perf_counter()
    for _ in range(resamples):
        xs, ys = [], []
        for c, x, y in groups:
            i = rng.integers(0, len(x), len(x))
            xr, yr = x[i], y[i]
            ux = np.unique(xr)
            s = np.searchsorted(ux, xr[np.argmin(yr)])
            lo = min(max(s - 2, 0), max(len(ux) - window, 0))
            keep = (xr >= ux[lo]) & (xr <= ux[min(lo + window, len(ux)) - 1])
            a, b, _ = np.polyfit(xr[keep], yr[keep], 2)
            xs.append(np.log(c)); ys.append(-b / (2 * a))
        np.polyfit(xs, ys, 1)
    return time.perf_counter() - t0


def main() -> None:
    table = make_sweep()
    print(f"sweep: {len(np.unique(table.budget))} budgets x {len(table) // len(np.unique(table.budget))} runs = {len(table)} runs")
    fit_sweep(table, bootstrap=10)  # warm-up (imports)
    for minimizer in ("akima", "parabola"):
        times = []
        for rep in range(3):
            t0 = time.perf_counter()
            report = fit_sweep(table, bootstrap=1000, seed=rep, predict=(1e22, 1e23, 1e24), minimizer=minimizer)
            times.append(time.perf_counter() - t0)
        fr = report.frontier
        print(f"fit_sweep(bootstrap=1000, minimizer={minimizer}): best {min(times):.3f} s, "
              f"median {sorted(times)[1]:.3f} s of 3 (goal < 3 s)")
        print(f"  exponent a = {fr.params.exponent_median:.4f}  5-95%: {fr.params.exponent_ci[0]:.4f}-"
              f"{fr.params.exponent_ci[1]:.4f}  (truth {BETA / (ALPHA + BETA):.4f}); parametric fit: "
              f"{report.parametric[0].method if report.parametric else 'none'}")
    t_naive = naive_bootstrap(table, 20)
    print(f"naive per-resample polyfit loop: {t_naive:.3f} s for 20 resamples -> {t_naive * 50:.1f} s for 1000 (extrapolated)")
    print(f"speed-up: {t_naive * 50 / min(times):.0f}x")


if __name__ == "__main__":
    main()
