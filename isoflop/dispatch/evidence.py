"""Gathering the evidence about one active attempt: its result.json, the job's status file
(attempt-<n>.json), what the scheduler said, and whether its trainer process is alive.
Nothing here decides a state (state.decide does) or writes the store (sync does).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Optional

from ..state import ABSENT, JOB_REPORTED, AttemptState, Evidence, ResultCheck, ResultKind, Scheduler
from . import files as F

_PHASES = {"pending": Scheduler.PENDING, "running": Scheduler.RUNNING, "ended": Scheduler.ENDED}
_HOST = socket.gethostname()


def scheduler_evidence(info: Any, unreachable: bool) -> tuple[Scheduler, str]:
    """(Scheduler, its word for an ended job) from a scheduler view entry (phase, STATE, node,
    exit_code); `info` is None when the scheduler does not know the job."""
    if unreachable:
        return Scheduler.UNREACHABLE, ""
    if info is None:
        return Scheduler.UNKNOWN, ""
    return _PHASES.get(info[0], Scheduler.ENDED), str(info[1] or "")


def _reported(status: dict[str, Any]) -> Optional[AttemptState]:
    try:
        st = AttemptState(status.get("state"))
    except ValueError:
        return None  # absent, or a word this version does not know: ask the scheduler
    return st if st in JOB_REPORTED else None


def trainer_alive(pid: Any, node: Any, rdir: Path) -> Optional[bool]:
    """Whether the trainer a job recorded still runs; None when that cannot be known from here
    (another node, or no pid recorded). A pid reused by another process does not count: the
    trainer's environment names its run folder (ISOFLOP_RUN_DIR)."""
    if not isinstance(pid, int) or pid <= 0 or node != _HOST:
        return None
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return None
    if stat[stat.rfind(")") + 2:][:1] in ("Z", "X"):
        return False
    try:
        env = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return True  # another user's process: it exists, and that is all we can tell
    return f"ISOFLOP_RUN_DIR={os.path.abspath(rdir)}".encode() in env


def read_result(rdir: Path, run_id: str, planned_steps: Optional[int]) -> ResultCheck:
    path = Path(rdir) / F.RESULT
    if not path.exists():  # most active runs: judged without importing pydantic
        return ABSENT
    from ..schemas import check_result

    check = check_result(path, run_id=run_id, planned_steps=planned_steps)
    if check.kind in (ResultKind.INVALID, ResultKind.STALE):
        return ResultCheck(check.kind, check.result, f"{path}: {check.reason}")
    return check


def gather(row: Any, rdir: Path, info: Any, unreachable: bool, last_step: Optional[int]
           ) -> tuple[Evidence, ResultCheck, dict[str, Any]]:
    """The evidence about one active attempt (`row`: run_id, number, job_id, steps), with the
    result check and the job's status file it came from."""
    check = read_result(rdir, row.run_id, row.steps)
    status = F.read_json(F.status_path(rdir, row.number)) or {}
    sched, word = scheduler_evidence(info, unreachable)
    ev = Evidence(
        result=check.kind, result_reason=check.reason, reported=_reported(status),
        reported_reason=status.get("reason"), scheduler=sched, sched_state=word, job_id=row.job_id or "",
        trainer_alive=trainer_alive(status.get("trainer_pid"), status.get("node"), rdir) if sched in (
            Scheduler.ENDED, Scheduler.UNKNOWN) else None,
        last_step=last_step,
    )
    return ev, check, status
