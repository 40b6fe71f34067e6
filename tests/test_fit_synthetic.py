"""The analyzer on generated sweeps from a known L(N, D) = E + A/N^α + B/D^β."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isoflop.fit import FitTable, fit_budget, fit_envelope, fit_parametric, fit_sweep, read_csv

E, A, B = 1.69, 406.4, 410.7


def optimum(c, alpha, beta):
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    return g * (c / 6) ** (beta / (alpha + beta))


def sweep(alpha=0.34, beta=0.28, budgets=np.logspace(18, 21, 7), sizes=9, span=1.2, offset=0.0, noise=0.003,
          seed=0, seeds=1, rel_noise=None):
    """Rows of a sweep; noise σ absolute, or rel_noise × reducible loss at the optimum."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n_star = optimum(c, alpha, beta)
        n = n_star * np.exp(offset + np.linspace(-span, span, sizes))
        if rel_noise is not None:
            noise = rel_noise * (A / n_star ** alpha + B / (c / (6 * n_star)) ** beta)
        for s in range(seeds):
            d = c / (6 * n)
            loss = E + A / n ** alpha + B / d ** beta + rng.normal(0, noise, n.shape)
            rows += [dict(budget=c, params=ni, tokens=di, loss=li, run_id=f"{c:.0e}-{i}-{s}", state="completed")
                     for i, (ni, di, li) in enumerate(zip(n, d, loss))]
    return rows


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alpha=st.floats(0.25, 0.6), beta=st.floats(0.25, 0.6), sizes=st.integers(7, 13), seed=st.integers(0, 10_000))
def test_approach2_recovers_exponent(alpha, beta, sizes, seed):
    rows = sweep(alpha, beta, sizes=sizes, seed=seed, rel_noise=2e-3)
    # the parabola on a 5-size window: the smoothest estimator on profiles drawn from this law
    report = fit_sweep(FitTable.from_rows(rows), minimizer="parabola", bootstrap=0, parametric=None)
    assert report.frontier is not None
    assert report.frontier.params.exponent == pytest.approx(beta / (alpha + beta), abs=0.03)


@settings(max_examples=25, deadline=None)
@given(alpha=st.floats(0.25, 0.6), beta=st.floats(0.25, 0.6), side=st.sampled_from([-1, 1]),
       extra=st.floats(0.05, 2.0), sizes=st.integers(4, 12), window=st.sampled_from([None, 3, 5, 7]),
       seed=st.integers(0, 1000))
def test_offcentre_grid_always_flagged(alpha, beta, side, extra, sizes, window, seed):
    c = 1e20
    n_star = optimum(c, alpha, beta)
    # the whole grid lies on one side of the true optimum, at least `extra` e-folds away
    u = np.linspace(0, 1.5, sizes) + extra
    n = n_star * np.exp(side * u)
    d = c / (6 * n)
    # small noise (relative to the reducible loss): the profile stays monotone over the grid
    reducible = A / n_star ** alpha + B / (c / (6 * n_star)) ** beta
    loss = E + A / n ** alpha + B / d ** beta + np.random.default_rng(seed).normal(0, 1e-5 * reducible, n.shape)
    f = fit_budget(n, loss, c, window=window)
    assert "vertex_out_of_range" in f.flags and not f.in_range, f
    assert not fit_sweep(FitTable(budget=np.full(n.shape, c), params=n, tokens=d, loss=loss), bootstrap=0,
                         parametric=None).used[0]


def test_offcentre_noise_free_is_out_of_range():
    c = 1e20
    n = optimum(c, 0.34, 0.28) * np.exp(np.linspace(0.3, 2.0, 8))
    d = c / (6 * n)
    f = fit_budget(n, E + A / n ** 0.34 + B / d ** 0.28, c)
    assert "vertex_out_of_range" in f.flags and not f.in_range


@settings(max_examples=4, deadline=None)
@given(alpha=st.floats(0.28, 0.5), beta=st.floats(0.28, 0.5), seed=st.integers(0, 1000))
def test_parametric_recovers_exponents(alpha, beta, seed):
    rows = sweep(alpha, beta, sizes=9, seed=seed, noise=0.002, budgets=np.logspace(17, 21, 9), span=1.5)
    t = FitTable.from_rows(rows)
    lse, vp = fit_parametric(t.params, t.tokens, t.loss, method="all", n_starts=5)
    for fit in (lse, vp):
        assert fit.alpha == pytest.approx(alpha, abs=0.08)
        assert fit.beta == pytest.approx(beta, abs=0.08)
        assert fit.a == pytest.approx(beta / (alpha + beta), abs=0.03)


def test_bootstrap_interval_contains_truth_in_most_seeds():
    truth = 0.28 / (0.34 + 0.28)
    hits = 0
    n = 12
    for seed in range(n):
        rows = sweep(seed=seed, noise=0.01, seeds=4, sizes=9)
        fr = fit_sweep(FitTable.from_rows(rows), bootstrap=300, seed=seed, parametric=None).frontier
        lo, hi = fr.params.exponent_ci
        hits += lo <= truth <= hi
    assert hits >= 0.7 * n  # nominal 90%


