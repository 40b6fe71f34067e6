"""Dispatch against a real local Slurm cluster (tests/slurm_cluster.sh: FAKE_GPUS=2, sacct shim).

Tiny runs of the built-in trainer; each test uses fresh folders (tmp_path): job ids restart after
a purge and a reused submitit folder would pick up stale results.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from isoflop.store.models import Attempt, Metric, Run

from .conftest import run_isoflop

pytestmark = pytest.mark.slurm

PROFILE = """\
executor: slurm
partition: debug
gpus_per_run: {gpus}
cpus_per_task: 1
mem_gb: 1
max_time_minutes: {max_time}
min_time_minutes: {min_time}
array_parallelism: 2
pack_target_minutes: {pack}
max_attempts: 3
peak_flops: 2.0e10
mfu: 0.3
run_overhead_s: 4
signal_delay_s: {signal}
setup: ["echo ISOFLOP_GPU=${{CUDA_VISIBLE_DEVICES:-none}}"]
"""


def profile(tmp_path: Path, gpus: int = 0, pack: float = 0.5, max_time: int = 30, min_time: int = 2,
            signal: int = 60) -> str:
    p = tmp_path / "test-slurm.yaml"
    p.write_text(PROFILE.format(gpus=gpus, pack=pack, max_time=max_time, min_time=min_time, signal=signal))
    return str(p)


def status(workdir: Path, name: str = "tiny", **env: str) -> dict:
    return json.loads(run_isoflop("status", name, "--json", workdir=workdir, **env).stdout)


def wait_until(workdir: Path, pred, timeout: float, name: str = "tiny", poll: float = 1.0, **env: str) -> dict:
    t0 = time.time()
    while True:
        st = status(workdir, name, **env)
        if pred(st):
            return st
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s; last status: {json.dumps(st)[:2000]}")
        time.sleep(poll)


def jobs_named(prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%j"], capture_output=True, text=True).stdout
    return [ln.split("|")[0] for ln in out.splitlines() if ln.split("|")[1].startswith(prefix)]


def scancel_named(prefix: str) -> None:
    ids = sorted({j.split("_")[0] for j in jobs_named(prefix)})
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def test_arrays_packing_gpus_complete(slurm_cluster, planned_sweep, tmp_path):
    engine, workdir = planned_sweep(budgets="[3.0e10]", points=3)
    prof = profile(tmp_path, gpus=1)
    dry = run_isoflop("submit", "tiny", "--profile", prof, "--dry-run", workdir=workdir).stdout
    assert "#SBATCH --array=0-1%2" in dry and "--gpus-per-node=1" in dry and "dry run" in dry
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 0  # the dry run stored nothing
    t0 = time.time()
    out = run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir).stdout
    assert "submitted 3 run(s)" in out and time.time() - t0 < 30  # non-blocking
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=150)
    assert st["counts"] == {"completed": 3}, st
    with Session(engine) as s:
        jobs = [j for (j,) in s.execute(select(Attempt.job_id))]
        assert len(jobs) == 3 and len(set(jobs)) == 2  # one packed job of two runs, one of one
        assert all("_" in j for j in jobs)  # array tasks
        assert s.scalar(select(func.count()).where(Run.val_loss.is_(None))) == 0
        assert s.scalar(select(func.count()).select_from(Metric)) > 10
    # the GPU request reached sbatch: Slurm set CUDA_VISIBLE_DEVICES in every job
    logs = list((workdir / "runs" / "tiny" / ".submitit").glob("*/*_log.out"))
    seen = {ln.strip() for p in logs for ln in p.read_text().splitlines() if ln.startswith("ISOFLOP_GPU=")}
    assert seen and seen <= {"ISOFLOP_GPU=0", "ISOFLOP_GPU=1"}, seen
    # nothing left to submit
    assert "nothing to submit" in run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir).stdout


def test_scancel_then_retry_squeue_only(slurm_cluster, planned_sweep, tmp_path):
    """Without sacct (forced): a scancelled job's run is cancelled/lost with its last step; retry resumes it."""
    engine, workdir = planned_sweep(budgets="[1.0e11]", points=1)
    prof = profile(tmp_path)
    env = {"ISOFLOP_SLURM_SACCT": "0"}
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir, **env)
    st = wait_until(workdir, lambda s: s["runs"][0]["state"] == "running" and (s["runs"][0]["step"] or 0) >= 20,
                    timeout=90, poll=0.5, **env)
    job = st["runs"][0]["job_id"]
    subprocess.run(["scancel", job], check=True)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=60, **env)
    run = st["runs"][0]
    assert st["scheduler"] == "squeue"
    assert run["state"] in ("cancelled", "lost") and "step" in run["reason"], run
    run_isoflop("retry", "tiny", "--cancelled", "--lost", "--profile", prof, workdir=workdir, **env)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=120, **env)
    assert st["runs"][0]["state"] == "completed" and st["runs"][0]["attempt"] == 2, st
    result = json.loads((workdir / "runs" / "tiny" / run["run_id"] / "result.json").read_text())
    assert result["resumed_from_step"], result  # the SIGTERM checkpoint was used


