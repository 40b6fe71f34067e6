"""`isoflop plan`, `init`, `spec-schema` end to end, against a real SQLite file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from isoflop import TEMPLATES
from isoflop.store.engine import open_engine
from isoflop.store.models import Attempt, Run

SMALL = """\
name: small
budgets: [3.0e11, 3.0e12]
grid: {points: 4, span: 8, centre: {k: 0.045}}
model: {vocab_size: 256, seq_len: 64, head_dim: 16, aspect_ratio: 32}
flops: exact
params: all
batch: {rule: 4, unit: sequences}
lr: 0.003
"""


def isoflop(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "ISOFLOP_WORKDIR": str(cwd / "work"), "COLUMNS": "200"}
    env.pop("ISOFLOP_DB", None)
    p = subprocess.run([sys.executable, "-m", "isoflop", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def db(tmp: Path):
    return open_engine(f"sqlite:///{tmp / 'work' / 'isoflop.db'}", create=False)


def count_runs(tmp: Path) -> int:
    with Session(db(tmp)) as s:
        return s.scalar(select(func.count()).select_from(Run))


def test_plan_stores_runs_and_is_idempotent(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    p = isoflop("plan", "s.yaml", cwd=tmp_path)
    assert "planned sweep 'small'" in p.stdout and "8 runs over 2 budgets" in p.stdout
    assert count_runs(tmp_path) == 8
    with Session(db(tmp_path)) as s:
        ids = sorted(s.scalars(select(Run.run_id)))
        # WAL mode on the SQLite store
        assert s.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    p = isoflop("plan", "s.yaml", cwd=tmp_path)
    assert "nothing changed" in p.stdout
    with Session(db(tmp_path)) as s:
        assert sorted(s.scalars(select(Run.run_id))) == ids


def test_plan_json_has_the_documented_fields(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    p = isoflop("plan", "s.yaml", "--json", "--dry-run", cwd=tmp_path)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 8
    for key in ("run_id", "budget", "params", "tokens", "flops", "flops_6nd", "flops_exact", "n_layer", "d_model",
                "n_head", "batch_tokens", "lr", "steps", "seed"):
        assert all(key in r for r in rows), key
    assert all(abs(r["flops"] / r["budget"] - 1) <= 0.01 for r in rows)
    assert not (tmp_path / "work" / "isoflop.db").exists(), "--dry-run stores nothing"


def test_changed_spec_is_refused_then_forced_keeping_finished_runs(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    isoflop("plan", "s.yaml", cwd=tmp_path)
    eng = db(tmp_path)
    with Session(eng) as s, s.begin():
        runs = s.scalars(select(Run).order_by(Run.budget, Run.point)).all()
        # one finished run at 3e12 and one attempted (failed) run at 3e11
        done, failed = runs[5], runs[0]
        done.state, done.val_loss = "completed", 2.5
        failed.state = "failed"
        s.add(Attempt(run_pk=failed.id, number=1, executor="local", state="failed"))
        done_id, failed_id = done.run_id, failed.run_id
    (tmp_path / "s.yaml").write_text(SMALL.replace("[3.0e11, 3.0e12]", "[3.0e12, 3.0e13]"))
    p = isoflop("plan", "s.yaml", cwd=tmp_path, check=False)
    assert p.returncode != 0
    assert "already planned with a different spec" in p.stderr and "--force" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert count_runs(tmp_path) == 8  # nothing changed
    p = isoflop("plan", "s.yaml", "--force", cwd=tmp_path)
    assert "4 new, 4 kept" in p.stdout
    with Session(db(tmp_path)) as s:
        kept = s.scalar(select(Run).where(Run.run_id == done_id))
        assert kept.state == "completed" and kept.val_loss == 2.5
        gone = s.scalar(select(Run).where(Run.run_id == failed_id))
        assert gone.state == "superseded"  # attempted: kept with its attempt, out of the sweep
        assert s.scalar(select(func.count()).select_from(Run).where(Run.state != "superseded")) == 8
        assert s.scalar(select(func.count()).select_from(Run)) == 9


def test_init_writes_a_plannable_spec_and_schema_prints(tmp_path):
    isoflop("init", "mine.yaml", cwd=tmp_path)
    text = (tmp_path / "mine.yaml").read_text()
    assert text == (TEMPLATES / "starter.yaml").read_text() and "#" in text
    p = isoflop("init", "mine.yaml", cwd=tmp_path, check=False)
    assert p.returncode != 0 and "exists" in p.stderr
    assert "runs over" in isoflop("plan", "mine.yaml", "--dry-run", cwd=tmp_path).stdout
    isoflop("init", "demo.yaml", "--template", "cpu-demo", cwd=tmp_path)
    assert "15 runs" in isoflop("plan", "demo.yaml", "--dry-run", cwd=tmp_path).stdout
    schema = json.loads(isoflop("spec-schema", cwd=tmp_path).stdout)
    assert "budgets" in schema["properties"] and "name" in schema["required"]


def test_db_url_option_and_schema_version_check(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    other = tmp_path / "elsewhere.db"
    isoflop("--db", f"sqlite:///{other}", "plan", "s.yaml", cwd=tmp_path)
    assert other.exists() and not (tmp_path / "work").exists()
    eng = open_engine(f"sqlite:///{other}")
    with eng.begin() as c:
        c.exec_driver_sql("UPDATE meta SET value='999' WHERE key='schema_version'")
    p = isoflop("--db", str(other), "plan", "s.yaml", cwd=tmp_path, check=False)
    assert p.returncode != 0 and "schema version 999" in p.stderr


def test_cli_import_is_light():
    code = "import sys, isoflop.cli; bad = [m for m in ('torch', 'matplotlib', 'scipy', 'submitit') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    p = subprocess.run([sys.executable, "-m", "isoflop", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "plan" in p.stdout
