"""The backend interface: what submit, sync and cancel may ask of a scheduler, as in submitit.

One module per backend (local.py: a detached pool on this machine; slurm.py: submitit arrays).
Nothing outside a backend asks which executor it is: an attempt row names its backend, and
`backend_for(name)` answers for it. The two functions below are the only callers that see
several backends at once: `scheduler_view` (what is alive) and `reconcile_intents` (adopt or
abandon what a dead submit left).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..state import Action, attempt_after
from ..store.models import Attempt, Run, utcnow
from ..store.sweeps import apply_action


class SchedulerError(RuntimeError):
    """The scheduler did not answer; whoever asked changes nothing."""


class JobState(NamedTuple):
    phase: str  # pending | running | ended
    state: str  # the scheduler's word: PENDING, RUNNING, COMPLETED, CANCELLED, LOST, ...
    node: str = ""
    exit_code: Optional[str] = None


@dataclass(frozen=True)
class JobPlan:
    run_ids: tuple[str, ...]
    seconds: float  # estimated, margin included
    minutes: int  # the time request


@dataclass(frozen=True)
class ArrayPlan:
    """Jobs submitted together under one name (a Slurm array; a batch of local jobs)."""

    token: str
    name: str
    minutes: int
    jobs: tuple[JobPlan, ...]
    parameters: dict[str, Any]  # the backend's own (sbatch parameters for Slurm)
    requeues: int = 0  # time-limit/preemption requeues one job may use
    job_ids: tuple[str, ...] = ()


class Backend(Protocol):
    name: str

    def check(self) -> None:
        """Raise DispatchError (one line) when jobs cannot be submitted from here."""

    def parameters(self, *, minutes: int, name: str, comment: str) -> dict[str, Any]:
        """The backend's parameters of an array of jobs of `minutes`."""

    def preview(self, arr: ArrayPlan, root: Path) -> Optional[str]:
        """What would be submitted (the sbatch script), for a dry run."""

    def submit(self, arr: ArrayPlan, root: Path) -> list[str]:
        """Submit the array's jobs (run folders under `root`); their ids, in task order."""

    def job_states(self, ids: list[str]) -> tuple[dict[str, JobState], str]:
        """What is known of these jobs, and a word naming the source; SchedulerError if unasked."""

    def adopt(self, sweep: str, token: str, tasks: list[int], root: Path) -> dict[int, str]:
        """The jobs of a dead submit's array that exist and can run, by task; any job that exists
        but cannot run is cancelled here, so its runs are submitted again."""

    def cancel(self, ids: list[str]) -> None:
        """Stop these jobs (their commands checkpoint and exit where they can)."""


def backend_for(executor: str, *, workdir: str | Path, profile: Any = None) -> Backend:
    if executor == "local":
        from .local import LocalBackend

        return LocalBackend(workdir, profile)
    if executor == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(profile)
    raise ValueError(f"unknown executor {executor!r}")


def scheduler_view(workdir: str, rows: list[Any], warnings: list[str]) -> tuple[dict[str, JobState], set[str], str]:
    """{job_id: JobState} for the active attempts' jobs; the executors that could not be asked
    (their attempts are left alone); a word naming the source."""
    by_exec: dict[str, list[str]] = {}
    for r in rows:
        if r.job_id:
            by_exec.setdefault(r.executor, []).append(r.job_id)
    view: dict[str, JobState] = {}
    failed: set[str] = set()
    sources = []
    for executor, ids in by_exec.items():
        try:
            states, src = backend_for(executor, workdir=workdir).job_states(ids)
        except SchedulerError as e:
            failed.add(executor)
            warnings.append(f"scheduler not asked: {e}")
            continue
        view.update(states)
        sources.append(src)
    return view, failed, "+".join(dict.fromkeys(sources)) or "none"


def reconcile_intents(session: Session, sweep: Any, rows: list[Any], *, min_age_s: float = 5.0) -> list[str]:
    """Attempts recorded as `submitting` whose submit died: adopt the job its backend has for
    them and that can run, or mark the intent abandoned (the run is submitted again).
    The caller holds the submit lock."""
    from .files import runs_root

    now = utcnow()
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        if r.state == "submitting" and not r.job_id and (now - r.submitted_at).total_seconds() >= min_age_s:
            groups.setdefault((r.executor, r.token or ""), []).append(r)
    notes: list[str] = []
    for (executor, token), rs in groups.items():
        found = backend_for(executor, workdir=sweep.workdir).adopt(
            sweep.name, token, [r.task for r in rs], runs_root(sweep.workdir, sweep.name)) if token else {}
        for r in rs:
            jid = found.get(r.task)
            if jid:
                action, att = Action.ADOPTED, {"job_id": jid}
                notes.append(f"adopted job {jid} for run {r.run_id} (its submit was interrupted after sbatch)")
            else:
                action, att = Action.ABANDONED, {"ended_at": now, "reason":
                                                 "submit interrupted before a job that can run was made; submitted again"}
                notes.append(f"abandoned the interrupted submission of run {r.run_id} (no job that can run)")
            session.execute(update(Attempt).where(Attempt.id == r.attempt_pk).values(state=attempt_after(action), **att))
            apply_action(session, action, Run.id == r.run_pk)
    return notes


def die_for_test(point: str) -> None:
    """Test hook: ISOFLOP_TEST_DIE_AFTER=<point> kills this process (kill -9) there
    (points: intent, job-created, sbatch; see submit.py and slurm.py)."""
    import os
    import signal

    if os.environ.get("ISOFLOP_TEST_DIE_AFTER") == point:
        os.kill(os.getpid(), signal.SIGKILL)