def test_requeue_resumes_to_same_loss(slurm_cluster, planned_sweep, tmp_path):
    engine, workdir = planned_sweep(budgets="[1.0e11]", points=1)
    prof = profile(tmp_path)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    with Session(engine) as s:
        run_id = s.scalar(select(Run.run_id))
    rdir = workdir / "runs" / "tiny" / run_id
    # the same run uninterrupted, in another folder, meanwhile
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "run.json").write_text((rdir / "run.json").read_text())
    ref_p = subprocess.Popen([sys.executable, "-m", "isoflop.train", str(ref)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    st = wait_until(workdir, lambda s: s["runs"][0]["state"] == "running" and (s["runs"][0]["step"] or 0) >= 20,
                    timeout=90, poll=0.5)
    subprocess.run(["scontrol", "requeue", st["runs"][0]["job_id"]], check=True)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=180, poll=2)
    assert ref_p.wait(timeout=120) == 0
    assert st["runs"][0]["state"] == "completed", st
    result = json.loads((rdir / "result.json").read_text())
    expected = json.loads((ref / "result.json").read_text())
    assert result["resumed_from_step"], result
    assert result["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-6, abs=1e-6)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 1  # a requeue is not a new attempt


@pytest.mark.parametrize("point", ["intent", "sbatch"])
def test_killed_submit_makes_no_duplicate_jobs(slurm_cluster, planned_sweep, tmp_path, point):
    name = f"kill-{point}-{uuid.uuid4().hex[:6]}"  # ended jobs stay in squeue for MinJobAge: a fresh name
    engine, workdir = planned_sweep(name=name, budgets="[3.0e10]", points=3)
    prof = profile(tmp_path, pack=0)  # one job per run
    try:
        p = run_isoflop("submit", name, "--profile", prof, workdir=workdir, check=False,
                        ISOFLOP_TEST_DIE_AFTER=point)
        assert p.returncode == -9, p.stderr
        with Session(engine) as s:
            assert {st for (st,) in s.execute(select(Attempt.state))} == {"submitting"}
        before = jobs_named(f"isoflop-{name}-")
        assert len(before) == (3 if point == "sbatch" else 0)
        out = run_isoflop("submit", name, "--profile", prof, workdir=workdir).stdout
        after = jobs_named(f"isoflop-{name}-")
        assert len(after) == 3, (before, after, out)  # exactly one job per run
        with Session(engine) as s:
            states = sorted(st for (st,) in s.execute(select(Attempt.state)))
            live = [j for (j,) in s.execute(select(Attempt.job_id).where(Attempt.job_id.is_not(None)))]
        if point == "sbatch":
            assert "nothing to submit" in out and sorted(live) == sorted(before)  # adopted
            assert all(st in ("queued", "running", "completed") for st in states)
        else:
            assert states.count("abandoned") == 3 and len(live) == 3
    finally:
        scancel_named(f"isoflop-{name}-")


def test_submit_killed_before_the_pickle_submits_again(slurm_cluster, planned_sweep, tmp_path):
    """A submit killed after sbatch made the jobs but before submitit wrote their pickles: such a
    job waits for its pickle and dies, so it used to be adopted and every run lost an attempt.
    Now it is cancelled, the intent abandoned and the run submitted again; each trains once."""
    name = f"kill-pickle-{uuid.uuid4().hex[:6]}"  # ended jobs stay in squeue for MinJobAge: a fresh name
    engine, workdir = planned_sweep(name=name, budgets="[3.0e10]", points=3)
    prof = profile(tmp_path, pack=0)  # one job per run
    try:
        p = run_isoflop("submit", name, "--profile", prof, workdir=workdir, check=False,
                        ISOFLOP_TEST_DIE_AFTER="job-created")
        assert p.returncode == -9, p.stderr
        assert len(jobs_named(f"isoflop-{name}-")) == 3
        assert not list((workdir / "runs" / name / ".submitit").glob("*/*_submitted.pkl"))
        run_isoflop("submit", name, "--profile", prof, workdir=workdir)
        with Session(engine) as s:
            states = sorted(st for (st,) in s.execute(select(Attempt.state)))
        assert states.count("abandoned") == 3 and len(states) == 6, states
        st = wait_until(workdir, lambda s: s["active"] == 0, timeout=240, name=name, poll=2)
        assert st["counts"] == {"completed": 3}, st
        assert all(r["attempt"] == 2 for r in st["runs"]), st
        with Session(engine) as s:
            assert sorted(st for (st,) in s.execute(select(Attempt.state))) == ["abandoned"] * 3 + ["completed"] * 3
    finally:
        scancel_named(f"isoflop-{name}-")


@pytest.mark.slow
def test_time_limit_requeues_and_resumes(slurm_cluster, planned_sweep, tmp_path):
    """A run longer than its job's time limit: USR2 -> checkpoint -> requeue -> resume -> completed."""
    engine, workdir = planned_sweep(budgets="[1.0e12]", points=1)
    prof = profile(tmp_path, max_time=1, min_time=1, signal=30, pack=0)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=330, poll=3)
    assert st["runs"][0]["state"] == "completed", st
    rdir = workdir / "runs" / "tiny" / st["runs"][0]["run_id"]
    result = json.loads((rdir / "result.json").read_text())
    assert result["resumed_from_step"], result


# ------------------------------------------------------------------ faults on a real cluster


def _trainer_pids(rdir: Path) -> list[int]:
    tag = f"\0ISOFLOP_RUN_DIR={rdir}\0".encode()
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"-m\0isoflop.train\0" in (d / "cmdline").read_bytes() \
                    and tag in b"\0" + (d / "environ").read_bytes() + b"\0":
                out.append(int(d.name))
        except OSError:
            pass
    return out


def _one_run_running(tmp_path: Path, planned_sweep, step: int = 20) -> tuple:
    engine, workdir = planned_sweep(budgets="[1.0e11]", points=1, ckpt=1)  # checkpoints every second
    prof = profile(tmp_path)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    st = wait_until(workdir, lambda s: s["runs"][0]["state"] == "running" and (s["runs"][0]["step"] or 0) >= step,
                    timeout=120, poll=0.5)
    rdir = workdir / "runs" / "tiny" / st["runs"][0]["run_id"]
    # checkpoints are timed (every second): on a fast machine step 20 can come before the first
    t0 = time.time()
    while not (rdir / "checkpoint.pt").exists() and time.time() - t0 < 60:
        time.sleep(0.2)
    assert (rdir / "checkpoint.pt").exists(), "no checkpoint within 60 s"
    return engine, workdir, prof, st["runs"][0], rdir


def _trained_once(engine, rdir: Path) -> None:
    """One result, a resumed one, and no attempt or result lost on the way."""
    result = json.loads((rdir / "result.json").read_text())
    assert result["resumed_from_step"], result
    assert not list(rdir.glob("result.rejected-*"))
    t0 = time.time()  # a finished trainer writes its result, then exits: an orphan would train on
    while _trainer_pids(rdir) and time.time() - t0 < 30:
        time.sleep(0.5)
    assert not _trainer_pids(rdir)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run).where(Run.state == "completed")) == 1


