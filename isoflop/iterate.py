"""An iterative study: what planning takes back from the store.

- `resolve_rules(spec, engine)`: a spec's `lr: {from_sweep: NAME}` / `batch.rule: {from_sweep: NAME}`
  becomes the law η*(C) (B*(C); `of: N`: η*(N)) that `fit` finds on sweep NAME, recorded in the
  spec (coefficient, exponent and its interval, cells, when). Planning the same spec again reuses
  the law already recorded for this sweep (planning again stays a no-op); a sweep without that
  law refuses with one line.
- `extend_sweep(engine, name, ...)`: fits the sweep and adds the runs `plan/extend.py` picks
  (sizes beyond an edge, multipliers beyond an edge, or a new budget) as `extend` entries of its
  stored spec; existing runs and results are untouched and every run id stays what it was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .spec import Extension, FromSweep, Spec, parse_spec


def _fit(engine: Any, name: str, *, bootstrap: int = 1000, seed: int = 0):
    """(spec, fit report with hparams attached, fit rows) of a stored sweep."""
    from .fit import FitTable, fit_sweep
    from .fit.hparams import hparams_of_table, row_columns
    from .store.results import fit_inputs

    spec_json, rows, _ = fit_inputs(engine, name)
    spec = parse_spec(spec_json)
    if not any(r["state"] == "completed" for r in rows):
        raise UserError(f"sweep {name!r} has no completed runs yet; see `isoflop status {name}`")
    table = FitTable.from_rows(rows)
    report = fit_sweep(table, bootstrap=bootstrap, seed=seed, parametric=None)
    lr, batch = row_columns(rows)
    h = hparams_of_table(table, lr, batch, [f.budget for f in report.budgets], bootstrap=bootstrap, seed=seed,
                         sigma=report.noise.sigma if report.noise is not None else math.nan)
    return spec, replace(report, hparams=h), rows


# ---------------------------------------------------------------------------- from_sweep
def _stored_rule(engine: Any, name: str, field: str) -> Any:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .store.models import Sweep

    with Session(engine) as s:
        sw = s.scalar(select(Sweep).where(Sweep.name == name))
        if sw is None:
            return None
        stored = parse_spec(sw.spec)
    return stored.lr if field == "lr" else stored.batch.rule


def resolve_rules(spec: Spec, engine: Any) -> tuple[Spec, list[str]]:
    """The spec with every `from_sweep` rule resolved, and one line per law saying which it is."""
    notes: list[str] = []
    updates: dict[str, Any] = {}
    for field in ("lr", "batch"):
        rule = spec.lr if field == "lr" else spec.batch.rule
        if not isinstance(rule, FromSweep):
            continue
        where = "lr" if field == "lr" else "batch.rule"
        if not rule.resolved:
            prev = _stored_rule(engine, spec.name, field)
            if isinstance(prev, FromSweep) and prev.resolved and (prev.from_sweep, prev.of) == (rule.from_sweep, rule.of):
                rule = prev
            else:
                rule = _resolve(spec, rule, field, engine, where)
        updates[field] = rule
        unit = "" if field == "lr" else f" {spec.batch.unit}"
        ci = f" (5–95% {rule.power_ci[0]:.3g} – {rule.power_ci[1]:.3g})" if rule.power_ci else ""
        notes.append(f"{where}: {rule.coef:.4g}·{rule.of}^{rule.power:.4g}{unit}{ci}, the law fitted on sweep "
                     f"{rule.from_sweep!r} ({rule.cells} cells) at {rule.fitted_at}")
    if "lr" in updates:
        spec = spec.model_copy(update={"lr": updates["lr"]})
    if "batch" in updates:
        spec = spec.model_copy(update={"batch": spec.batch.model_copy(update={"rule": updates["batch"]})})
    return spec, notes


def _resolve(spec: Spec, rule: FromSweep, field: str, engine: Any, where: str) -> FromSweep:
    from .store.engine import StoreError

    try:
        _, report, _ = _fit(engine, rule.from_sweep)
    except StoreError as e:
        raise UserError(f"{where}: {{from_sweep: {rule.from_sweep}}}: {e}") from None
    except UserError as e:
        raise UserError(f"{where}: {{from_sweep: {rule.from_sweep}}}: {e}") from None
    key = field if rule.of == "C" else f"{field}_n"
    h = report.hparams
    law = None if h is None else h.laws.get(key)
    if law is None:
        if h is None or not any(getattr(c, field) is not None for c in h.cells):
            why = f"it has no {field}_grid"
        else:
            why = h.reasons.get(key, "every cell is flagged")
        raise UserError(f"{where}: {{from_sweep: {rule.from_sweep}}}: sweep {rule.from_sweep!r} has no fitted "
                        f"{'η*' if field == 'lr' else 'B*'}({rule.of}) law ({why})")
    coef = law.coefficient
    if field == "batch" and spec.batch.unit == "sequences":
        coef /= spec.model.seq_len   # the law is in tokens
    return FromSweep(from_sweep=rule.from_sweep, of=rule.of, coef=float(f"{coef:.6g}"),
                     power=float(f"{law.exponent:.6g}"),
                     power_ci=None if law.exponent_ci is None else tuple(float(f"{x:.6g}") for x in law.exponent_ci),
                     cells=law.cells, fitted_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


# ---------------------------------------------------------------------------- extend
_FINISHED = ("completed", "failed", "diverged", "lost", "cancelled", "superseded")
@dataclass(frozen=True)
class ExtendResult:
    sweep: str
    added: tuple[Any, ...]           # plan.grid.Run of the new runs
    extensions: tuple[Extension, ...]
    gpu_hours: float | None
    flops: float
    stored: bool
    notes: tuple[str, ...]
    unfinished: int = 0             # runs added by an earlier extend that are planned or active, not finished
    waiting: int = 0                # every run of the sweep not finished (their budgets were not extended)


def _lowest_params(points: tuple) -> dict[float, tuple[float, float]]:
    """Per budget: N of the lowest mean loss, and the extrapolated parabola vertex when that is at an edge."""
    from .fit.noise import size_groups, size_means
    from .plan.extend import edge_parabola_vertex

    out = {}
    for c, n, y in points:
        x = np.log(np.asarray(n, float))
        order = np.argsort(x, kind="stable")
        idx, ux = size_groups(x[order])
        means, _ = size_means(idx, np.asarray(y, float)[order], len(ux))
        out[float(c)] = ((float(np.exp(ux[int(np.argmin(means))])), edge_parabola_vertex(np.exp(ux), means))
                         if len(ux) else (math.nan, math.nan))
    return out


def _predicted_beyond(report: Any, budget: float, lowest: float, vertex: float, sizes: list[float]) -> float:
    """Where a budget's minimum probably lies when its lowest loss is at an edge: the farther beyond that
    edge of the frontier's prediction (from the bracketed budgets) and the extrapolated vertex."""
    if not sizes or not math.isfinite(lowest):
        return math.nan
    low_edge = lowest <= min(sizes) * 1.01
    high_edge = lowest >= max(sizes) / 1.01
    if not (low_edge or high_edge):
        return math.nan
    guesses = [vertex]
    if report.frontier is not None:
        guesses.append(float(report.predict([budget])[0].n_opt_estimate))
    beyond = [g for g in guesses if math.isfinite(g) and g > 0
              and (g < min(sizes) if low_edge else g > max(sizes))]
    if not beyond:
        return math.nan
    return min(beyond) if low_edge else max(beyond)


