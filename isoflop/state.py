"""The run lifecycle: every state a run or an attempt can be in, and the one decision that moves them.

`decide(run_state, attempt_state, evidence)` is pure: sync (dispatch/sync.py) gathers the
evidence (dispatch/evidence.py) and applies the `Transition` it returns; nothing else decides
a run's state from files or the scheduler. What users and the dispatcher do to a run (submit,
cancel, retry, plan --force, ...) goes through `on_action(run_state, action)`, which refuses
moves that make no sense. No other module writes a state of its own choosing. It lives outside
dispatch/ because the store uses it too; cheap imports only: `isoflop status` uses it.

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
from typing import Any, Optional


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
class ResultCheck:
    """A judged result.json (isoflop/schemas.py judges it; here so that an absent result is
    known without importing pydantic)."""

    kind: ResultKind
    result: Any  # the parsed schemas.Result (also a diverged or stale one); None when absent/invalid
    reason: Optional[str]  # why it does not count (invalid, stale) or where it diverged


ABSENT = ResultCheck(ResultKind.ABSENT, None, None)


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


class Action(str, enum.Enum):
    """What a user or the dispatcher does to a run (evidence is `decide`'s business)."""

    SUBMIT = "submit"  # submit records an intent (an attempt in `submitting`)
    JOB_RECORDED = "job recorded"  # the backend answered with the job id
    SBATCH_FAILED = "sbatch failed"  # the backend refused: the run is planned again
    ADOPTED = "adopted"  # a dead submit's job was found and can run
    ABANDONED = "abandoned"  # a dead submit left no job that can run: submitted again
    GIVE_UP = "give up"  # max_attempts used up
    CANCEL = "cancel"  # isoflop cancel
    RETRY = "retry"  # isoflop retry
    SUPERSEDE = "supersede"  # plan --force no longer plans it
    REVIVE = "revive"  # plan --force plans it again

    def __str__(self) -> str:
        return self.value


class IllegalMove(Exception):
    """A caller asked for a move the lifecycle forbids: a bug in the caller, never a user error
    (callers select the runs an action applies to with `action_sources`)."""


_S = RunState
_SUBMITTABLE = (_S.PLANNED, _S.LOST, _S.FAILED)  # cancelled runs wait for `isoflop retry --cancelled`
# action -> (run states it applies to, run state after, the active attempt's state after)
_MOVES: dict[Action, tuple[tuple[RunState, ...], RunState, Optional[AttemptState]]] = {
    Action.SUBMIT: (_SUBMITTABLE, _S.SUBMITTING, AttemptState.SUBMITTING),
    Action.JOB_RECORDED: ((_S.SUBMITTING,), _S.QUEUED, AttemptState.QUEUED),
    Action.SBATCH_FAILED: ((_S.SUBMITTING,), _S.PLANNED, AttemptState.ABANDONED),
    Action.ADOPTED: ((_S.SUBMITTING,), _S.QUEUED, AttemptState.QUEUED),
    Action.ABANDONED: ((_S.SUBMITTING,), _S.PLANNED, AttemptState.ABANDONED),
    Action.GIVE_UP: (_SUBMITTABLE, _S.FAILED, None),
    Action.CANCEL: ((_S.PLANNED, _S.LOST, _S.FAILED) + RUN_ACTIVE, _S.CANCELLED, AttemptState.CANCELLED),
    Action.RETRY: ((_S.FAILED, _S.DIVERGED, _S.LOST, _S.CANCELLED), _S.PLANNED, None),
    Action.SUPERSEDE: (tuple(s for s in RunState if s != _S.SUPERSEDED), _S.SUPERSEDED, None),
    Action.REVIVE: ((_S.SUPERSEDED,), _S.PLANNED, None),
}


def on_action(run_state: str, action: Action) -> RunState:
    """The run's state after `action`; IllegalMove if the action does not apply to `run_state`
    (cancel of a finished run, anything but revive out of superseded, submit of a completed run)."""
    sources, to, _ = _MOVES[action]
    if RunState(run_state) not in sources:
        raise IllegalMove(f"cannot {action.value} a run that is {run_state}")
    return to


def action_sources(action: Action) -> tuple[str, ...]:
    """The run states `action` applies to, as stored strings: for queries that select the runs."""
    return tuple(s.value for s in _MOVES[action][0])


def action_target(action: Action) -> str:
    """The run state after `action`, as stored, for bulk updates over rows in `action_sources`."""
    return _MOVES[action][1].value


def attempt_after(action: Action) -> Optional[str]:
    """The state the run's active attempt takes with `action` (None: attempts are not touched)."""
    st = _MOVES[action][2]
    return None if st is None else st.value
