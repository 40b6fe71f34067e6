"""`isoflop demo` end to end on a tiny spec: real training on the local pool, fit, plots, and a
second run that reuses every finished run and only refits."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from isoflop.store.engine import open_engine
from isoflop.store.models import Attempt, Run

from .test_cli_plan import isoflop

TINY = """\
name: tiny-demo
budgets: [3.0e10, 6.0e10]
grid: {points: 3, span: 4, centre: {k: 0.09}}
model: {vocab_size: 256, seq_len: 64, head_dim: 16, aspect_ratio: 32}
flops: exact
params: all
batch: {rule: 4, unit: sequences}
lr: 0.01
trainer: {device: cpu, threads: 1, eval_batches: 2, log_every: 50}
"""


def demo(tmp_path, *extra):
    return isoflop("demo", "--spec", str(tmp_path / "tiny.yaml"), "--workdir", str(tmp_path / "w"),
                   "--bootstrap", "50", *extra, cwd=tmp_path, check=False)


def test_demo_runs_fits_plots_then_reuses(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    p = demo(tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "running 6 run(s)" in p.stdout
    assert "6 completed" in p.stdout and "Budgets" in p.stdout
    for suffix in ("isoflops", "frontier"):
        assert (tmp_path / "w" / f"tiny-demo-{suffix}.png").stat().st_size > 1000
    eng = open_engine(f"sqlite:///{tmp_path / 'w' / 'isoflop.db'}", create=False)
    with Session(eng) as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 6
        losses = [r.val_loss for r in s.scalars(select(Run))]
    assert all(1.0 < v < 5.55 for v in losses), losses  # trained: below ln(256)
    t = time.time()
    p = demo(tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "reusing" in p.stdout and "Budgets" in p.stdout
    assert time.time() - t < 30
    with Session(eng) as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 6  # nothing trained again
        assert sorted(r.val_loss for r in s.scalars(select(Run))) == sorted(losses)


def test_demo_grids_are_one_family_of_growing_width():
    """The shipped demo specs plan one-layer models whose width grows with N within each budget: a grid
    that mixed 1-3 layers (picked by N alone) made the 3e11 valley jagged (1.93, 1.89, 1.74, 2.00, 2.18)."""
    from isoflop import TEMPLATES
    from isoflop.plan.grid import plan
    from isoflop.spec import load_spec

    for name in ("cpu-demo", "cpu-demo-quick"):
        runs = plan(load_spec(TEMPLATES / f"{name}.yaml"))
        assert {r.n_layer for r in runs} == {1}
        for b in {r.budget for r in runs}:
            rs = sorted((r for r in runs if r.budget == b), key=lambda r: r.point)
            assert len(rs) == 5 and all(x.d_model < y.d_model and x.params < y.params for x, y in zip(rs, rs[1:]))


@pytest.mark.slow
def test_demo_of_a_spec_with_two_optimizers_runs_both_and_compares_them(tmp_path):
    # simulated losses (the same law for both settings): the demo's path, not the optimizers, is under test
    from .simulated import write_spec

    write_spec(tmp_path / "two.yaml", "two", [1e17, 1e18], points=3, noise=0.002,
               optimizer=[{"name": "adamw"}, {"name": "muon", "muon_lr_mult": 2.0}])
    p = isoflop("demo", "--spec", "two.yaml", "--workdir", "w", "--bootstrap", "50", cwd=tmp_path, check=False)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "sweep 'two-adamw'" in p.stdout and "sweep 'two-muon'" in p.stdout
    assert "two-muon against two-adamw" in p.stdout and "both ran" in p.stdout and "verdict:" in p.stdout
    assert (tmp_path / "w" / "two-adamw-compare.png").stat().st_size > 1000
