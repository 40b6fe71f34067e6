"""`isoflop extend`: adaptive sizes, multipliers and budgets, end to end with the simulate template."""
from __future__ import annotations

import json
import math

import pytest

from isoflop.fit.simulate import Law
from isoflop.plan.extend import BudgetFit, CellEdge, SizeRow, budget_extension, grid_ratio, multiplier_extensions, \
    size_extensions
from isoflop.plan.grid import plan
from isoflop.spec import parse_spec

from .conftest import run_isoflop
from .simulated import HOFFMANN, fit_json, profile, submit_and_wait, write_spec

LAW = Law(**HOFFMANN)
BUDGETS = [1e17, 3e17, 1e18, 3e18]
EDGE = {"vertex_out_of_range", "vertex_near_edge"}


def _spec(**kw):
    return parse_spec({"name": "x", "budgets": BUDGETS, "grid": {"points": 7, "span": 16}, **kw})


def _sizes(spec):
    return [SizeRow(r.budget, r.point, r.n_layer, r.d_model, r.params) for r in plan(spec)]


# ---------------------------------------------------------------------------- pure planning
def test_size_extensions_bracket_a_minimum_at_the_top_edge():
    spec = _spec()
    sizes = _sizes(spec)
    top = max(s.params for s in sizes if s.budget == 3e17)
    fits = [BudgetFit(3e17, top, ("vertex_out_of_range",), top), BudgetFit(1e17, 2e7, (), 2e7)]
    ext = size_extensions(spec, fits, sizes)
    assert [e.point for e in ext] == [7, 8]            # two sizes beyond the top, numbered on
    assert all(e.budget == 3e17 for e in ext)
    runs = plan(spec.model_copy(update={"extend": ext}))
    new = sorted(r.params for r in runs if r.point >= 7)
    assert new[0] > top and new[1] > new[0]
    # the grid's own spacing: each step about the planned ratio 16^(1/6)
    assert 1.3 < new[1] / new[0] < 2.0


def test_size_extensions_below_and_near_edge():
    spec = _spec()
    sizes = _sizes(spec)
    own = sorted(s.params for s in sizes if s.budget == 1e18)
    # a minimum between the two smallest sizes (near the edge): one size below gives two below it
    x = math.exp((math.log(own[0]) + math.log(own[1])) / 2)
    ext = size_extensions(spec, [BudgetFit(1e18, x, ("vertex_near_edge",), own[1])], sizes)
    assert [e.point for e in ext] == [-1]
    assert plan(spec.model_copy(update={"extend": ext}))[-1].params < own[0]
    # unflagged budgets get nothing
    assert size_extensions(spec, [BudgetFit(1e18, own[3], (), own[3])], sizes) == []


def test_multiplier_extension_goes_one_grid_step_beyond():
    spec = _spec(lr_grid=[0.5, 1.0, 2.0])
    assert grid_ratio(spec.lr_grid) == pytest.approx(2.0)
    r = plan(spec)[0]
    ext = multiplier_extensions(spec, [CellEdge(r.budget, r.n_layer, r.d_model, r.point, "lr", "high", (0.5, 1, 2)),
                                       CellEdge(r.budget, r.n_layer, r.d_model, r.point, "lr", "low", (0.5, 1, 2))])
    assert [e.lr_grid for e in ext] == [[4.0], [0.25]]
    runs = plan(spec.model_copy(update={"extend": ext}))
    cell = sorted(x.lr_mult for x in runs if (x.budget, x.point) == (r.budget, r.point))
    assert cell == [0.25, 0.5, 1.0, 2.0, 4.0]


def test_budget_extension_spans_the_prediction_interval():
    spec = _spec()
    ext = budget_extension(spec, 1e19, 2e8, (5e7, 6e8), lr=1e-3)
    ns = [r.params for r in plan(spec.model_copy(update={"extend": ext})) if r.budget == 1e19]
    assert len(ns) == 7 and ns == sorted(ns)
    assert ns[0] < 5e7 * 1.15 and ns[-1] > 6e8 / 1.15     # covers the 5–95% interval (up to the shapes' grain)
    assert all(r.lr == pytest.approx(1e-3) for r in plan(spec.model_copy(update={"extend": ext})) if r.budget == 1e19)


