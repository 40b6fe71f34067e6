"""The local backend: jobs as background processes that outlive the CLI.

submitit's LocalExecutor is not used: it starts every job at once (no worker limit) and its jobs
are children of the submitting process. Instead `enqueue()` writes job files into
`<workdir>/local/jobs/` and makes sure one detached pool process (`python -m
isoflop.dispatch.local WORKDIR`) runs them, at most `workers` at a time; the pool exits when the
queue is empty. One pool per workdir (an flock on local/pool.lock, which names its pid); a pool
that died is started again by the next look at its jobs (status, submit).

    local/jobs/<job_id>.json     {"job_id", "run_dirs", "created"}         (submit)
    local/jobs/<job_id>.state    {"state": running|completed|failed|cancelled, "pid", ...}  (pool)
    local/jobs/<job_id>.cancel   marker                                     (isoflop cancel)
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from . import files as F
from .backend import ArrayPlan, JobState
from .locks import flock_file

POLL_S = 0.3


def _pid_alive(pid: int | None) -> bool:
    """Whether a job process still runs (on Linux its cmdline guards against a reused pid)."""
    if not pid:
        return False
    try:
        if Path("/proc/self").is_dir():
            return b"isoflop.dispatch" in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def start_pool(workdir: str | Path) -> None:
    ld = Path(workdir) / "local"
    ld.mkdir(parents=True, exist_ok=True)
    with open(ld / "pool.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "isoflop.dispatch.local", str(Path(workdir).resolve())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )


def _job_state(st: Optional[dict]) -> JobState:
    if st is None:
        return JobState("pending", "PENDING")
    if st.get("state") == "running":
        return JobState("running", "RUNNING", st.get("node", "")) if _pid_alive(st.get("pid")) else JobState("ended", "LOST")
    code = st.get("exit_code")
    return JobState("ended", str(st.get("state", "")).upper(), "", None if code is None else str(code))


class LocalBackend:
    """Jobs run by the workdir's pool, `workers` at a time (the profile's, or CPUs / threads)."""

    name = "local"

    def __init__(self, workdir: str | Path, profile: Any = None) -> None:
        self.workdir, self.profile = workdir, profile
        self.jobs = Path(workdir) / "local" / "jobs"

    def check(self) -> None:
        pass

    def parameters(self, *, minutes: int, name: str, comment: str) -> dict[str, Any]:
        return {}

    def preview(self, arr: ArrayPlan, root: Path) -> Optional[str]:
        return None

    def submit(self, arr: ArrayPlan, root: Path) -> list[str]:
        """Write the job files, then start a pool (a no-op when one is running)."""
        self.jobs.mkdir(parents=True, exist_ok=True)
        ids = [f"{arr.token}_{i}" for i in range(len(arr.jobs))]
        for jid, job in zip(ids, arr.jobs):
            F.write_json_atomic(self.jobs / f"{jid}.json", {
                "job_id": jid, "run_dirs": [str(root / r) for r in job.run_ids], "created": time.time(),
                "launch": self.profile.launch_env() if self.profile else {}})
        threads = int((F.read_json(root / arr.jobs[0].run_ids[0] / F.RUN_JSON) or {}).get("threads") or 1)
        F.write_json_atomic(self.jobs.parent / "workers.json", {"workers": self.profile.local_workers(threads)})
        start_pool(self.workdir)
        return ids

    def job_states(self, ids: list[str]) -> tuple[dict[str, JobState], str]:
        """What the pool's files say of the jobs whose file exists. A pending job without a pool
        would wait for ever: the pool is started again (a killed pool holds no lock)."""
        out = {j: _job_state(F.read_json(self.jobs / f"{j}.state")) for j in ids if (self.jobs / f"{j}.json").exists()}
        if any(j.phase == "pending" for j in out.values()) and (lock := flock_file(self.jobs.parent / "pool.lock")):
            lock.close()
            start_pool(self.workdir)
        return out, "local"

    def adopt(self, sweep: str, token: str, tasks: list[int], root: Path) -> dict[int, str]:
        # a job file is a job that can run (a dead pool is started again by job_states)
        return {t: f"{token}_{t}" for t in tasks if (self.jobs / f"{token}_{t}.json").exists()}

    def cancel(self, ids: list[str]) -> None:
        for jid in ids:
            if not (self.jobs / f"{jid}.json").exists():
                continue
            (self.jobs / f"{jid}.cancel").touch()
            st = F.read_json(self.jobs / f"{jid}.state") or {}
            if st.get("state") == "running" and _pid_alive(st.get("pid")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(st["pid"], signal.SIGTERM)  # the job forwards it to its command, which checkpoints


# ------------------------------------------------------------------ the pool process


def _workers(ld: Path) -> int:
    d = F.read_json(ld / "workers.json") or {}
    return max(1, int(d.get("workers", 1)))


def _kill_commands(job_file: Path) -> None:
    """A job killed by a signal could not stop its commands (own process groups): kill them
    now, so no trainer outlives its job. The runs' attempt files name each command's leader
    (`trainer_pid`), which is also its process group's id."""
    for rd in (F.read_json(job_file) or {}).get("run_dirs", []):
        attempt = int((F.read_json(Path(rd) / F.RUN_JSON) or {}).get("attempt", 1))
        status = F.read_json(F.status_path(Path(rd), attempt)) or {}
        pgid = status.get("trainer_pid")
        if pgid and status.get("state") == "running":  # an ended command's group id may be reused
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pgid), signal.SIGKILL)


