"""Regressions for the defects a new user found in `fit` (REPORT-fit-tester): each test failed before its fix."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np

from isoflop.fit import FitTable, fit_sweep
from isoflop.fit.report import _parametric_check, _predictions
from isoflop.fit.simulate import LAWS, draw_sweep


def test_two_budgets_give_no_loss_interval_and_say_why():
    # a pure power law through 2 minima extrapolates far too low with a narrow interval (0/20 coverage)
    t = draw_sweep(LAWS[0], np.random.default_rng(3), noise=0.005, budgets=np.array([1e18, 1e19]))
    rep = fit_sweep(t, bootstrap=100, predict=[1e23])
    p = rep.predictions[0]
    assert p.loss_opt_ci is None and p.loss_opt_flag.startswith("too_few_budgets")
    assert p.n_opt_ci is not None                     # N_opt still has its interval
    j = json.loads(json.dumps(rep.to_json()))
    assert j["predictions"][0]["loss_opt_flag"].startswith("too_few_budgets")
    assert j["parametric"] == [] and j["parametric_reason"].startswith("too_few_budgets")
    assert "parametric_check" in j and j["parametric_check"] is None


def test_json_has_the_parametric_keys_without_a_parametric_fit():
    t = draw_sweep(LAWS[0], np.random.default_rng(3), noise=0.005)
    j = fit_sweep(t, bootstrap=0, parametric=None).to_json()
    assert j["parametric"] == [] and "none" in j["parametric_reason"] and j["parametric_check"] is None


def test_an_inf_loss_is_a_diverged_run_not_an_error(tmp_path):
    from isoflop.fit import read_csv

    t = draw_sweep(LAWS[0], np.random.default_rng(4), noise=0.005)
    lines = ["params,tokens,loss,budget"] + [f"{n},{d},{y},{c}" for n, d, y, c in
                                             zip(t.params, t.tokens, t.loss, t.budget)]
    lines[3] = lines[3].rsplit(",", 2)[0] + ",inf," + lines[3].rsplit(",", 1)[1]
    lines[5] = lines[5].rsplit(",", 2)[0] + ",nan," + lines[5].rsplit(",", 1)[1]
    (tmp_path / "div.csv").write_text("\n".join(lines) + "\n")
    rep = fit_sweep(read_csv(tmp_path / "div.csv"), bootstrap=0)
    reasons = sorted(e.reason for e in rep.excluded)
    assert len(reasons) == 2 and all(r.startswith("non-finite loss") for r in reasons)
    assert any("diverged" in r for r in reasons) and rep.frontier is not None


def test_a_parametric_fit_whose_floor_is_above_a_measured_minimum_is_not_used():
    t = draw_sweep(LAWS[0], np.random.default_rng(5), noise=0.005)
    rep = fit_sweep(t, bootstrap=100, predict=[1e21])
    assert rep.parametric_check.used      # the honest fit passes
    sel = [i for i, u in enumerate(rep.used) if u]
    lowest = min(rep.budgets[i].loss_opt for i in sel)
    bad = replace(rep.parametric[0], E=lowest + 0.01)
    chk = _parametric_check(bad, rep.parametric_draws, rep.budgets, sel, rep.bootstrap)
    assert not chk.used and "above the measured L_opt" in chk.reason
    p = _predictions(rep.frontier, rep.samples, [1e21], (bad,), rep.parametric_draws, chk)[0]
    assert p.parametric_used is False and not p.loss_opt_model.startswith("parametric")
    assert p.loss_opt_ci[0] <= p.loss_opt <= p.loss_opt_ci[1]


def test_every_printed_loss_prediction_lies_inside_its_interval():
    for seed in range(3):
        t = draw_sweep(LAWS[seed], np.random.default_rng(seed), noise=0.005)
        rep = fit_sweep(t, bootstrap=60, predict=[1e20, 1e25, 1e28])
        for p in rep.predictions:
            assert p.loss_opt_ci[0] <= p.loss_opt <= p.loss_opt_ci[1]
            if p.loss_opt_parametric_ci is not None:
                lo, hi = p.loss_opt_parametric_ci
                assert lo <= p.loss_opt_parametric <= hi


def _ids(t: FitTable) -> FitTable:
    return FitTable(budget=t.budget, params=t.params, tokens=t.tokens, loss=t.loss,
                    run_id=[f"run-{i}" for i in range(len(t))])


def _named(kind: str, jump: float, sweeps: int = 16) -> tuple[int, int]:
    """(sweeps where the bad run is named, other runs named) over synthetic sweeps at noise 0.005."""
    hits = wrong = 0
    for seed in range(sweeps):
        law = LAWS[seed % len(LAWS)]
        t = _ids(draw_sweep(law, np.random.default_rng(seed), noise=0.005))
        c = np.unique(t.budget)[2]
        rows = np.flatnonzero(t.budget == c)
        if kind == "min":
            j = rows[int(np.argmin(np.abs(np.log(t.params[rows] / law.n_opt(c)))))]
        else:
            j = rows[-1] if seed % 2 else rows[0]
        y = t.loss.copy()
        y[j] += jump
        rep = fit_sweep(FitTable(budget=t.budget, params=t.params, tokens=t.tokens, loss=y, run_id=t.run_id),
                        bootstrap=0, parametric=None)
        names = [o.run_id for o in rep.outliers]
        hits += f"run-{j}" in names
        wrong += sum(n != f"run-{j}" for n in names)
    return hits, wrong


def test_a_run_far_below_its_neighbours_is_named():
    # before: only runs above the chord of their neighbours were tested (0/16 named)
    hits, wrong = _named("min", -0.08)
    assert hits >= 8 and wrong <= 1, (hits, wrong)


def test_a_run_off_at_either_end_of_the_grid_is_named():
    # before: ends were never tested (0/16); a low end run got its neighbour named instead (16/16 wrong)
    for jump in (0.3, -0.3):
        hits, wrong = _named("end", jump)
        assert hits >= 11 and wrong <= 1, (jump, hits, wrong)


def test_clean_sweeps_have_no_outliers():
    assert _named("min", 0.0) == (0, 0)


def test_all_equal_losses_are_flagged_flat_with_the_right_advice():
    from isoflop.fit.isoflop import FLAG_ADVICE

    t = draw_sweep(LAWS[0], np.random.default_rng(6), noise=0.005)
    y = t.loss.copy()
    y[t.budget == np.unique(t.budget)[1]] = 3.95          # a logging bug: every size reads the same
    rep = fit_sweep(FitTable(budget=t.budget, params=t.params, tokens=t.tokens, loss=y), bootstrap=0)
    f = rep.budgets[1]
    assert f.flags == ("flat",) and not rep.used[1]        # before: vertex_out_of_range, "move the grid's centre"
    assert "logged" in FLAG_ADVICE["flat"][1]
    assert all(not b.flags for i, b in enumerate(rep.budgets) if i != 1)


def test_too_few_resamples_give_no_interval():
    from isoflop.fit.bootstrap import interval

    assert interval(np.arange(19.0)) is None and interval(np.arange(20.0)) is not None
    t = draw_sweep(LAWS[0], np.random.default_rng(7), noise=0.005)
    rep = fit_sweep(t, bootstrap=1, predict=[1e20])
    assert rep.frontier.params.exponent_ci is None and rep.predictions[0].n_opt_ci is None


def _csv(path, table):
    lines = ["params,tokens,loss,budget"] + [f"{n},{d},{y},{c}" for n, d, y, c in
                                             zip(table.params, table.tokens, table.loss, table.budget)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_refuses_a_tiny_bootstrap_and_a_window_the_minimizer_ignores(tmp_path):
    from .test_cli_plan import isoflop

    f = _csv(tmp_path / "s.csv", draw_sweep(LAWS[0], np.random.default_rng(8), noise=0.005))
    for args, expect in ((("--bootstrap", "1"), "at least 20"), (("--window", "7"), "--minimizer parabola")):
        p = isoflop("fit", "--csv", str(f), *args, cwd=tmp_path, check=False)
        assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1 and expect in p.stderr, p.stderr
    h = isoflop("fit", "--help", cwd=tmp_path)
    assert "parabolas" not in h.stdout and "Akima" in h.stdout


def test_cli_prints_what_each_flag_means(tmp_path):
    from .test_cli_plan import isoflop

    t = draw_sweep(LAWS[0], np.random.default_rng(6), noise=0.005)
    y = t.loss.copy()
    y[t.budget == np.unique(t.budget)[1]] = 3.95
    f = _csv(tmp_path / "flat.csv", FitTable(budget=t.budget, params=t.params, tokens=t.tokens, loss=y))
    out = isoflop("fit", "--csv", str(f), "--bootstrap", "0", "--method", "none", cwd=tmp_path).stdout
    assert "flat: every size has the same loss" in " ".join(out.split())


def test_three_sizes_per_budget_give_a_frontier_and_a_noise_estimate():
    # before: every well-centred budget was vertex_near_edge (100/100), σ "too few sizes", no frontier
    t = draw_sweep(LAWS[0], np.random.default_rng(9), noise=0.005, sizes=3, span=np.log(2.0), offset=0.05)
    rep = fit_sweep(t, bootstrap=100, predict=[1e20])
    assert sum(rep.used) >= 4 and rep.frontier is not None
    assert rep.noise.source == "parametric" and 0.002 < rep.noise.sigma < 0.02
    assert rep.predictions[0].n_opt_ci is not None


def test_messages_name_the_cli_option():
    t = draw_sweep(LAWS[0], np.random.default_rng(10), noise=0.005, span=np.log(8.0))
    t = t.subset(t.params > 1.3 * LAWS[0].n_opt(t.budget))     # every grid right of its optimum
    rep = fit_sweep(t, bootstrap=0)
    assert rep.frontier is None and "--keep-flagged" in rep.frontier_reason
    assert "keep_flagged=True" not in rep.frontier_reason


def test_backtest_reports_loss_coverage_and_its_model():
    t = draw_sweep(LAWS[0], np.random.default_rng(11), noise=0.005)
    j = fit_sweep(t, bootstrap=100, holdout_top=2).to_json()
    for h in j["backtest"]["held_out"]:
        assert h["loss_opt_model"] and "loss_opt_flag" in h and h["loss_opt_in_ci"] in (True, False)
    # 3 training budgets: the loss law; with 4 held out of 5 there is too little to fit
    assert j["backtest"]["held_out"][0]["loss_opt_model"].startswith("L_opt = E + k")


def test_a_marginal_check_says_the_model_may_flip():
    from isoflop.fit.report import ParametricCheck

    assert ParametricCheck(False, 27.8, 7, 2.3e-4, "").marginal and ParametricCheck(True, 9.6, 6, 0.14, "").marginal
    assert not ParametricCheck(True, 2.0, 6, 0.9, "").marginal and not ParametricCheck(False, 99, 6, 1e-9, "").marginal
    t = draw_sweep(LAWS[0], np.random.default_rng(5), noise=0.005)
    j = fit_sweep(t, bootstrap=60, predict=[1e21]).to_json()
    assert j["parametric_check"]["marginal"] in (True, False)
