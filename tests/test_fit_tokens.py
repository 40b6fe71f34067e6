"""D_opt under the sweep's FLOP convention: each budget's own (N, D) pairs, not C/(6·N_opt).

Sweeps under `exact` or `6ND+attention` give a run D = C / flops_per_token(N) with
flops_per_token > 6N (attention, output layer), most of all for small models. Here the
overhead is modelled as D = C / (6N + k·N^(1/3)).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from isoflop.fit import FitTable, fit_budget, fit_sweep
from isoflop.fit.isoflop import tokens_relation

E, A, B = 1.69, 406.4, 410.7
ALPHA, BETA = 0.34, 0.28
#: overhead k·N^(1/3): equal to 6N at N = 1e7, 14% of it at N = 2e8
K = 6.0 * 1e7 ** (2 / 3)
BUDGETS = np.logspace(16, 19, 7)


def optimum(c):
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    return g * (c / 6) ** (BETA / (ALPHA + BETA))


def tokens_6nd(c, n):
    return c / (6.0 * n)


def tokens_overhead(c, n):
    return c / (6.0 * n + K * n ** (1 / 3))


def sweep(tokens=tokens_6nd, budgets=BUDGETS, sizes=9, span=1.2, rel_noise=0.0, seed=0, seeds=1, flops=False):
    """Rows of a sweep whose runs train D = tokens(C, N) tokens (loss from the true D)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n = optimum(c) * np.exp(np.linspace(-span, span, sizes))
        d = tokens(c, n)
        sigma = rel_noise * (A / optimum(c) ** ALPHA + B / (c / (6 * optimum(c))) ** BETA)
        for s in range(seeds):
            loss = E + A / n ** ALPHA + B / d ** BETA + rng.normal(0, sigma, n.shape) if sigma else \
                E + A / n ** ALPHA + B / d ** BETA
            for i, (ni, di, li) in enumerate(zip(n, d, loss)):
                row = dict(budget=c, params=ni, tokens=di, loss=li, run_id=f"{c:.0e}-{i}-{s}")
                if flops:
                    row["flops"] = c
                rows.append(row)
    return rows


# ------------------------------------------------------------------------- 6ND: unchanged
@pytest.mark.parametrize("kw", [dict(window=5), dict(window=None), dict(minimizer="akima")])
def test_6nd_d_opt_is_c_over_6n_opt(kw):
    report = fit_sweep(FitTable.from_rows(sweep(rel_noise=1e-3, seeds=2)), bootstrap=100, predict=(1e20, 1e21),
                       holdout_top=2, **kw)
    assert report.frontier is not None and all(report.used)
    for f in report.budgets:
        assert f.tokens_relation[1] == pytest.approx(-1.0, abs=1e-12)
        assert f.d_opt == pytest.approx(f.budget / (6.0 * f.n_opt), rel=1e-12)
    fr = report.frontier
    assert fr.tokens.exponent == pytest.approx(1.0 - fr.params.exponent, abs=1e-12)
    assert fr.tokens.coefficient == pytest.approx(1.0 / (6.0 * fr.params.coefficient), rel=1e-10)
    s = report.samples
    assert np.allclose(s.slope_d[s.ok], 1.0 - s.slope_n[s.ok], rtol=0, atol=1e-10)
    assert fr.tokens.exponent_ci == pytest.approx((1.0 - fr.params.exponent_ci[1], 1.0 - fr.params.exponent_ci[0]))
    for p in report.predictions:
        assert p.d_opt == pytest.approx(p.budget / (6.0 * p.n_opt), rel=1e-10)
        n_samples = np.exp(s.slope_n[s.ok] * np.log(p.budget) + s.icpt_n[s.ok])
        assert p.d_opt_ci == pytest.approx(tuple(np.percentile(p.budget / (6 * n_samples), [5, 95])), rel=1e-10)
    for pt in report.backtest.points:
        assert pt.predicted.d_opt == pytest.approx(pt.budget / (6.0 * pt.predicted.n_opt), rel=1e-10)
        assert pt.d_opt_error == pytest.approx(pt.measured.n_opt / pt.predicted.n_opt - 1.0, rel=1e-9, abs=1e-12)


