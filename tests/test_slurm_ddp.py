"""Runs of 2 ranks each on the local Slurm cluster (tests/slurm_cluster.sh): the job's allocation
has the run's 2 tasks, the job starts them with srun as one step per run, gloo between them; an
`scontrol requeue` in the middle of the first run resumes it, and every run ends with one result.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from isoflop.store.models import Run

from .conftest import run_isoflop
from .test_slurm_dispatch import wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# both runs in one job (pack_target_minutes): their two srun steps follow each other in one allocation
PROFILE = """\
executor: slurm
partition: debug
tasks_per_run: 2
cpus_per_task: 1
mem_gb: 1
max_time_minutes: 30
min_time_minutes: 10
array_parallelism: 2
pack_target_minutes: 10
max_attempts: 3
peak_flops: 2.0e10
mfu: 0.3
run_overhead_s: 4
signal_delay_s: 60
"""


def test_two_task_runs_complete_and_requeue_resumes(slurm_cluster, planned_sweep, tmp_path):
    engine, workdir = planned_sweep(budgets="[3.0e10]", points=2)
    prof = tmp_path / "ddp.yaml"
    prof.write_text(PROFILE)
    dry = run_isoflop("submit", "tiny", "--profile", str(prof), "--dry-run", workdir=workdir).stdout
    assert "#SBATCH --ntasks-per-node=2" in dry and "--ntasks=1" in dry  # submitit's own step is one task
    env = {"ISOFLOP_TEST_STEP_SLEEP": "0.02"}  # long enough to requeue in the middle
    run_isoflop("submit", "tiny", "--profile", str(prof), workdir=workdir, **env)
    st = wait_until(workdir, lambda s: any(r["state"] == "running" and (r["step"] or 0) >= 10 for r in s["runs"]),
                    timeout=120, poll=0.5)
    first = next(r for r in st["runs"] if r["state"] == "running")
    subprocess.run(["scontrol", "requeue", first["job_id"]], check=True)
    st = wait_until(workdir, lambda s: s["active"] == 0, timeout=240, poll=2)
    assert st["counts"] == {"completed": 2}, st
    root = workdir / "runs" / "tiny"
    res = {r["run_id"]: json.loads((root / r["run_id"] / "result.json").read_text()) for r in st["runs"]}
    assert all(r["world_size"] == 2 for r in res.values())
    assert res[first["run_id"]]["resumed_from_step"], res[first["run_id"]]  # the requeue resumed, not restarted
    for r in st["runs"]:  # exactly one result per run: none set aside, none written twice
        assert [p.name for p in (root / r["run_id"]).glob("result*.json")] == ["result.json"]
        lines = (root / r["run_id"] / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(ln)["step"] for ln in lines if "train_loss" in ln]
        assert steps == sorted(set(steps)), steps  # rank 0 alone wrote, no step twice after the resume
    with Session(engine) as s:
        assert s.scalar(select(func.count()).where(Run.val_loss.is_not(None))) == 2
    # throughput and MFU against the profile's peak of one run (2 devices x peak_flops)
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in st["runs"]), st["runs"]
    assert all(0 < r["mfu"] < 1 for r in res.values())
    table = run_isoflop("status", "tiny", "--runs", workdir=workdir).stdout
    assert "MFU" in table and "tok/s" in table and "%" in table
    # both ranks ran as one srun step of the job's allocation, on the Slurm rendezvous
    log = (root / first["run_id"] / "attempt-1.log").read_text()
    assert "srun --overlap" in log and "--ntasks=2" in log
