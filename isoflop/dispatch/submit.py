"""Submitting a sweep's runs: choose them, pack them into jobs, record intents, call the backend.

Order of a submission (each step committed before the next):
  1. under the submit lock (one submit per workdir at a time), sync the sweep, which settles the
     intents of an earlier submit that died (adopt its job if it can run, or abandon the intent);
  2. pick the runs that are not finished, not active, and under the attempt cap;
  3. pack short runs into jobs, group jobs into arrays (<= MaxArraySize, throttled by %N);
  4. write each run's run.json, and record one Attempt per run in state `submitting` with the
     submission's token (the job name is `isoflop-<sweep>-<token>`) -- COMMIT;
  5. submit each array through the backend, then record the job ids -- COMMIT per array.
A submit killed anywhere never creates a second job for a run: its `submitting` attempts are
found again in step 1 by job name. Ctrl-C during step 5 is deferred until the ids are recorded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..store.models import Attempt, Meta, Run, Sweep, utcnow
from ..state import Action, action_sources, attempt_after, on_action
from ..store.sweeps import apply_action, get_sweep
from . import files as F
from .backend import ArrayPlan, Backend, JobPlan, backend_for, die_for_test
from .locks import DispatchError, job_name, submit_lock
from .profiles import Profile

__all__ = ["DispatchError", "SubmitResult", "pack", "run_json", "submit_sweep"]

SUBMITTABLE = action_sources(Action.SUBMIT)


@dataclass(frozen=True)
class SubmitResult:
    runs: tuple[str, ...]  # run ids submitted (or that would be)
    arrays: tuple[ArrayPlan, ...]
    gpu_hours: float  # estimated (without margin)
    skipped: dict[str, int]  # not submitted, by state
    over_cap: tuple[str, ...]  # runs failed now because they used up max_attempts
    sbatch_script: Optional[str] = None  # dry run: the script of the first array

    @property
    def jobs(self) -> int:
        return sum(len(a.jobs) for a in self.arrays)


@contextlib.contextmanager
def _defer_sigint() -> Iterator[None]:
    """Ctrl-C inside: remembered, raised as KeyboardInterrupt on exit (after the ids are stored)."""
    got: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got:
            raise KeyboardInterrupt


# ------------------------------------------------------------------ packing


def _bins(short: list[str], estimates: dict[str, float], target: float, slots: int) -> list[list[str]]:
    """Short runs into bins of about `target` s, never fewer bins than slots (when runs allow)."""
    n = max(1, math.ceil(sum(estimates[r] for r in short) / target))
    n = min(len(short), max(n, slots) if n <= slots else math.ceil(n / slots) * slots)
    bins: list[list[str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for rid in short:  # longest first, each into the least loaded bin
        i = min(range(n), key=load.__getitem__)
        bins[i].append(rid)
        load[i] += estimates[rid]
    return [b for b in bins if b]


def pack(estimates: dict[str, float], profile: Profile) -> list[JobPlan]:
    """Runs -> jobs. A run of at least half the target length is a job of its own; shorter runs
    share jobs of about `pack_target_minutes`, balanced longest-first, and never fewer jobs than
    there are slots (array parallelism), so packing never serialises work that could run at once."""
    target = profile.pack_target_minutes * 60
    # longest first: with more runs than slots, starting the long ones early shortens the makespan
    order = sorted(estimates, key=lambda r: -estimates[r])
    if target <= 0:
        groups = [[rid] for rid in order]
    else:
        groups = [[rid] for rid in order if estimates[rid] >= target / 2]
        short = [rid for rid in order if estimates[rid] < target / 2]
        if short:
            groups += _bins(short, estimates, target, profile.array_parallelism)
    return [JobPlan(tuple(g), sum(estimates[r] for r in g), profile.job_minutes(sum(estimates[r] for r in g)))
            for g in groups]


def _bucket(minutes: int, profile: Profile) -> int:
    """Jobs of one array share a time limit: round requests up to a power of two (capped)."""
    b = profile.min_time_minutes
    while b < minutes:
        b *= 2
    return min(b, profile.max_time_minutes)


def _arrays(jobs: list[JobPlan], profile: Profile, sweep: str, backend: Backend) -> list[ArrayPlan]:
    by_bucket: dict[int, list[JobPlan]] = {}
    for j in jobs:
        by_bucket.setdefault(_bucket(j.minutes, profile), []).append(j)
    out = []
    for minutes, js in sorted(by_bucket.items()):
        for i in range(0, len(js), profile.max_array_size):
            chunk = tuple(js[i:i + profile.max_array_size])
            token = secrets.token_hex(4)
            name = job_name(sweep, token)
            requeues = profile.max_requeues + math.ceil(max(j.seconds for j in chunk) / (profile.max_time_minutes * 60))
            runs = [r for j in chunk for r in j.run_ids]
            comment = f"isoflop sweep={sweep} token={token} runs={','.join(runs[:8])}{',...' if len(runs) > 8 else ''}"
            params = backend.parameters(minutes=minutes, name=name, comment=comment)
            out.append(ArrayPlan(token, name, minutes, chunk, params, requeues))
    return out


# ------------------------------------------------------------------ run.json


def run_json(run: Any, sweep: str, attempt: int, lr_scale: float) -> dict[str, Any]:
    from ..schemas import RunFile

    return RunFile.of_run(run, sweep, attempt, lr_scale).to_json()


# ------------------------------------------------------------------ submit


def _check_budget(engine: Engine, sweep_id: int, sweep_name: str, budget: float) -> None:
    with Session(engine) as s:
        known = sorted({b for (b,) in s.execute(select(Run.budget).where(Run.sweep_id == sweep_id).distinct())})
    if not any(abs(b - budget) <= 1e-6 * budget for b in known):
        raise DispatchError(f"sweep {sweep_name!r} has no budget {budget:.4g}; its budgets: "
                            + ", ".join(f"{b:.3g}" for b in known))


def _settle_intents(engine: Engine, sweep_name: str, sweep_id: int) -> None:
    """Sync; intents younger than the reconcile age are settled once they are old enough."""
    from .sync import sync_sweep

    for _ in range(30):
        sync_sweep(engine, sweep_name, have_lock=True)
        with Session(engine) as s:
            left = s.scalar(select(func.count()).select_from(Attempt).join(Run, Run.id == Attempt.run_pk)
                            .where(Run.sweep_id == sweep_id, Attempt.state == "submitting", Attempt.job_id.is_(None)))
        if not left:
            return
        time.sleep(1.0)


def submit_sweep(engine: Engine, sweep_name: str, profile: Profile, *, dry_run: bool = False,
                 max_runs: Optional[int] = None, budget: Optional[float] = None) -> SubmitResult:
    """Submit every run of the sweep that is not finished and not active (see the module doc)."""
    with Session(engine) as s:
        sw = get_sweep(s, sweep_name)
        sweep_id, workdir = sw.id, sw.workdir
    if budget is not None:
        _check_budget(engine, sweep_id, sweep_name, budget)
    backend = backend_for(profile.executor, workdir=workdir, profile=profile)
    if dry_run:
        return _submit_locked(engine, sweep_name, profile, backend, dry_run=True, max_runs=max_runs, budget=budget)
    backend.check()
    with submit_lock(workdir):
        _settle_intents(engine, sweep_name, sweep_id)
        return _submit_locked(engine, sweep_name, profile, backend, dry_run=False, max_runs=max_runs, budget=budget)


def _choose(s: Session, sweep_id: int, profile: Profile, budget: Optional[float],
            dry_run: bool) -> tuple[list[Run], dict[str, int], list[str]]:
    """(runs to submit, runs not submitted by state, runs failed now for using up max_attempts)."""
    skipped = dict(s.execute(select(Run.state, func.count()).where(
        Run.sweep_id == sweep_id, Run.state.not_in(SUBMITTABLE), Run.state != "superseded").group_by(Run.state)).all())
    q = select(Run).where(Run.sweep_id == sweep_id, Run.state.in_(SUBMITTABLE))
    if budget is not None:
        q = q.where(Run.budget.between(budget * (1 - 1e-6), budget * (1 + 1e-6)))
    runs = list(s.scalars(q.order_by(Run.budget, Run.point, Run.lr_mult, Run.batch_mult, Run.seed)))
    counts = dict(s.execute(
        select(Attempt.run_pk, func.count()).join(Run, Run.id == Attempt.run_pk)
        .where(Run.sweep_id == sweep_id, Attempt.state != "abandoned").group_by(Attempt.run_pk)).all())
    todo, over_cap = [], []
    for r in runs:
        used = counts.get(r.id, 0) - (r.attempt_base or 0)
        if used < profile.max_attempts:
            todo.append(r)
            continue
        over_cap.append(r.run_id)
        if not dry_run:
            if r.state != "failed" or not (r.reason or "").startswith("gave up"):
                r.reason = (f"gave up after {used} attempt(s) (max_attempts {profile.max_attempts} of "
                            f"profile {profile.name!r}); last: {r.reason or r.state}; `isoflop retry` resets")
            r.state = on_action(r.state, Action.GIVE_UP).value
    return todo, skipped, over_cap


def _record_intents(s: Session, sweep_id: int, sweep_name: str, root: Path, arrays: list[ArrayPlan],
                    runs: dict[str, Run], executor: str) -> None:
    """run.json + one `submitting` Attempt per run, committed before anything reaches the scheduler."""
    numbers = dict(s.execute(
        select(Attempt.run_pk, func.max(Attempt.number)).join(Run, Run.id == Attempt.run_pk)
        .where(Run.sweep_id == sweep_id).group_by(Attempt.run_pk)).all())
    now = utcnow()
    # the spec's trackers go into run.json beside the definition, not into it: switching them on
    # changes no run id
    trackers = (s.get(Sweep, sweep_id).spec or {}).get("trackers")
    extra = {"trackers": trackers} if trackers and (trackers.get("wandb") or trackers.get("tensorboard")) else {}
    for arr in arrays:
        for task, job in enumerate(arr.jobs):
            for rid in job.run_ids:
                r = runs[rid]
                n = (numbers.get(r.id) or 0) + 1
                scale = r.lr_scale or 1.0
                F.write_json_atomic(root / rid / F.RUN_JSON, run_json(r, sweep_name, n, scale) | extra)
                with contextlib.suppress(FileNotFoundError):
                    (root / rid / F.CANCEL).unlink()
                s.add(Attempt(run_pk=r.id, number=n, executor=executor, state=attempt_after(Action.SUBMIT),
                              submitted_at=now, lr_scale=scale, token=arr.token, task=task,
                              reason=r.reason if (r.reason or "").startswith("retry") else None))
                r.state, r.updated_at = on_action(r.state, Action.SUBMIT).value, now


def _submit_locked(engine: Engine, sweep_name: str, profile: Profile, backend: Backend, *, dry_run: bool,
                   max_runs: Optional[int], budget: Optional[float]) -> SubmitResult:
    with Session(engine) as s, s.begin():
        sw = get_sweep(s, sweep_name)
        root = F.runs_root(sw.workdir, sw.name)
        todo, skipped, over_cap = _choose(s, sw.id, profile, budget, dry_run)
        todo = todo[:max_runs] if max_runs is not None else todo
        if not todo:
            return SubmitResult((), (), 0.0, skipped, tuple(over_cap))
        est = {r.run_id: profile.run_seconds(r.flops_exact) for r in todo}
        gpu_h = sum(profile.gpu_hours(r.flops_exact) for r in todo)
        arrays = _arrays(pack(est, profile), profile, sweep_name, backend)
        script = backend.preview(arrays[0], root)
        if dry_run:
            return SubmitResult(tuple(est), tuple(arrays), gpu_h, skipped, tuple(over_cap), script)
        _record_intents(s, sw.id, sweep_name, root, arrays, {r.run_id: r for r in todo}, profile.executor)
        from .sync import peak_key

        # what status measures the runs' MFU against (the latest submit's profile)
        s.merge(Meta(key=peak_key(sweep_name), value=repr(profile.peak_per_run)))
    die_for_test("intent")
    done: list[ArrayPlan] = []
    for arr in arrays:
        try:
            with _defer_sigint():
                ids = backend.submit(arr, root)
                die_for_test("sbatch")
                _record(engine, arr.token, ids)
        except DispatchError:
            _abandon(engine, [a.token for a in arrays if a not in done])
            raise
        done.append(dataclasses.replace(arr, job_ids=tuple(ids)))
    return SubmitResult(tuple(est), tuple(done), gpu_h, skipped, tuple(over_cap), script)


def _record(engine: Engine, token: str, ids: list[str]) -> None:
    with Session(engine) as s, s.begin():
        rows = s.execute(select(Attempt.id, Attempt.task).where(Attempt.token == token)).all()
        for pk, task in rows:
            s.execute(update(Attempt).where(Attempt.id == pk).values(
                job_id=ids[task], state=attempt_after(Action.JOB_RECORDED)))
        pks = select(Attempt.run_pk).where(Attempt.token == token).scalar_subquery()
        apply_action(s, Action.JOB_RECORDED, Run.id.in_(pks))


def _abandon(engine: Engine, tokens: list[str]) -> None:
    with Session(engine) as s, s.begin():
        pks = select(Attempt.run_pk).where(Attempt.token.in_(tokens), Attempt.job_id.is_(None)).scalar_subquery()
        apply_action(s, Action.SBATCH_FAILED, Run.id.in_(pks))
        s.execute(update(Attempt).where(Attempt.token.in_(tokens), Attempt.job_id.is_(None)).values(
            state=attempt_after(Action.SBATCH_FAILED), ended_at=utcnow(), reason="sbatch failed"))