def plan_extension(engine: Any, name: str, *, budget: float | None = None, bootstrap: int = 1000,
                   seed: int = 0) -> tuple[Spec, list[Extension], list[str]]:
    """The stored spec and the extension entries extend would add (nothing stored)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .plan.extend import EDGE_BUDGET_FLAGS, BudgetFit, CellEdge, SizeRow, budget_extension, \
        multiplier_extensions, size_extensions
    from .store.models import Run
    from .store.sweeps import get_sweep

    spec, report, _ = _fit(engine, name, bootstrap=bootstrap, seed=seed)
    with Session(engine) as s:
        sw = get_sweep(s, name)
        stored = s.execute(select(Run.budget, Run.point, Run.n_layer, Run.d_model, Run.params, Run.lr_mult,
                                  Run.batch_mult, Run.state).where(Run.sweep_id == sw.id, Run.state != "superseded")).all()
    notes: list[str] = []
    if budget is not None:
        if any(abs(r.budget / budget - 1) < 1e-9 for r in stored):
            raise UserError(f"budget {budget:.4g} is already in sweep {name!r}")
        near = next((r.budget for r in stored if abs(r.budget / budget - 1) < 0.10), None)
        if near is not None:  # fit and compare match budgets within ±10%: it would be pooled with that one
            raise UserError(f"budget {budget:.4g} is within 10% of budget {near:.4g} already in sweep {name!r} "
                            "(fit and compare would treat them as one); choose one further away")
        if report.frontier is None:
            raise UserError(f"sweep {name!r} has no frontier to predict N_opt at {budget:.4g} "
                            f"({report.frontier_reason})")
        (p,) = report.predict([budget])
        laws = report.hparams.laws if report.hparams is not None else {}
        lr = float(laws["lr"](budget)) if "lr" in laws else None
        b = float(laws["batch"](budget)) if "batch" in laws else None
        if b is not None and spec.batch.unit == "sequences":
            b /= spec.model.seq_len
        src = ", ".join(x for x in (f"η = {lr:.4g} from η*(C)" if lr else "", f"B = {b:.4g} from B*(C)" if b else "")
                        if x) or "η and B from the spec's rules"
        notes.append(f"budget {budget:.4g}: centred on the predicted N_opt {p.n_opt_estimate:.4g}"
                     + (f" (5–95% {p.n_opt_ci[0]:.4g} – {p.n_opt_ci[1]:.4g})" if p.n_opt_ci else "") + f"; {src}")
        return spec, budget_extension(spec, budget, p.n_opt_estimate, p.n_opt_ci, lr=lr, batch=b,
                                      why=f"budget {budget:.3g} added ({src})"), notes
    sizes = [SizeRow(r.budget, r.point, r.n_layer, r.d_model, r.params) for r in stored]
    lowest = _lowest_params(report.points)
    # a budget with runs still to finish is judged without them: its edge may be among them
    waiting: dict[float, int] = {}
    for r in stored:
        if r.state not in _FINISHED:
            waiting[r.budget] = waiting.get(r.budget, 0) + 1
    for b, k in sorted(waiting.items()):
        notes.append(f"budget {b:.3g}: {k} run(s) not finished (planned or running; `isoflop status {name}` "
                     "records finished ones): not extended until they finish")
    fits = []
    for f in report.budgets:
        if any(abs(f.budget / b - 1) < 1e-9 for b in waiting):
            continue
        low, vertex = lowest.get(f.budget, (math.nan, math.nan))
        own = [r.params for r in stored if r.budget == f.budget]
        pred = _predicted_beyond(report, f.budget, low, vertex, own) if set(f.flags) & set(EDGE_BUDGET_FLAGS) \
            else math.nan
        fits.append(BudgetFit(f.budget, f.n_opt, f.flags, low, pred))
    new = size_extensions(spec, fits, sizes, notes)
    edges: list[CellEdge] = []
    h = report.hparams
    if h is not None:
        for c in h.cells:
            for kind in ("lr", "batch"):
                a = getattr(c, kind)
                if a is None or not set(a.flags) & {"at_low_edge", "at_high_edge"} or any(
                        abs(c.budget / b - 1) < 1e-9 for b in waiting):
                    continue
                mine = [r for r in stored if r.budget == c.budget and abs(math.log(r.params / c.params)) < 0.02]
                if not mine:
                    continue
                r0 = mine[0]
                ext = next((e for e in spec.extend if e.budget == c.budget and (e.n_layer, e.d_model) ==
                            (r0.n_layer, r0.d_model)), None)
                mults = tuple(sorted({r.lr_mult if kind == "lr" else r.batch_mult for r in mine}))
                edges.append(CellEdge(c.budget, r0.n_layer, r0.d_model, r0.point, kind,
                                      "high" if "at_high_edge" in a.flags else "low", mults,
                                      ext.lr if ext else None, ext.batch if ext else None))
    new += multiplier_extensions(spec, edges)
    return spec, new, notes


def extend_sweep(engine: Any, name: str, workdir: Path, *, budget: float | None = None, dry_run: bool = False,
                 bootstrap: int = 1000, seed: int = 0) -> ExtendResult:
    from .plan.grid import gpu_hours, plan
    from .store.sweeps import save_plan

    spec, new, notes = plan_extension(engine, name, budget=budget, bootstrap=bootstrap, seed=seed)
    before = {r.run_id for r in plan(spec)}
    extended = spec.model_copy(update={"extend": [*spec.extend, *new]})
    runs = plan(extended)
    added = tuple(r for r in runs if r.run_id not in before)
    if new and not dry_run:
        live = _live_run_ids(engine, name)
        if not live <= {r.run_id for r in runs}:  # extension only adds; a replan would supersede these
            raise UserError(f"sweep {name!r} has {len(live - before)} stored run(s) its stored spec no longer "
                            "plans; replan it first (`isoflop plan SPEC --force`)")
        save_plan(engine, extended, runs, workdir, force=True)
    return ExtendResult(name, added, tuple(new), gpu_hours(list(added), spec.throughput),
                        float(sum(r.ledger["flops_exact"] for r in added)), bool(new) and not dry_run, tuple(notes),
                        *_unfinished_runs(engine, name, spec))


def _unfinished_runs(engine: Any, name: str, spec: Spec) -> tuple[int, int]:
    """How many runs of the stored spec's `extend:` entries, and of the whole sweep, are not finished
    (the fit has not seen them)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .plan.grid import plan
    from .state import RUN_FINAL
    from .store.models import Run
    from .store.sweeps import get_sweep

    base = {r.run_id for r in plan(spec.model_copy(update={"extend": []}))} if spec.extend else None
    final = {s.value for s in RUN_FINAL} | {"superseded"}
    with Session(engine) as s:
        sw = get_sweep(s, name)
        rows = s.execute(select(Run.run_id, Run.state).where(Run.sweep_id == sw.id)).all()
    todo = [rid for rid, state in rows if state not in final]
    return (0 if base is None else sum(1 for rid in todo if rid not in base)), len(todo)


def _live_run_ids(engine: Any, name: str) -> set[str]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from .store.models import Run
    from .store.sweeps import get_sweep

    with Session(engine) as s:
        sw = get_sweep(s, name)
        return set(s.scalars(select(Run.run_id).where(Run.sweep_id == sw.id, Run.state != "superseded")))


def stored_spec_yaml(engine: Any, name: str) -> str:
    """The stored spec of a sweep as YAML (resolved laws and `extend:` entries included): planning it
    again is a no-op, so it replaces a spec file that `extend` left behind."""
    import yaml
    from sqlalchemy.orm import Session

    from .store.sweeps import get_sweep

    with Session(engine) as s:
        sw = get_sweep(s, name)
        spec = parse_spec(sw.spec)
    data = spec.model_dump(mode="json", exclude_defaults=True)
    if parse_spec(data).digest() != spec.digest():  # a default that the digest still sees: keep them all
        data = spec.model_dump(mode="json")
    head = (f"# the stored spec of sweep {name!r} (`isoflop spec {name}`): `isoflop plan` of this file "
            "changes nothing\n")
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

