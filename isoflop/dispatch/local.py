"""The local executor: jobs as background processes that outlive the CLI.

submitit's LocalExecutor is not used: it starts every job at once (no worker limit) and its jobs
are children of the submitting process. Instead `enqueue()` writes job files into
`<workdir>/local/jobs/` and makes sure one detached pool process (`python -m
isoflop.dispatch.local WORKDIR`) runs them, at most `workers` at a time; the pool exits when the
queue is empty. One pool per workdir (an flock), whatever the number of submits.

    local/jobs/<job_id>.json     {"job_id", "run_dirs", "created"}         (submit)
    local/jobs/<job_id>.state    {"state": running|completed|failed|cancelled, "pid", ...}  (pool)
    local/jobs/<job_id>.cancel   marker                                     (isoflop cancel)
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

from . import files as F

POLL_S = 0.3


def local_dir(workdir: str | Path) -> Path:
    return Path(workdir) / "local"


def jobs_dir(workdir: str | Path) -> Path:
    return local_dir(workdir) / "jobs"


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    return b"isoflop.dispatch" in cmd


def enqueue(workdir: str | Path, jobs: Iterable[tuple[str, list[str]]], workers: int) -> None:
    """Write the job files, then start a pool (a no-op when one is running)."""
    jd = jobs_dir(workdir)
    jd.mkdir(parents=True, exist_ok=True)
    for job_id, run_dirs in jobs:
        F.write_json_atomic(jd / f"{job_id}.json", {"job_id": job_id, "run_dirs": run_dirs, "created": time.time()})
    F.write_json_atomic(local_dir(workdir) / "workers.json", {"workers": int(workers)})
    start_pool(workdir)


def start_pool(workdir: str | Path) -> None:
    ld = local_dir(workdir)
    ld.mkdir(parents=True, exist_ok=True)
    with open(ld / "pool.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "isoflop.dispatch.local", str(Path(workdir).resolve())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )


def job_states(workdir: str | Path, ids: Iterable[str]) -> dict[str, dict]:
    """{job_id: {"phase": pending|running|ended, "state": ...}} for the jobs whose file exists."""
    jd = jobs_dir(workdir)
    out: dict[str, dict] = {}
    for jid in ids:
        if not (jd / f"{jid}.json").exists():
            continue
        st = F.read_json(jd / f"{jid}.state")
        if st is None:
            out[jid] = {"phase": "pending", "state": "PENDING"}
        elif st.get("state") == "running":
            if _pid_alive(st.get("pid")):
                out[jid] = {"phase": "running", "state": "RUNNING", "node": st.get("node", "")}
            else:
                out[jid] = {"phase": "ended", "state": "LOST", "reason": "the job process is gone"}
        else:
            out[jid] = {"phase": "ended", "state": str(st.get("state", "")).upper(), "exit_code": st.get("exit_code")}
    return out


def job_exists(workdir: str | Path, job_id: str) -> bool:
    return (jobs_dir(workdir) / f"{job_id}.json").exists()


def cancel(workdir: str | Path, ids: Iterable[str]) -> None:
    jd = jobs_dir(workdir)
    for jid in ids:
        if not (jd / f"{jid}.json").exists():
            continue
        (jd / f"{jid}.cancel").touch()
        st = F.read_json(jd / f"{jid}.state") or {}
        pid = st.get("pid")
        if st.get("state") == "running" and _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)  # the job forwards it to its command, which checkpoints
            except ProcessLookupError:
                pass


# ------------------------------------------------------------------ the pool process


def _workers(ld: Path) -> int:
    d = F.read_json(ld / "workers.json") or {}
    return max(1, int(d.get("workers", 1)))


def pool_main(workdir: str) -> int:
    ld = local_dir(workdir)
    jd = jobs_dir(workdir)
    jd.mkdir(parents=True, exist_ok=True)
    lock = open(ld / "pool.lock", "w")
    deadline = time.time() + 5  # a pool that is exiting still holds the lock for a moment
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.time() > deadline:
                return 0  # another pool runs the queue
            time.sleep(0.2)
    running: dict[str, subprocess.Popen] = {}
    idle_since = time.time()
    while True:
        # reap
        for jid, p in list(running.items()):
            rc = p.poll()
            if rc is None:
                continue
            del running[jid]
            cancelled = (jd / f"{jid}.cancel").exists()
            state = "cancelled" if cancelled else ("completed" if rc == 0 else "failed")
            F.write_json_atomic(jd / f"{jid}.state", {"state": state, "exit_code": rc, "pid": p.pid, "ended": time.time()})
        # pending, oldest first
        pending = []
        for f in jd.glob("*.json"):
            jid = f.stem
            if jid in running or (jd / f"{jid}.state").exists():
                continue
            pending.append((f.stat().st_mtime, jid))
        pending.sort()
        for _, jid in pending:
            if (jd / f"{jid}.cancel").exists():
                F.write_json_atomic(jd / f"{jid}.state", {"state": "cancelled", "exit_code": None, "ended": time.time()})
                continue
            if len(running) >= _workers(ld):
                break
            env = dict(os.environ, ISOFLOP_LOCAL_JOB_ID=jid)
            with open(jd / f"{jid}.log", "ab") as log:
                p = subprocess.Popen(
                    [sys.executable, "-m", "isoflop.dispatch.job", str(jd / f"{jid}.json")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )
            running[jid] = p
            F.write_json_atomic(jd / f"{jid}.state", {"state": "running", "pid": p.pid, "node": os.uname().nodename,
                                                     "started": time.time()})
        if running or pending:
            idle_since = time.time()
        elif time.time() - idle_since > 2.0:
            return 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(pool_main(sys.argv[1]))