def _reap(jd: Path, running: dict[str, subprocess.Popen]) -> None:
    for jid, p in list(running.items()):
        rc = p.poll()
        if rc is None:
            continue
        del running[jid]
        if rc < 0:
            _kill_commands(jd / f"{jid}.json")
        state = "cancelled" if (jd / f"{jid}.cancel").exists() else ("completed" if rc == 0 else "failed")
        F.write_json_atomic(jd / f"{jid}.state", {"state": state, "exit_code": rc, "pid": p.pid, "ended": time.time()})


def _pending(jd: Path, running: dict[str, subprocess.Popen]) -> list[str]:
    """Jobs not started yet, oldest first."""
    found = [(f.stat().st_mtime, f.stem) for f in jd.glob("*.json")
             if f.stem not in running and not (jd / f"{f.stem}.state").exists()]
    return [jid for _, jid in sorted(found)]


def _start(jd: Path, jid: str) -> subprocess.Popen:
    env = dict(os.environ, ISOFLOP_LOCAL_JOB_ID=jid)
    with open(jd / f"{jid}.log", "ab") as log:
        p = subprocess.Popen(
            [sys.executable, "-m", "isoflop.dispatch.job", str(jd / f"{jid}.json")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    F.write_json_atomic(jd / f"{jid}.state", {"state": "running", "pid": p.pid, "node": os.uname().nodename,
                                             "started": time.time()})
    return p


def _take_pool_lock(ld: Path) -> Optional[Any]:
    deadline = time.time() + 5  # a pool that is exiting still holds the lock for a moment
    while (lock := flock_file(ld / "pool.lock")) is None:
        if time.time() > deadline:
            return None  # another pool runs the queue
        time.sleep(0.2)
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def pool_main(workdir: str) -> int:
    ld = Path(workdir) / "local"
    jd = ld / "jobs"
    jd.mkdir(parents=True, exist_ok=True)
    lock = _take_pool_lock(ld)
    if lock is None:
        return 0
    running: dict[str, subprocess.Popen] = {}
    idle_since = time.time()
    while True:
        _reap(jd, running)
        pending = _pending(jd, running)
        for jid in pending:
            if (jd / f"{jid}.cancel").exists():
                F.write_json_atomic(jd / f"{jid}.state", {"state": "cancelled", "exit_code": None, "ended": time.time()})
            elif len(running) < _workers(ld):
                running[jid] = _start(jd, jid)
        if running or pending:
            idle_since = time.time()
        elif time.time() - idle_since > 2.0:
            return 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(pool_main(sys.argv[1]))
