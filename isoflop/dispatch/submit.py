"""Submitting a sweep's runs: packing, arrays, crash-safe intents.

Order of a submission (each step committed before the next):
  1. under the submit lock (one submit per workdir at a time), sync the sweep and settle the
     intents of an earlier submit that died (adopt its job by name, or abandon the intent);
  2. pick the runs that are not finished, not active, and under the attempt cap;
  3. pack short runs into jobs, group jobs into arrays (<= MaxArraySize, throttled by %N);
  4. write each run's run.json, and record one Attempt per run in state `submitting` with the
     submission's token (the job name is `isoflop-<sweep>-<token>`) -- COMMIT;
  5. sbatch each array through submitit, then record the job ids -- COMMIT per array.
A submit killed anywhere never creates a second job for a run: its `submitting` attempts are
found again in step 1 by job name. Ctrl-C during step 5 is deferred until the ids are recorded.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..store.models import Attempt, Run, utcnow
from ..store.sweeps import get_sweep
from . import files as F
from .profiles import Profile

SUBMITTABLE = ("planned", "lost", "failed")  # cancelled runs wait for `isoflop retry --cancelled`


class DispatchError(RuntimeError):
    """A submission that could not be made; one line says why."""


@dataclass(frozen=True)
class JobPlan:
    run_ids: tuple[str, ...]
    seconds: float  # estimated, margin included
    minutes: int  # the time request


@dataclass(frozen=True)
class ArrayPlan:
    token: str
    name: str
    minutes: int
    jobs: tuple[JobPlan, ...]
    parameters: dict[str, Any]  # submitit SlurmExecutor parameters (or the local job ids)
    job_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubmitResult:
    sweep: str
    profile: str
    executor: str
    dry_run: bool
    runs: tuple[str, ...]  # run ids submitted (or that would be)
    arrays: tuple[ArrayPlan, ...]
    gpu_hours: float  # estimated (without margin)
    skipped: dict[str, int]  # not submitted, by state
    over_cap: tuple[str, ...]  # runs failed now because they used up max_attempts
    notes: tuple[str, ...] = ()
    sbatch_script: Optional[str] = None  # dry run: the script of the first array
    status: Any = None  # the final SweepStatus when wait=True

    @property
    def jobs(self) -> int:
        return sum(len(a.jobs) for a in self.arrays)

    @property
    def job_ids(self) -> list[str]:
        return [j for a in self.arrays for j in a.job_ids]


def job_name(sweep: str, token: str) -> str:
    return f"isoflop-{sweep}-{token}"


# ------------------------------------------------------------------ lock


def _lock_path(workdir: str | Path) -> Path:
    p = Path(workdir) / ".submit.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def try_lock(workdir: str | Path):
    """The workdir's submit lock if it is free (an open file; close it to release), else None."""
    f = open(_lock_path(workdir), "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return f
    except BlockingIOError:
        f.close()
        return None


@contextlib.contextmanager
def lock_or_refuse(workdir: str | Path, verb: str):
    """The submit lock for a command that must not run beside a submit (cancel, retry)."""
    f = try_lock(workdir)
    if f is None:
        raise DispatchError(f"an `isoflop submit` is in progress in this workdir; {verb} after it returns")
    try:
        yield
    finally:
        f.close()


@contextlib.contextmanager
def submit_lock(workdir: str | Path, timeout_s: float = 600):
    deadline = time.time() + timeout_s
    while True:
        f = try_lock(workdir)
        if f is not None:
            break
        if time.time() > deadline:
            raise DispatchError(f"another `isoflop submit` holds {_lock_path(workdir)} for over {timeout_s:.0f} s")
        time.sleep(0.5)
    try:
        yield
    finally:
        f.close()


@contextlib.contextmanager
def _defer_sigint():
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


def _test_die(point: str) -> None:
    """Test hook: ISOFLOP_TEST_DIE_AFTER=intent|sbatch kills this process (kill -9) at that point."""
    if os.environ.get("ISOFLOP_TEST_DIE_AFTER") == point:
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------ packing


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
        long = [rid for rid in order if estimates[rid] >= target / 2]
        short = sorted((rid for rid, s in estimates.items() if s < target / 2), key=lambda r: -estimates[r])
        groups = [[rid] for rid in long]
        if short:
            total = sum(estimates[r] for r in short)
            slots = profile.array_parallelism
            n = max(1, math.ceil(total / target))
            n = min(len(short), max(n, slots) if n <= slots else math.ceil(n / slots) * slots)
            bins: list[list[str]] = [[] for _ in range(n)]
            load = [0.0] * n
            for rid in short:
                i = min(range(n), key=load.__getitem__)
                bins[i].append(rid)
                load[i] += estimates[rid]
            groups += [b for b in bins if b]
    jobs = []
    for g in groups:
        secs = sum(estimates[r] for r in g)
        jobs.append(JobPlan(tuple(g), secs, profile.job_minutes(secs)))
    return jobs


def _bucket(minutes: int, profile: Profile) -> int:
    """Jobs of one array share a time limit: round requests up to a power of two (capped)."""
    b = profile.min_time_minutes
    while b < minutes:
        b *= 2
    return min(b, profile.max_time_minutes)


def slurm_parameters(profile: Profile, *, minutes: int, name: str, comment: str, max_num_timeout: int) -> dict[str, Any]:
    p: dict[str, Any] = {
        "job_name": name, "time": minutes, "comment": comment, "nodes": 1, "ntasks_per_node": 1,
        "cpus_per_task": profile.cpus_per_task, "array_parallelism": profile.array_parallelism,
        "signal_delay_s": profile.signal_delay_s, "stderr_to_stdout": True,
    }
    if profile.partition:
        p["partition"] = profile.partition
    if profile.account:
        p["account"] = profile.account
    if profile.qos:
        p["qos"] = profile.qos
    if profile.constraint:
        p["constraint"] = profile.constraint
    if profile.gpus_per_run:
        p["gpus_per_node"] = profile.gpus_per_run
    if profile.mem_gb:
        p["mem"] = f"{int(math.ceil(profile.mem_gb * 1024))}MB"
    if profile.setup:
        p["setup"] = list(profile.setup)
    extra = {**{k.replace("-", "_"): v for k, v in profile.sbatch.items()}}
    p["additional_parameters"] = extra
    return p


def _make_executor(folder: Path, params: dict[str, Any], max_num_timeout: int):
    import submitit

    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_num_timeout)
    ex.update_parameters(**params)
    return ex


