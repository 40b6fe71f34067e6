"""Dispatch without Slurm: profiles, packing, ingestion, the local executor, crash safety, retry."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from isoflop.dispatch.profiles import ProfileError, list_profiles, load_profile, parse_profile
from isoflop.dispatch.submit import pack
from isoflop.store.ingest import read_metrics
from isoflop.store.models import Attempt, Metric, Run

from .conftest import isoflop_env, run_isoflop, tiny_spec

LOCAL = """\
executor: local
workers: 2
pack_target_minutes: 0
peak_flops: 2.0e10
mfu: 0.3
run_overhead_s: 4
"""


def local_profile(tmp_path: Path, extra: str = "") -> str:
    p = tmp_path / "local-test.yaml"
    p.write_text(LOCAL + extra)
    return str(p)


def status(workdir: Path, name: str = "tiny") -> dict:
    return json.loads(run_isoflop("status", name, "--json", workdir=workdir).stdout)


def wait_done(workdir: Path, timeout: float = 120, name: str = "tiny") -> dict:
    t0 = time.time()
    while True:
        st = status(workdir, name)
        if st["active"] == 0:
            return st
        assert time.time() - t0 < timeout, st
        time.sleep(1)


# ------------------------------------------------------------------ profiles


def test_shipped_profiles_load_or_ask_for_values():
    found = {(p.name if not isinstance(p, ProfileError) else str(p)) for p in list_profiles()}
    for name in ("local", "slurm-gpu", "local-slurm"):
        assert name in found
        load_profile(name)
    for name in ("juwels-booster", "jureca-dc"):  # account must be filled in
        with pytest.raises(ProfileError, match="account is 'FILL_ME': fill in"):
            load_profile(name)


def test_profile_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("executor: slurm\ngpus_per_run: -1\n")
    with pytest.raises(ProfileError, match=r"bad.yaml: gpus_per_run: ") as e:
        load_profile(str(bad))
    assert "\n" not in str(e.value)
    bad.write_text("executor: pbs\n")
    with pytest.raises(ProfileError, match="executor"):
        load_profile(str(bad))
    bad.write_text("exector: local\n")
    with pytest.raises(ProfileError, match="exector: unknown key"):
        load_profile(str(bad))
    with pytest.raises(ProfileError, match="no cluster profile 'nope'"):
        load_profile("nope")
    p = run_isoflop("submit", "x", "--profile", str(bad), workdir=tmp_path / "w", check=False)
    assert p.returncode == 2 and "unknown key" in p.stderr


def test_time_request_has_margin_floor_and_cap():
    p = parse_profile({"executor": "slurm", "peak_flops": 1e12, "mfu": 0.5, "time_margin": 2.0, "run_overhead_s": 0,
                       "min_time_minutes": 5, "max_time_minutes": 60}, name="t")
    assert p.run_seconds(3e14) == pytest.approx(1200)  # 3e14 / 5e11 * 2
    assert p.job_minutes(1200) == 20
    assert p.job_minutes(10) == 5
    assert p.job_minutes(1e6) == 60


def test_pack_balances_and_never_starves_slots():
    p = parse_profile({"executor": "slurm", "pack_target_minutes": 1, "array_parallelism": 2}, name="t")
    est = {f"r{i}": 5.0 for i in range(15)} | {"big": 100.0}
    jobs = pack(est, p)
    assert [j.run_ids for j in jobs if "big" in j.run_ids] == [("big",)]
    small = [j for j in jobs if "big" not in j.run_ids]
    assert len(small) == 2  # 75 s of short runs: 2 jobs (the slots), not 1 or 3
    assert sorted(r for j in small for r in j.run_ids) == sorted(f"r{i}" for i in range(15))
    assert abs(small[0].seconds - small[1].seconds) <= 5
    p0 = parse_profile({"executor": "slurm", "pack_target_minutes": 0}, name="t")
    assert len(pack(est, p0)) == 16


# ------------------------------------------------------------------ ingestion


def test_read_metrics_is_incremental(tmp_path):
    m = tmp_path / "metrics.jsonl"
    m.write_text('{"step": 10, "train_loss": 3.0}\n{"step": 20, "train_loss": 2.5}\n{"step": 30, "tr')
    recs, off, reset = read_metrics(m, 0)
    assert [r["step"] for r in recs] == [10, 20] and not reset
    recs2, off2, _ = read_metrics(m, off)
    assert recs2 == [] and off2 == off  # the partial line waits
    with open(m, "a") as f:
        f.write('ain_loss": NaN}\n')
    recs3, off3, _ = read_metrics(m, off)
    assert [r["step"] for r in recs3] == [30] and off3 == m.stat().st_size
    m.write_text('{"step": 1}\n')  # replaced by a shorter file
    recs4, _, reset = read_metrics(m, off3)
    assert reset and [r["step"] for r in recs4] == [1]


# ------------------------------------------------------------------ local executor, end to end


def test_local_submit_returns_and_runs_complete(planned_sweep, tmp_path):
    engine, workdir = planned_sweep(budgets="[3.0e10]", points=3)
    prof = local_profile(tmp_path)
    dry = run_isoflop("submit", "tiny", "--profile", prof, "--dry-run", workdir=workdir).stdout
    assert "would submit 3 run(s)" in dry
    t0 = time.time()
    out = run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir).stdout
    assert "submitted 3 run(s)" in out
    assert time.time() - t0 < 15  # the CLI returned; the jobs go on in the background
    st = wait_done(workdir)
    assert st["counts"] == {"completed": 3}, st
    assert all(r["val_loss"] and r["progress"] == 1.0 for r in st["runs"])
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Metric)) > 10
        assert {st for (st,) in s.execute(select(Attempt.state))} == {"completed"}
    rdir = workdir / "runs" / "tiny" / st["runs"][0]["run_id"]
    rj = json.loads((rdir / "run.json").read_text())
    assert rj["attempt"] == 1 and rj["lr_scale"] == 1.0 and rj["planned"]["flops_exact"] > 0
    human = run_isoflop("status", "tiny", workdir=workdir).stdout
    assert "3 completed" in human


@pytest.mark.parametrize("point", ["intent", "sbatch"])
def test_local_killed_submit_is_settled(planned_sweep, tmp_path, point):
    engine, workdir = planned_sweep(budgets="[3.0e10]", points=3)
    prof = local_profile(tmp_path)
    p = run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir, check=False, ISOFLOP_TEST_DIE_AFTER=point)
    assert p.returncode == -9
    out = run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir).stdout
    jobs = list((workdir / "local" / "jobs").glob("*.json"))
    assert len(jobs) == 3, (out, jobs)  # one job per run, never two
    with Session(engine) as s:
        states = sorted(a for (a,) in s.execute(select(Attempt.state)))
    assert len(states) - states.count("abandoned") == 3
    assert states.count("abandoned") == (3 if point == "intent" else 0)
    run_isoflop("cancel", "tiny", workdir=workdir)
    # the jobs are queued in the pool by now, so tiny runs may finish before the cancel reaches them
    counts = status(workdir)["counts"]
    assert set(counts) <= {"cancelled", "completed"} and sum(counts.values()) == 3, counts


def test_cancel_then_retry_local(planned_sweep, tmp_path):
    engine, workdir = planned_sweep(budgets="[1.0e11]", points=1)
    prof = local_profile(tmp_path)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    t0 = time.time()
    while True:
        st = status(workdir)
        if st["runs"][0]["state"] == "running" and (st["runs"][0]["step"] or 0) >= 20:
            break
        assert time.time() - t0 < 60, st
        time.sleep(0.5)
    out = run_isoflop("cancel", "tiny", workdir=workdir).stdout
    assert "cancelled 1 run(s)" in out
    assert status(workdir)["runs"][0]["state"] == "cancelled"
    assert "nothing to submit" in run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir).stdout
    run_isoflop("retry", "tiny", "--cancelled", "--profile", prof, workdir=workdir)
    st = wait_done(workdir)
    assert st["runs"][0]["state"] == "completed" and st["runs"][0]["attempt"] == 2, st


def test_diverged_run_retried_with_smaller_lr(planned_sweep, tmp_path):
    engine, workdir = planned_sweep(budgets="[3.0e10]", points=1)
    with Session(engine) as s, s.begin():  # an absurd learning rate: the run diverges
        r = s.scalar(select(Run))
        r.definition = {**r.definition, "lr": 300.0}
        run_id = r.run_id
    prof = local_profile(tmp_path)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    st = wait_done(workdir)
    run = st["runs"][0]
    if run["state"] != "diverged":
        pytest.skip(f"the trainer did not diverge at lr 300 ({run['state']})")
    assert "diverged at step" in run["reason"]
    rdir = workdir / "runs" / "tiny" / run_id
    run_isoflop("retry", "tiny", "--diverged", "--lr-scale", "0.5", workdir=workdir)
    assert (rdir / "attempt-1" / "result.json").exists() and not (rdir / "result.json").exists()
    with Session(engine) as s:
        r = s.scalar(select(Run))
        assert r.state == "planned" and r.lr_scale == 0.5 and "lr_scale 0.5" in r.reason
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    rj = json.loads((rdir / "run.json").read_text())
    assert rj["lr_scale"] == 0.5 and rj["attempt"] == 2
    with Session(engine) as s:
        a = s.scalar(select(Attempt).where(Attempt.number == 2))
        assert a.lr_scale == 0.5 and "lr_scale 0.5" in a.reason
    wait_done(workdir)


def test_attempt_cap_fails_the_run(planned_sweep, tmp_path):
    engine, workdir = planned_sweep(budgets="[3.0e10]", points=1)
    with Session(engine) as s, s.begin():  # a run.json the trainer rejects: every attempt fails
        r = s.scalar(select(Run))
        r.definition = {**r.definition, "steps": -5}
    prof = local_profile(tmp_path, "max_attempts: 2\n")
    for _ in range(2):
        run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
        st = wait_done(workdir, timeout=60)
        assert st["runs"][0]["state"] == "failed", st
        assert st["runs"][0].get("log_tail"), st
    out = run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir).stdout
    assert "used up max_attempts" in out
    st = status(workdir)
    assert st["runs"][0]["state"] == "failed" and st["runs"][0]["reason"].startswith("gave up after 2")


# ------------------------------------------------------------------ killed processes (local)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _procs(pred) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if pred(d):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def trainers_in(rdir: Path) -> list[int]:
    """Live processes whose environment names this run folder (a command and its children)."""
    tag = f"\0ISOFLOP_RUN_DIR={os.path.abspath(rdir)}\0".encode()
    return _procs(lambda d: tag in b"\0" + (d / "environ").read_bytes() + b"\0")


def no_trainer_in(rdir: Path, timeout: float) -> bool:
    t0 = time.time()
    while trainers_in(rdir) and time.time() - t0 < timeout:
        time.sleep(0.2)
    return not trainers_in(rdir)


def pools_of(workdir: Path) -> list[int]:
    return _procs(lambda d: b"isoflop.dispatch.local" in (d / "cmdline").read_bytes()
                  and str(workdir).encode() in (d / "cmdline").read_bytes())


def wait_running(workdir: Path, step: int, timeout: float = 90) -> dict:
    t0 = time.time()
    while True:
        st = status(workdir)
        if st["runs"][0]["state"] == "running" and (st["runs"][0]["step"] or 0) >= step:
            return st
        assert time.time() - t0 < timeout, st
        time.sleep(0.5)


@linux_only
def test_killed_local_job_takes_its_trainer(planned_sweep, tmp_path):
    """kill -9 of a local job process used to leave its trainer running (parent 1); a retry then
    put a second trainer on the same folder. Now the trainer dies with its job."""
    engine, workdir = planned_sweep(budgets="[1.0e11]", points=1)
    prof = local_profile(tmp_path)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    run = wait_running(workdir, 5)["runs"][0]
    rdir = workdir / "runs" / "tiny" / run["run_id"]
    assert trainers_in(rdir)
    job = json.loads((workdir / "local" / "jobs" / f"{run['job_id']}.state").read_text())
    os.kill(job["pid"], signal.SIGKILL)
    assert no_trainer_in(rdir, 5), "the trainer outlived its job"  # the run has far more to go
    st = wait_done(workdir)
    assert st["runs"][0]["state"] == "lost", st
    run_isoflop("retry", "tiny", "--lost", "--profile", prof, workdir=workdir)
    st = wait_done(workdir, timeout=180)
    assert st["runs"][0]["state"] == "completed" and st["runs"][0]["attempt"] == 2, st
    assert no_trainer_in(rdir, 30)  # a finished trainer exits soon after its result


@linux_only
def test_killed_pool_is_started_again(planned_sweep, tmp_path):
    """A killed local pool used to leave its waiting runs queued for ever (and `submit` said
    nothing to submit). The next status starts a pool again; every run trains exactly once."""
    engine, workdir = planned_sweep(budgets="[3.0e10]", points=3)
    prof = local_profile(tmp_path, "workers: 1\n")  # the later key wins: one job at a time
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    jobs = workdir / "local" / "jobs"
    t0 = time.time()
    while not list(jobs.glob("*.state")):
        assert time.time() - t0 < 30
        time.sleep(0.1)
    for pid in pools_of(workdir):
        os.kill(pid, signal.SIGKILL)
    st = wait_done(workdir, timeout=240)
    assert st["counts"] == {"completed": 3}, st
    with Session(engine) as s:
        assert sorted(a for (a,) in s.execute(select(Attempt.state))) == ["completed"] * 3
    assert len(list(jobs.glob("*.json"))) == 3  # no job was made twice


@linux_only
def test_cancel_superseded_stops_their_jobs(planned_sweep, tmp_path):
    """`plan --force` used to leave the jobs of superseded runs training (GPU-hours for runs that
    are never fitted) and `cancel` could not reach them. Now plan says so, and
    `cancel --superseded` stops them while the runs stay superseded."""
    engine, workdir = planned_sweep(budgets="[1.0e11]", points=1)
    prof = local_profile(tmp_path)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    old = wait_running(workdir, 5)["runs"][0]
    rdir = workdir / "runs" / "tiny" / old["run_id"]
    spec = tmp_path / "other.yaml"
    spec.write_text(tiny_spec(budgets="[3.0e10]", points=3))
    out = run_isoflop("plan", str(spec), "--force", workdir=workdir).stdout
    assert "1 superseded run(s) still have jobs; `isoflop cancel tiny --superseded` stops them" in out, out
    assert trainers_in(rdir)  # plan alone stops nothing
    out = run_isoflop("cancel", "tiny", "--superseded", workdir=workdir).stdout
    assert f"stopped the jobs of 1 superseded run(s): job(s) {old['job_id']}" in out, out
    assert no_trainer_in(rdir, 15), "the superseded run's trainer still runs"
    status(workdir)
    with Session(engine) as s:
        runs = {r.run_id: r for r in s.scalars(select(Run))}
        assert runs[old["run_id"]].state == "superseded"
        assert [a.state for a in s.scalars(select(Attempt))] == ["cancelled"]
        assert sorted(r.state for r in runs.values()) == ["planned"] * 3 + ["superseded"]  # the new runs untouched
    assert "nothing cancelled" in run_isoflop("cancel", "tiny", "--superseded", workdir=workdir).stdout


def test_status_imports_no_heavy_module(planned_sweep):
    """`isoflop status` must stay fast on big sweeps: with nothing to read from run folders it
    imports neither the result schemas (pydantic models) nor numpy, torch, scipy or submitit."""
    engine, workdir = planned_sweep(points=3)
    code = ("import runpy, sys\nsys.argv = ['isoflop', 'status', 'tiny']\ntry:\n"
            "    runpy.run_module('isoflop', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = ('isoflop.schemas', 'numpy', 'torch', 'scipy', 'submitit', 'matplotlib')\n"
            "print('HEAVY', [m for m in heavy if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], env=isoflop_env(workdir), capture_output=True, text=True,
                       timeout=60)
    assert "3 planned" in p.stdout, p.stdout + p.stderr
    assert "HEAVY []" in p.stdout, p.stdout
