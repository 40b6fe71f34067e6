"""The Slurm backend: submitit arrays of packed jobs; squeue always, sacct when the cluster has
accounting, to know what is alive.

submitit's `job.state` is not used: without accounting it stays UNKNOWN forever. Every scheduler
call is a plain subprocess call with a timeout; a scheduler that does not answer raises
SchedulerError (the caller then changes nothing).
"""
from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Optional

from .backend import ArrayPlan, JobState, SchedulerError
from .locks import DispatchError, job_name

PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "SPECIAL_EXIT", "RESIZING", "SIGNALING", "STAGE_OUT"}
RUNNING = {"RUNNING", "COMPLETING"}


def _phase(state: str) -> str:
    """pending | running | ended, from Slurm's word (e.g. "CANCELLED by 0", "COMPLETING+")."""
    s = state.split()[0].rstrip("+") if state else ""
    return "pending" if s in PENDING else "running" if s in RUNNING else "ended"


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SchedulerError(f"{cmd[0]} not found: is Slurm installed on this machine?") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{cmd[0]} did not answer within {timeout:.0f} s") from None


def available() -> bool:
    return shutil.which("squeue") is not None and shutil.which("sbatch") is not None


def has_sacct() -> bool:
    """Whether `sacct` answers (real accounting, or a stand-in such as tests/slurm/sacct-shim)."""
    if os.environ.get("ISOFLOP_SLURM_SACCT", "auto").lower() in ("0", "no", "false"):
        return False  # e.g. a cluster whose sacct answers but lags too much to trust
    return _sacct_answers()


@functools.lru_cache(maxsize=1)
def _sacct_answers() -> bool:
    try:
        return shutil.which("sacct") is not None and _run(["sacct", "-n", "-P", "-X", "-j", "1", "-o", "JobID"],
                                                          timeout=15).returncode == 0
    except SchedulerError:
        return False


def reset_cache() -> None:
    _sacct_answers.cache_clear()


def _base(job_id: str) -> str:
    return job_id.split("_")[0].split(".")[0]


def _jobs(cmd: list[str], names: Iterable[str] = (), ids: Iterable[str] = ()) -> dict[str, JobState]:
    """Rows id|name|STATE|node|exit code of `cmd` for these names or (base) ids; steps skipped."""
    r = _run(cmd)
    if r.returncode != 0:
        raise SchedulerError(f"{cmd[0]} failed: {(r.stderr or r.stdout).strip().splitlines()[:1]}")
    names, ids = set(names), set(ids)
    out = {}
    for p in (line.split("|") for line in r.stdout.splitlines()):
        # filtered here too: squeue -j fails on a forgotten id, and the sacct shim ignores --name
        if len(p) >= 5 and "." not in p[0] and (p[1] in names or _base(p[0]) in ids):
            out[p[0]] = JobState(_phase(p[2]), p[2], p[3] if p[3] != "None assigned" else "", p[4] or None)
    return out


def squeue(names: Iterable[str] = (), ids: Iterable[str] = ()) -> dict[str, JobState]:
    """Live jobs (and jobs that ended less than MinJobAge ago), array tasks one by one."""
    import getpass

    names, ids = sorted(set(names)), sorted({_base(i) for i in ids})
    if not names and not ids:
        return {}
    cmd = ["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%j|%T|%N|"]
    return _jobs(cmd + (["-n", ",".join(names)] if names and not ids else []), names, ids)


_FIELDS = ["-o", "JobID,JobName,State,NodeList,ExitCode"]


def sacct(ids: Iterable[str]) -> dict[str, JobState]:
    """Finished (and live) jobs from accounting; {} when the cluster has none."""
    ids = sorted({_base(i) for i in ids})
    out: dict[str, JobState] = {}
    for i in range(0, len(ids) if has_sacct() else 0, 200):
        out.update(_jobs(["sacct", "-n", "-P", "-X", "-j", ",".join(ids[i:i + 200]), *_FIELDS], ids=ids[i:i + 200]))
    return out


def sacct_by_name(names: list[str]) -> dict[str, JobState]:
    """Jobs with these names from accounting (last 30 days); {} without accounting."""
    if not names or not has_sacct():
        return {}
    try:
        return _jobs(["sacct", "-n", "-P", "-X", "-S", "now-30days", "--name", ",".join(names), *_FIELDS], names)
    except SchedulerError:
        return {}


def scancel(ids: Iterable[str]) -> None:
    ids = sorted(set(ids))
    for i in range(0, len(ids), 500):
        r = _run(["scancel", *ids[i:i + 500]])
        if r.returncode != 0 and "Invalid job id" not in r.stderr and "already completing" not in r.stderr:
            raise SchedulerError(f"scancel failed: {r.stderr.strip()}")


def _first_error(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(e).__name__).strip()