def sbatch_preview(folder: Path, params: dict[str, Any], map_count: int) -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    import sys
    import shlex

    cmd = " ".join([sys.executable, "-u -m submitit.core._submit", shlex.quote(str(folder))])
    kw = {k: v for k, v in params.items() if not k.startswith("_")}
    if map_count > 1:
        kw["map_count"] = map_count
    return _make_sbatch_string(command=cmd, folder=folder, **kw)


# ------------------------------------------------------------------ run.json


def run_json(run: Any, sweep: str, attempt: int, lr_scale: float) -> dict[str, Any]:
    d = dict(run.definition)
    d.update(
        run_id=run.run_id, sweep=sweep, attempt=attempt, lr_scale=lr_scale,
        planned={k: getattr(run, k) for k in ("flops", "flops_6nd", "flops_6nd_attention", "flops_exact",
                                              "params_non_embedding", "params_with_output", "params_all")},
    )
    return d


# ------------------------------------------------------------------ submit


def _select(s: Session, sweep_id: int, budget: Optional[float], max_runs: Optional[int]) -> tuple[list[Run], dict[str, int]]:
    skipped: dict[str, int] = {}
    for st, n in s.execute(select(Run.state, func.count()).where(Run.sweep_id == sweep_id, Run.state.not_in(SUBMITTABLE), Run.state != "superseded").group_by(Run.state)):
        skipped[st] = n
    q = select(Run).where(Run.sweep_id == sweep_id, Run.state.in_(SUBMITTABLE))
    if budget is not None:
        q = q.where(Run.budget.between(budget * (1 - 1e-6), budget * (1 + 1e-6)))
    runs = list(s.scalars(q.order_by(Run.budget, Run.point, Run.lr_mult, Run.batch_mult, Run.seed)))
    return runs, skipped


def submit_sweep(
    engine: Engine,
    sweep_name: str,
    profile: Profile,
    *,
    wait: bool = False,
    progress_callback: Optional[Callable[[Any], None]] = None,
    dry_run: bool = False,
    max_runs: Optional[int] = None,
    budget: Optional[float] = None,
    poll_s: float = 5.0,
) -> SubmitResult:
    """Submit every run of the sweep that is not finished and not active (see the module doc)."""
    from .sync import sync_sweep

    with Session(engine) as s:
        sw = get_sweep(s, sweep_name)
        workdir = sw.workdir
    if budget is not None:
        with Session(engine) as s:
            known = sorted({b for (b,) in s.execute(select(Run.budget).where(Run.sweep_id == sw.id).distinct())})
        if not any(abs(b - budget) <= 1e-6 * budget for b in known):
            raise DispatchError(f"sweep {sweep_name!r} has no budget {budget:.4g}; its budgets: "
                                + ", ".join(f"{b:.3g}" for b in known))
    if profile.executor == "slurm" and not dry_run:
        from . import slurm

        if not slurm.available():
            raise DispatchError(f"profile {profile.name!r} needs Slurm, but sbatch/squeue are not on PATH "
                                "(use --profile local to run on this machine)")
    lock = contextlib.nullcontext() if dry_run else submit_lock(workdir)
    with lock:
        if not dry_run:
            sync_sweep(engine, sweep_name, have_lock=True)
            # intents younger than the reconcile age are settled once they are old enough
            for _ in range(30):
                with Session(engine) as s:
                    left = s.scalar(select(func.count()).select_from(Attempt).join(Run, Run.id == Attempt.run_pk)
                                    .where(Run.sweep_id == sw.id, Attempt.state == "submitting", Attempt.job_id.is_(None)))
                if not left:
                    break
                time.sleep(1.0)
                sync_sweep(engine, sweep_name, have_lock=True)
        result = _submit_locked(engine, sweep_name, profile, dry_run=dry_run, max_runs=max_runs, budget=budget)
    if wait and not dry_run and result.runs:
        status = wait_sweep(engine, sweep_name, progress_callback=progress_callback, poll_s=poll_s)
        result = _replace(result, status=status)
    return result


