"""Asking Slurm what is alive: squeue always, sacct when the cluster has accounting.

submitit's `job.state` is not used: without accounting it stays UNKNOWN forever. Everything here
is a plain subprocess call with a timeout; a scheduler that does not answer raises SchedulerError
(the caller then changes nothing).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable

PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "SPECIAL_EXIT", "RESIZING", "SIGNALING", "STAGE_OUT"}
RUNNING = {"RUNNING", "COMPLETING"}


class SchedulerError(RuntimeError):
    pass


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


def job_states(ids: Iterable[str]) -> tuple[dict[str, JobInfo], str]:
    """What the scheduler knows about these job ids, and where it came from (squeue | squeue+sacct)."""
    ids = list(ids)
    live = squeue(ids=ids)
    missing = [i for i in ids if i not in live]
    source = "squeue"
    if missing and has_sacct():
        source = "squeue+sacct"
        acct = sacct(missing)
        for i in missing:
            if i in acct:
                live[i] = acct[i]
    return live, source


def find_by_name(names: Iterable[str]) -> dict[str, JobInfo]:
    names = list(names)
    found = squeue(names=names)
    for jid, info in sacct_by_name(names).items():
        found.setdefault(jid, info)
    return found


def scancel(ids: Iterable[str]) -> None:
    ids = sorted(set(ids))
    for i in range(0, len(ids), 500):
        r = _run(["scancel", *ids[i:i + 500]])
        if r.returncode != 0 and "Invalid job id" not in r.stderr and "already completing" not in r.stderr:
            raise SchedulerError(f"scancel failed: {r.stderr.strip()}")