def test_fit_budget_without_tokens_assumes_6nd():
    c = 1e18
    n = optimum(c) * np.exp(np.linspace(-1, 1, 7))
    loss = E + A / n ** ALPHA + B / tokens_6nd(c, n) ** BETA
    bare = fit_budget(n, loss, c)
    assert bare.tokens_relation == (pytest.approx(np.log(c / 6)), -1.0)
    assert bare.d_opt == pytest.approx(c / (6 * bare.n_opt), rel=1e-14)
    with_tokens = fit_budget(n, loss, c, tokens=tokens_6nd(c, n))
    assert with_tokens.n_opt == bare.n_opt
    assert with_tokens.d_opt == pytest.approx(bare.d_opt, rel=1e-12)


def test_runs_off_their_budget_are_scaled_to_it():
    # published points snapped within ±10%: D = flops/(6N) of each run, D_opt still C/(6·N_opt)
    rows = sweep(rel_noise=1e-3)
    rng = np.random.default_rng(1)
    for r in rows:
        f = r["budget"] * float(np.exp(rng.uniform(-0.08, 0.08)))
        r.update(flops=f, tokens=f / (6.0 * r["params"]))
    report = fit_sweep(FitTable.from_rows(rows), bootstrap=0)
    for f in report.budgets:
        assert f.d_opt == pytest.approx(f.budget / (6.0 * f.n_opt), rel=1e-12)


def test_tokens_relation_least_squares():
    n = np.array([1e6, 2e6, 4e6, 8e6, 8e6])
    d = 3e12 / (6 * n + K * n ** (1 / 3))
    u, v = tokens_relation(n, d, 3e12)
    v_ref, u_ref = np.polyfit(np.log(n), np.log(d), 1)
    assert (u, v) == (pytest.approx(u_ref, rel=1e-12), pytest.approx(v_ref, rel=1e-12))
    assert tokens_relation(n[:1], d[:1], 3e12) == (pytest.approx(np.log(d[0] * n[0])), -1.0)


# ------------------------------------------------------------------------- a real overhead
def test_overhead_d_opt_follows_the_budgets_own_tokens():
    rows = sweep(tokens_overhead, rel_noise=1e-3, seeds=2)
    report = fit_sweep(FitTable.from_rows(rows), bootstrap=0)
    assert report.frontier is not None and all(report.used)
    for f, (c, n, _) in zip(report.budgets, report.points):
        d = tokens_overhead(c, n)
        v, u = np.polyfit(np.log(n), np.log(d), 1)   # the budget's own relation, all its runs
        assert f.d_opt == pytest.approx(np.exp(u + v * np.log(f.n_opt)), rel=1e-9)
        # close to the tokens a run of N_opt really gets (the relation is nearly linear in ln N) ...
        assert abs(np.log(f.d_opt / tokens_overhead(c, f.n_opt))) < 0.04
    # ... and far from C/(6·N_opt) where the overhead is large (the smallest budget: ~2x)
    small = report.budgets[0]
    assert small.budget / (6.0 * small.n_opt) / small.d_opt > 1.5
    fr = report.frontier
    b_true = np.polyfit(np.log([f.budget for f in report.budgets]),
                        np.log([tokens_overhead(f.budget, f.n_opt) for f in report.budgets]), 1)[0]
    assert fr.tokens.exponent == pytest.approx(b_true, abs=0.01)
    assert fr.tokens.exponent - (1.0 - fr.params.exponent) > 0.03   # b is no longer 1 − a