def _replace(r: SubmitResult, **kw: Any) -> SubmitResult:
    import dataclasses

    return dataclasses.replace(r, **kw)


def wait_sweep(engine: Engine, sweep_name: str, *, progress_callback: Optional[Callable[[Any], None]] = None,
               poll_s: float = 5.0, timeout_s: Optional[float] = None) -> Any:
    """Sync until no run of the sweep is active; returns the last SweepStatus."""
    from .sync import sync_sweep

    t0 = time.time()
    while True:
        st = sync_sweep(engine, sweep_name)
        if progress_callback is not None:
            progress_callback(st)
        if st.finished or (timeout_s is not None and time.time() - t0 > timeout_s):
            return st
        time.sleep(poll_s)


def _submit_locked(engine: Engine, sweep_name: str, profile: Profile, *, dry_run: bool,
                   max_runs: Optional[int], budget: Optional[float]) -> SubmitResult:
    over_cap: list[str] = []
    with Session(engine) as s, s.begin():
        sw = get_sweep(s, sweep_name)
        workdir, root = sw.workdir, F.runs_root(sw.workdir, sw.name)
        runs, skipped = _select(s, sw.id, budget, None)
        counts = dict(s.execute(
            select(Attempt.run_pk, func.count()).join(Run, Run.id == Attempt.run_pk)
            .where(Run.sweep_id == sw.id, Attempt.state != "abandoned").group_by(Attempt.run_pk)).all())
        numbers = dict(s.execute(
            select(Attempt.run_pk, func.max(Attempt.number)).join(Run, Run.id == Attempt.run_pk)
            .where(Run.sweep_id == sw.id).group_by(Attempt.run_pk)).all())
        todo = []
        for r in runs:
            used = counts.get(r.id, 0) - (r.attempt_base or 0)
            if used >= profile.max_attempts:
                if not dry_run:
                    if r.state != "failed" or not (r.reason or "").startswith("gave up"):
                        r.reason = (f"gave up after {used} attempt(s) (max_attempts {profile.max_attempts} of "
                                    f"profile {profile.name!r}); last: {r.reason or r.state}; `isoflop retry` resets")
                    r.state = "failed"
                over_cap.append(r.run_id)
                continue
            todo.append(r)
        if max_runs is not None:
            todo = todo[:max_runs]
        if not todo:
            return SubmitResult(sweep_name, profile.name, profile.executor, dry_run, (), (), 0.0, skipped,
                                tuple(over_cap))
        est = {r.run_id: profile.run_seconds(r.flops_exact) for r in todo}
        gpu_h = sum(profile.gpu_hours(r.flops_exact) for r in todo)
        jobs = pack(est, profile)
        arrays = _arrays(jobs, profile, sweep_name)
        by_id = {r.run_id: r for r in todo}
        script = None
        if profile.executor == "slurm" and arrays:
            script = sbatch_preview(root / ".submitit" / arrays[0].token, arrays[0].parameters, len(arrays[0].jobs))
        if dry_run:
            return SubmitResult(sweep_name, profile.name, profile.executor, True, tuple(est), tuple(arrays), gpu_h,
                                skipped, tuple(over_cap), sbatch_script=script)
        # intents: run.json + Attempt rows, committed before anything reaches the scheduler
        now = utcnow()
        for arr in arrays:
            for task, job in enumerate(arr.jobs):
                for rid in job.run_ids:
                    r = by_id[rid]
                    n = (numbers.get(r.id) or 0) + 1
                    scale = r.lr_scale or 1.0
                    F.write_json_atomic(root / rid / F.RUN_JSON, run_json(r, sweep_name, n, scale))
                    with contextlib.suppress(FileNotFoundError):
                        (root / rid / F.CANCEL).unlink()
                    s.add(Attempt(run_pk=r.id, number=n, executor=profile.executor, state="submitting",
                                  submitted_at=now, lr_scale=scale, token=arr.token, task=task,
                                  reason=r.reason if (r.reason or "").startswith("retry") else None))
                    r.state, r.updated_at = "submitting", now
    _test_die("intent")
    done: list[ArrayPlan] = []
    notes: list[str] = []
    for arr in arrays:
        try:
            with _defer_sigint():
                ids = _sbatch(arr, profile, workdir, root)
                _test_die("sbatch")
                _record(engine, sweep_name, arr.token, ids)
        except DispatchError:
            _abandon(engine, sweep_name, [a.token for a in arrays if a not in done])
            raise
        done.append(_replace_arr(arr, ids))
    return SubmitResult(sweep_name, profile.name, profile.executor, False, tuple(est), tuple(done), gpu_h,
                        skipped, tuple(over_cap), tuple(notes), sbatch_script=script)


