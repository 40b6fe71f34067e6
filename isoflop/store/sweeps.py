"""Storing a planned sweep: idempotent, refuses silent spec changes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..state import Action, action_sources, action_target
from .engine import StoreError
from .models import ACTIVE_STATES, FINAL_STATES, Attempt, Run, Sweep, utcnow


class SpecChanged(StoreError):
    pass


@dataclass(frozen=True)
class PlanResult:
    sweep: str
    created: bool  # a new sweep
    added: int  # runs newly stored
    kept: int  # runs already stored with the same definition
    superseded: int  # runs no longer planned (kept in the store, state 'superseded')
    deleted: int  # runs no longer planned that had never been attempted
    superseded_active: int = 0  # superseded runs whose jobs still run (`isoflop cancel --superseded`)

    @property
    def changed(self) -> bool:
        return self.created or self.added > 0 or self.superseded > 0 or self.deleted > 0


def _row(sweep_id: int, r: Any, now=None) -> dict[str, Any]:
    led = r.ledger
    return dict(
        sweep_id=sweep_id, run_id=r.run_id, budget=r.budget, point=r.point, n_layer=r.n_layer,
        d_model=r.d_model, n_head=r.n_head, params=r.params,
        params_non_embedding=led["params_non_embedding"], params_with_output=led["params_with_output"],
        params_all=led["params_all"], tokens=r.tokens, steps=r.steps, batch_seqs=r.batch_seqs,
        batch_tokens=r.batch_tokens, lr=r.lr, lr_mult=r.lr_mult, batch_mult=r.batch_mult, seed=r.seed,
        flops=float(r.flops), flops_6nd=float(led["flops_6nd"]),
        flops_6nd_attention=float(led["flops_6nd_attention"]), flops_exact=float(led["flops_exact"]),
        definition=r.definition_json or r.definition, state="planned", metrics_offset=0,
        updated_at=now or utcnow(),
    )


def save_plan(
    engine: Engine, spec: Any, runs: Sequence[Any], workdir: Path, *, force: bool = False
) -> PlanResult:
    """Store a sweep's runs. Same spec again: nothing changes. A changed spec needs force=True,
    which keeps every run whose definition did not change (with its attempts and results)."""
    spec_json = spec.model_dump(mode="json")
    digest = spec.digest()
    now = utcnow()
    with Session(engine) as s, s.begin():
        sw = s.scalar(select(Sweep).where(Sweep.name == spec.name))
        if sw is None:
            sw = Sweep(name=spec.name, spec=spec_json, spec_digest=digest, workdir=str(workdir))
            s.add(sw)
            s.flush()
            if runs:  # Core executemany: an order faster than ORM objects for 10k runs
                s.connection().execute(insert(Run.__table__), [_row(sw.id, r, now) for r in runs])
            return PlanResult(spec.name, True, len(runs), 0, 0, 0)
        stored = {rid: (pk, state) for pk, rid, state in s.execute(
            select(Run.id, Run.run_id, Run.state).where(Run.sweep_id == sw.id))}
        new_ids = {r.run_id for r in runs}
        live = {rid for rid, (_, st) in stored.items() if st != "superseded"}
        if sw.spec_digest == digest and new_ids == live:
            return PlanResult(spec.name, False, 0, len(new_ids), 0, 0)
        if not force:
            gone, added = live - new_ids, new_ids - live
            what = []
            if added:
                what.append(f"{len(added)} new run(s)")
            if gone:
                done = sum(1 for rid in gone if stored[rid][1] in FINAL_STATES)
                what.append(f"{len(gone)} run(s) no longer planned ({done} finished)")
            extended = len(sw.spec.get("extend") or []) - len(spec_json.get("extend") or [])
            if extended > 0:  # `isoflop extend` added entries to the stored spec that the file lacks
                raise SpecChanged(
                    f"sweep {spec.name!r} is already planned with a different spec: the stored spec has {extended} "
                    f"`extend:` entr{'y' if extended == 1 else 'ies'} from `isoflop extend` that this spec lacks"
                    + (f" ({', '.join(what)})" if what else "")
                    + f"; `isoflop spec {spec.name} -o FILE` writes the stored spec to plan from "
                    "(--force would supersede those runs)")
            raise SpecChanged(
                f"sweep {spec.name!r} is already planned with a different spec"
                + (f" ({', '.join(what)})" if what else " (same runs, other settings)")
                + "; pass --force to replan (finished runs whose definition did not change are kept), "
                "or use another name"
            )
        attempted = {pk for (pk,) in s.execute(select(Attempt.run_pk).distinct())}
        superseded = deleted = 0
        for rid in live - new_ids:
            pk, _ = stored[rid]
            if pk in attempted:
                apply_action(s, Action.SUPERSEDE, Run.id == pk)
                superseded += 1
            else:
                s.delete(s.get(Run, pk))
                deleted += 1
        revived = [stored[rid][0] for rid in new_ids & set(stored) if stored[rid][1] == "superseded"]
        if revived:  # planned again after a round trip: its results are still good
            apply_action(s, Action.REVIVE, Run.id.in_(revived))
        fresh = [r for r in runs if r.run_id not in stored]
        if fresh:
            s.connection().execute(insert(Run.__table__), [_row(sw.id, r, now) for r in fresh])
        sw.spec, sw.spec_digest, sw.updated_at = spec_json, digest, utcnow()
        running = s.scalar(select(func.count(func.distinct(Run.id))).join(Attempt, Attempt.run_pk == Run.id).where(
            Run.sweep_id == sw.id, Run.state == "superseded", Attempt.state.in_(ACTIVE_STATES)))
        return PlanResult(spec.name, False, len(fresh), len(new_ids) - len(fresh), superseded, deleted, running)


def apply_action(session: Session, action: Action, *where: Any) -> None:
    """`action` on the runs matching `where` that it applies to (state.py's table), in one UPDATE:
    e.g. a run superseded while its submit ran stays superseded when the job id is recorded."""
    session.execute(update(Run).where(*where, Run.state.in_(action_sources(action))).values(
        state=action_target(action), updated_at=utcnow()))


def get_sweep(session: Session, name: str) -> Sweep:
    sw = session.scalar(select(Sweep).where(Sweep.name == name))
    if sw is None:
        names = session.scalars(select(Sweep.name).order_by(Sweep.name)).all()
        hint = f"; known sweeps: {', '.join(names)}" if names else "; no sweep is planned yet"
        raise StoreError(f"no sweep named {name!r} in the store{hint}")
    return sw


def sweep_runs(session: Session, sweep: Sweep, *, include_superseded: bool = False) -> list[Run]:
    q = select(Run).where(Run.sweep_id == sweep.id)
    if not include_superseded:
        q = q.where(Run.state != "superseded")
    return list(session.scalars(q.order_by(Run.budget, Run.point, Run.lr_mult, Run.batch_mult, Run.seed)))
