"""`isoflop compare`: the multiplier of pairs drawn from known laws, identical sweeps, overlap, JSON, bad input."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from isoflop.errors import UserError
from isoflop.fit.compare import compare_sweeps
from isoflop.fit.simulate import LAWS, Law, draw_sweep
from isoflop.store.engine import open_engine
from isoflop.store.models import Run, Sweep

from .test_cli_fit import SPEC
from .test_cli_plan import isoflop

BUDGETS = np.logspace(17, 19, 5)


def scaled(law: Law, m: float) -> Law:
    """L(N, D/m): needs exactly m× the compute of `law` for every loss (L_opt,m(C) = L_opt(C/m))."""
    return Law(law.E, law.A, law.B * m ** law.beta, law.alpha, law.beta)


def true_multiplier(ref: Law, oth: Law, c: float) -> float:
    g = oth.alpha * oth.beta / (oth.alpha + oth.beta)      # L_opt = E + K·C^−g exactly under 6ND
    k = (float(oth.loss_opt(1e18)) - oth.E) * 1e18 ** g
    return (k / (float(ref.loss_opt(c)) - oth.E)) ** (1 / g) / c


def inside(ci, v) -> bool:
    return ci is not None and (ci[0] is None or ci[0] <= v) and (ci[1] is None or v <= ci[1])


@settings(max_examples=6, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(law=st.sampled_from(LAWS), m=st.sampled_from([0.5, 1.4, 2.0]), seed=st.integers(0, 2**16))
def test_constant_multiplier_is_recovered(law, m, seed):
    rng = np.random.default_rng(seed)
    a, b = draw_sweep(law, rng, noise=0.003, seeds=2), draw_sweep(scaled(law, m), rng, noise=0.003, seeds=2)
    pair = compare_sweeps([("A", a), ("B", b)], bootstrap=200, seed=seed).pairs[0]
    pts = [p for p in pair.multiplier if p.kind == "shared"]
    assert [p.budget for p in pts] == pytest.approx(list(BUDGETS))
    assert all(abs(p.value / m - 1) < 0.1 for p in pts)
    # m is far from 1 at this noise: every interval excludes 1, on the right side, and the verdict says so
    winner, loser = ("A", "B") if m > 1 else ("B", "A")
    assert all((p.ci[0] > 1) if m > 1 else (p.ci[1] < 1) for p in pts)
    assert pair.verdict.startswith(f"{winner} is more compute-efficient than {loser} at every budget")
    # N_opt(C) of the other is N_opt(C/m): the same exponent, up to noise
    assert abs(pair.exponent_diff["params"].value) < 0.06


def test_multiplier_intervals_cover_the_truth():
    """90% intervals: over several pairs (constant multipliers), most shared budgets hold the truth.
    (Misses cluster within a pair: the five budgets share two fitted laws; see benchmarks/compare_calibration.py.)"""
    hits = total = exp_hits = 0
    for i in range(8):
        law, m = LAWS[i % 4], (0.6, 1.3)[i % 2]
        rng = np.random.default_rng(1000 + i)
        a, b = draw_sweep(law, rng, noise=0.005), draw_sweep(scaled(law, m), rng, noise=0.005)
        pair = compare_sweeps([("A", a), ("B", b)], bootstrap=200, seed=i).pairs[0]
        hits += sum(inside(p.ci, m) for p in pair.multiplier)
        total += len(pair.multiplier)
        exp_hits += inside(pair.exponent_diff["params"].ci, 0.0)
    assert hits >= 0.75 * total and exp_hits >= 6


def test_growing_multiplier_is_recovered_and_grows():
    ref = LAWS[0]
    oth = Law(ref.E, ref.A, ref.B, ref.alpha * 0.8, ref.beta * 0.8)   # flatter L_opt: falls behind more with C
    truth = [true_multiplier(ref, oth, c) for c in BUDGETS]
    assert truth[-1] > 1.5 * truth[0]
    hits = 0
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        pair = compare_sweeps([("ref", draw_sweep(ref, rng, noise=0.003, seeds=2)),
                               ("oth", draw_sweep(oth, rng, noise=0.003, seeds=2))], bootstrap=200, seed=seed,
                              predict=[1e20]).pairs[0]
        pts = [p for p in pair.multiplier if p.kind == "shared"]
        hits += sum(inside(p.ci, t) for p, t in zip(pts, truth))
        assert pts[-1].value > 1.3 * pts[0].value
        assert pair.multiplier[-1].kind == "predict" and pair.multiplier[-1].budget == 1e20
    assert hits >= 0.7 * 3 * len(BUDGETS)


def test_identical_sweeps_give_one_with_an_interval_holding_one():
    t = draw_sweep(LAWS[1], np.random.default_rng(3), noise=0.01)
    pair = compare_sweeps([("x", t), ("y", t)], bootstrap=300, predict=[1e21]).pairs[0]
    for p in pair.multiplier:
        assert p.value == pytest.approx(1.0, abs=1e-9)
        assert p.ci[0] < 1 < p.ci[1]           # independent noise streams: a real width, not [1, 1]
    assert pair.crossover is None               # coinciding laws do not cross
    assert all(e.value == pytest.approx(0, abs=1e-12) and inside(e.ci, 0) for e in pair.exponent_diff.values())
    assert pair.verdict.startswith("the data cannot tell x and y apart at any budget")
    assert "cannot tell them apart predicted at 1e+21" in pair.verdict


def test_different_budget_sets_compare_only_where_they_overlap():
    rng = np.random.default_rng(5)
    law = LAWS[0]
    a = draw_sweep(law, rng, budgets=np.logspace(17, 19, 5), noise=0.003)
    b = draw_sweep(scaled(law, 1.5), rng, budgets=np.logspace(18, 20, 5), noise=0.003)
    pair = compare_sweeps([("a", a), ("b", b)], bootstrap=200).pairs[0]
    assert [p.budget for p in pair.multiplier] == pytest.approx([1e18, 10**18.5, 1e19])
    assert pair.reference_only == pytest.approx((1e17, 10**17.5)) and pair.other_only == pytest.approx((10**19.5, 1e20))
    assert pair.verdict.startswith("compared only at the 3 budget(s) both sweeps ran")
    c = draw_sweep(law, rng, budgets=np.logspace(20, 21, 3), noise=0.003)
    with pytest.raises(UserError, match="share no budget"):
        compare_sweeps([("a", a), ("c", c)], bootstrap=0)


def test_no_bootstrap_claims_nothing():
    rng = np.random.default_rng(8)
    a, b = draw_sweep(LAWS[0], rng, noise=0.003), draw_sweep(scaled(LAWS[0], 3.0), rng, noise=0.003)
    pair = compare_sweeps([("a", a), ("b", b)], bootstrap=0).pairs[0]
    assert all(p.ci is None for p in pair.multiplier)
    assert pair.crossover is None or pair.crossover.ci is None
    assert all(e.ci is None for e in pair.exponent_diff.values())
    assert "nothing is claimed" in pair.verdict


def write_csv(path: Path, table) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["budget", "params", "tokens", "loss"])
        w.writerows(zip(table.budget, table.params, table.tokens, table.loss))


def test_cli_json_schema_and_frontier_as_fit(tmp_path):
    rng = np.random.default_rng(11)
    write_csv(tmp_path / "adamw.csv", draw_sweep(LAWS[0], rng, noise=0.005))
    write_csv(tmp_path / "muon.csv", draw_sweep(scaled(LAWS[0], 0.7), rng, noise=0.005))
    write_csv(tmp_path / "third.csv", draw_sweep(LAWS[0], rng, noise=0.005))
    out = json.loads(isoflop("compare", "adamw.csv", "muon.csv", "third.csv", "--json", "--bootstrap", "100",
                             "--predict", "1e21", "--predict", "1e20", "--plot", "cmp.png", cwd=tmp_path).stdout)
    assert out["reference"] == "adamw"
    assert [s["name"] for s in out["sweeps"]] == ["adamw", "muon", "third"]
    assert [(p["reference"], p["other"]) for p in out["pairs"]] == [("adamw", "muon"), ("adamw", "third")]
    for p in out["pairs"]:
        assert set(p) >= {"reference", "other", "exponent_diff", "compute_multiplier", "crossover", "verdict"}
        assert set(p["exponent_diff"]) == {"params", "tokens", "loss"}
        for e in p["exponent_diff"].values():
            assert isinstance(e["value"], float) and len(e["ci"]) == 2
        budgets = [m["budget"] for m in p["compute_multiplier"]]
        assert budgets == pytest.approx(list(BUDGETS) + [1e20, 1e21])
        assert all(set(m) >= {"budget", "value", "ci"} for m in p["compute_multiplier"])
        assert p["crossover"] is None or set(p["crossover"]) >= {"budget", "ci"}
        assert isinstance(p["verdict"], str) and p["verdict"].endswith(".")
    # muon needs 0.7× the compute: the multiplier < 1 with its interval
    assert all(m["ci"][1] < 1 for m in out["pairs"][0]["compute_multiplier"][:5])
    # sweep i's frontier is exactly `fit --json`'s with seed + i
    fit = json.loads(isoflop("fit", "--csv", "muon.csv", "--json", "--bootstrap", "100", "--seed", "1",
                             "--method", "none", cwd=tmp_path).stdout)
    assert out["sweeps"][1]["frontier"] == fit["frontier"]
    assert (tmp_path / out["plot"]).stat().st_size > 10_000
    # the rich rendering says the same verdict
    p = isoflop("compare", "adamw.csv", "muon.csv", "--bootstrap", "100", cwd=tmp_path)
    assert "verdict" in p.stdout and "muon is more compute-efficient than adamw" in p.stdout


def finish(tmp: Path, sweep: str, law, noise: float = 0.003, seed: int = 0) -> None:
    """Results as ingestion would write them; lr x0.5 runs worse than lr x1."""
    rng = np.random.default_rng(seed)
    eng = open_engine(f"sqlite:///{tmp / 'work' / 'isoflop.db'}", create=False)
    with Session(eng) as s, s.begin():
        sw = s.scalars(select(Sweep).where(Sweep.name == sweep)).one()
        for r in s.scalars(select(Run).where(Run.sweep_id == sw.id)):
            r.state = "completed"
            r.val_loss = float(law.loss(r.params, r.tokens)) + noise * rng.standard_normal() + (
                0.05 if r.lr_mult == 0.5 else 0)


def test_cli_compares_sweeps_in_the_store(tmp_path):
    (tmp_path / "a.yaml").write_text(SPEC)
    (tmp_path / "b.yaml").write_text(SPEC.replace("name: law", "name: law2"))
    isoflop("plan", "a.yaml", cwd=tmp_path)
    isoflop("plan", "b.yaml", cwd=tmp_path)
    p = isoflop("compare", "law", "law2", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "no completed runs" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    law = Law(1.8, 400.0, 1200.0, 0.34, 0.30)
    finish(tmp_path, "law", law)
    finish(tmp_path, "law2", scaled(law, 2.0), seed=1)
    out = json.loads(isoflop("compare", "law", "law2", "--json", "--bootstrap", "100", cwd=tmp_path).stdout)
    pts = out["pairs"][0]["compute_multiplier"]
    assert len(pts) == 4 and sum(inside(m["ci"], 2.0) for m in pts) >= 2
    assert all(abs(m["value"] / 2 - 1) < 0.15 for m in pts)


BAD = [
    (("a.csv",), "at least two sweeps"),
    (("a.csv", "missing.csv"), "missing.csv"),
    (("a.csv", "nosuch"), "no sweep named 'nosuch'"),
    (("a.csv", "a.csv"), "each sweep may be named once"),
    (("a.csv", "far.csv"), "share no budget"),
    (("a.csv", "b.csv", "--window", "2"), "at least 3"),
    (("a.csv", "b.csv", "--minimizer", "cubic"), "--minimizer"),
    (("a.csv", "b.csv", "--predict", "-1"), "--predict"),
    (("a.csv", "b.csv", "--plot", "x.gif"), "--plot"),
    (("a.csv", "few.csv"), "few: no frontier"),
]


def test_cli_bad_input_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    write_csv(tmp_path / "a.csv", draw_sweep(LAWS[0], rng, noise=0.01))
    write_csv(tmp_path / "b.csv", draw_sweep(LAWS[0], rng, noise=0.01))
    write_csv(tmp_path / "far.csv", draw_sweep(LAWS[0], rng, budgets=np.array([1e21, 1e22, 1e23]), noise=0.01))
    write_csv(tmp_path / "few.csv", draw_sweep(LAWS[0], rng, budgets=np.array([1e18]), noise=0.01))
    (tmp_path / "s.yaml").write_text(SPEC)
    isoflop("plan", "s.yaml", cwd=tmp_path)
    for args, expect in BAD:
        p = isoflop("compare", *args, "--bootstrap", "20", cwd=tmp_path, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert expect in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)


def test_two_crossings_each_get_their_own_interval():
    """Hoffmann's and Epoch's laws cross twice (near 1.6e17 and 8.7e21): each crossing is reported with
    the interval of the resamples that found it, not one interval spanning both."""
    from io import StringIO

    from rich.console import Console

    from isoflop.fit.compare_render import render_comparison

    grid = np.logspace(15, 24, 2000)
    gap = np.array([float(LAWS[1].loss_opt(c) - LAWS[0].loss_opt(c)) for c in grid])
    truth = grid[:-1][np.sign(gap[:-1]) != np.sign(gap[1:])]
    assert len(truth) == 2
    rng = np.random.default_rng(0)
    a = draw_sweep(LAWS[0], rng, budgets=np.logspace(18, 22, 5), noise=0.005)
    b = draw_sweep(LAWS[1], rng, budgets=np.logspace(18, 21, 4), noise=0.005)
    cmp = compare_sweeps([("a", a), ("b", b)], bootstrap=200, seed=0)
    pair = cmp.pairs[0]
    low, high = pair.crossovers
    assert low.ci[0] < truth[0] < low.ci[1] and high.ci[0] < truth[1] < high.ci[1]
    assert low.ci[1] < high.ci[0]     # neither interval reaches into the other crossing
    assert low.crossing > 0.9 and high.crossing > 0.5
    # `crossover` (kept for --json readers): the crossing nearest the middle of the shared budgets
    assert pair.crossover == low
    j = cmp.to_json()["pairs"][0]
    assert j["crossover"]["budget"] == low.budget and [c["budget"] for c in j["crossovers"]] == [low.budget, high.budget]
    out = StringIO()
    render_comparison(cmp, Console(file=out, width=200))
    assert "cross 2 times" in out.getvalue() and out.getvalue().count("of resamples cross here") == 2


def test_every_budget_is_shared_or_listed_alone():
    """A budget within ±10% of two of the other's has one partner; the other is listed without one."""
    from isoflop.fit.compare import _match

    assert _match([1e18, 1e21], [1e18, 1e21, 1.05e21]) == ([1e18, 1e21], [], [1.05e21])
    assert _match([1e21, 1.05e21], [1.04e21]) == ([1.05e21], [1e21], [])
    rng = np.random.default_rng(4)
    a = draw_sweep(LAWS[0], rng, budgets=np.logspace(18, 21, 4), noise=0.003)
    c = draw_sweep(LAWS[0], rng, budgets=np.array([1e18, 1e19, 1e20, 1e21, 1.05e21]), noise=0.003)
    pair = compare_sweeps([("a", a), ("c", c)], bootstrap=100).pairs[0]
    assert pair.shared_budgets == pytest.approx((1e18, 1e19, 1e20, 1e21)) and pair.other_only == pytest.approx((1.05e21,))
    assert "1 of c's budgets have no partner" in pair.verdict
    # where no budget tells them apart, the verdict says so once, then the multiplier at the top budget
    from isoflop.fit.compare import MultiplierPoint, _verdict

    pts = [MultiplierPoint(c, 1.0, (0.9, 1.1), "shared") for c in (1e18, 1e19)]
    v = _verdict("a", "c", pts, True, [1e18, 1e19], [], [])
    assert v.count("cannot tell") == 1 and v.endswith("; at 1e+19 the multiplier is 1 (0.9–1.1)."), v