def test_trainer_killed_then_retried_resumes(slurm_cluster, planned_sweep, tmp_path):
    engine, workdir, prof, run, rdir = _one_run_running(tmp_path, planned_sweep)
    pids = _trainer_pids(rdir)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=60)
    assert st["runs"][0]["state"] == "failed" and "SIGKILL" in st["runs"][0]["reason"], st
    run_isoflop("retry", "tiny", "--failed", "--profile", prof, workdir=workdir)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=180, poll=2)
    assert st["runs"][0]["state"] == "completed" and st["runs"][0]["attempt"] == 2, st
    _trained_once(engine, rdir)


def test_node_down_and_back(slurm_cluster, planned_sweep, tmp_path):
    """The node fails under a running job: Slurm requeues it, and once the node is back the run
    resumes (or, if the job is gone, a retry resumes it); either way it trains once."""
    engine, workdir, prof, run, rdir = _one_run_running(tmp_path, planned_sweep)
    node = subprocess.run(["squeue", "-h", "-j", run["job_id"].split("_")[0], "-o", "%N"],
                          capture_output=True, text=True).stdout.split()[0]
    try:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=isoflop-test"], check=True)
        wait_until(workdir, lambda s: s["runs"][0]["state"] != "running", timeout=60)
    finally:  # (ReturnToService=2 may have brought it back already: then scontrol refuses, harmlessly)
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=240, poll=2)
    if st["runs"][0]["state"] != "completed":
        assert st["runs"][0]["state"] in ("lost", "cancelled"), st
        run_isoflop("retry", "tiny", "--lost", "--cancelled", "--profile", prof, workdir=workdir)
        st = wait_until(workdir, lambda s: s["active"] == 0, timeout=240, poll=2)
    assert st["runs"][0]["state"] == "completed", st
    _trained_once(engine, rdir)


def test_status_while_slurmctld_is_stopped(slurm_cluster, planned_sweep, tmp_path):
    """With the controller down, status warns and changes nothing (the run stays running); when it
    is back the run completes."""
    engine, workdir, prof, run, rdir = _one_run_running(tmp_path, planned_sweep, step=5)
    pid = int(Path("/run/slurmctld.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        t0 = time.time()
        while subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("is UP"):
            assert time.time() - t0 < 30
            time.sleep(0.5)
        p = run_isoflop("status", "tiny", "--json", workdir=workdir, timeout=120)
        st = json.loads(p.stdout)
        assert st["runs"][0]["state"] in ("running", "completed"), st  # never lost for a silent scheduler
        assert st["runs"][0]["state"] == "completed" or any("scheduler not asked" in w for w in st["warnings"]), st
    finally:
        subprocess.run(["slurmctld"], check=True)
    subprocess.run(["sh", "-c", "for i in $(seq 60); do scontrol ping | grep -q 'is UP' && exit 0; sleep 0.5; done; exit 1"],
                   check=True)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=180, poll=2)
    assert st["runs"][0]["state"] == "completed" and st["runs"][0]["attempt"] == 1, st
