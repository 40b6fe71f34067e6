"""A store's sweeps, a sweep's runs and its training curves as rows of plain values.

One schema for every way out of the store: `isoflop.api` makes pandas frames of these rows,
`isoflop.export` writes them as CSV, JSON lines or Parquet, `isoflop.report_html` tabulates them.
No pandas here, so `export --format csv` works without the `isoflop[pandas]` extra.

The columns are documented in the README ("Export"); `RUN_COLUMNS` and `CURVE_COLUMNS` are
their order. A run row's `state`/`reason`/`loss` are what `isoflop fit` sees (`fit_rows`): a
completed run that lost its (budget, size, seed) cell of an lr/batch grid is `not_best` there,
so `fit --csv` of an export fits exactly the runs that `fit SWEEP` fits; `run_state` is the
state `isoflop status` shows.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

#: the store's ledger of a run, as planned (Run's columns, in this order)
LEDGER = ("budget", "point", "seed", "lr_mult", "batch_mult", "n_layer", "d_model", "n_head", "params",
          "params_non_embedding", "params_with_output", "params_all", "tokens", "steps", "batch_seqs",
          "batch_tokens", "lr", "lr_scale", "flops", "flops_6nd", "flops_6nd_attention", "flops_exact")
#: what training left (ingested from the run folder)
OUTCOME = ("train_loss", "step_done", "tokens_done", "tokens_per_s", "measured_flops", "wall_s", "diverged_step")
#: where and how the result came about: the last attempt (store) and the trainer's result.json
ATTEMPT = ("attempts", "executor", "job_id", "node", "exit_code", "submitted_at", "started_at", "ended_at")
RESULT = ("torch_version", "device", "dtype", "threads", "resumed_from_step", "fingerprint", "finished_at")
RUN_COLUMNS = ("sweep", "run_id", *LEDGER, "state", "reason", "loss", "run_state", *OUTCOME, *ATTEMPT,
               "spec_digest", "simulated", "run_dir", *RESULT)
CURVE_COLUMNS = ("sweep", "run_id", "budget", "params", "state", "step", "tokens", "flops", "train_loss",
                 "val_loss", "lr", "tokens_per_s")
SWEEP_COLUMNS = ("sweep", "runs", "completed", "active", "failed", "created_at", "updated_at", "spec_digest",
                 "simulated", "workdir")


def simulated(spec: Optional[dict]) -> bool:
    """A sweep whose trainer is the `simulate` template: its losses were drawn from a stated law."""
    return ((spec or {}).get("trainer") or {}).get("template") == "simulate"


def sweep_simulated(engine: Any, sweep: str) -> bool:
    """Whether the stored sweep `sweep` is simulated (see `simulated`)."""
    from sqlalchemy.orm import Session

    from .store.sweeps import get_sweep

    with Session(engine) as s:
        return simulated(get_sweep(s, sweep).spec)


def _time(t: Optional[datetime]) -> Optional[str]:
    return None if t is None else t.isoformat(timespec="seconds")


def sweep_rows(engine: Any) -> list[dict[str, Any]]:
    """One row per sweep in the store, with its run counts (superseded runs not counted)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from .store.models import ACTIVE_STATES, Run, Sweep

    with Session(engine) as s:
        counts: dict[int, dict[str, int]] = {}
        for sid, state, n in s.execute(select(Run.sweep_id, Run.state, func.count()).where(
                Run.state != "superseded").group_by(Run.sweep_id, Run.state)):
            counts.setdefault(sid, {})[state] = n
        out = []
        for sw in s.scalars(select(Sweep).order_by(Sweep.name)):
            c = counts.get(sw.id, {})
            out.append({"sweep": sw.name, "runs": sum(c.values()), "completed": c.get("completed", 0),
                        "active": sum(c.get(a, 0) for a in ACTIVE_STATES),
                        "failed": sum(c.get(a, 0) for a in ("failed", "diverged", "lost")),
                        "created_at": _time(sw.created_at), "updated_at": _time(sw.updated_at),
                        "spec_digest": sw.spec_digest, "simulated": simulated(sw.spec), "workdir": sw.workdir})
        return out


