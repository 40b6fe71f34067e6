"""`isoflop status` on a 10,000-run sweep, timed end to end (the CLI process). Goal: < 1 s.

    .venv/bin/python benchmarks/status_speed.py [--runs 10000] [--running 100] [--repeat 5]

Plans a sweep of 10,000 runs into a temporary store, marks half of them completed (with losses)
and `--running` of them running under the local executor (live job state files, a metrics.jsonl
each), then times `isoflop status SWEEP` and `isoflop status SWEEP --json` as subprocesses.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEC = """\
name: big
budgets: {{start: 1.0e17, stop: 1.0e21, per_decade: 2.25}}
grid: {{points: 10, span: 16}}
lr_grid: [0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6]
seeds: [{seeds}]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--running", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="build the store in this folder and keep it")
    a = ap.parse_args()
    from sqlalchemy import select, update
    from sqlalchemy.orm import Session

    from isoflop.dispatch import files as F
    from isoflop.plan.grid import plan
    from isoflop.spec import parse_spec
    from isoflop.store.engine import open_engine
    from isoflop.store.models import Attempt, Run
    from isoflop.store.sweeps import save_plan

    import yaml

    with tempfile.TemporaryDirectory(prefix="isoflop-status-") as d:
        workdir = (a.keep or Path(d)) / "work"
        seeds = max(1, a.runs // 1000)
        spec = parse_spec(yaml.safe_load(SPEC.format(seeds=", ".join(str(i) for i in range(seeds)))))
        runs = plan(spec)
        engine = open_engine(f"sqlite:///{workdir / 'isoflop.db'}")
        save_plan(engine, spec, runs, workdir)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", "isoflop.dispatch"])
        try:
            with Session(engine) as s, s.begin():
                pks = [pk for (pk,) in s.execute(select(Run.id).order_by(Run.id))]
                done, running = pks[: len(pks) // 2], pks[len(pks) // 2: len(pks) // 2 + a.running]
                s.execute(update(Run).where(Run.id.in_(done)).values(state="completed", val_loss=3.0, train_loss=3.1))
                jd = workdir / "local" / "jobs"
                jd.mkdir(parents=True)
                for i, pk in enumerate(running):
                    rid = s.get(Run, pk).run_id
                    jid = f"bench_{i}"
                    s.add(Attempt(run_pk=pk, number=1, executor="local", job_id=jid, state="running", token="bench", task=i))
                    s.execute(update(Run).where(Run.id == pk).values(state="running"))
                    F.write_json_atomic(jd / f"{jid}.json", {"job_id": jid, "run_dirs": []})
                    F.write_json_atomic(jd / f"{jid}.state", {"state": "running", "pid": sleeper.pid})
                    rdir = F.run_dir(workdir, "big", rid)
                    F.write_json_atomic(F.status_path(rdir, 1), {"state": "running", "node": "bench"})
                    with open(rdir / "metrics.jsonl", "w") as f:
                        for step in range(0, 1000, 10):
                            f.write(json.dumps({"step": step, "tokens": step * 1000, "train_loss": 4 - step / 1000,
                                                "tokens_per_s": 5e4}) + "\n")
            env = {**os.environ, "ISOFLOP_WORKDIR": str(workdir), "COLUMNS": "160"}
            env.pop("ISOFLOP_DB", None)
            print(f"sweep of {len(runs)} runs: {len(done)} completed, {len(running)} running (local jobs), rest planned")
            for args in (["status", "big"], ["status", "big", "--json"]):
                times = []
                for i in range(a.repeat + 1):
                    t0 = time.perf_counter()
                    p = subprocess.run([sys.executable, "-m", "isoflop", *args], env=env, capture_output=True, text=True)
                    times.append(time.perf_counter() - t0)
                    assert p.returncode == 0, p.stderr
                first, rest = times[0], times[1:]
                print(f"isoflop {' '.join(args):22s} first (ingests {len(running)} metrics files) {first:.3f} s; "
                      f"then median {statistics.median(rest):.3f} s, max {max(rest):.3f} s over {len(rest)}")
            p = subprocess.run([sys.executable, "-X", "importtime", "-m", "isoflop", "status", "big", "--json"],
                               env=env, capture_output=True, text=True)
            import re

            heavy = [m for m in ("torch", "submitit", "matplotlib", "scipy", "numpy", "pydantic")
                     if re.search(rf"\|\s+{m}$", p.stderr, re.M)]
            print(f"heavy modules imported by `isoflop status`: {heavy or 'none'}")
        finally:
            sleeper.kill()


if __name__ == "__main__":
    main()