def test_a_duplicate_extension_is_refused_in_one_line():
    from isoflop.plan.grid import PlanError
    from isoflop.spec import Extension

    spec = _spec()
    r = plan(spec)[0]
    dup = Extension(budget=r.budget, n_layer=r.n_layer, d_model=r.d_model, point=r.point)
    with pytest.raises(PlanError, match="already planned"):
        plan(spec.model_copy(update={"extend": [dup]}))


def test_specs_without_the_new_fields_keep_their_digest():
    spec = _spec(lr_grid=[0.5, 1.0, 2.0])
    # the digest this spec had before extend/centre_at/from_sweep existed (9344d97): stored sweeps stay planned
    assert spec.digest() == "9794a0c2d1ee29b7"
    bumped = spec.model_copy(update={"grid": spec.grid.model_copy(update={"centre_at": {1e17: 3e7}})})
    assert bumped.digest() != spec.digest()
    assert parse_spec(json.loads(json.dumps(spec.model_dump(mode="json")))).digest() == spec.digest()


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_off_centre_budgets_become_bracketed_after_extend(tmp_path):
    """Two middle budgets planned 4x off their optimum (3 grid steps): extend + submit + status brackets every
    minimum within two rounds; old runs keep their ids and results."""
    wd = tmp_path / "work"
    prof = profile(tmp_path)
    centres = {c: float(LAW.n_opt(c)) for c in BUDGETS}
    centres[3e17] *= 4.0
    centres[1e18] /= 4.0
    spec = write_spec(tmp_path / "off.yaml", "off", BUDGETS, centre_at=centres)
    run_isoflop("plan", str(spec), workdir=wd)
    submit_and_wait("off", wd, prof)
    fit = fit_json("off", wd, "--bootstrap", "200")
    flagged = {b["budget"] for b in fit["budgets"] if set(b["flags"]) & EDGE}
    assert flagged == {3e17, 1e18}
    before = {r["run_id"]: r["val_loss"] for r in json.loads(run_isoflop("status", "off", "--json", workdir=wd).stdout)["runs"]}

    dry = run_isoflop("extend", "off", "--dry-run", "--bootstrap", "200", workdir=wd).stdout
    assert "dry run" in dry and "nothing stored" in dry
    assert json.loads(run_isoflop("status", "off", "--json", workdir=wd).stdout)["counts"] == {"completed": len(before)}

    for round_ in (1, 2):
        out = run_isoflop("extend", "off", "--bootstrap", "200", workdir=wd).stdout
        if "nothing to add" in out:
            break
        submit_and_wait("off", wd, prof)
        fit = fit_json("off", wd, "--bootstrap", "200")
        if not any(set(b["flags"]) & EDGE for b in fit["budgets"]):
            break
    assert not [b for b in fit["budgets"] if set(b["flags"]) & EDGE], fit["budgets"]
    assert all(b["used"] for b in fit["budgets"])
    # the true optimum of each budget lies inside its fitted interval's neighbourhood (a grid step)
    for b in fit["budgets"]:
        assert abs(math.log(b["n_opt"] / LAW.n_opt(b["budget"]))) < math.log(16) / 6
    after = {r["run_id"]: r["val_loss"] for r in json.loads(run_isoflop("status", "off", "--json", workdir=wd).stdout)["runs"]}
    assert {k: after[k] for k in before} == before        # same ids, same results
    assert len(after) > len(before)
    # the old spec file no longer describes the sweep: planning it again is refused, nothing changes
    again = run_isoflop("plan", str(spec), workdir=wd, check=False)
    assert again.returncode == 2 and "different spec" in again.stderr and len(again.stderr.strip().splitlines()) == 1

    # a new budget above: centred on the prediction, planned and stored
    out = run_isoflop("extend", "off", "--budget", "1e19", "--bootstrap", "200", workdir=wd).stdout
    assert "centred on the predicted N_opt" in out
    st = json.loads(run_isoflop("status", "off", "--json", workdir=wd).stdout)
    assert st["counts"]["planned"] == 7 and any(b["budget"] == 1e19 for b in st["budgets"])
    refused = run_isoflop("extend", "off", "--budget", "1e19", workdir=wd, check=False)
    assert refused.returncode == 2 and "already in sweep" in refused.stderr
    near = run_isoflop("extend", "off", "--budget", "1.05e19", workdir=wd, check=False)
    assert near.returncode == 2 and "within 10% of budget 1e+19" in near.stderr


