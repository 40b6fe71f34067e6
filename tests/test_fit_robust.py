"""Issue 10's last defects: a low run judged by a σ it inflated, `flat` on real 3-size budgets."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isoflop.fit import FitTable, fit_sweep
from isoflop.fit.noise import LOW_BEND
from isoflop.fit.simulate import LAWS, draw_sweep

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _bend(law, c: float, n: float, step: float) -> float:
    """The true profile's second difference over one grid step at N (what the low-run test measures against)."""
    n3 = n * np.exp(np.array([-step, 0.0, step]))
    y = law.loss(n3, c / (6.0 * n3))
    return float(y[0] - 2.0 * y[1] + y[2])


@settings(max_examples=12, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(law=st.sampled_from(LAWS), seed=st.integers(0, 10_000), noise=st.sampled_from([0.003, 0.005, 0.01]),
       budget=st.integers(0, 4), pos=st.sampled_from([-1, 0, 1]))
def test_a_run_ten_sigma_low_at_or_next_to_the_minimum_is_named(law, seed, noise, budget, pos):
    # before: the run inflated the σ it was judged by (its own residual and its neighbours' entered the
    # pooled scale: up to 1.7×), and 10σ read as under 5 standard errors; it went unnamed in 6 of 15 sweeps.
    # The depth is also ≥ 2.5 bends of the profile: shallower dips are indistinguishable from the kinks of
    # real profiles (noise.LOW_BEND, measured on Porian et al.'s sweeps) and are left alone by design.
    t = draw_sweep(law, np.random.default_rng(seed), noise=noise)
    c = np.unique(t.budget)[budget]
    rows = np.flatnonzero(t.budget == c)
    rows = rows[np.argsort(t.params[rows])]
    near = int(np.argmin(np.abs(np.log(t.params[rows] / law.n_opt(c)))))
    j = rows[min(max(near + pos, 1), len(rows) - 2)]
    step = float(np.median(np.diff(np.log(t.params[rows]))))
    depth = max(10.0 * noise, 1.25 * LOW_BEND * _bend(law, c, t.params[j], step))
    y = t.loss.copy()
    y[j] -= depth
    ids = [f"run-{i}" for i in range(len(y))]
    rep = fit_sweep(FitTable(budget=t.budget, params=t.params, tokens=t.tokens, loss=y, run_id=ids),
                    bootstrap=0, parametric=None)
    assert [o.run_id for o in rep.outliers] == [f"run-{j}"], (depth / noise, [o.reason for o in rep.outliers])


def _three_sizes(table: FitTable) -> FitTable:
    """Each budget cut to its lowest run and the two sizes either side: a real 3-size sweep."""
    keep = np.zeros(len(table.loss), dtype=bool)
    for c in np.unique(table.budget):
        rows = np.flatnonzero(table.budget == c)
        rows = rows[np.argsort(table.params[rows])]
        j = int(np.argmin(table.loss[rows]))
        if 0 < j < len(rows) - 1:
            keep[rows[j - 1:j + 2]] = True
    return FitTable(budget=table.budget[keep], params=table.params[keep], tokens=table.tokens[keep],
                    loss=table.loss[keep])


@pytest.mark.skipif(not (DATA / "porian2024_isoflops.csv").exists(), reason="needs ../shared/data")
def test_real_three_size_budgets_are_not_flat_and_equal_losses_are():
    from isoflop.fit import read_csv

    # σ on 3-size grids comes from the L(N, D) residuals, which hold the law's misfit (0.057 here against a
    # seed noise near 0.007): before, 7 of this config's 10 budgets (42 of 297 over all configs) read `flat`
    t = _three_sizes(read_csv(DATA / "porian2024_isoflops.csv", config="rw/base/short/chinchilla/standard/val"))
    rep = fit_sweep(t, bootstrap=0, parametric=None)
    assert rep.noise.source == "parametric" and len(rep.budgets) >= 8
    assert not any("flat" in f.flags for f in rep.budgets), [f.flags for f in rep.budgets]
    y = t.loss.copy()
    c = np.unique(t.budget)[3]
    y[t.budget == c] = 4.0                                  # a logging bug: one value for every size
    rep = fit_sweep(FitTable(budget=t.budget, params=t.params, tokens=t.tokens, loss=y), bootstrap=0,
                    parametric=None)
    flags = {f.budget: f.flags for f in rep.budgets}
    assert flags[c] == ("flat",) and sum("flat" in v for v in flags.values()) == 1


def test_leave_out_sigma_is_the_sweep_sigma_without_the_size():
    from isoflop.fit.noise import leave_out_sigmas, size_groups, sweep_noise

    t = draw_sweep(LAWS[0], np.random.default_rng(2), noise=0.005)
    budgets = []
    for c in np.unique(t.budget):
        m = t.budget == c
        x = np.log(t.params[m])
        o = np.argsort(x)
        idx, ux = size_groups(x[o])
        budgets.append((idx, t.loss[m][o], ux))
    noise = sweep_noise(budgets)
    sig = leave_out_sigmas(budgets, noise)
    idx, y, ux = budgets[2]
    s = int(np.argmin(y))
    keep = idx != s
    without = sweep_noise(budgets[:2] + [(np.unique(idx[keep], return_inverse=True)[1], y[keep], ux[ux != ux[s]])]
                          + budgets[3:])
    assert math.isclose(sig[2][s], without.sigma, rel_tol=1e-12)
    assert all(np.isfinite(v).all() and (v > 0).all() for v in sig)


@pytest.mark.slow
def test_parametric_loss_interval_holds_its_coverage_at_high_noise():
    # before: the 5–95% percentiles of the draws' L_opt, skewed upward by L_opt's curvature in the
    # parameters: 77–79% coverage of the truth at noise 0.03 (the truth fell below the interval); these
    # 30 sweeps: 22/30 before, 28/30 now
    rng = np.random.default_rng([11, 300])
    hits = n = 0
    for i in range(30):
        law = LAWS[i % len(LAWS)]
        p = fit_sweep(draw_sweep(law, rng, noise=0.03), bootstrap=100, seed=i, predict=[1e20]).predictions[0]
        if p.loss_opt_parametric_ci is None:
            continue
        lo, hi = p.loss_opt_parametric_ci
        n += 1
        hits += lo <= float(law.loss_opt(1e20)) <= hi
    assert n >= 27 and 0.82 <= hits / n <= 0.99, (hits, n)