def test_overhead_predictions_use_the_tokens_frontier():
    rows = sweep(tokens_overhead, rel_noise=2e-3, seeds=2)
    report = fit_sweep(FitTable.from_rows(rows), bootstrap=200, predict=(1e20,), holdout_top=2)
    fr = report.frontier
    (p,) = report.predictions
    assert p.d_opt == pytest.approx(float(fr.tokens(1e20)), rel=1e-12)
    assert p.d_opt != pytest.approx(1e20 / (6.0 * p.n_opt), rel=1e-3)
    assert p.d_opt_ci[0] < p.d_opt < p.d_opt_ci[1]
    s = report.samples
    ld = s.slope_d[s.ok] * np.log(1e20) + s.icpt_d[s.ok]
    assert p.d_opt_ci == pytest.approx(tuple(np.percentile(np.exp(ld), [5, 95])))
    bt = report.backtest
    for pt in bt.points:
        assert pt.predicted.d_opt == pytest.approx(float(bt.frontier.tokens(pt.budget)), rel=1e-12)
        assert pt.d_opt_error == pytest.approx(pt.predicted.d_opt / pt.measured.d_opt - 1.0)
    j = report.to_json()
    json.dumps(j, allow_nan=False)
    for jb, f in zip(j["budgets"], report.budgets):
        assert jb["d_opt"] == pytest.approx(f.d_opt)
        assert jb["tokens_relation"]["slope"] == pytest.approx(f.tokens_relation[1])
        assert jb["d_opt_ci"][0] <= jb["d_opt_ci"][1]
    assert j["predictions"][0]["d_opt"] == pytest.approx(p.d_opt)
    assert j["backtest"]["held_out"][0]["d_opt_predicted"] == pytest.approx(bt.points[0].predicted.d_opt)


@pytest.mark.parametrize("tokens", [tokens_6nd, tokens_overhead], ids=["6nd", "overhead"])
def test_bootstrap_interval_of_b_contains_the_estimate(tokens):
    rows = sweep(tokens, rel_noise=3e-3, seeds=2, seed=4)
    report = fit_sweep(FitTable.from_rows(rows), bootstrap=300, seed=1)
    law = report.frontier.tokens
    assert law.exponent_ci is not None
    lo, hi = law.exponent_ci
    assert lo < law.exponent < hi
    assert lo < law.exponent_median < hi
    assert law.coefficient_ci[0] < law.coefficient < law.coefficient_ci[1]
    if tokens is tokens_overhead:
        s = report.samples
        assert np.median(s.slope_d[s.ok] - (1.0 - s.slope_n[s.ok])) > 0.03


def test_store_flops_column_near_budget_changes_nothing():
    # the store's runs carry flops (under the sweep's convention) within rounding of the budget
    plain = fit_sweep(FitTable.from_rows(sweep(tokens_overhead, rel_noise=1e-3)), bootstrap=0)
    with_flops = fit_sweep(FitTable.from_rows(sweep(tokens_overhead, rel_noise=1e-3, flops=True)), bootstrap=0)
    for a, b in zip(plain.budgets, with_flops.budgets):
        assert a.d_opt == pytest.approx(b.d_opt, rel=1e-12)


# ------------------------------------------------------------------------- rendering
def test_render_and_plot_show_tokens_law(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter
    from rich.console import Console

    from isoflop.fit.plots import save_plots
    from isoflop.fit.render import render_report

    # budgets within one decade: the case where matplotlib labels every minor tick
    rows = sweep(tokens_overhead, budgets=[3e17, 1e18, 3e18], rel_noise=1e-3, seeds=2)
    report = fit_sweep(FitTable.from_rows(rows), bootstrap=50, predict=(5e18,), holdout_top=1)
    console = Console(record=True, width=200)
    render_report(report, console)
    text = console.export_text()
    assert "D_opt 5–95%" in text and "D_opt measured" in text

    saved: list[Figure] = []
    orig = Figure.savefig

    def record(self, *a, **k):
        saved.append(self)
        return orig(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", record)
    save_plots(report, tmp_path / "fit.png")
    frontier_fig = saved[-1]
    assert len(frontier_fig.axes) == 2
    for ax in frontier_fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            assert isinstance(axis.get_minor_formatter(), NullFormatter)
            labels = [t.get_text() for t in axis.get_majorticklabels() if t.get_text()]
            lo, hi = sorted(axis.get_view_interval())
            assert any(lo <= t <= hi for t in axis.get_majorticklocs()), "a log axis with no labelled tick"
            assert labels
    # the tokens panel's band is the tokens law's, centred on its line
    d_ax = frontier_fig.axes[1]
    band = d_ax.collections[-1].get_paths()[0].vertices
    assert band[:, 1].min() > 0