class SlurmBackend:
    """Arrays of packed jobs through submitit; a job's runs are `PackedJob` (job.py)."""

    name = "slurm"

    def __init__(self, profile: Any = None) -> None:
        self.profile = profile

    def check(self) -> None:
        if not available():
            raise DispatchError(f"profile {self.profile.name!r} needs Slurm, but sbatch/squeue are not on PATH "
                                "(use --profile local to run on this machine)")

    def parameters(self, *, minutes: int, name: str, comment: str) -> dict[str, Any]:
        pr = self.profile
        # the allocation is shaped like one run's ranks (tasks per node x nodes, a GPU each); the
        # job's own process is one task of it, and starts the ranks as a step with srun
        # (isoflop/train/distributed.py). Slurm itself packs jobs of a few GPUs onto one node.
        p: dict[str, Any] = {
            "job_name": name, "time": minutes, "comment": comment, "nodes": pr.nodes_per_run,
            "ntasks_per_node": pr.ranks // pr.nodes_per_run,
            "cpus_per_task": pr.cpus_per_task, "array_parallelism": pr.array_parallelism,
            "signal_delay_s": pr.signal_delay_s, "stderr_to_stdout": True,
        }
        if pr.ranks > 1:
            p["srun_args"] = ["--ntasks=1", "--nodes=1"]
        for k in ("partition", "account", "qos", "constraint"):
            if getattr(pr, k):
                p[k] = getattr(pr, k)
        if pr.gpus_per_run:
            p["gpus_per_node"] = pr.gpus_per_run // pr.nodes_per_run
        if pr.mem_gb:
            p["mem"] = f"{int(math.ceil(pr.mem_gb * 1024))}MB"
        if pr.setup:
            p["setup"] = list(pr.setup)
        p["additional_parameters"] = {k.replace("-", "_"): v for k, v in pr.sbatch.items()}
        return p

    def preview(self, arr: ArrayPlan, root: Path) -> Optional[str]:
        import shlex
        import sys

        from submitit.slurm.slurm import _make_sbatch_string

        folder = root / ".submitit" / arr.token
        cmd = " ".join([sys.executable, "-u -m submitit.core._submit", shlex.quote(str(folder))])
        kw = dict(arr.parameters, **({"map_count": len(arr.jobs)} if len(arr.jobs) > 1 else {}))
        return _make_sbatch_string(command=cmd, folder=folder, **kw)

    def submit(self, arr: ArrayPlan, root: Path) -> list[str]:
        import submitit

        from .backend import die_for_test
        from .job import PackedJob

        if os.environ.get("ISOFLOP_TEST_DIE_AFTER") == "job-created":
            # the window a real crash can hit: sbatch made the job, submitit has not yet
            # written the pickle the job waits for
            from submitit.core import utils

            utils.JobPaths.move_temporary_file = lambda *a, **k: die_for_test("job-created")
        try:
            ex = submitit.SlurmExecutor(folder=root / ".submitit" / arr.token, max_num_timeout=arr.requeues)
            ex.update_parameters(**arr.parameters)
            with ex.batch():
                launch = self.profile.launch_env()
                jobs = [ex.submit(PackedJob([str(root / r) for r in job.run_ids], self.profile.srun, launch))
                        for job in arr.jobs]
        except Exception as e:  # sbatch refused (bad partition/account, limits) or not reachable
            raise DispatchError(f"sbatch failed for {arr.name}: {_first_error(e)}") from None
        return [j.job_id for j in jobs]

    def job_states(self, ids: list[str]) -> tuple[dict[str, JobState], str]:
        states = squeue(ids=ids)
        missing = [i for i in ids if i not in states]
        if not missing or not has_sacct():
            return states, "squeue"
        acct = sacct(missing)
        return {**states, **{i: acct[i] for i in missing if i in acct}}, "squeue+sacct"

    def adopt(self, sweep: str, token: str, tasks: list[int], root: Path) -> dict[int, str]:
        name = job_name(sweep, token)
        found = squeue(names=[name])
        for jid, info in sacct_by_name([name]).items():
            found.setdefault(jid, info)
        # an array's tasks are <id>_<task>; a submission of one job is a plain <id> (task 0)
        by_task = {int(j.partition("_")[2] or 0): j for j in found if j.partition("_")[2].isdigit() or "_" not in j}
        folder = root / ".submitit" / token
        out, unusable = {}, []
        for t in tasks:
            jid = by_task.get(t)
            if jid is None:
                continue
            # without submitit's pickle the job waits for it and dies: it cannot run
            if (folder / f"{jid}_submitted.pkl").is_file():
                out[t] = jid
            elif found[jid].phase != "ended":
                unusable.append(jid)
        if unusable:
            scancel(unusable)
        return out

    def cancel(self, ids: list[str]) -> None:
        scancel(ids)
