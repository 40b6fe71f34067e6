"""The run lifecycle's one decision, `decide(run_state, attempt_state, evidence)`: a table of every
kind of evidence against every state an active attempt's run can be in, and properties over the
whole evidence space."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isoflop.state import (
    ATTEMPT_ACTIVE, Action as X, AttemptState as A, Evidence, IllegalMove, ResultKind as R, RunState as S,
    Scheduler as Q, action_sources, attempt_after, decide, on_action,
)
from isoflop.store.models import ACTIVE_STATES, FINAL_STATES, RUN_STATES

E = Evidence
# (name, evidence, run state, attempt state, final, words the reason must hold); None: unchanged
TABLE = [
    ("valid result", E(R.VALID, scheduler=Q.RUNNING), S.COMPLETED, A.COMPLETED, True, None),
    ("valid result, scheduler unreachable", E(R.VALID, scheduler=Q.UNREACHABLE), S.COMPLETED, A.COMPLETED, True, None),
    ("valid result beats a failed report", E(R.VALID, reported=A.FAILED, reported_reason="exit 1", scheduler=Q.ENDED),
     S.COMPLETED, A.COMPLETED, True, None),
    ("non-finite loss (finding 6)", E(R.DIVERGED, "diverged at step 40 (val_loss nan)", scheduler=Q.ENDED,
                                      sched_state="COMPLETED"), S.DIVERGED, A.DIVERGED, True, "step 40"),
    ("invalid result (findings 2, 3)", E(R.INVALID, "/r/result.json: val_loss: not a number", scheduler=Q.ENDED,
                                         sched_state="COMPLETED"), S.FAILED, A.FAILED, True, "result.json: val_loss"),
    ("invalid result while the job runs", E(R.INVALID, "/r/result.json: not valid JSON", scheduler=Q.RUNNING,
                                            reported=A.RUNNING), S.FAILED, A.FAILED, True, "not valid JSON"),
    ("stale result (finding 10)", E(R.STALE, "its loss is from step 935 of 1025 planned", scheduler=Q.ENDED,
                                    sched_state="COMPLETED"), S.FAILED, A.FAILED, True, "935 of 1025"),
    ("stale result, scheduler unreachable", E(R.STALE, "step 1 of 2", scheduler=Q.UNREACHABLE),
     S.FAILED, A.FAILED, True, "step 1 of 2"),
    ("job reported failed", E(reported=A.FAILED, reported_reason="exit code 1: boom", scheduler=Q.RUNNING),
     S.FAILED, A.FAILED, True, "boom"),
    ("job reported cancelled", E(reported=A.CANCELLED, reported_reason="cancelled (isoflop cancel)",
                                 scheduler=Q.UNREACHABLE), S.CANCELLED, A.CANCELLED, True, "isoflop cancel"),
    ("job reported completed, result gone", E(reported=A.COMPLETED, scheduler=Q.ENDED, sched_state="COMPLETED"),
     S.LOST, A.LOST, True, "result.json is missing"),
    ("scheduler unreachable", E(scheduler=Q.UNREACHABLE, reported=A.RUNNING), None, None, False, None),
    ("scheduler unreachable, no status file", E(scheduler=Q.UNREACHABLE), None, None, False, None),
    ("pending", E(scheduler=Q.PENDING), S.QUEUED, A.QUEUED, False, None),
    ("pending after a requeue", E(scheduler=Q.PENDING, reported=A.REQUEUED), S.QUEUED, A.QUEUED, False, None),
    ("running, trainer started", E(scheduler=Q.RUNNING, reported=A.RUNNING), S.RUNNING, A.RUNNING, False, None),
    ("running, trainer not started", E(scheduler=Q.RUNNING), S.QUEUED, A.QUEUED, False, None),
    ("running, requeue in progress", E(scheduler=Q.RUNNING, reported=A.REQUEUED), S.QUEUED, A.QUEUED, False, None),
    ("ended without a result", E(scheduler=Q.ENDED, sched_state="COMPLETED", job_id="7_1", last_step=120),
     S.LOST, A.LOST, True, "job 7_1 ended (COMPLETED) without a result; last step 120"),
    ("time limit, preempted", E(scheduler=Q.ENDED, sched_state="TIMEOUT", reported=A.PREEMPTED,
                                reported_reason="stopped by SIGUSR1", job_id="8"),
     S.LOST, A.LOST, True, "ended (TIMEOUT) without a result: stopped by SIGUSR1; no step logged"),
    ("scancel", E(scheduler=Q.ENDED, sched_state="CANCELLED by 0", job_id="9"), S.CANCELLED, A.CANCELLED, True,
     "job 9 was cancelled (CANCELLED by 0)"),
    ("forgotten by the scheduler", E(scheduler=Q.UNKNOWN, job_id="10"), S.LOST, A.LOST, True,
     "job 10 left the scheduler without a result"),
    ("job gone, trainer alive (finding 4)", E(scheduler=Q.ENDED, sched_state="LOST", trainer_alive=True, job_id="11"),
     S.RUNNING, A.RUNNING, False, "trainer still runs"),
    ("job gone, trainer dead", E(scheduler=Q.UNKNOWN, trainer_alive=False, job_id="12"), S.LOST, A.LOST, True,
     "left the scheduler"),
]
# every state a run can be in while one of its attempts is active (planned: revived by plan --force)
LIVE = [(S.SUBMITTING, A.SUBMITTING), (S.QUEUED, A.QUEUED), (S.RUNNING, A.RUNNING), (S.QUEUED, A.RUNNING),
        (S.PLANNED, A.QUEUED)]


@pytest.mark.parametrize("run_state,attempt_state", LIVE + [(S.SUPERSEDED, A.QUEUED), (S.SUPERSEDED, A.RUNNING)])
@pytest.mark.parametrize("name,ev,run_to,att_to,final,words", TABLE, ids=[t[0] for t in TABLE])
def test_decide_table(run_state, attempt_state, name, ev, run_to, att_to, final, words):
    t = decide(run_state.value, attempt_state.value, ev)
    want_run = run_state if run_to is None else run_to
    if run_state == S.SUPERSEDED:  # finding 1: the attempt ends, the run stays superseded
        want_run = S.SUPERSEDED
    assert t.run_state == want_run, name
    assert t.attempt_state == (attempt_state if att_to is None else att_to), name
    assert t.final is final, name
    if words:
        assert words in (t.reason or ""), (name, t.reason)


def test_vocabulary_is_one():
    assert RUN_STATES == tuple(s.value for s in S)
    assert set(ACTIVE_STATES) | set(FINAL_STATES) | {"planned", "superseded"} == set(RUN_STATES)
    assert not set(ACTIVE_STATES) & set(FINAL_STATES)
    # the words that used to float around have one home each
    assert {"requeued", "preempted", "abandoned"} <= {a.value for a in A}
    assert "not_best" not in RUN_STATES and "superseded" in RUN_STATES


evidence = st.builds(
    Evidence, result=st.sampled_from(R), result_reason=st.none() | st.text(max_size=20),
    reported=st.none() | st.sampled_from(A), reported_reason=st.none() | st.text(max_size=20),
    scheduler=st.sampled_from(Q), sched_state=st.sampled_from(["", "COMPLETED", "FAILED", "CANCELLED by 0",
                                                                "TIMEOUT", "NODE_FAIL", "LOST"]),
    job_id=st.text(max_size=8), trainer_alive=st.none() | st.booleans(), last_step=st.none() | st.integers(0, 10**6),
)
run_states = st.sampled_from(list(S))
attempt_states = st.sampled_from(list(ATTEMPT_ACTIVE))


@given(run_states, attempt_states, evidence)
def test_superseded_never_leaves_superseded(rs, at, ev):
    t = decide(rs.value, at.value, ev)
    assert (t.run_state == S.SUPERSEDED) == (rs == S.SUPERSEDED)


@given(run_states.filter(lambda s: s != S.SUPERSEDED), attempt_states, evidence)
def test_a_valid_result_always_wins(rs, at, ev):
    t = decide(rs.value, at.value, Evidence(**{**ev.__dict__, "result": R.VALID}))
    assert (t.run_state, t.attempt_state, t.final) == (S.COMPLETED, A.COMPLETED, True)


@given(run_states, attempt_states, evidence)
def test_unreachable_scheduler_never_changes_state(rs, at, ev):
    ev = Evidence(**{**ev.__dict__, "scheduler": Q.UNREACHABLE, "result": R.ABSENT})
    t = decide(rs.value, at.value, ev)
    if ev.reported in (A.FAILED, A.CANCELLED, A.COMPLETED, A.DIVERGED):
        assert t.final  # the job's own final word needs no scheduler
    else:
        assert (t.run_state, t.attempt_state, t.final) == (rs, at, False)


@given(run_states, attempt_states, evidence)
def test_transitions_are_consistent(rs, at, ev):
    t = decide(rs.value, at.value, ev)
    assert t.final == (t.attempt_state.value in FINAL_STATES)
    if t.run_state != S.SUPERSEDED and t.final:  # the run ends as its attempt did, and says why
        assert t.run_state.value == t.attempt_state.value
        assert t.reason or t.run_state == S.COMPLETED
    if ev.result in (R.INVALID, R.STALE, R.DIVERGED):  # a result that does not count is never fitted
        assert t.run_state in (S.FAILED, S.DIVERGED, S.SUPERSEDED) and t.final



# ------------------------------------------------------------------ what users and the dispatcher do

# action -> {run state it applies to: run state after}; every other (state, action) is refused
ACTIONS = {
    X.SUBMIT: {S.PLANNED: S.SUBMITTING, S.LOST: S.SUBMITTING, S.FAILED: S.SUBMITTING},
    X.JOB_RECORDED: {S.SUBMITTING: S.QUEUED},
    X.ADOPTED: {S.SUBMITTING: S.QUEUED},
    X.SBATCH_FAILED: {S.SUBMITTING: S.PLANNED},
    X.ABANDONED: {S.SUBMITTING: S.PLANNED},
    X.GIVE_UP: {S.PLANNED: S.FAILED, S.LOST: S.FAILED, S.FAILED: S.FAILED},
    X.CANCEL: {st: S.CANCELLED for st in (S.PLANNED, S.LOST, S.FAILED, S.SUBMITTING, S.QUEUED, S.RUNNING)},
    X.RETRY: {st: S.PLANNED for st in (S.FAILED, S.DIVERGED, S.LOST, S.CANCELLED)},
    X.SUPERSEDE: {st: S.SUPERSEDED for st in S if st != S.SUPERSEDED},
    X.REVIVE: {S.SUPERSEDED: S.PLANNED},
}


def test_every_action_is_in_the_table():
    assert set(ACTIONS) == set(X)


@pytest.mark.parametrize("action", list(X), ids=str)
@pytest.mark.parametrize("state", list(S), ids=str)
def test_action_table(state, action):
    want = ACTIONS[action].get(state)
    if want is None:
        with pytest.raises(IllegalMove, match=f"cannot {action.value} a run that is {state.value}"):
            on_action(state.value, action)
        assert state.value not in action_sources(action)
    else:
        assert on_action(state.value, action) == want
        assert state.value in action_sources(action)


def test_attempts_follow_the_actions():
    assert attempt_after(X.SUBMIT) == "submitting"
    assert attempt_after(X.JOB_RECORDED) == attempt_after(X.ADOPTED) == "queued"
    assert attempt_after(X.SBATCH_FAILED) == attempt_after(X.ABANDONED) == "abandoned"
    assert attempt_after(X.CANCEL) == "cancelled"
    assert attempt_after(X.RETRY) is attempt_after(X.SUPERSEDE) is None


steps = st.lists(st.one_of(st.sampled_from(list(X)), st.tuples(attempt_states, evidence)), max_size=30)


@given(run_states, steps)
def test_no_sequence_leaves_superseded_but_revive_nor_resubmits_a_completed_run(start, seq):
    """Random interleavings of actions and evidence, as submit, sync, cancel, retry and plan
    --force produce them: refused actions change nothing."""
    state = start
    for step in seq:
        before = state
        if isinstance(step, X):
            try:
                state = on_action(state.value, step)
            except IllegalMove:
                assert state not in ACTIONS[step]
                continue
            assert not (before == S.COMPLETED and step == X.SUBMIT)
        else:
            state = decide(state.value, step[0].value, step[1]).run_state
        if before == S.SUPERSEDED:
            assert state == S.SUPERSEDED or step == X.REVIVE, (step, state)
    with pytest.raises(IllegalMove):
        on_action(S.COMPLETED.value, X.SUBMIT)

# ------------------------------------------------------------------ what a result.json says

from isoflop.schemas import check_result, parse_result  # noqa: E402

RESULTS = [
    ({"run_id": "r", "val_loss": 3.2, "step": 100}, R.VALID, None),
    ({"run_id": "r", "val_loss": "3.2", "steps": 100}, R.VALID, None),  # older results: steps, a string loss
    ({"run_id": "r", "val_loss": 3.2}, R.VALID, None),  # no step: trusted (an external script's own file)
    ({"run_id": "r", "val_loss": "abc", "step": 100}, R.INVALID, "val_loss"),
    ({"run_id": "r", "val_loss": True, "step": 100}, R.INVALID, "boolean"),
    ({"run_id": "r", "step": 100}, R.INVALID, "no val_loss"),
    ({"run_id": "other", "val_loss": 3.2, "step": 100}, R.INVALID, "belongs to run 'other'"),
    ({"run_id": "r", "val_loss": 3.2, "step": "x"}, R.INVALID, "step"),
    ({"run_id": "r", "val_loss": 3.2, "status": "great"}, R.INVALID, "status"),
    ([3.2], R.INVALID, "JSON list"),
    ({"run_id": "r", "val_loss": float("nan"), "step": 100}, R.DIVERGED, "val_loss nan"),
    ({"run_id": "r", "val_loss": float("inf"), "step": 100}, R.DIVERGED, "val_loss inf"),
    ({"run_id": "r", "val_loss": None, "diverged": True, "diverged_step": 40}, R.DIVERGED, "step 40"),
    ({"run_id": "r", "val_loss": 3.2, "status": "diverged", "step": 7}, R.DIVERGED, "step 7"),
    ({"run_id": "r", "val_loss": 3.2, "step": 99}, R.STALE, "step 99 of 100"),
    ({"run_id": "r", "val_loss": 3.2, "step": 50, "planned_steps": 60}, R.STALE, "step 50 of 100"),
]


@pytest.mark.parametrize("data,kind,words", RESULTS)
def test_result_kinds(data, kind, words):
    c = parse_result(data, run_id="r", planned_steps=100)
    assert c.kind == kind, c
    assert (c.result is not None) == (kind in (R.VALID, R.DIVERGED, R.STALE))
    if words:
        assert words in c.reason, c.reason


def test_result_files(tmp_path):
    p = tmp_path / "result.json"
    assert check_result(p).kind == R.ABSENT
    p.write_text('{"run_id": "r", "val_loss": 3.')
    c = check_result(p, run_id="r")
    assert c.kind == R.INVALID and "not valid JSON" in c.reason and "truncated?" in c.reason
    p.write_bytes(b"\xff\xfe")
    assert check_result(p).kind == R.INVALID
    p.write_text('{"run_id": "r", "val_loss": NaN, "step": 5}')  # what Python's json writes for NaN
    assert check_result(p, run_id="r", planned_steps=5).kind == R.DIVERGED


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=8)
result_keys = st.sampled_from(["run_id", "val_loss", "train_loss", "step", "steps", "planned_steps", "status",
                               "diverged", "diverged_step", "tokens", "wall_s"])


@given(st.dictionaries(result_keys, json_values, max_size=8), st.none() | st.integers(1, 10**6))
def test_any_result_is_judged_never_raises(data, planned):
    c = parse_result(data, run_id="r", planned_steps=planned)
    assert c.kind != R.ABSENT
    assert (c.reason is None) == (c.kind == R.VALID)
    if c.kind == R.VALID:  # only a finite loss from the planned last step (or no step said) counts
        assert c.result.val_loss is not None and c.result.val_loss == c.result.val_loss
        assert 0 < c.result.val_loss != float("inf")
        assert planned is None or c.result.step is None or c.result.step >= planned


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(1, 10**6), st.integers(0, 10**6))
def test_a_finite_loss_counts_only_from_the_last_step(loss, planned, step):
    c = parse_result({"run_id": "r", "val_loss": loss, "step": step}, run_id="r", planned_steps=planned)
    if loss <= 0:  # a cross-entropy is positive: the fits take its logarithm
        assert c.kind == R.INVALID and "not a positive loss" in c.reason
    else:
        assert c.kind == (R.VALID if step >= planned else R.STALE)
