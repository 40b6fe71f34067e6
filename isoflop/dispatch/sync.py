"""Scheduler state + run files -> store, and the sweep's status.

`sync_sweep(engine, name)` asks the scheduler which of the sweep's active attempts are alive
(squeue; sacct when the cluster has accounting; the local pool's state files), ingests each
active run's metrics.jsonl (incrementally), gathers the evidence about each active attempt
(evidence.py), applies what `state.decide` makes of it, and returns a `SweepStatus`. Files decide
results; the scheduler only says what is alive.

Fast path: with no active attempt it neither calls the scheduler nor touches a file; all reads
are bulk queries over columns (no ORM objects), and neither torch nor submitit is imported.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Optional

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..store.engine import lock_sweep
from ..store.ingest import ingest_metrics, result_updates
from ..store.models import ACTIVE_STATES, Attempt, Run, utcnow
from ..store.sweeps import get_sweep
from . import files as F
from .backend import reconcile_intents, scheduler_view
from .evidence import gather
from .locks import try_lock
from ..state import AttemptState, ResultKind, RunState, decide

LOG_TAIL_LINES = 12


class RunStatus(NamedTuple):
    """One run's state and progress (a NamedTuple: immutable, and cheap for 10,000 runs)."""

    run_id: str
    budget: float
    point: int
    params: int
    state: str
    reason: Optional[str]
    attempt: Optional[int]
    job_id: Optional[str]
    step_done: Optional[int]
    steps: int
    tokens_done: Optional[int]
    tokens: int
    tokens_per_s: Optional[float]
    val_loss: Optional[float]
    train_loss: Optional[float]
    lr_scale: float = 1.0
    log_tail: tuple = ()
    mfu: Optional[float] = None  # tok/s x planned FLOPs per token / the profile's peak of one run

    @property
    def progress(self) -> float:
        if self.state in ("completed", "diverged"):
            return 1.0
        return min(1.0, (self.tokens_done or 0) / self.tokens) if self.tokens else 0.0

    @property
    def eta_s(self) -> Optional[float]:
        if self.state != "running" or not self.tokens_per_s:
            return None
        return max(0.0, (self.tokens - (self.tokens_done or 0)) / self.tokens_per_s)

    def to_json(self) -> dict[str, Any]:
        d = self._asdict()
        d["step"], tail = d.pop("step_done"), d.pop("log_tail")
        return {**d, "progress": round(self.progress, 4), "eta_s": self.eta_s,
                **({"log_tail": list(tail)} if tail else {})}


@dataclass(frozen=True)
class BudgetStatus:
    budget: float
    counts: dict[str, int]
    runs: int
    progress: float  # mean progress of its runs
    eta_s: Optional[float]  # of its running runs, when nothing of it is waiting

    def to_json(self) -> dict[str, Any]:
        return {"budget": self.budget, "runs": self.runs, "counts": self.counts,
                "progress": round(self.progress, 4), "eta_s": self.eta_s}


@dataclass(frozen=True)
class SweepStatus:
    sweep: str
    runs: tuple[RunStatus, ...]
    budgets: tuple[BudgetStatus, ...]
    counts: dict[str, int]
    scheduler: str  # where alive-ness came from: squeue | squeue+sacct | local | none
    changed: int  # runs whose state changed in this sync
    warnings: tuple[str, ...] = ()
    synced_at: float = field(default_factory=time.time)
    simulated: bool = False  # the sweep's trainer is the `simulate` template: no run trained

    @property
    def active(self) -> int:
        return sum(self.counts.get(s, 0) for s in ACTIVE_STATES)

    @property
    def finished(self) -> bool:
        return self.active == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep, "scheduler": self.scheduler, "counts": self.counts, "active": self.active,
            "budgets": [b.to_json() for b in self.budgets], "runs": [r.to_json() for r in self.runs],
            "warnings": list(self.warnings), "simulated": self.simulated,
        }


# ------------------------------------------------------------------ syncing