def _replace_arr(a: ArrayPlan, ids: list[str]) -> ArrayPlan:
    import dataclasses

    return dataclasses.replace(a, job_ids=tuple(ids))


def _arrays(jobs: list[JobPlan], profile: Profile, sweep: str) -> list[ArrayPlan]:
    by_bucket: dict[int, list[JobPlan]] = {}
    for j in jobs:
        by_bucket.setdefault(_bucket(j.minutes, profile), []).append(j)
    out = []
    for minutes, js in sorted(by_bucket.items()):
        for i in range(0, len(js), profile.max_array_size):
            chunk = tuple(js[i:i + profile.max_array_size])
            token = secrets.token_hex(4)
            name = job_name(sweep, token)
            longest = max(j.seconds for j in chunk)
            requeues = profile.max_requeues + math.ceil(longest / (profile.max_time_minutes * 60))
            runs = [r for j in chunk for r in j.run_ids]
            comment = f"isoflop sweep={sweep} token={token} runs={','.join(runs[:8])}{',...' if len(runs) > 8 else ''}"
            params = slurm_parameters(profile, minutes=minutes, name=name, comment=comment, max_num_timeout=requeues) \
                if profile.executor == "slurm" else {"workers": None}
            params["_max_num_timeout"] = requeues
            out.append(ArrayPlan(token, name, minutes, chunk, params))
    return out


def _sbatch(arr: ArrayPlan, profile: Profile, workdir: str, root: Path) -> list[str]:
    run_dirs = [[str(root / rid) for rid in job.run_ids] for job in arr.jobs]
    if profile.executor == "local":
        from . import local

        ids = [f"{arr.token}_{i}" for i in range(len(arr.jobs))]
        first = F.read_json(Path(run_dirs[0][0]) / F.RUN_JSON) or {}
        threads = int(first.get("threads") or 1)
        local.enqueue(workdir, list(zip(ids, run_dirs)), profile.local_workers(threads))
        return ids
    from .job import PackedJob

    params = {k: v for k, v in arr.parameters.items() if not k.startswith("_")}
    folder = root / ".submitit" / arr.token
    try:
        ex = _make_executor(folder, params, arr.parameters["_max_num_timeout"])
        with ex.batch():
            jobs = [ex.submit(PackedJob(dirs, profile.srun)) for dirs in run_dirs]
    except Exception as e:  # sbatch refused (bad partition/account, limits) or not reachable
        msg = str(e).strip().splitlines()
        detail = next((ln for ln in msg if "error" in ln.lower()), msg[0] if msg else e.__class__.__name__)
        raise DispatchError(f"sbatch failed for {arr.name}: {detail.strip()}") from None
    return [j.job_id for j in jobs]


def _record(engine: Engine, sweep: str, token: str, ids: list[str]) -> None:
    with Session(engine) as s, s.begin():
        rows = s.execute(select(Attempt.id, Attempt.task).where(Attempt.token == token)).all()
        for pk, task in rows:
            s.execute(update(Attempt).where(Attempt.id == pk).values(job_id=ids[task], state="queued"))
        pks = select(Attempt.run_pk).where(Attempt.token == token).scalar_subquery()
        s.execute(update(Run).where(Run.id.in_(pks)).values(state="queued", updated_at=utcnow()))


def _abandon(engine: Engine, sweep: str, tokens: list[str]) -> None:
    with Session(engine) as s, s.begin():
        pks = select(Attempt.run_pk).where(Attempt.token.in_(tokens), Attempt.job_id.is_(None)).scalar_subquery()
        s.execute(update(Run).where(Run.id.in_(pks)).values(state="planned", updated_at=utcnow()))
        s.execute(update(Attempt).where(Attempt.token.in_(tokens), Attempt.job_id.is_(None)).values(
            state="abandoned", ended_at=utcnow(), reason="sbatch failed"))