def test_failed_diverged_nan_runs_never_enter_the_fit():
    rows = sweep(seed=1)
    clean = fit_sweep(FitTable.from_rows(rows), bootstrap=50, seed=3)
    bad = list(rows)
    c = rows[0]["budget"]
    n0 = rows[4]["params"]
    bad += [
        dict(budget=c, params=n0 * 1.1, tokens=c / (6 * n0 * 1.1), loss=0.1, run_id="fail", state="failed",
             reason="OOM"),
        dict(budget=c, params=n0 * 0.9, tokens=c / (6 * n0 * 0.9), loss=50.0, run_id="div", state="diverged"),
        dict(budget=c, params=n0 * 1.05, tokens=c / (6 * n0 * 1.05), loss=float("nan"), run_id="nan"),
        dict(budget=c, params=n0 * 0.95, tokens=c / (6 * n0 * 0.95), loss=float("inf"), run_id="inf"),
        dict(budget=c, params=n0, tokens=c / (6 * n0), loss=None, run_id="lost", state="lost"),
    ]
    report = fit_sweep(FitTable.from_rows(bad), bootstrap=50, seed=3)
    assert report.budgets[0].points == clean.budgets[0].points
    assert report.frontier.params.exponent == clean.frontier.params.exponent
    assert report.frontier.params.exponent_ci == clean.frontier.params.exponent_ci
    reasons = {e.run_id: e.reason for e in report.excluded}
    assert reasons == {"fail": "failed: OOM", "div": "diverged", "nan": "non-finite loss",
                       "inf": "non-finite loss (inf: diverged)", "lost": "lost"}
    assert all(e.budget == c for e in report.excluded)


def test_to_json_shape_and_no_nan():
    rows = sweep(seed=2)
    # one budget with too few sizes, one off-centre
    rows += [dict(budget=3e21, params=1e9 * k, tokens=3e21 / 6e9 / k, loss=2.0) for k in (1, 2)]
    report = fit_sweep(FitTable.from_rows(rows), minimizer="parabola", bootstrap=100, predict=(1e22, 1e23),
                       holdout_top=2, parametric="lse")
    j = report.to_json()
    text = json.dumps(j, allow_nan=False)
    assert json.loads(text) == j
    assert set(j) >= {"budgets", "frontier", "frontier_reason", "excluded", "predictions", "parametric", "backtest"}
    b = j["budgets"][-1]
    assert b["flags"] == ["too_few_points"] and b["n_opt"] is None and b["used"] is False
    for key in ("budget", "n_opt", "d_opt", "loss_opt", "points", "in_range", "flags"):
        assert key in j["budgets"][0]
    fr = j["frontier"]["params"]
    assert set(fr) >= {"exponent", "exponent_ci", "coefficient", "coefficient_ci"}
    assert len(fr["exponent_ci"]) == 2
    p = j["predictions"][0]
    assert set(p) >= {"budget", "n_opt", "n_opt_ci", "d_opt", "d_opt_ci", "loss_opt", "loss_opt_ci"}
    assert p["n_opt_ci"][0] < p["n_opt"] * 1.5 and p["n_opt_ci"][1] > p["n_opt"] / 1.5
    assert j["parametric"][0]["method"] == "lse"
    assert len(j["backtest"]["held_out"]) == 2
    for h in j["backtest"]["held_out"]:
        assert abs(h["n_opt_error"]) < 0.2


def test_frontier_unavailable_is_reported_not_raised():
    rows = sweep(budgets=[1e19], seed=0)
    report = fit_sweep(FitTable.from_rows(rows), predict=(1e22,))
    assert report.frontier is None and "at least 2" in report.frontier_reason
    j = report.to_json()
    assert j["frontier"] is None and j["predictions"] == []
    json.dumps(j, allow_nan=False)
    empty = fit_sweep(FitTable.from_rows([]))
    assert empty.frontier is None and empty.budgets == ()


def test_edge_bootstrap_resamples_are_counted_and_kept():
    # 4 sizes per budget and much noise: many resamples have their lowest loss at an end of the sizes
    rows = sweep(sizes=4, span=0.9, seed=0, noise=0.03)
    for minimizer in ("akima", "parabola"):
        report = fit_sweep(FitTable.from_rows(rows), bootstrap=200, minimizer=minimizer, keep_flagged=True)
        j = report.to_json()
        deg = [b["bootstrap_degenerate"]["vertex_out_of_range"] for b in j["budgets"] if b["used"]]
        assert deg and any(d > 0 for d in deg)
        assert j["bootstrap"]["dropped"] == 0          # counted, never dropped (finding 7)
        for b in j["budgets"]:
            if b["used"]:
                lo, hi = b["n_opt_ci"]
                assert b["n_min"] * (1 - 1e-9) <= lo <= hi <= b["n_max"] * (1 + 1e-9)


