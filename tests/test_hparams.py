"""Fitted hyperparameter laws: per-cell η*/B*, η*(C) with intervals, fit --json/--csv, and `from_sweep`."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isoflop.fit.hparams import AT_HIGH_EDGE, AT_LOW_EDGE, NOT_CONVEX, TOO_FEW_VALUES, fit_axis, fit_hparams

from .conftest import run_isoflop
from .simulated import HOFFMANN, fit_json, profile, submit_and_wait, write_spec

MULTS = np.array([0.25, 0.5, 1.0, 2.0, 4.0])


# ---------------------------------------------------------------------------- one cell
def test_fit_axis_vertex_and_flags():
    lr = 1e-3 * MULTS
    exact = 3.0 + 0.05 * np.log(lr / 1.3e-3) ** 2
    a = fit_axis(lr, exact)
    assert a.flags == () and a.opt == pytest.approx(1.3e-3, rel=1e-9)
    high = fit_axis(lr, 3.0 + 0.05 * np.log(lr / 9e-3) ** 2)
    assert high.flags == (AT_HIGH_EDGE,) and high.opt == pytest.approx(4e-3)   # the best grid value
    low = fit_axis(lr, 3.0 + 0.05 * np.log(lr / 1e-4) ** 2)
    assert low.flags == (AT_LOW_EDGE,)
    assert NOT_CONVEX in fit_axis(lr, 3.0 - 0.05 * np.log(lr / 1e-3) ** 2).flags
    assert fit_axis(lr[:2], exact[:2]).flags == (TOO_FEW_VALUES,)


def test_fit_axis_takes_seed_means_and_the_lowest_over_the_other_axis():
    lr = np.repeat(1e-3 * MULTS, 2)
    batch = np.tile([1e5, 4e5], 5)
    # the small batch is better everywhere; its optimum lr is 2e-3, the large batch's 5e-4
    loss = np.where(batch < 2e5, 3.0 + 0.05 * np.log(lr / 2e-3) ** 2, 3.2 + 0.05 * np.log(lr / 5e-4) ** 2)
    a = fit_axis(lr, loss, batch)
    assert a.opt == pytest.approx(2e-3, rel=1e-6) and len(a.values) == 5


# ---------------------------------------------------------------------------- the laws
def _lr_sweep(rng, *, power, coef, offset, noise, budgets=(1e17, 1e18, 1e19, 1e20), sizes=3, curvature=0.05,
              seeds=1):
    """Arrays of a sweep with an lr grid around offset·η*(C), η*(C) = coef·C^power, and L(N, D) underneath."""
    rows = []
    for c in budgets:
        n0 = 0.1 * c ** 0.5
        for n in n0 * np.geomspace(0.5, 2.0, sizes):
            for m in MULTS:
                for s in range(seeds):
                    eta = coef * c ** power * offset * m
                    d = c / (6 * n)
                    loss = (1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28
                            + curvature * math.log(eta / (coef * c ** power)) ** 2 + noise * rng.standard_normal())
                    rows.append((c, n, loss, eta, 5e5))
    a = np.array(rows)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4]


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(power=st.floats(-0.35, 0.05), coef=st.floats(0.05, 20.0), offset=st.floats(0.6, 1.6),
       seed=st.integers(0, 2**16))
def test_lr_law_recovers_a_known_exponent(power, coef, offset, seed):
    """η*(C) = coef·C^power is recovered: exactly without noise, and within its 5–95% interval (widened by half
    its width each side, ~99.9% for a calibrated one) with noise."""
    c, n, y, lr, b = _lr_sweep(np.random.default_rng(seed), power=power, coef=coef, offset=offset, noise=0.0)
    h = fit_hparams(c, n, y, lr, b, bootstrap=0)
    assert set(h.laws) == {"lr", "lr_n"}                   # batch has one value per cell: no batch law
    assert h.laws["lr"].exponent == pytest.approx(power, abs=1e-9)
    assert h.laws["lr"].coefficient == pytest.approx(coef, rel=1e-6)
    c, n, y, lr, b = _lr_sweep(np.random.default_rng(seed), power=power, coef=coef, offset=offset, noise=0.003)
    law = fit_hparams(c, n, y, lr, b, bootstrap=300, seed=seed).laws["lr"]
    lo, hi = law.exponent_ci
    w = hi - lo
    assert 0 < w < 0.2
    assert lo - w / 2 <= power <= hi + w / 2


def test_lr_law_interval_covers_the_truth_at_its_level():
    """Over 40 simulated sweeps the 5–95% interval of the η*(C) exponent holds the truth about 90% of the time."""
    hits = []
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        c, n, y, lr, b = _lr_sweep(rng, power=-0.12, coef=0.4, offset=float(rng.uniform(0.7, 1.4)), noise=0.004)
        lo, hi = fit_hparams(c, n, y, lr, b, bootstrap=300, seed=seed).laws["lr"].exponent_ci
        hits.append(lo <= -0.12 <= hi)
    assert 0.75 <= np.mean(hits) <= 1.0, np.mean(hits)


def test_flagged_cells_leave_the_law_with_their_reason():
    rng = np.random.default_rng(0)
    c, n, y, lr, b = _lr_sweep(rng, power=-0.1, coef=0.5, offset=1.0, noise=0.0)
    # the largest budget's grid sits far below its optimum: every cell at the high edge
    far = c == 1e20
    lr = np.where(far, lr / 40.0, lr)
    y = np.where(far, y - 0.05 * np.log(40.0) ** 2 + 0.05 * np.log(40.0 * 1.0) ** 2, y)
    y = np.where(far, 1.69 + 406.4 / n ** 0.34 + 410.7 / (c / (6 * n)) ** 0.28
                 + 0.05 * np.log(lr / (0.5 * c ** -0.1)) ** 2, y)
    h = fit_hparams(c, n, y, lr, b, bootstrap=0)
    law = h.laws["lr"]
    assert law.cells == 9 and law.exponent == pytest.approx(-0.1, abs=1e-9)
    assert {(e[0], e[2]) for e in law.excluded} == {(1e20, AT_HIGH_EDGE)}
    assert fit_hparams(c, n, y, None, None) is None       # no grid: no hparams at all


# ---------------------------------------------------------------------------- end to end
TRUTH = {"coef": 2.0, "of": "C", "power": -0.15}


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory):
    """A simulated sweep with an lr grid, through plan -> submit (local) -> status."""
    tmp = tmp_path_factory.mktemp("hp")
    wd = tmp / "work"
    centres = {c: 0.0 for c in (1e17, 1e18, 1e19)}
    from isoflop.fit.simulate import Law

    law = Law(**HOFFMANN)
    centres = {c: float(law.n_opt(c)) for c in centres}
    spec = write_spec(tmp / "tune.yaml", "tune", list(centres), points=3, span=4.0, centre_at=centres,
                      lr={"coef": 2.6, "of": "C", "power": -0.15}, lr_grid=[0.25, 0.5, 1.0, 2.0, 4.0],
                      noise=0.003, extra_vars={"lr_opt": TRUTH, "lr_curvature": 0.05})
    run_isoflop("plan", str(spec), workdir=wd)
    st = submit_and_wait("tune", wd, profile(tmp))
    assert st["counts"] == {"completed": 45} and st["simulated"] is True
    return tmp, wd


@pytest.mark.slow
def test_fit_of_an_lr_grid_sweep_recovers_the_known_exponent(lr_sweep):
    tmp, wd = lr_sweep
    out = fit_json("tune", wd, "--bootstrap", "400")
    assert out["simulated"] is True
    hp = out["hparams"]
    assert set(hp["laws"]) == {"lr", "lr_n"}               # no batch grid: no batch law
    law = hp["laws"]["lr"]
    assert law["of"] == "C"
    lo, hi = law["exponent_ci"]
    assert lo <= TRUTH["power"] <= hi, law
    assert hi - lo < 0.1
    assert law["coefficient_ci"][0] <= TRUTH["coef"] <= law["coefficient_ci"][1]
    cells = hp["cells"]
    assert len(cells) == 9 and all(set(c) >= {"budget", "params", "lr_opt", "lr_flags", "batch_opt", "batch_flags"}
                                   for c in cells)
    for c in cells:
        assert c["lr_flags"] == [] and c["lr_opt"] == pytest.approx(2.0 * c["budget"] ** -0.15, rel=0.15)
    # the IsoFLOP fit saw one variant per cell (the rest are not_best), as before
    assert sum(e["reason"].startswith("not_best") for e in out["excluded"]) == 36
    text = run_isoflop("fit", "tune", "--bootstrap", "200", "--plot", str(tmp / "f.png"), workdir=wd).stdout
    assert "SIMULATED" in text and "Hyperparameter laws" in text and "η*(C)" in text
    assert (tmp / "f-hparams.png").stat().st_size > 10_000
    # the same analysis from a CSV with lr and batch columns
    rows = json.loads(run_isoflop("status", "tune", "--json", workdir=wd).stdout)["runs"]
    from isoflop.store.engine import open_engine
    from isoflop.store.results import fit_inputs

    _, frows, _ = fit_inputs(open_engine(f"sqlite:///{wd / 'isoflop.db'}", create=False), "tune")
    csv = tmp / "tune.csv"
    csv.write_text("params,tokens,flops,loss,lr,batch\n" + "".join(
        f"{r['params']},{r['tokens']},{r['flops']},{r['loss']},{r['lr']},{r['batch']}\n" for r in frows))
    assert len(rows) == len(frows)
    from_csv = json.loads(run_isoflop("fit", "--csv", str(csv), "--json", "--bootstrap", "400", workdir=wd).stdout)
    assert from_csv["hparams"]["laws"]["lr"]["exponent"] == pytest.approx(law["exponent"], abs=1e-9)
    assert [b["n_opt"] for b in from_csv["budgets"]] == pytest.approx([b["n_opt"] for b in out["budgets"]])


@pytest.mark.slow
def test_from_sweep_plans_with_the_fitted_law(lr_sweep):
    tmp, wd = lr_sweep
    law = fit_json("tune", wd)["hparams"]["laws"]["lr"]
    spec = write_spec(tmp / "next.yaml", "next", [3e19, 1e20], points=3, lr={"from_sweep": "tune"})
    out = run_isoflop("plan", str(spec), workdir=wd).stdout
    assert "law: lr:" in out and "'tune'" in out
    runs = [json.loads(line) for line in run_isoflop("plan", str(spec), "--json", workdir=wd).stdout.splitlines()]
    for r in runs:
        assert r["lr"] == pytest.approx(law["coefficient"] * r["budget"] ** law["exponent"], rel=1e-4)
    # the stored spec records which law planned it
    from isoflop.store.engine import open_engine
    from isoflop.store.results import fit_inputs

    stored, _, _ = fit_inputs(open_engine(f"sqlite:///{wd / 'isoflop.db'}", create=False), "next")
    rec = stored["lr"]
    assert rec["from_sweep"] == "tune" and rec["power"] == pytest.approx(law["exponent"], rel=1e-5)
    assert rec["fitted_at"] and rec["cells"] == 9 and rec["power_ci"]
    # planning again is a no-op (the recorded law is reused, not refitted)
    assert "nothing changed" in run_isoflop("plan", str(spec), workdir=wd).stdout
    # a sweep without such a law, or without the sweep: one line, exit 2, nothing stored
    bad = write_spec(tmp / "bad.yaml", "bad", [3e19], points=3, lr={"from_sweep": "next"})
    p = run_isoflop("plan", str(bad), workdir=wd, check=False)
    assert p.returncode == 2 and "has no" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run_isoflop("plan", str(write_spec(tmp / "none.yaml", "none", [3e19], points=3, lr={"from_sweep": "nope"})),
                    workdir=wd, check=False)
    assert p.returncode == 2 and "nope" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "no sweep named 'bad'" in run_isoflop("status", "bad", workdir=wd, check=False).stderr


def _both_grids():
    """An lr x batch grid at 3 budgets x 3 sizes whose loss is a bowl in ln η and ln B around
    η*(C) = 0.4·C^-0.1 and B*(C) = 0.3·C^0.33 (both grids centred off the optimum); columns c, n, y, lr, b."""
    rows = []
    for c in (1e17, 1e18, 1e19):
        for n in 0.1 * c ** 0.5 * np.array([0.5, 1.0, 2.0]):
            for lm in MULTS:
                for bm in (0.25, 0.5, 1.0, 2.0, 4.0):
                    eta, b = 0.4 * c ** -0.1 * lm * 1.2, 0.3 * c ** 0.33 * bm * 0.8
                    loss = 3.0 + 0.04 * math.log(eta / (0.4 * c ** -0.1)) ** 2 + 0.02 * math.log(b / (0.3 * c ** 0.33)) ** 2
                    rows.append((c, n, loss, eta, b))
    return np.array(rows).T


def test_batch_law_with_both_grids():
    """With an lr grid and a batch grid, B*(C) comes from the profile over lr (the lowest per batch) and η*(C)
    from the profile over batch; both known exponents are recovered."""
    c, n, y, lr, b = _both_grids()
    h = fit_hparams(c, n, y, lr, b, bootstrap=0)
    assert set(h.laws) == {"lr", "lr_n", "batch", "batch_n"}
    assert h.laws["lr"].exponent == pytest.approx(-0.1, abs=1e-6)
    assert h.laws["batch"].exponent == pytest.approx(0.33, abs=1e-6)
    assert h.laws["batch"].coefficient == pytest.approx(0.3, rel=1e-4)
    assert h.to_json()["laws"]["batch"]["of"] == "C" and h.to_json()["cells"][0]["batch_flags"] == []


@pytest.mark.slow
def test_from_sweep_of_n_uses_the_porian_form(lr_sweep):
    tmp, wd = lr_sweep
    law = fit_json("tune", wd)["hparams"]["laws"]["lr_n"]
    spec = write_spec(tmp / "porian.yaml", "porian", [3e19], points=3, lr={"from_sweep": "tune", "of": "N"},
                      lr_grid=[0.5, 1.0, 2.0])
    runs = [json.loads(line) for line in run_isoflop("plan", str(spec), "--json", workdir=wd).stdout.splitlines()]
    assert len(runs) == 9
    for r in runs:
        assert r["lr"] == pytest.approx(r["lr_mult"] * law["coefficient"] * r["params"] ** law["exponent"], rel=1e-4)


@pytest.mark.slow
def test_design_resolves_from_sweep_like_plan(lr_sweep):
    """`design` of a spec with {from_sweep: NAME}, planned or not: it reads the law from the store (F6)."""
    tmp, wd = lr_sweep
    law_arg = ",".join(f"{k}={v}" for k, v in HOFFMANN.items())
    spec = write_spec(tmp / "d.yaml", "d-next", [3e19, 1e20], points=3, lr={"from_sweep": "tune"})
    for _ in range(2):  # before and after `plan` stores it
        out = json.loads(run_isoflop("design", str(spec), "--law", law_arg, "--noise", "0.01", "--sims", "2",
                                     "--bootstrap", "0", "--no-variants", "--json", workdir=wd).stdout)
        assert out["variants"][0]["runs"] == 6
        run_isoflop("plan", str(spec), workdir=wd)


def test_from_sweep_mistakes_read_as_from_sweep_mistakes(tmp_path):
    """`of: D` names from_sweep's own field; a store that is not there says which sweep it needs (F6, F13)."""
    bad = write_spec(tmp_path / "of.yaml", "of", [3e19], points=3, lr={"from_sweep": "tune", "of": "D"})
    p = run_isoflop("plan", str(bad), workdir=tmp_path / "w", check=False)
    assert p.returncode == 2 and "from_sweep.of must be C or N" in p.stderr and "coef" not in p.stderr
    ok = write_spec(tmp_path / "ok.yaml", "ok", [3e19], points=3, batch={"rule": {"from_sweep": "tune"}})
    (tmp_path / "empty").mkdir()
    p = run_isoflop("plan", str(ok), workdir=tmp_path / "empty", check=False)
    assert p.returncode == 2 and "'tune'" in p.stderr and "--workdir" in p.stderr
    assert "run `isoflop plan SPEC` first" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert list((tmp_path / "empty").iterdir()) == []


def test_hparams_figure_has_a_row_per_axis(tmp_path):
    """Both grids: the figure draws B*(C) under η*(C) (F15), with the budgets in a legend."""
    import matplotlib.image as mpimg

    from isoflop.fit.hparams_render import save_hparams_plot

    c, n, y, lr, b = _both_grids()
    both = save_hparams_plot(fit_hparams(c, n, y, lr, b, bootstrap=0), tmp_path / "both.png")
    one = save_hparams_plot(fit_hparams(c, n, y, lr, None, bootstrap=0), tmp_path / "one.png")
    h_both, h_one = mpimg.imread(both).shape[0], mpimg.imread(one).shape[0]
    assert h_both == 2 * h_one
