"""What runs inside a scheduler job: one or more runs, one after another (a packed job).

`PackedJob(run_dirs)` is a submitit `Checkpointable`: on the time-limit / preemption signal
(USR2) submitit calls `checkpoint()`, which forwards the signal to the running command, waits
(bounded) for it to checkpoint and exit, and hands submitit a new job over the runs that have
no result yet; submitit requeues it and the trainer resumes from its checkpoint.

The same class runs local jobs: `python -m isoflop.dispatch.job JOBFILE` (see local.py).
A job writes only files under its run folders (files.py); it never touches the store.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from . import files as F

try:
    import submitit.helpers as _sh

    _Base: Any = _sh.Checkpointable
except ImportError:  # pragma: no cover - local jobs without submitit
    _Base = object

# how long checkpoint() waits for the command to write its checkpoint and exit
INTERRUPT_WAIT_S = float(os.environ.get("ISOFLOP_INTERRUPT_WAIT_S", "60"))


def job_id_here() -> str | None:
    """The scheduler's id of the job this process runs in (array tasks as ARRAY_TASK)."""
    env = os.environ
    if env.get("ISOFLOP_LOCAL_JOB_ID"):
        return env["ISOFLOP_LOCAL_JOB_ID"]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def run_finished(rdir: str | Path) -> bool:
    """A run whose result.json counts (valid or diverged) needs no more work. One that does not
    (truncated, wrong types, another run's, stale) is moved aside with its reason, so the run
    trains again instead of being skipped for ever."""
    from ..schemas import check_result, set_aside_result
    from ..state import ResultKind

    spec = F.read_json(Path(rdir) / F.RUN_JSON) or {}
    check = check_result(Path(rdir) / F.RESULT, run_id=spec.get("run_id"), planned_steps=spec.get("steps"))
    if check.kind in (ResultKind.INVALID, ResultKind.STALE):
        set_aside_result(Path(rdir), int(spec.get("attempt") or 0), f"{F.RESULT}: {check.reason}")
    return check.kind in (ResultKind.VALID, ResultKind.DIVERGED)


class PackedJob(_Base):
    """Run each run folder's command in turn; skip those that already have a result."""

    def __init__(self, run_dirs: list[str], srun: bool = False, launch: dict[str, str] | None = None) -> None:
        self.run_dirs = [str(p) for p in run_dirs]
        self.srun = srun
        # what the profile tells the built-in trainer (ranks per run, micro-batch, peak FLOP/s)
        self.launch = dict(launch or {})
        self._current: Any = None
        self._stopping = False

    # -- submitit entry point
    def __call__(self) -> dict[str, str]:
        os.environ.update(getattr(self, "launch", {}))  # commands inherit it (a pickle of before has none)
        outcomes: dict[str, str] = {}
        for rd in self.run_dirs:
            if self._stopping:
                break
            state = self._run_one(Path(rd))
            outcomes[Path(rd).name] = state
            if state == "preempted":  # the job is being cancelled or requeued: start nothing more
                break
        return outcomes

    def _status(self, rdir: Path, number: int, **kw: Any) -> None:
        p = F.status_path(rdir, number)
        d = F.read_json(p) or {}
        d.update(kw)
        F.write_json_atomic(p, d)

    def _run_one(self, rdir: Path) -> str:
        spec = F.read_json(rdir / F.RUN_JSON)
        if spec is None:
            return "failed"
        attempt = int(spec.get("attempt", 1))
        if run_finished(rdir):
            return "completed"
        if (rdir / F.CANCEL).exists():
            self._status(rdir, attempt, state="cancelled", reason="cancelled before it started", ended_at=_now())
            return "cancelled"
        prev = F.read_json(F.status_path(rdir, attempt)) or {}
        self._status(
            rdir, attempt, state="running", attempt=attempt, job_id=job_id_here(), node=socket.gethostname(),
            started_at=prev.get("started_at") or _now(), resumed_at=_now() if prev else None,
            starts=int(prev.get("starts", 0)) + 1, reason=None, exit_code=None, ended_at=None, pid=os.getpid(),
        )
        from .runner import CommandRun  # not at import: submitit unpickles this module on the node

        cr = CommandRun(rdir, attempt=attempt, srun=self.srun)
        self._current = cr
        cancelled = False
        try:
            cr.start()
            if cr.pid:  # leads its process group: whoever reaps a job killed by a signal kills the group
                self._status(rdir, attempt, trainer_pid=cr.pid)
            while True:
                out = cr.wait(timeout=1.0)
                if out is not None:
                    break
                if not cancelled and (rdir / F.CANCEL).exists():
                    cancelled = True
                    cr.interrupt(signal.SIGTERM)
        finally:
            self._current = None
        state, reason = out.state, out.reason
        if cancelled and state != "completed" and state != "diverged":
            state, reason = "cancelled", "cancelled (isoflop cancel)"
        self._status(rdir, attempt, state=state, reason=reason, exit_code=out.exit_code, ended_at=_now())
        return state

    # -- submitit: time limit or preemption (USR2)
    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        self._stopping = True
        cr = self._current
        if cr is not None:
            try:
                cr.interrupt(signal.SIGUSR1)
                cr.wait(timeout=INTERRUPT_WAIT_S)
            except Exception as e:  # never let a failing interrupt stop the requeue
                print(f"isoflop job: interrupting the command failed: {e}", file=sys.stderr)
        remaining = [rd for rd in self.run_dirs if not run_finished(rd) and not (Path(rd) / F.CANCEL).exists()]
        for rd in map(Path, remaining):
            attempt = int((F.read_json(rd / F.RUN_JSON) or {}).get("attempt", 1))
            if (F.read_json(F.status_path(rd, attempt)) or {}).get("state") == "running":
                self._status(rd, attempt, state="requeued", reason="time limit or preemption: requeued to resume")
        return submitit.helpers.DelayedSubmission(PackedJob(remaining, self.srun, getattr(self, "launch", {})))


def main(argv: list[str] | None = None) -> int:
    """Local executor: `python -m isoflop.dispatch.job JOBFILE` runs the job's run folders in turn.
    SIGTERM (isoflop cancel) is forwarded to the running command, which checkpoints and exits."""
    argv = sys.argv[1:] if argv is None else argv
    spec = F.read_json(Path(argv[0]))
    if spec is None:
        print(f"isoflop job: cannot read {argv[0]}", file=sys.stderr)
        return 2
    job = PackedJob(spec["run_dirs"], srun=False, launch=spec.get("launch"))

    def _term(signum: int, _frame: Any) -> None:
        job._stopping = True
        if job._current is not None:
            job._current.interrupt(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    out = job()
    print(f"isoflop job: {out}", flush=True)
    return 0 if all(v in ("completed", "diverged") for v in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
