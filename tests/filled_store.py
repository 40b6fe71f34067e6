"""A planned sweep whose results are in the store, without training (for the API, export and report
tests): `isoflop plan` of test_cli_fit's 4-budget lr-grid spec, losses from a known law written as
ingestion would (tests/test_cli_fit.finish_runs: one run diverged, lr x0.5 twins lose their cell),
plus the provenance a real run leaves: one attempt row, a result.json in its run folder, and a
logged curve (on the diverged run, so the envelope fit does not see it and `fit --csv` of an export
has exactly what `fit SWEEP` has)."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from isoflop.store.engine import open_engine
from isoflop.store.models import Attempt, Metric, Run, Sweep

from .conftest import run_isoflop
from .test_cli_fit import SPEC, finish_runs

SWEEP = "law"
RESULT = {"torch_version": "2.13.0+cpu", "device": "cpu", "dtype": "float32", "threads": 1,
          "fingerprint": "f00d", "finished_at": "2026-11-30T01:02:03+0000"}


_FILLED: dict[str, tuple[Path, str, str]] = {}


def filled(tmp_path_factory) -> tuple[Path, str, str]:
    """One filled store for every test module of the session (they only read it)."""
    if "store" not in _FILLED:
        _FILLED["store"] = fill(tmp_path_factory.mktemp("filled"))
    return _FILLED["store"]


def fill(tmp: Path) -> tuple[Path, str, str]:
    """(workdir, id of the run with an attempt and a result.json, id of the diverged run with a curve)."""
    workdir = tmp / "work"
    (tmp / "s.yaml").write_text(SPEC)
    run_isoflop("plan", str(tmp / "s.yaml"), workdir=workdir)
    diverged = finish_runs(tmp)
    eng = open_engine(f"sqlite:///{workdir / 'isoflop.db'}", create=False)
    with Session(eng) as s, s.begin():
        sw = s.scalar(select(Sweep))
        done = s.scalar(select(Run).where(Run.state == "completed", Run.lr_mult == 1.0).order_by(Run.budget, Run.point))
        s.add(Attempt(run_pk=done.id, number=1, executor="local", job_id="4242", state="completed", node="n1",
                      exit_code="0", submitted_at=datetime(2026, 11, 30, 1, 0, 0), started_at=datetime(2026, 11, 30, 1, 0, 1),
                      ended_at=datetime(2026, 11, 30, 1, 2, 3)))
        rdir = Path(sw.workdir) / "runs" / SWEEP / done.run_id
        rdir.mkdir(parents=True, exist_ok=True)
        (rdir / "result.json").write_text(json.dumps({"run_id": done.run_id, "val_loss": done.val_loss, **RESULT}))
        pk = s.scalar(select(Run.id).where(Run.run_id == diverged))
        for step in (10, 20, 30):
            s.add(Metric(run_pk=pk, step=step, tokens=step * 1000, flops=step * 6e9, train_loss=5.0 - step / 100,
                         val_loss=None if step < 30 else 4.8, lr=1e-3, tokens_per_s=123.0))
        out = workdir, done.run_id, diverged
    # the WAL checkpointed into the database file now, not when an engine left open here (or by
    # finish_runs) is garbage-collected: that would change the file under a test that checks
    # nothing writes to it
    with eng.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return out


def cli(*args: str, workdir: Path):
    """`isoflop ARGS` in this process (typer's runner: exit code, stdout and stderr apart), for the
    error cases, where a fresh interpreter per case would only add start-up time."""
    from typer.testing import CliRunner

    from isoflop.cli import app

    return CliRunner().invoke(app, list(args), env={"ISOFLOP_WORKDIR": str(workdir), "ISOFLOP_DB": None})


#: the fit options every test of the filled store compares with (a small bootstrap keeps it quick)
FIT_ARGS = ("--bootstrap", "40", "--predict", "1e21", "--predict", "1e22")
PREDICT = [1e21, 1e22]


def cli_json(*args: str, workdir: Path) -> dict:
    """`isoflop ARGS --json` of the filled store, run once per session (a fresh interpreter: the real CLI)."""
    key = " ".join(args)
    if key not in _FILLED:
        _FILLED[key] = run_isoflop(*args, "--json", workdir=workdir).stdout
    return json.loads(_FILLED[key])
