"""Starting the built-in trainer's ranks from tests the way dispatch starts them (shared by the
DDP and FSDP tests): a clean environment, a local job file, and a preemption mid-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def rank_env(**extra: str) -> dict[str, str]:
    """This process's environment without any launch setting it may have inherited (a test run
    inside a Slurm job or torchrun must not leak its ranks into the runs it starts)."""
    drop = ("ISOFLOP_TASKS", "ISOFLOP_MICRO", "ISOFLOP_SHARDING", "SLURM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in ("RANK", "WORLD_SIZE")}
    return {**env, "ISOFLOP_LAUNCHER": "local", **extra}


def run_dir(tmp: Path, name: str, run: dict, **over) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "run.json").write_text(json.dumps({**run, **over}))
    return d


def dispatch(rdir: Path, launch: dict[str, str], timeout: float = 240) -> dict:
    """Run one run folder as a local job does, with these launch settings; its result."""
    job = rdir.parent / f"{rdir.name}.job.json"
    job.write_text(json.dumps({"job_id": rdir.name, "run_dirs": [str(rdir)], "launch": launch}))
    p = subprocess.run([sys.executable, "-m", "isoflop.dispatch.job", str(job)], env=rank_env(), capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr + "".join(f.read_text() for f in rdir.glob("attempt-*.log"))
    return json.loads((rdir / "result.json").read_text())


def preempt_after_first_log(rdir: Path, env: dict[str, str]) -> None:
    """Start the trainer on rdir, SIGTERM its process group once it has logged, and check that it
    stopped as preempted (exit 3) with a checkpoint and no result."""
    # own process group, as the runner starts a command: the signal reaches the launcher and every rank
    p = subprocess.Popen([sys.executable, "-m", "isoflop.train", str(rdir)], env=env, start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = rdir / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert p.poll() is None and time.time() < deadline, p.stdout.read() if p.poll() is not None else "timeout"
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGTERM)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 3, out  # preempted
    assert (rdir / "checkpoint.pt").exists() and not (rdir / "result.json").exists()
