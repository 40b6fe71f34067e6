"""Cancelling and retrying runs."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Optional

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..state import Action, AttemptState, RunState, action_sources, attempt_after, on_action
from ..store.models import ACTIVE_STATES, Attempt, Metric, Run, utcnow
from ..store.sweeps import get_sweep
from . import files as F
from .backend import backend_for
from .locks import DispatchError, lock_or_refuse

RETRYABLE = action_sources(Action.RETRY)


@dataclass(frozen=True)
class CancelResult:
    sweep: str
    runs: tuple[str, ...]  # run ids now cancelled (with --superseded: whose attempts were cancelled)
    jobs: tuple[str, ...]  # scheduler jobs cancelled (scancel / local kill)
    marked: tuple[str, ...]  # runs asked to stop inside a packed job that goes on with other runs


@dataclass(frozen=True)
class RetryResult:
    sweep: str
    runs: tuple[str, ...]
    moved_aside: tuple[str, ...]  # runs whose result/checkpoint/metrics went to attempt-N/
    lr_scale: Optional[float]


def _match(runs: list, budget: Optional[float], run_ids: Optional[Iterable[str]]) -> list:
    out = runs
    if budget is not None:
        out = [r for r in out if abs(r.budget - budget) <= 1e-6 * budget]
    if run_ids:
        ids = list(run_ids)
        out = [r for r in out if any(r.run_id.startswith(i) for i in ids)]
        for i in ids:
            if not any(r.run_id.startswith(i) for r in runs):
                raise DispatchError(f"no run {i!r} in this sweep")
    return out


def cancel_sweep(engine: Engine, sweep_name: str, *, budget: Optional[float] = None,
                 run_ids: Optional[Iterable[str]] = None, superseded: bool = False) -> CancelResult:
    """Cancel the matching runs that are not finished: scancel (or kill) jobs whose runs are all
    cancelled; ask a packed job to skip/stop a run it shares with others. Runs -> `cancelled`.
    With `superseded`, the matching superseded runs that still have active attempts are the ones
    chosen: their jobs stop, their attempts are cancelled, and the runs stay superseded."""
    with Session(engine) as s:
        sw = get_sweep(s, sweep_name)
        workdir = sw.workdir
    with lock_or_refuse(workdir, "cancel"):
        with Session(engine) as s, s.begin():
            sw = get_sweep(s, sweep_name)
            root = F.runs_root(sw.workdir, sw.name)
            active = list(s.scalars(select(Attempt).join(Run, Run.id == Attempt.run_pk).where(
                Run.sweep_id == sw.id, Attempt.state.in_(ACTIVE_STATES))))
            which = ((Run.state == RunState.SUPERSEDED) & Run.id.in_({a.run_pk for a in active}) if superseded
                     else Run.state.in_(action_sources(Action.CANCEL)))
            runs = list(s.scalars(select(Run).where(Run.sweep_id == sw.id, which)))
            chosen = _match(runs, budget, run_ids)
            if not chosen:
                return CancelResult(sweep_name, (), (), ())
            pks = {r.id for r in chosen}
            by_job: dict[tuple[str, str], list[Attempt]] = {}
            for a in active:
                if a.job_id:
                    by_job.setdefault((a.executor, a.job_id), []).append(a)
            kill: dict[str, list[str]] = {}
            marked = []
            run_of = {r.id: r for r in runs}
            for (ex, jid), atts in by_job.items():
                mine = [a for a in atts if a.run_pk in pks]
                if not mine:
                    continue
                if len(mine) == len(atts):
                    kill.setdefault(ex, []).append(jid)
                else:
                    marked += [run_of[a.run_pk].run_id for a in mine]
            now = utcnow()
            for r in chosen:  # the job checks this marker before and while running the run
                rdir = root / r.run_id
                if rdir.is_dir():
                    (rdir / F.CANCEL).touch()
            for executor, ids in kill.items():
                backend_for(executor, workdir=workdir).cancel(ids)
            for a in active:
                if a.run_pk in pks:
                    a.state, a.ended_at, a.reason = attempt_after(Action.CANCEL), now, "isoflop cancel"
            for r in chosen if not superseded else ():
                was = r.state
                r.state, r.reason, r.updated_at = on_action(was, Action.CANCEL).value, f"cancelled by isoflop cancel (was {was})", now
            return CancelResult(sweep_name, tuple(r.run_id for r in chosen),
                                tuple(j for js in kill.values() for j in js), tuple(marked))


def retry_sweep(engine: Engine, sweep_name: str, *, states: Iterable[str] = ("failed", "lost"),
                lr_scale: Optional[float] = None, budget: Optional[float] = None,
                run_ids: Optional[Iterable[str]] = None) -> RetryResult:
    """Reset runs in `states` to `planned` (attempt cap restarts), so the next submit runs them.
    A diverged run, or any run retried with lr_scale, starts afresh: its result, checkpoint and
    metrics move to attempt-N/; lr_scale multiplies the run's current scale. Others resume from
    their checkpoint."""
    states = tuple(states)
    bad = [s_ for s_ in states if s_ not in RETRYABLE]
    if bad:
        raise DispatchError(f"cannot retry runs in state {bad[0]!r}; retryable: {', '.join(RETRYABLE)}")
    if lr_scale is not None and not (0 < lr_scale < 100):
        raise DispatchError(f"--lr-scale must be a positive factor (e.g. 0.5), got {lr_scale}")
    with Session(engine) as s:
        workdir = get_sweep(s, sweep_name).workdir
    with lock_or_refuse(workdir, "retry"):
        with Session(engine) as s, s.begin():
            sw = get_sweep(s, sweep_name)
            root = F.runs_root(sw.workdir, sw.name)
            runs = _match(list(s.scalars(select(Run).where(Run.sweep_id == sw.id, Run.state.in_(states)))),
                          budget, run_ids)
            counts = dict(s.execute(select(Attempt.run_pk, func.count()).where(
                Attempt.run_pk.in_([r.id for r in runs]), Attempt.state != AttemptState.ABANDONED).group_by(Attempt.run_pk)).all())
            numbers = dict(s.execute(select(Attempt.run_pk, func.max(Attempt.number)).where(
                Attempt.run_pk.in_([r.id for r in runs])).group_by(Attempt.run_pk)).all())
            moved = []
            now = utcnow()
            for r in runs:
                rdir = root / r.run_id
                was = f"{r.state}" + (f": {r.reason}" if r.reason else "")
                fresh = r.state == RunState.DIVERGED or lr_scale is not None
                if fresh:
                    if F.move_aside(rdir, [rdir / n for n in (F.RESULT, F.CHECKPOINT, F.METRICS)],
                                    numbers.get(r.id) or 0):
                        moved.append(r.run_id)
                    s.execute(delete(Metric).where(Metric.run_pk == r.id))
                    r.metrics_offset = 0
                    r.val_loss = r.train_loss = r.step_done = r.tokens_done = r.tokens_per_s = None
                    r.measured_flops = r.wall_s = r.diverged_step = None
                if lr_scale is not None:
                    r.lr_scale = (r.lr_scale or 1.0) * lr_scale
                with contextlib.suppress(FileNotFoundError):
                    (rdir / F.CANCEL).unlink()
                r.attempt_base = counts.get(r.id, 0)
                scale = f" with lr_scale {r.lr_scale:g}" if (r.lr_scale or 1.0) != 1.0 else ""
                r.state, r.reason, r.updated_at = on_action(r.state, Action.RETRY).value, f"retry{scale} (was {was})", now
            return RetryResult(sweep_name, tuple(r.run_id for r in runs), tuple(moved), lr_scale)