def _result_json(rdir: Path) -> dict[str, Any]:
    """The provenance a trainer wrote into result.json; {} where the folder is not reachable from
    here (a store shared by URL, a cluster's scratch) or the file is not JSON."""
    try:
        data = json.loads((rdir / "result.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_rows(engine: Any, sweep: str, *, provenance: bool = True) -> list[dict[str, Any]]:
    """Every live run of `sweep` in `fit`'s order, one dict per run with RUN_COLUMNS as keys.

    provenance=False skips reading each finished run's result.json (the RESULT columns are None).
    """
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from .dispatch.files import run_dir
    from .store.models import Attempt, Run
    from .store.results import fit_rows
    from .store.sweeps import get_sweep

    with Session(engine) as s:
        sw = get_sweep(s, sweep)
        seen = fit_rows(s, sw)  # the order and the state/reason/loss that `fit` uses
        runs = {r.run_id: r for r in s.scalars(select(Run).where(Run.sweep_id == sw.id, Run.state != "superseded"))}
        last = (select(Attempt.run_pk, func.max(Attempt.number).label("n"), func.count().label("k"))
                .join(Run, Run.id == Attempt.run_pk).where(Run.sweep_id == sw.id).group_by(Attempt.run_pk).subquery())
        attempts = {a.run_pk: (k, a) for a, k in s.execute(
            select(Attempt, last.c.k).join(last, (Attempt.run_pk == last.c.run_pk) & (Attempt.number == last.c.n)))}
        sim = simulated(sw.spec)
        out = []
        for fr in seen:
            r = runs[fr["run_id"]]
            k, a = attempts.get(r.id, (0, None))
            rdir = run_dir(sw.workdir, sw.name, r.run_id)
            res = _result_json(rdir) if provenance and r.state in ("completed", "diverged") else {}
            row: dict[str, Any] = {"sweep": sw.name, "run_id": r.run_id}
            row.update({c: getattr(r, c) for c in LEDGER})
            row["lr"] = r.lr * (r.lr_scale or 1.0)   # what it trains with, as `fit` reads it (planned × lr_scale)
            row.update(state=fr["state"], reason=fr["reason"] or None, loss=r.val_loss, run_state=r.state)
            row.update({c: getattr(r, c) for c in OUTCOME})
            row.update(attempts=k, executor=a and a.executor, job_id=a and a.job_id, node=a and a.node,
                       exit_code=a and a.exit_code, submitted_at=_time(a and a.submitted_at),
                       started_at=_time(a and a.started_at), ended_at=_time(a and a.ended_at))
            row.update(spec_digest=sw.spec_digest, simulated=sim, run_dir=str(rdir))
            row.update({c: res.get(c) for c in RESULT})
            out.append(row)
        return out


def curve_rows(engine: Any, sweep: str) -> list[dict[str, Any]]:
    """Every logged step of every live run of `sweep`, one dict per step with CURVE_COLUMNS as keys,
    ordered by run then step."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .store.models import Metric, Run
    from .store.sweeps import get_sweep

    with Session(engine) as s:
        sw = get_sweep(s, sweep)
        q = (select(Run.run_id, Run.budget, Run.params, Run.state, Metric.step, Metric.tokens, Metric.flops,
                    Metric.train_loss, Metric.val_loss, Metric.lr, Metric.tokens_per_s)
             .join(Metric, Metric.run_pk == Run.id)
             .where(Run.sweep_id == sw.id, Run.state != "superseded")
             .order_by(Run.budget, Run.point, Run.id, Metric.step))
        return [{"sweep": sw.name, **dict(zip(CURVE_COLUMNS[1:], row))} for row in s.execute(q)]
