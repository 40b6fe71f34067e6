"""What `isoflop fit` reads from the store: one row per run, and training curves."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..state import NOT_BEST, RunState
from .models import Metric, Run, Sweep
from .sweeps import get_sweep

PARAM_COLUMN = {"non_embedding": "params_non_embedding", "with_output": "params_with_output", "all": "params_all"}


def fit_rows(session: Session, sweep: Sweep) -> list[dict[str, Any]]:
    """Rows for fit.FitTable.from_rows: every live run, its final validation loss and state.
    Only `completed` runs carry a loss that counts; a superseded run is never a row (its results
    stay in the store and its folder, under the spec it ran with).

    Where a spec tries each (budget, size, seed) cell at several (lr, batch), only the
    cell's best completed run enters the fit; the others are reported as such."""
    runs = session.scalars(
        select(Run).where(Run.sweep_id == sweep.id, Run.state != RunState.SUPERSEDED).order_by(Run.budget, Run.point)
    ).all()
    best: dict[tuple, Run] = {}
    for r in runs:
        if r.state == RunState.COMPLETED and r.val_loss is not None:
            key = (r.budget, r.point, r.seed)
            if key not in best or r.val_loss < best[key].val_loss:
                best[key] = r
    rows = []
    for r in runs:
        state, reason = r.state, r.reason
        if state == RunState.COMPLETED:
            b = best.get((r.budget, r.point, r.seed))
            if b is not None and b is not r:
                state = NOT_BEST
                reason = f"lr x{r.lr_mult:g}, batch x{r.batch_mult:g} lost to lr x{b.lr_mult:g}, batch x{b.batch_mult:g}"
        elif state == RunState.DIVERGED and r.diverged_step is not None:
            reason = reason or f"diverged at step {r.diverged_step}"
        rows.append({
            "run_id": r.run_id, "budget": r.budget, "params": r.params, "tokens": r.tokens, "flops": r.flops,
            "loss": r.val_loss, "state": state, "reason": reason or "",
            # every variant's lr (as trained) and batch: `fit` fits the hyperparameter laws from them
            "lr": r.lr * (r.lr_scale or 1.0), "batch": r.batch_tokens, "seed": r.seed,
        })
    return rows


def fit_curves(session: Session, sweep: Sweep) -> list[dict[str, Any]]:
    """Logged training curves (FLOPs so far, train loss) of completed runs, for the envelope."""
    rows = session.execute(
        select(Run.id, Run.run_id, Run.params, Metric.flops, Metric.train_loss)
        .join(Metric, Metric.run_pk == Run.id)
        .where(Run.sweep_id == sweep.id, Run.state == RunState.COMPLETED)
        .order_by(Run.id, Metric.step)
    ).all()
    curves: dict[int, dict[str, Any]] = defaultdict(lambda: {"flops": [], "loss": []})
    for pk, rid, n, c, y in rows:
        cur = curves[pk]
        cur["run_id"], cur["params"] = rid, n
        if c is not None and y is not None:
            cur["flops"].append(c)
            cur["loss"].append(y)
    return [c for c in curves.values() if c["flops"]]


def fit_inputs(engine: Engine, sweep_name: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The sweep's stored spec, its fit rows and its training curves, in one read."""
    with Session(engine) as s:
        sw = get_sweep(s, sweep_name)
        return sw.spec, fit_rows(s, sw), fit_curves(s, sw)