def _log_tail(rdir: Path, attempt: int, workdir_runs: Path, token: Optional[str], job_id: Optional[str]) -> str:
    lines = F.tail(F.log_path(rdir, attempt), LOG_TAIL_LINES)
    if not lines and token and job_id:  # the job itself failed (e.g. could not start python)
        for p in sorted((workdir_runs / ".submitit" / token).glob(f"{job_id}_*_log.*")):
            lines += F.tail(p, LOG_TAIL_LINES // 2)
    return "\n".join(lines)


def _active_rows(session: Session, sweep_id: int) -> list[Any]:
    return list(session.execute(
        select(
            Attempt.id.label("attempt_pk"), Attempt.run_pk, Attempt.number, Attempt.executor, Attempt.job_id,
            Attempt.state, Attempt.token, Attempt.task, Attempt.submitted_at, Attempt.started_at,
            Run.run_id, Run.metrics_offset, Run.state.label("run_state"), Run.step_done, Run.steps,
        ).join(Run, Run.id == Attempt.run_pk).where(Run.sweep_id == sweep_id, Attempt.state.in_(ACTIVE_STATES))
    ))


def _parse_time(s: Any) -> Optional[datetime]:
    if not s:
        return None
    try:
        return datetime.strptime(str(s)[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def sync_active(engine: Engine, sweep_name: str, *, have_lock: bool = False) -> tuple[int, str, list[str]]:
    """Sync the active attempts of a sweep. Returns (runs changed, scheduler source, warnings)."""
    warnings: list[str] = []
    with Session(engine) as s, s.begin():
        sw = get_sweep(s, sweep_name)
        lock_sweep(s, sw.id)  # two syncs of one sweep take turns (a server has no single writer)
        rows = _active_rows(s, sw.id)
        if not rows:
            return 0, "none", warnings
        if any(r.state == "submitting" and not r.job_id for r in rows):
            lock = None if have_lock else try_lock(sw.workdir)
            if have_lock or lock is not None:
                try:
                    warnings += reconcile_intents(s, sw, rows)
                finally:
                    if lock is not None:
                        lock.close()
                s.flush()
                rows = _active_rows(s, sw.id)
        workdir, runs_root = sw.workdir, F.runs_root(sw.workdir, sw.name)
        view, unreachable, source = scheduler_view(workdir, rows, warnings)
        now = utcnow()
        run_upd: dict[int, dict[str, Any]] = {}
        att_upd: dict[int, dict[str, Any]] = {}
        changed = 0
        for r in rows:
            if not r.job_id:
                continue  # an intent of a submit in progress
            run_cols, att_cols = _sync_one(s, r, runs_root, view.get(r.job_id), r.executor in unreachable, now)
            if run_cols.get("state", r.run_state) != r.run_state:
                changed += 1
            if run_cols:
                run_upd.setdefault(r.run_pk, {}).update(run_cols, updated_at=now)
            if att_cols:
                att_upd[r.attempt_pk] = att_cols
        _bulk_update(s, Run, run_upd)
        _bulk_update(s, Attempt, att_upd)
    return changed, source, warnings


def _sync_one(s: Session, r: Any, runs_root: Path, info: Any, unreachable: bool, now: datetime
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Gather one active attempt's evidence, decide, and return the (run, attempt) column updates.
    A result that does not count (invalid, stale) is moved aside here, so the run can train again."""
    rdir = runs_root / r.run_id
    upd = ingest_metrics(s, r.run_pk, rdir, r.metrics_offset or 0)
    ev, check, status = gather(r, rdir, info, unreachable, upd.get("step_done", r.step_done))
    t = decide(r.run_state, r.state, ev)
    a: dict[str, Any] = {}
    if status.get("node"):
        a["node"] = status["node"]
    if status.get("started_at") and not r.started_at:
        a["started_at"] = _parse_time(status["started_at"])
    if check.kind in (ResultKind.VALID, ResultKind.DIVERGED):
        upd.update(result_updates(check.result))
    reason = t.reason
    if check.kind in (ResultKind.INVALID, ResultKind.STALE):
        from ..schemas import set_aside_result

        moved = set_aside_result(rdir, r.number, t.reason or check.kind.value)
        if moved is not None:
            reason = f"{reason}; moved to {moved.name}"
    if not t.final and not t.changes(r.run_state, r.state) and t.reason is None:
        return upd, a
    if t.final:
        a.update(reason=reason, ended_at=_parse_time(status.get("ended_at")) or now)
        exit_code = info[3] if info is not None and info[3] not in (None, "") else status.get("exit_code")
        if exit_code is not None and t.attempt_state != AttemptState.COMPLETED:
            a["exit_code"] = str(exit_code)
        if t.attempt_state in (AttemptState.FAILED, AttemptState.LOST, AttemptState.CANCELLED):
            tail = _log_tail(rdir, r.number, runs_root, r.token, r.job_id)
            if tail:
                a["stderr"] = tail
    a["state"] = t.attempt_state.value
    upd["state"] = t.run_state.value
    if t.run_state != RunState.SUPERSEDED:  # a superseded run keeps why it was superseded
        upd["reason"] = reason
    return upd, a


def _bulk_update(s: Session, table: Any, rows: dict[int, dict[str, Any]]) -> None:
    # group by the set of columns so each executemany is homogeneous
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for pk, vals in rows.items():
        if vals:
            groups.setdefault(tuple(sorted(vals)), []).append({"id": pk, **vals})
    for batch in groups.values():
        s.execute(update(table), batch)


def peak_key(sweep_name: str) -> str:
    """The Meta row that holds the peak FLOP/s of one run of the sweep's latest submit (for MFU);
    a long name is hashed, as Meta keys are at most 64 characters."""
    import hashlib

    name = sweep_name if len(sweep_name) <= 59 else hashlib.sha1(sweep_name.encode()).hexdigest()[:16]
    return f"peak:{name}"


def _peak_per_run(s: Session, sweep_name: str) -> Optional[float]:
    from ..store.models import Meta

    v = s.scalar(select(Meta.value).where(Meta.key == peak_key(sweep_name)))
    return float(v) if v else None


def read_status(engine: Engine, sweep_name: str, *, scheduler: str = "none", changed: int = 0,
                warnings: tuple[str, ...] = ()) -> SweepStatus:
    """The sweep's status from the store alone (no scheduler, no files)."""
    with Session(engine) as s:
        sw = get_sweep(s, sweep_name)
        simulated = ((sw.spec or {}).get("trainer") or {}).get("template") == "simulate"
        last = (select(Attempt.run_pk, func.max(Attempt.number).label("n"))
                .join(Run, Run.id == Attempt.run_pk).where(Run.sweep_id == sw.id)
                .group_by(Attempt.run_pk).subquery())
        att = (select(Attempt.run_pk, Attempt.number, Attempt.job_id, Attempt.stderr)
               .join(last, (last.c.run_pk == Attempt.run_pk) & (last.c.n == Attempt.number)))
        attempts = {a.run_pk: a for a in s.execute(att)}
        rows = s.execute(  # the columns of RunStatus, by name
            select(Run.id, Run.run_id, Run.budget, Run.point, Run.params, Run.state, Run.reason, Run.step_done,
                   Run.steps, Run.tokens_done, Run.tokens, Run.tokens_per_s, Run.val_loss, Run.train_loss,
                   func.coalesce(Run.lr_scale, 1.0).label("lr_scale"))
            .where(Run.sweep_id == sw.id, Run.state != "superseded")
            .order_by(Run.budget, Run.point, Run.lr_mult, Run.batch_mult, Run.seed)
        ).all()
        peak = _peak_per_run(s, sweep_name)
        fpt = dict(s.execute(select(Run.id, Run.flops_exact / Run.tokens).where(Run.sweep_id == sw.id)).all()) \
            if peak else {}
    runs = []
    for pk, *cols in rows:
        a = attempts.get(pk)
        tail = a.stderr.splitlines()[-LOG_TAIL_LINES:] if a and a.stderr and cols[4] in ("failed", "lost") else ()
        tps = cols[10]
        mfu = tps * fpt[pk] / peak if peak and tps and fpt.get(pk) else None
        runs.append(RunStatus(*cols[:6], a and a.number, a and a.job_id, *cols[6:], tuple(tail), mfu))
    by_budget: dict[float, list[RunStatus]] = {}
    for r in runs:
        by_budget.setdefault(r.budget, []).append(r)
    budgets = []
    for b, rs in by_budget.items():
        waiting = any(r.state in ("planned", "submitting", "queued") for r in rs)
        etas = [r.eta_s for r in rs if r.eta_s is not None]
        budgets.append(BudgetStatus(
            budget=b, counts=dict(Counter(r.state for r in rs)), runs=len(rs),
            progress=sum(r.progress for r in rs) / len(rs), eta_s=max(etas) if etas and not waiting else None,
        ))
    counts = dict(Counter(r.state for r in runs))
    return SweepStatus(sweep=sweep_name, runs=tuple(runs), budgets=tuple(budgets), counts=counts,
                       scheduler=scheduler, changed=changed, warnings=tuple(warnings), simulated=simulated)


def sync_sweep(engine: Engine, sweep_name: str, *, have_lock: bool = False) -> SweepStatus:
    """Sync scheduler state and run files into the store, then return the sweep's status."""
    changed, source, warnings = sync_active(engine, sweep_name, have_lock=have_lock)
    return read_status(engine, sweep_name, scheduler=source, changed=changed, warnings=tuple(warnings))
