"""Plan + store a 10,000-run sweep; print the time of each step (goal: < 1 s together).

The reference in the same run: storing the same rows one ORM object at a time,
the obvious way, which is what the bulk path is measured against.

    python benchmarks/plan_speed.py
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from isoflop.plan.grid import plan
from isoflop.spec import parse_spec
from isoflop.store.engine import db_url, open_engine
from isoflop.store.sweeps import _row, save_plan

SPEC = {
    "name": "bench",
    "budgets": {"start": 1e16, "stop": 1e25, "per_decade": 111},  # 1000 budgets
    "grid": {"points": 10, "span": 16},
    "batch": {"rule": "deepseek"},
    "lr": "deepseek",
}


def main() -> dict[str, float]:
    spec = parse_spec(SPEC)
    t0 = time.perf_counter()
    runs = plan(spec)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        eng = open_engine(db_url(None, d))
        t2 = time.perf_counter()
        save_plan(eng, spec, runs, Path(d))
        t3 = time.perf_counter()
        save_plan(eng, spec, runs, Path(d))  # planning again: a no-op
        t4 = time.perf_counter()
        # reference: one ORM object per run
        from sqlalchemy.orm import Session

        from isoflop.store.models import Run, Sweep

        eng2 = open_engine(db_url(None, Path(d) / "ref"))
        with Session(eng2) as s, s.begin():
            sw = Sweep(name="ref", spec={}, spec_digest="", workdir=d)
            s.add(sw)
            s.flush()
            t5 = time.perf_counter()
            for r in runs:
                s.add(Run(**_row(sw.id, r)))
        t6 = time.perf_counter()
    out = {"runs": len(runs), "plan_s": t1 - t0, "store_s": t3 - t2, "plan_plus_store_s": (t1 - t0) + (t3 - t2),
           "replan_noop_s": t4 - t3, "reference_orm_store_s": t6 - t5}
    print(f"{'runs':28s} {len(runs):>8d}")
    for k, v in out.items():
        if k != "runs":
            print(f"{k:28s} {v:8.3f} s")
    return out


if __name__ == "__main__":
    main()
