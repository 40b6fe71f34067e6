"""`isoflop design`: simulated precision of a planned sweep, checked against real fits of simulated sweeps."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from isoflop.design import DesignError, design, parse_law, variants
from isoflop.fit import FitTable, fit_sweep
from isoflop.plan.grid import plan
from isoflop.spec import parse_spec
from isoflop.train.simulate_run import simulate

from .conftest import run_isoflop

LAW = "E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28"
LAW_D = parse_law(LAW)


def _spec(points=5, budgets=(1e17, 3e17, 1e18, 3e18, 1e19), **kw):
    return parse_spec({"name": "d", "budgets": list(budgets), "grid": {"points": points, "span": 16}, **kw})


def test_parse_law_refuses_in_one_line():
    assert parse_law(LAW) == {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    for bad, msg in (("E=1.69,A=406", "lacks"), ("E=x,A=1,B=1,alpha=1,beta=1", "not a number"),
                     ("E=1,A=1,B=1,alpha=-1,beta=1", "positive"), ("E=1,Q=2", "unknown key"), ("E", "KEY=VALUE"),
                     (LAW + ",E=2", "E is given twice")):
        with pytest.raises(DesignError, match=msg):
            parse_law(bad)


def test_variants_change_one_thing_each():
    spec = _spec(points=9)
    names = [n for n, _ in variants(spec)]
    assert names[0] == "as planned" and "points 7" in names and "points 11" in names
    assert any(n.startswith("seeds") for n in names) and any(n.startswith("+ budget") for n in names)
    for n, v in variants(spec)[1:]:
        diff = {k for k in type(spec).model_fields if getattr(v, k) != getattr(spec, k)}
        assert len(diff) == 1, (n, diff)


def _real_widths(spec, noise: float, n: int, target: float):
    """Fit n simulated sweeps whose losses come from the simulate template's own code (one run.json each)."""
    runs = plan(spec)
    widths, n_widths, ests = [], [], []
    for s in range(n):
        rows = []
        for r in runs:
            definition = {**r.definition, "run_id": r.run_id, "vars": {"law": LAW_D, "noise": noise, "noise_seed": s},
                          "planned": {"params_non_embedding": r.ledger["params_non_embedding"]}}
            rows.append({"run_id": r.run_id, "budget": r.budget, "params": r.params, "tokens": r.tokens,
                         "loss": simulate(definition)["loss"]})
        rep = fit_sweep(FitTable.from_rows(rows), bootstrap=200, seed=s, predict=[target], parametric=None)
        lo, hi = rep.frontier.params.exponent_ci
        widths.append(hi - lo)
        p = rep.predictions[0]
        n_widths.append(np.log(p.n_opt_ci[1] / p.n_opt_ci[0]))
        ests.append(rep.frontier.params.exponent_median)
    return float(np.median(widths)), float(np.median(n_widths)), np.array(ests)


@pytest.mark.slow
def test_predicted_widths_match_real_fits_of_simulated_sweeps():
    """design's expected interval widths (its own simulations) are what real fits of simulated sweeps reach,
    within 25%; and they are calibrated: the spread of the real estimates is of the same size."""
    spec = _spec()
    target = 1e20
    rep = design(spec, LAW_D, 0.01, target=target, sims=30, bootstrap=200, seed=7, compare=False)
    pred = rep.outcomes[0]
    assert pred.runs == 25 and pred.no_frontier == 0
    real_a, real_n, ests = _real_widths(spec, 0.01, 30, target)
    assert abs(pred.exponent_width / real_a - 1) < 0.25, (pred.exponent_width, real_a)
    assert abs(pred.n_opt_width / real_n - 1) < 0.25, (pred.n_opt_width, real_n)
    spread = np.percentile(ests, 95) - np.percentile(ests, 5)
    assert 0.5 < pred.exponent_width / spread < 2.0, (pred.exponent_width, spread)