def test_keep_flagged_and_near_edge_default():
    rows = sweep(seed=0, sizes=9)
    c = 5e21
    n = optimum(c, 0.34, 0.28) * np.exp(np.linspace(-0.1 - 8 * 0.3, -0.1, 9))  # optimum just past the top edge
    rows += [dict(budget=c, params=ni, tokens=c / (6 * ni), loss=E + A / ni ** 0.34 + B / (c / (6 * ni)) ** 0.28)
             for ni in n]
    t = FitTable.from_rows(rows)
    default = fit_sweep(t, bootstrap=0)
    flagged = [f for f in default.budgets if f.flags]
    assert len(flagged) == 1 and not default.used[-1]
    kept = fit_sweep(t, bootstrap=0, keep_flagged=True)
    assert kept.used[-1] and len(kept.frontier.budgets) == len(default.frontier.budgets) + 1


def test_snapping_without_budget_column(tmp_path):
    rows = sweep(seed=0, budgets=[1e19, 1e20, 1e21])
    p = tmp_path / "runs.csv"
    with p.open("w") as fh:
        fh.write("params,tokens,loss\n")
        for r in rows:
            jitter = 1.05 if r["run_id"].endswith("-1-0") else 1.0  # a run 5% off its budget still snaps
            fh.write(f"{r['params']},{r['tokens'] * jitter},{r['loss']}\n")
        fh.write("1e9,1e9,3.0\n")  # 6e18 FLOPs: alone, cannot be snapped
    t = read_csv(p)
    assert np.isnan(t.budget).all()
    report = fit_sweep(t, bootstrap=0)
    assert [f.budget for f in report.budgets] == [1e19, 1e20, 1e21]
    assert [f.points for f in report.budgets] == [9, 9, 9]
    assert len(report.excluded) == 1 and "6e+18" in report.excluded[0].reason


@pytest.mark.parametrize("content,match", [
    ("params,loss\n1,2\n", "tokens"),
    ("tokens,loss\n1,2\n", "params"),
    ("params,tokens,loss\n1e6,abc,3\n", "non-numeric"),
    ("params,tokens,loss\n-1e6,1e9,3\n", "positive"),
    ("params,tokens,loss\n1e6,1e9,-3\n", "positive"),
])
def test_read_csv_errors(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(ValueError, match=match) as exc:
        read_csv(p)
    assert "\n" not in str(exc.value)


def test_akima_and_window_variants_agree_on_clean_data():
    t = FitTable.from_rows(sweep(seed=0, noise=0.0005, sizes=11))
    truth = 0.28 / 0.62
    for kw in (dict(window=5), dict(window=None), dict(minimizer="akima"), dict(window="all")):
        r = fit_sweep(t, bootstrap=20, **kw)
        assert r.frontier.params.exponent == pytest.approx(truth, abs=0.03), kw


def test_envelope_recovers_exponent():
    alpha, beta = 0.34, 0.28
    curves = []
    for n in np.logspace(7, 10, 25):
        d = np.logspace(8, 12.5, 120)
        curves.append(dict(run_id=f"n{n:.2e}", params=n, flops=6 * n * d, loss=E + A / n ** alpha + B / d ** beta))
    env = fit_envelope(curves)
    assert env.params_law is not None
    assert env.params_law.exponent == pytest.approx(beta / (alpha + beta), abs=0.04)
    report = fit_sweep(FitTable.from_rows(sweep(seed=0)), bootstrap=0, curves=curves)
    assert report.to_json()["envelope"]["params"]["exponent"] == pytest.approx(env.params_law.exponent)


def test_import_does_not_load_matplotlib_or_scipy():
    code = ("import sys, isoflop.fit, isoflop.fit.render; "
            "print('matplotlib' in sys.modules, 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_render_and_plots(tmp_path):
    from rich.console import Console

    from isoflop.fit.plots import save_plots
    from isoflop.fit.render import render_report

    rows = sweep(seed=0)
    rows.append(dict(budget=1e19, params=1e8, tokens=1e10, loss=None, run_id="x", state="failed", reason="NCCL"))
    report = fit_sweep(FitTable.from_rows(rows), bootstrap=50, predict=(1e22,), holdout_top=1, parametric="varpro")
    console = Console(record=True, width=160)
    render_report(report, console)
    text = console.export_text()
    assert "Frontier" in text and "NCCL" in text and "Backtest" in text and "varpro" in text
    for ext in (".png", ".svg"):
        paths = save_plots(report, tmp_path / f"fit{ext}")
        assert len(paths) == 2 and all(p.exists() and p.stat().st_size > 0 for p in paths)
    nofront = fit_sweep(FitTable.from_rows(sweep(budgets=[1e19])), bootstrap=0)
    render_report(nofront, console)
    assert all(p.exists() for p in save_plots(nofront, tmp_path / "none.pdf"))
