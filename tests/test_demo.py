"""`isoflop demo` end to end on a tiny spec: real training on the local pool, fit, plots, and a
second run that reuses every finished run and only refits."""
from __future__ import annotations

import time

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