@pytest.mark.slow
def test_a_cell_at_the_edge_of_its_lr_grid_gets_the_next_multiplier(tmp_path):
    """η* at 0.2× the lr rule, grid 0.25–4×: every cell's best η is at the low edge; extend adds 0.125× to each
    cell (and nothing else), after which every cell's optimum is bracketed and sits near the truth."""
    wd = tmp_path / "work"
    prof = profile(tmp_path)
    truth = {"coef": 2.0, "of": "C", "power": -0.15}
    spec = write_spec(tmp_path / "lr.yaml", "lredge", [1e18], points=3, span=4.0,
                      centre_at={1e18: float(LAW.n_opt(1e18))}, lr={"coef": 10.0, "of": "C", "power": -0.15},
                      lr_grid=[0.25, 0.5, 1.0, 2.0, 4.0], noise=0.001,
                      extra_vars={"lr_opt": truth, "lr_curvature": 0.05})
    run_isoflop("plan", str(spec), workdir=wd)
    submit_and_wait("lredge", wd, prof)
    cells = fit_json("lredge", wd, "--bootstrap", "200")["hparams"]["cells"]
    assert [c["lr_flags"] for c in cells] == [["at_low_edge"]] * 3
    out = run_isoflop("extend", "lredge", "--bootstrap", "200", workdir=wd).stdout
    assert "added 3 run(s)" in out and "adds x0.125" in out
    submit_and_wait("lredge", wd, prof)
    cells = fit_json("lredge", wd, "--bootstrap", "200")["hparams"]["cells"]
    assert [c["lr_flags"] for c in cells] == [[]] * 3
    for c in cells:
        assert len(c["lr_values"]) == 6
        assert c["lr_opt"] == pytest.approx(2.0 * 1e18 ** -0.15, rel=0.1)


# ---------------------------------------------------------------------------- one round is enough
def test_a_minimum_predicted_beyond_the_edge_is_planned_two_steps_inside():
    """The lowest loss on the small-N edge, its minimum predicted half a step beyond: sizes until the
    prediction is >= 2 steps inside (3 sizes, not the 2 that left it one step from the new edge)."""
    spec = _spec(grid={"points": 5, "span": 16})
    sizes = _sizes(spec)
    own = sorted(s.params for s in sizes if s.budget == 1e18)
    step = math.log(16) / 4
    pred = own[0] * math.exp(-0.46 * step)
    notes: list[str] = []
    ext = size_extensions(spec, [BudgetFit(1e18, own[0], ("vertex_out_of_range",), own[0], pred)], sizes, notes)
    assert [e.point for e in ext] == [-1, -2, -3] and notes == []
    new_low = min(r.params for r in plan(spec.model_copy(update={"extend": ext})) if r.budget == 1e18)
    assert math.log(pred / new_low) >= 2 * step * 0.9
    # no prediction beyond the edge: the two sizes of old, and the advice to run extend again
    ext = size_extensions(spec, [BudgetFit(1e18, own[0], ("vertex_out_of_range",), own[0])], sizes, notes)
    assert [e.point for e in ext] == [-1, -2] and "run `isoflop extend` again" in notes[0]


def test_edge_parabola_vertex_extrapolates_beyond_the_edge_only():
    from isoflop.plan.extend import edge_parabola_vertex

    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert math.log(edge_parabola_vertex(list(map(math.exp, x)), [(v - 0.5) ** 2 for v in x])) == pytest.approx(0.5)
    assert math.log(edge_parabola_vertex(list(map(math.exp, x)), [(v - 5.7) ** 2 for v in x])) == pytest.approx(5.7)
    assert math.isnan(edge_parabola_vertex(list(map(math.exp, x)), [(v - 3) ** 2 for v in x]))   # inside
    assert math.isnan(edge_parabola_vertex(list(map(math.exp, x)), [-v for v in x]))             # not convex


