"""The store on a real PostgreSQL server (tests/pg_server.py starts a private one): plan, submit
(local pool, the `simulate` trainer: milliseconds a run), status from two processes at once and
fit give what the same commands give on SQLite; schema versioning and one-line errors hold."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .conftest import isoflop_env, run_isoflop
from .pg_server import Server, Unavailable, _free_port

pytest.importorskip("psycopg", reason="pip install 'isoflop[postgres]'")

SPEC = """\
name: sim
budgets: [1.0e17, 1.0e18, 1.0e19]
grid: {points: 3, span: 16}
trainer: {template: simulate, vars: {noise: 0.005}}
"""
LOCAL = "executor: local\nworkers: 2\npack_target_minutes: 0\npeak_flops: 1.0e15\nmfu: 0.3\nrun_overhead_s: 1\n"


@pytest.fixture(scope="module")
def pg():
    try:
        server = Server().start()
    except Unavailable as e:
        pytest.skip(f"no PostgreSQL server here: {e}")  # CI fails on any skip (.ci/run)
    yield server
    server.stop()


def isoflop(db: str | None, *args: str, workdir: Path, check: bool = True, **env: str):
    return run_isoflop(*(["--db", db] if db else []), *args, workdir=workdir, check=check, **env)


def run_sweep(db: str | None, tmp: Path, name: str) -> Path:
    """plan + submit (local) + wait: the sweep's workdir."""
    workdir = tmp / name
    workdir.mkdir()
    spec, prof = tmp / "sim.yaml", tmp / "local.yaml"
    spec.write_text(SPEC)
    prof.write_text(LOCAL)
    isoflop(db, "plan", str(spec), workdir=workdir)
    isoflop(db, "submit", "sim", "--profile", str(prof), workdir=workdir)
    isoflop(db, "status", "sim", "--watch", "--interval", "0.3", workdir=workdir)  # returns when none is active
    return workdir


def status_at_once(db: str, workdir: Path, n: int = 2) -> list[dict]:
    """`status --json` from n processes started together."""
    cmd = [sys.executable, "-m", "isoflop", "--db", db, "status", "sim", "--json"]
    procs = [subprocess.Popen(cmd, cwd=workdir.parent, env=isoflop_env(workdir), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    return [json.loads(out) for out, _ in outs]


def by_run(status: dict) -> dict:
    return {r["run_id"]: (r["state"], r["val_loss"], r["budget"]) for r in status["runs"]}


@pytest.mark.slow  # two sweeps through the local pool, about 40 s on 2 quiet cores
def test_sweep_on_postgres_gives_what_sqlite_gives(pg, tmp_path):
    url = pg.create_db("sweep")
    pg_work = run_sweep(url, tmp_path, "pg")
    lite_work = run_sweep(None, tmp_path, "lite")

    a, b = status_at_once(url, pg_work)
    assert by_run(a) == by_run(b) and a["counts"] == {"completed": 9}, a["counts"]
    lite = json.loads(isoflop(None, "status", "sim", "--json", workdir=lite_work).stdout)
    assert by_run(a) == by_run(lite)

    fit_pg = json.loads(isoflop(url, "fit", "sim", "--json", "--bootstrap", "0", workdir=pg_work).stdout)
    fit_lite = json.loads(isoflop(None, "fit", "sim", "--json", "--bootstrap", "0", workdir=lite_work).stdout)
    assert fit_pg == fit_lite and fit_pg["frontier"]

    again = isoflop(url, "plan", str(tmp_path / "sim.yaml"), workdir=pg_work).stdout
    assert "nothing changed" in again  # the stored spec's digest reads back the same

    # a second workdir is a second team member: the sweep (and its run folders) are where it was planned
    other = tmp_path / "colleague"
    other.mkdir()
    assert by_run(json.loads(isoflop(url, "status", "sim", "--json", workdir=other).stdout)) == by_run(a)


def test_syncs_of_one_sweep_take_turns(pg, tmp_path):
    """On a server two syncs of one sweep would both ingest the same new metrics lines; the
    sweep's row lock makes the second wait for the first, as SQLite's single writer does."""
    from sqlalchemy.orm import Session

    from isoflop.dispatch.sync import sync_active
    from isoflop.store.engine import lock_sweep, open_engine
    from isoflop.store.sweeps import get_sweep

    url = pg.create_db("turns")
    spec = tmp_path / "sim.yaml"
    spec.write_text(SPEC)
    isoflop(url, "plan", str(spec), workdir=tmp_path / "w")
    engine = open_engine(url, create=False)
    done = threading.Event()
    with Session(engine) as s, s.begin():
        lock_sweep(s, get_sweep(s, "sim").id)
        t = threading.Thread(target=lambda: (sync_active(engine, "sim"), done.set()))
        t.start()
        assert not done.wait(1.0)  # blocked on the first transaction's lock
    assert done.wait(10)
    t.join()
    engine.dispose()


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_one_line_errors_and_schema_version(pg, tmp_path, monkeypatch):
    from isoflop.store.engine import StoreError, db_url, open_engine

    def refused(url: str) -> str:
        with pytest.raises(StoreError) as err:
            open_engine(db_url(url), create=False)
        assert "\n" not in str(err.value)
        return str(err.value)

    w = tmp_path / "w"
    w.mkdir()
    down = f"postgresql://isoflop:s3cret@127.0.0.1:{_free_port()}/x"  # nothing listens there
    msg = one_line_error(isoflop(down, "status", "sim", workdir=w, check=False))
    assert "s3cret" not in msg and "***" in msg and "127.0.0.1" in msg  # postgresql:// means psycopg 3
    assert "nodriver" in refused("postgresql+nodriver://h/x")
    url = pg.create_db("versions")
    assert "no isoflop tables" in refused(url)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # how Python spells "not installed"
    assert "isoflop[postgres]" in refused(url)
    monkeypatch.undo()

    spec = tmp_path / "sim.yaml"
    spec.write_text(SPEC)
    isoflop(url, "plan", str(spec), workdir=w)
    pg.sql("versions", "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    assert "schema version 99" in one_line_error(isoflop(url, "plan", str(spec), "--force", workdir=w, check=False))
    assert "schema version 99" in refused(url)
    pg.sql("versions", "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    st = json.loads(isoflop(url, "status", "sim", "--json", workdir=w).stdout)
    assert st["counts"] == {"planned": 9}  # nothing was changed by the refused commands


def test_server_gone_mid_command_is_one_line():
    """A server that stops under an open store (restart, crash) is a StoreError of one line from
    the next statement, not a traceback: the CLI prints it as such."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from isoflop.store.engine import StoreError, open_engine

    try:
        server = Server().start()
    except Unavailable as e:
        pytest.skip(f"no PostgreSQL server here: {e}")
    try:
        engine = open_engine(server.url())
        with Session(engine) as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
        server.stop()
        with pytest.raises(StoreError) as err, Session(engine) as s:
            s.execute(text("SELECT 1"))
        assert str(err.value).startswith(f"store postgresql+psycopg://isoflop@127.0.0.1:{server.port}/postgres: ")
        assert "\n" not in str(err.value)
    finally:
        server.stop()
