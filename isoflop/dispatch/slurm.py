"""The Slurm backend: submitit arrays of packed jobs; squeue always, sacct when the cluster has
accounting, to know what is alive.

submitit's `job.state` is not used: without accounting it stays UNKNOWN forever. Every scheduler
call is a plain subprocess call with a timeout; a scheduler that does not answer raises
SchedulerError (the caller then changes nothing).
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from .backend import ArrayPlan, JobState, SchedulerError
from .locks import DispatchError, job_name

PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "SPECIAL_EXIT", "RESIZING", "SIGNALING", "STAGE_OUT"}
RUNNING = {"RUNNING", "COMPLETING"}


@dataclass(frozen=True)
class JobInfo:
    job_id: str  # "123" or "123_4" for an array task
    name: str
    state: str  # Slurm's word, e.g. PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT
    node: str = ""
    reason: str = ""
    exit_code: str = ""

    @property
    def phase(self) -> str:
        """pending | running | ended"""
        s = self.state.split()[0].rstrip("+") if self.state else ""
        if s in PENDING:
            return "pending"
        if s in RUNNING:
            return "running"
        return "ended"


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SchedulerError(f"{cmd[0]} not found: is Slurm installed on this machine?") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{cmd[0]} did not answer within {timeout:.0f} s") from None


def available() -> bool:
    return shutil.which("squeue") is not None and shutil.which("sbatch") is not None


_SACCT: bool | None = None


def has_sacct() -> bool:
    """Whether `sacct` answers (real accounting, or a stand-in such as tests/slurm/sacct-shim)."""
    global _SACCT
    forced = os.environ.get("ISOFLOP_SLURM_SACCT", "auto").lower()
    if forced in ("0", "no", "false"):
        return False  # e.g. a cluster whose sacct answers but lags too much to trust
    if _SACCT is None:
        if shutil.which("sacct") is None:
            _SACCT = False
        else:
            try:
                r = _run(["sacct", "-n", "-P", "-X", "-j", "1", "-o", "JobID"], timeout=15)
                _SACCT = r.returncode == 0
            except SchedulerError:
                _SACCT = False
    return _SACCT


def reset_cache() -> None:
    global _SACCT
    _SACCT = None


def _base(job_id: str) -> str:
    return job_id.split("_")[0].split(".")[0]


def squeue(names: Iterable[str] = (), ids: Iterable[str] = ()) -> dict[str, JobInfo]:
    """Live jobs (and jobs that ended less than MinJobAge ago), array tasks one by one."""
    names, ids = sorted(set(names)), sorted({_base(i) for i in ids})
    if not names and not ids:
        return {}
    out: dict[str, JobInfo] = {}
    # -j with an id slurmctld has forgotten fails the whole call: filter by name, then by id client-side
    import getpass

    cmd = ["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%j|%T|%N|%r"]
    if names and not ids:
        cmd += ["-n", ",".join(names)]
    r = _run(cmd)
    if r.returncode != 0:
        raise SchedulerError(f"squeue failed: {(r.stderr or r.stdout).strip().splitlines()[:1]}")
    want_names, want_ids = set(names), set(ids)
    for line in r.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        jid, name, state, node, reason = parts[:5]
        if (want_names and name in want_names) or (want_ids and _base(jid) in want_ids):
            out[jid] = JobInfo(jid, name, state, node, reason if reason != "None" else "")
    return out


def sacct(ids: Iterable[str]) -> dict[str, JobInfo]:
    """Finished (and live) jobs from accounting; {} when the cluster has none."""
    ids = sorted({_base(i) for i in ids})
    if not ids or not has_sacct():
        return {}
    out: dict[str, JobInfo] = {}
    for i in range(0, len(ids), 200):
        r = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids[i:i + 200]), "-o", "JobID,JobName,State,NodeList,ExitCode"])
        if r.returncode != 0:
            raise SchedulerError(f"sacct failed: {(r.stderr or r.stdout).strip().splitlines()[:1]}")
        for line in r.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 5 or "." in parts[0]:
                continue
            jid, name, state, node, code = parts[:5]
            out[jid] = JobInfo(jid, name, state, node if node != "None assigned" else "", "", code)
    return out


def sacct_by_name(names: Iterable[str]) -> dict[str, JobInfo]:
    """Jobs with these names from accounting (last 30 days); {} without accounting."""
    names = set(names)
    if not names or not has_sacct():
        return {}
    r = _run(["sacct", "-n", "-P", "-X", "-S", "now-30days", "--name", ",".join(sorted(names)),
              "-o", "JobID,JobName,State,NodeList,ExitCode"])
    if r.returncode != 0:
        return {}
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 5 and parts[1] in names and "." not in parts[0]:  # the shim ignores --name
            out[parts[0]] = JobInfo(parts[0], parts[1], parts[2], parts[3], "", parts[4])
    return out


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
        p: dict[str, Any] = {
            "job_name": name, "time": minutes, "comment": comment, "nodes": 1, "ntasks_per_node": 1,
            "cpus_per_task": pr.cpus_per_task, "array_parallelism": pr.array_parallelism,
            "signal_delay_s": pr.signal_delay_s, "stderr_to_stdout": True,
        }
        for k in ("partition", "account", "qos", "constraint"):
            if getattr(pr, k):
                p[k] = getattr(pr, k)
        if pr.gpus_per_run:
            p["gpus_per_node"] = pr.gpus_per_run
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
                jobs = [ex.submit(PackedJob([str(root / r) for r in job.run_ids], self.profile.srun))
                        for job in arr.jobs]
        except Exception as e:  # sbatch refused (bad partition/account, limits) or not reachable
            raise DispatchError(f"sbatch failed for {arr.name}: {_first_error(e)}") from None
        return [j.job_id for j in jobs]

    def job_states(self, ids: list[str]) -> tuple[dict[str, JobState], str]:
        infos = squeue(ids=ids)
        missing = [i for i in ids if i not in infos]
        source = "squeue"
        if missing and has_sacct():
            source = "squeue+sacct"
            acct = sacct(missing)
            infos.update({i: acct[i] for i in missing if i in acct})
        return {j: JobState(i.phase, i.state, i.node, i.exit_code) for j, i in infos.items()}, source

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
