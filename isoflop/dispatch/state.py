"""The run lifecycle: every state a run or an attempt can be in, and the one decision that moves them.

`decide(run_state, attempt_state, evidence)` is pure: sync (dispatch/sync.py) gathers the
evidence (dispatch/evidence.py) and applies the `Transition` it returns; nothing else decides
a run's state from files or the scheduler. Cheap imports only: `isoflop status` uses it.

Vocabulary (the values are the strings stored in the `runs.state` / `attempts.state` columns
and written by jobs in `attempt-<n>.json`, so older stores still read):

- `RunState`: where a run stands. `superseded` is sticky: only `plan --force` back to the old
  spec revives such a run (store/sweeps.py); sync never moves it.
- `AttemptState`: where one scheduler job executing a run stands. `requeued` and `preempted`
  are written by the job into its status file (the job will resume, or the scheduler ends it);
  `abandoned` is an intent whose submit died before any job existed.
- `ResultKind`: what `result.json` says (evidence, never stored).
- `NOT_BEST` is not a state: `isoflop fit` labels a completed run that lost its (budget, size,
  seed) cell of an lr/batch grid with it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


class RunState(str, enum.Enum):
    PLANNED = "planned"  # stored by plan; submit picks it up
    SUBMITTING = "submitting"  # an intent is recorded; sbatch (or the local pool) not yet answered
    QUEUED = "queued"  # its job waits in the scheduler (or was requeued)
    RUNNING = "running"  # its trainer runs
    COMPLETED = "completed"  # a valid result from the planned last step: the only state that is fitted
    FAILED = "failed"  # the command failed, its result was unusable (invalid or stale), or it gave up
    DIVERGED = "diverged"  # non-finite loss (or the trainer said so); `retry --diverged` restarts it
    LOST = "lost"  # its job ended or vanished without a result (node failure, kill -9, ...)
    CANCELLED = "cancelled"  # isoflop cancel, or scancel
    SUPERSEDED = "superseded"  # no longer planned after `plan --force`; kept with its results, never fitted

    def __str__(self) -> str:
        return self.value


class AttemptState(str, enum.Enum):
    SUBMITTING = "submitting"  # intent recorded before sbatch; adopted or abandoned if the submit dies
    QUEUED = "queued"  # the scheduler holds the job (pending)
    RUNNING = "running"  # the job runs this attempt's command
    REQUEUED = "requeued"  # job's status file: stopped by a time limit/preemption, to resume
    PREEMPTED = "preempted"  # job's status file: the command was stopped by a signal, not broken
    COMPLETED = "completed"
    FAILED = "failed"
    DIVERGED = "diverged"
    LOST = "lost"  # the job left the scheduler without a result
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # the submit died before the job existed; does not count as an attempt

    def __str__(self) -> str:
        return self.value


class ResultKind(str, enum.Enum):
    ABSENT = "absent"  # no result.json
    VALID = "valid"  # a finite loss from the planned last step
    DIVERGED = "diverged"  # non-finite loss, or the trainer says it diverged
    INVALID = "invalid"  # unreadable, truncated, wrong types, another run's: moved aside
    STALE = "stale"  # a loss from before the planned last step: moved aside, never fitted


class Scheduler(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    ENDED = "ended"  # the scheduler knows the job ended (sacct/local state file): see `sched_state`
    UNKNOWN = "unknown"  # the scheduler no longer knows the job
    UNREACHABLE = "unreachable"  # the scheduler could not be asked: decide nothing from it


NOT_BEST = "not_best"

RUN_ACTIVE = (RunState.SUBMITTING, RunState.QUEUED, RunState.RUNNING)
RUN_FINAL = (RunState.COMPLETED, RunState.FAILED, RunState.DIVERGED, RunState.LOST, RunState.CANCELLED)
ATTEMPT_ACTIVE = (AttemptState.SUBMITTING, AttemptState.QUEUED, AttemptState.RUNNING)
# what a job may write as the state of its attempt-<n>.json
JOB_REPORTED = (AttemptState.RUNNING, AttemptState.REQUEUED, AttemptState.PREEMPTED, AttemptState.COMPLETED,
                AttemptState.FAILED, AttemptState.DIVERGED, AttemptState.CANCELLED)


@dataclass(frozen=True)
class Evidence:
    """What is known about one active attempt, gathered without deciding anything."""

    result: ResultKind = ResultKind.ABSENT
    result_reason: Optional[str] = None  # why a result is invalid/stale, or the step a diverged one stopped
    reported: Optional[AttemptState] = None  # the state in the job's attempt-<n>.json
    reported_reason: Optional[str] = None
    scheduler: Scheduler = Scheduler.UNKNOWN
    sched_state: str = ""  # the scheduler's word for an ended job (COMPLETED, CANCELLED by 0, TIMEOUT, ...)
    job_id: str = ""
    trainer_alive: Optional[bool] = None  # None: not known (another node, or no pid recorded)
    last_step: Optional[int] = None  # the last logged step, for the reason of a lost run


@dataclass(frozen=True)
class Transition:
    run_state: RunState
    attempt_state: AttemptState
    reason: Optional[str]
    final: bool  # the attempt has ended: record its end time (and log tail when it went wrong)

    def changes(self, run_state: str, attempt_state: str) -> bool:
        return self.run_state != run_state or self.attempt_state != attempt_state


def _attempt(run_state: RunState, attempt: AttemptState, ev: Evidence) -> Transition:
    """The transition as if the run were live; `decide` pins superseded runs afterwards."""
    if ev.result == ResultKind.VALID:
        return Transition(RunState.COMPLETED, AttemptState.COMPLETED, None, True)
    if ev.result == ResultKind.DIVERGED:
        return Transition(RunState.DIVERGED, AttemptState.DIVERGED, ev.result_reason or "diverged", True)
    if ev.result in (ResultKind.INVALID, ResultKind.STALE):
        return Transition(RunState.FAILED, AttemptState.FAILED, ev.result_reason or f"{ev.result.value} result", True)
    if ev.reported in (AttemptState.FAILED, AttemptState.CANCELLED):
        st = ev.reported
        return Transition(RunState(st.value), st, ev.reported_reason or st.value, True)
    if ev.reported in (AttemptState.COMPLETED, AttemptState.DIVERGED):
        # the job says it finished, yet no result is here: the file was lost or moved by hand
        why = f"the job reported {ev.reported.value} but result.json is missing"
        return Transition(RunState.LOST, AttemptState.LOST, why, True)
    if ev.scheduler == Scheduler.UNREACHABLE:
        return Transition(run_state, attempt, None, False)
    if ev.scheduler == Scheduler.PENDING:
        return Transition(RunState.QUEUED, AttemptState.QUEUED, None, False)
    if ev.scheduler == Scheduler.RUNNING:
        st = RunState.RUNNING if ev.reported == AttemptState.RUNNING else RunState.QUEUED
        return Transition(st, AttemptState(st.value), None, False)
    # the job ended, or the scheduler forgot it, without a result for this run
    if ev.trainer_alive:
        why = f"job {ev.job_id} is gone but its trainer still runs"
        return Transition(RunState.RUNNING, AttemptState.RUNNING, why, False)
    at = f"; last step {ev.last_step}" if ev.last_step is not None else "; no step logged"
    if ev.sched_state.startswith("CANCELLED"):
        return Transition(RunState.CANCELLED, AttemptState.CANCELLED,
                          f"job {ev.job_id} was cancelled ({ev.sched_state}){at}", True)
    what = f"ended ({ev.sched_state})" if ev.sched_state else "left the scheduler"
    extra = f": {ev.reported_reason}" if ev.reported_reason else ""
    return Transition(RunState.LOST, AttemptState.LOST, f"job {ev.job_id} {what} without a result{extra}{at}", True)


def decide(run_state: str, attempt_state: str, evidence: Evidence) -> Transition:
    """The next state of a run and of its active attempt, given the evidence.

    Order: a result decides first (valid -> completed, non-finite -> diverged, invalid or
    stale -> failed), then what the job reported as final, then the scheduler; an unreachable
    scheduler changes nothing. A superseded run stays superseded whatever happens to its
    attempt (the attempt still ends, and its result is kept)."""
    rs, at = RunState(run_state), AttemptState(attempt_state)
    t = _attempt(rs, at, evidence)
    if rs == RunState.SUPERSEDED:
        return Transition(RunState.SUPERSEDED, t.attempt_state, t.reason, t.final)
    return t
