"""`isoflop status` against REAL Slurm accounting (MariaDB + slurmdbd), not the sacct shim.

The module fixture restarts the local cluster with WITH_ACCOUNTING=1 (apt installs slurmdbd and
mariadb-server the first time), SACCT_SHIM=0 (the shim at /usr/local/bin/sacct is removed, so
`sacct` is Slurm's own binary) and MIN_JOB_AGE=5 (ended jobs leave squeue after a few seconds, so
only accounting still knows them: that is when sync asks sacct). At teardown it restarts the
cluster with the suite's defaults (conftest.SLURM_DEFAULTS), so the other Slurm tests, in any
order, find the configuration they expect.

The tests never call `isoflop status` until their jobs have left squeue: the first sync then has
to get the jobs' end from sacct ("squeue+sacct"). Real sacct reports a scancel as
"CANCELLED by <uid>"; squeue and the shim say plain "CANCELLED", so the reason stored for the run
shows where its state came from.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from isoflop.store.models import Attempt, Metric, Run

from .conftest import SLURM_DEFAULTS, _unavailable, run_isoflop, start_slurm_cluster
from .test_slurm_dispatch import profile, status, wait_until

pytestmark = pytest.mark.slurm

MIN_JOB_AGE = 5
ACCOUNTING = {"WITH_ACCOUNTING": "1", "SACCT_SHIM": "0", "MIN_JOB_AGE": str(MIN_JOB_AGE)}
SHIM_MARK = "Minimal `sacct` stand-in"


def _restore() -> None:
    ok, why = start_slurm_cluster("the local Slurm cluster (restoring the suite's defaults)")
    assert ok, f"could not restore the Slurm configuration {SLURM_DEFAULTS}: {why}"


@pytest.fixture(scope="module")
def slurm_accounting():
    """The local cluster with real accounting for this module; the suite's defaults afterwards."""
    t0 = time.time()
    ok, why = start_slurm_cluster("the local Slurm cluster with accounting (MariaDB + slurmdbd)", **ACCOUNTING)
    if not ok:
        start_slurm_cluster()  # best effort: leave the suite's configuration behind
        _unavailable(why)
    try:
        sacct = shutil.which("sacct")
        assert sacct is not None, "no sacct on PATH"
        assert SHIM_MARK not in Path(sacct).read_text(errors="replace"), f"{sacct} is the sacct shim"
        r = subprocess.run([sacct, "-n", "-P", "-X", "-j", "1", "-o", "JobID"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, f"real sacct does not answer: {r.stderr.strip()}"
        print(f"[accounting] cluster with slurmdbd ready in {time.time() - t0:.1f} s ({sacct})")
        yield {"sacct": sacct}
    finally:
        t1 = time.time()
        _restore()
        print(f"[accounting] default configuration restored in {time.time() - t1:.1f} s")


def squeue_ids() -> set[str]:
    r = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def wait_gone_from_squeue(job_ids: list[str], timeout: float) -> None:
    """Until slurmctld has purged the jobs (MinJobAge): from then on only sacct knows them."""
    bases = {j.split("_")[0] for j in job_ids}
    t0 = time.time()
    while True:
        left = {i for i in squeue_ids() if i.split("_")[0] in bases}
        if not left:
            return
        if time.time() - t0 > timeout:
            raise AssertionError(f"jobs {sorted(left)} still in squeue after {timeout:.0f} s")
        time.sleep(1)


def sacct_state(sacct: str, job_id: str) -> str:
    r = subprocess.run([sacct, "-P", "-n", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def wait_sacct_state(sacct: str, job_id: str, prefix: str, timeout: float = 30) -> str:
    """sacct lags slurmctld by a second or two (FINDINGS.md 6.12): poll."""
    t0 = time.time()
    while True:
        st = sacct_state(sacct, job_id)
        if st.startswith(prefix) or time.time() - t0 > timeout:
            return st
        time.sleep(1)


def test_sweep_completes_status_from_real_sacct(slurm_accounting, planned_sweep, tmp_path):
    sacct = slurm_accounting["sacct"]
    engine, workdir = planned_sweep(budgets="[2.0e10, 3.0e10]", points=2)
    out = run_isoflop("submit", "tiny", "--profile", profile(tmp_path), workdir=workdir).stdout
    assert "submitted 4 run(s)" in out, out
    with Session(engine) as s:
        jobs = sorted({j for (j,) in s.execute(select(Attempt.job_id))})
    assert jobs and all(jobs), jobs
    wait_gone_from_squeue(jobs, timeout=150)
    for j in jobs:
        assert wait_sacct_state(sacct, j, "COMPLETED") == "COMPLETED", (j, sacct_state(sacct, j))
    st = status(workdir)  # the first sync: the jobs are only in accounting now
    assert st["scheduler"] == "squeue+sacct", st
    assert st["counts"] == {"completed": 4} and st["active"] == 0, st
    with Session(engine) as s:
        assert {a for (a,) in s.execute(select(Attempt.state))} == {"completed"}
        assert s.scalar(select(func.count()).where(Run.val_loss.is_(None))) == 0
        assert s.scalar(select(func.count()).select_from(Metric)) > 10
    for r in st["runs"]:
        assert (workdir / "runs" / "tiny" / r["run_id"] / "result.json").exists()


def test_scancel_ends_cancelled_from_real_sacct(slurm_accounting, planned_sweep, tmp_path):
    sacct = slurm_accounting["sacct"]
    engine, workdir = planned_sweep(name="acct-cancel", budgets="[1.0e11]", points=1)
    run_isoflop("submit", "acct-cancel", "--profile", profile(tmp_path), workdir=workdir)
    st = wait_until(workdir, lambda s: s["runs"][0]["state"] == "running" and (s["runs"][0]["step"] or 0) >= 5,
                    timeout=90, name="acct-cancel", poll=0.5)
    assert st["scheduler"] == "squeue", st  # alive: squeue answers, sacct is not needed
    job = st["runs"][0]["job_id"]
    subprocess.run(["scancel", job], check=True)
    wait_gone_from_squeue([job], timeout=90)
    acct_state = wait_sacct_state(sacct, job, "CANCELLED")
    assert acct_state.startswith("CANCELLED by "), acct_state  # real sacct's wording
    st = status(workdir, "acct-cancel")
    assert st["scheduler"] == "squeue+sacct", st
    run = st["runs"][0]
    assert run["state"] == "cancelled" and st["active"] == 0, run
    assert f"job {job} was cancelled (CANCELLED by " in run["reason"], run  # the state came from sacct
    with Session(engine) as s:
        assert [a for (a,) in s.execute(select(Attempt.state))] == ["cancelled"]
        assert s.scalar(select(Run.state)) == "cancelled"