@pytest.mark.slow
def test_one_extend_brackets_every_budget_of_a_grid_centred_too_large(tmp_path):
    """Every budget centred 5.5x above its optimum (the minimum just beyond the small-N edge): one extend
    brackets all four; before its runs finish extend says so; the stale spec file is refused naming the
    extend entries, and `isoflop spec` writes the stored spec back (planning it is a no-op)."""
    wd = tmp_path / "work"
    prof = profile(tmp_path)
    budgets = [1e18, 1e19, 1e20, 1e21]
    spec = write_spec(tmp_path / "big.yaml", "big", budgets, points=5, noise=0.005,
                      centre_at={c: 5.5 * float(LAW.n_opt(c)) for c in budgets})
    run_isoflop("plan", str(spec), workdir=wd)
    submit_and_wait("big", wd, prof)
    assert all(set(b["flags"]) & EDGE for b in fit_json("big", wd, "--bootstrap", "100")["budgets"])
    out = run_isoflop("extend", "big", "--bootstrap", "100", workdir=wd).stdout
    assert "new run(s)" in out and "isoflop spec big -o FILE" in out
    again = run_isoflop("extend", "big", "--dry-run", "--bootstrap", "100", workdir=wd).stdout
    added = sum(1 for r in json.loads(run_isoflop("status", "big", "--json", workdir=wd).stdout)["runs"]
                if r["state"] == "planned")
    assert f"{added} run(s) added by an earlier extend are not finished yet" in again, again
    submit_and_wait("big", wd, prof)
    fit = fit_json("big", wd, "--bootstrap", "100")
    assert not [b for b in fit["budgets"] if set(b["flags"]) & EDGE], fit["budgets"]

    refused = run_isoflop("plan", str(spec), workdir=wd, check=False)
    assert refused.returncode == 2 and "`extend:` entries" in refused.stderr and "isoflop spec big" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    run_isoflop("spec", "big", "-o", str(spec), "--overwrite", workdir=wd)
    assert "nothing changed" in run_isoflop("plan", str(spec), workdir=wd).stdout


def test_show_command_with_no_match_does_not_ask_for_a_longer_prefix(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "s", [1e18], points=3)
    p = run_isoflop("plan", str(spec), "--show-command", "zzzz", workdir=tmp_path / "w", check=False)
    assert p.returncode == 2 and "matches no run" in p.stderr and "longer" not in p.stderr


@pytest.mark.slow
def test_extend_leaves_a_budget_with_unfinished_runs_alone(tmp_path):
    """Only 1e18's runs submitted: extend judges that budget and says 1e19 waits for its runs (F16)."""
    import time

    wd = tmp_path / "work"
    prof = profile(tmp_path)
    spec = write_spec(tmp_path / "half.yaml", "half", [1e18, 1e19], points=5,
                      centre_at={c: 5.5 * float(LAW.n_opt(c)) for c in (1e18, 1e19)})
    run_isoflop("plan", str(spec), workdir=wd)
    run_isoflop("submit", "half", "--profile", prof, "--budget", "1e18", workdir=wd)
    deadline = time.time() + 240
    while json.loads(run_isoflop("status", "half", "--json", workdir=wd).stdout)["active"]:
        assert time.time() < deadline
        time.sleep(1.0)
    out = run_isoflop("extend", "half", "--dry-run", "--bootstrap", "100", workdir=wd).stdout
    assert "budget 1e+19: 5 run(s) not finished" in out, out
    assert "budget 1e+18: minimum at the small-N edge" in out and "budget 1e+19: minimum" not in out


def test_plan_refuses_bad_simulate_vars_before_storing(tmp_path):
    """trainer.vars of the simulate template are checked at plan time, not once per failed run (F14)."""
    for extra, msg in (({"noise": -1}, "noise must be >= 0"), ({"foo": 1}, "foo: unknown"),
                       ({"law": {"E": 1.69}}, "law lacks")):
        spec = write_spec(tmp_path / "bad.yaml", "bad", [1e18], points=3, extra_vars=extra)
        p = run_isoflop("plan", str(spec), workdir=tmp_path / "w", check=False)
        assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "w" / "isoflop.db").exists()