def test_plot_legend_shows_the_tables_exponent(tmp_path):
    from isoflop.fit.compare_plots import save_compare_plot

    rng = np.random.default_rng(2)
    a, b = draw_sweep(LAWS[0], rng, noise=0.01), draw_sweep(scaled(LAWS[0], 2.0), rng, noise=0.01)
    cmp = compare_sweeps([("a", a), ("b", b)], bootstrap=100)
    svg = save_compare_plot(cmp, tmp_path / "c.svg").read_text()   # matplotlib keeps each text as a comment
    for name, rep in zip(cmp.names, cmp.reports):
        med, fit = rep.frontier.params.exponent_median, rep.frontier.params.exponent
        assert f"{med:.3f}" != f"{fit:.3f}"      # the case where the two differ as printed
        assert f"{name}: a = {med:.3f}" in svg


def test_simulated_inputs_stay_labelled(tmp_path, monkeypatch):
    """A CSV export of a simulated sweep (every row `simulated` true) is named as simulated, in JSON and text."""
    from typer.testing import CliRunner

    from isoflop.cli import app

    rng = np.random.default_rng(6)
    for name, sim in (("drawn", "True"), ("real", "False")):
        t = draw_sweep(LAWS[0], rng, noise=0.005)
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["budget", "params", "tokens", "loss", "simulated"])
            w.writerows((*row, sim) for row in zip(t.budget, t.params, t.tokens, t.loss))
    monkeypatch.chdir(tmp_path)
    args = ["compare", "drawn.csv", "real.csv", "--bootstrap", "0"]
    out = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert out["simulated"] == ["drawn"]
    assert "SIMULATED drawn: losses drawn" in CliRunner().invoke(app, args, env={"COLUMNS": "200"}).stdout