@pytest.mark.slow
def test_design_cli_five_budgets_nine_sizes_under_30_seconds(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: d59\nbudgets: [1.0e17, 3.0e17, 1.0e18, 3.0e18, 1.0e19]\ngrid: {points: 9, span: 16}\n"
                    "throughput: 4.0e14\n")
    t0 = time.time()
    out = run_isoflop("design", str(spec), "--law", LAW, "--noise", "0.01", "--json", workdir=tmp_path / "w")
    took = time.time() - t0
    d = json.loads(out.stdout)
    assert took < 30, took
    names = [v["name"] for v in d["variants"]]
    assert names[0] == "as planned" and len(names) >= 6
    base = d["variants"][0]
    assert base["runs"] == 45 and base["gpu_hours"] > 0 and d["simulated"] is True
    # more seeds buy a narrower exponent interval at twice the cost
    seeds = next(v for v in d["variants"] if v["name"].startswith("seeds"))
    assert seeds["gpu_hours"] == pytest.approx(2 * base["gpu_hours"]) and seeds["exponent_width"] < base["exponent_width"]
    assert not (tmp_path / "w").exists()                 # design stores nothing
    text = run_isoflop("design", str(spec), "--law", LAW, "--noise", "0.01", "--sims", "4", "--no-variants",
                       workdir=tmp_path / "w").stdout
    assert "SIMULATED" in text and "a width" in text and "GPU-h" in text
    bad = run_isoflop("design", str(spec), "--law", "E=1", "--noise", "0.01", workdir=tmp_path / "w", check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_widths_that_the_spread_contradicts_are_marked_and_do_not_win_the_ranking():
    """A variant whose a interval is narrow but whose estimates spread 4× wider is marked overconfident and
    ranked by its spread; the honest variant ranks first (F7)."""
    import dataclasses

    from rich.console import Console

    from isoflop.design import DesignReport, Outcome, render_design

    def outcome(name, a_w, a_sp, l_w, l_sp):
        return Outcome(name=name, runs=20, flops=1e20, gpu_hours=10.0, sims=16, exponent_width=a_w,
                       exponent_spread=a_sp, n_opt_width=0.5, n_opt_spread=0.55, loss_opt_width=l_w,
                       loss_opt_spread=l_sp, flagged_share=0.0, no_frontier=0.0, exponent_true=0.45,
                       n_opt_true=1e9, loss_opt_true=2.0, exponent_bias=0.0)

    honest = outcome("as planned", 0.10, 0.11, 0.05, 0.06)
    narrow = outcome("points 3", 0.05, 0.20, 0.049, 0.21)
    assert honest.disagreeing() == {} and narrow.disagreeing() == {"exponent": "overconfident",
                                                                   "loss_opt": "overconfident"}
    assert narrow.exponent_precision == 0.20 and narrow.to_json()["disagreeing"]["loss_opt"] == "overconfident"
    con = Console(record=True, width=200)
    render_design(DesignReport(1e22, 0.01, (honest, narrow), ()), con)
    text = con.export_text()
    assert "0.050 (0.200) !" in text and "0.049 (0.210) !" in text and "0.100 (0.110) !" not in text
    assert "overconfident" in text and "most precise a per GPU-hour: 'as planned'" in text
    # the same spread, but the intervals hold the truth in 93% of the simulations: heavy tails, not overconfidence
    tails = dataclasses.replace(narrow, coverage={"exponent": 0.93, "loss_opt": 0.5})
    assert tails.disagreeing() == {"exponent": "heavy-tailed", "loss_opt": "overconfident"}
    assert tails.to_json()["coverage"] == {"exponent": 0.93, "loss_opt": 0.5}
    con = Console(record=True, width=200)
    render_design(DesignReport(1e22, 0.01, (honest, tails), ()), con)
    text = con.export_text()
    assert "0.050 (0.200) *" in text and "0.049 (0.210) !" in text and "L_opt intervals hold the truth in 50%" in text


def test_fewer_sizes_winning_under_akima_is_explained():
    """With akima, a 3-size grid beating the planned 5 is the minimizer's doing (it says so); parabola is offered."""
    import dataclasses

    from rich.console import Console

    from isoflop.design import DesignReport, render_design

    base = design(_spec(points=5, budgets=(1e17, 1e18, 1e19)), LAW_D, 0.01, sims=2, bootstrap=0, compare=False)
    o = dataclasses.replace(base.outcomes[0], exponent_width=0.12, exponent_spread=0.09)
    fewer = dataclasses.replace(o, name="points 3", runs=9, exponent_width=0.054, exponent_spread=0.058)
    for minimizer, said in (("akima", True), ("parabola", False)):
        con = Console(record=True, width=200)
        render_design(DesignReport(o.n_opt_true, 0.01, (o, fewer), (), minimizer), con)
        assert ("because of the minimizer" in con.export_text()) is said
    par = design(_spec(points=5, budgets=(1e17, 1e18, 1e19)), LAW_D, 0.01, sims=2, bootstrap=0, compare=False,
                 minimizer="parabola")
    assert par.to_json()["minimizer"] == "parabola"
    cov = design(_spec(points=5, budgets=(1e17, 1e18, 1e19)), LAW_D, 0.01, sims=6, bootstrap=50,
                 compare=False).outcomes[0].coverage
    assert set(cov) == {"exponent", "n_opt", "loss_opt"} and 0.0 <= cov["exponent"] <= 1.0
    with pytest.raises(DesignError, match="akima or parabola"):
        design(_spec(), LAW_D, 0.01, sims=2, compare=False, minimizer="spline")
