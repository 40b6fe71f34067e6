"""Makespan of a sweep of 16 tiny runs on the local Slurm cluster, with and without packing.

    sudo tests/slurm_cluster.sh start          # the local cluster (2 CPUs: 2 slots)
    .venv/bin/python benchmarks/sweep_overhead.py [--slots 2] [--pack-minutes 0.5]

ideal = (sum of the runs' own wall times, python start-up included) / slots; the goal is
makespan <= 1.15 x ideal. A run's wall time is its command's lifetime (attempt-1.outcome.json),
so the overhead measured is Slurm's (scheduling, job start, submitit) plus isoflop's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import tiny_spec  # noqa: E402

BUDGETS = "[2.0e10, 3.0e10, 5.0e10, 1.0e11]"
PROFILE = """\
executor: slurm
partition: debug
cpus_per_task: 1
mem_gb: 1
max_time_minutes: 30
min_time_minutes: 2
array_parallelism: {slots}
pack_target_minutes: {pack}
peak_flops: 2.0e10
mfu: 0.3
run_overhead_s: 4
signal_delay_s: 60
"""


def isoflop(workdir: Path, *args: str) -> str:
    env = {**os.environ, "ISOFLOP_WORKDIR": str(workdir)}
    env.pop("ISOFLOP_DB", None)
    p = subprocess.run([sys.executable, "-m", "isoflop", *args], env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"isoflop {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def one(tmp: Path, pack: float, slots: int) -> dict:
    workdir = tmp / f"pack-{pack}"
    spec = tmp / "bench.yaml"
    spec.write_text(tiny_spec("bench", BUDGETS, 4))
    prof = tmp / f"prof-{pack}.yaml"
    prof.write_text(PROFILE.format(slots=slots, pack=pack))
    isoflop(workdir, "plan", str(spec))
    t0 = time.time()
    out = isoflop(workdir, "submit", "bench", "--profile", str(prof))
    while True:
        st = json.loads(isoflop(workdir, "status", "bench", "--json"))
        if st["active"] == 0:
            break
        time.sleep(1)
    walls, ends = [], []
    for r in st["runs"]:
        rdir = workdir / "runs" / "bench" / r["run_id"]
        for rec_path in sorted(rdir.glob("attempt-*.outcome.json")):  # every attempt's command time counts
            rec = json.loads(rec_path.read_text())
            walls.append(rec["wall_s"] if rec.get("state") != "preempted" else 0.0)
            ends.append(rec["ended_at"])
    makespan = max(ends) - t0
    ideal = sum(walls) / slots
    jobs = out.split(" job(s)")[0].rsplit(" ", 1)[-1]
    return {"pack_target_minutes": pack, "runs": len(st["runs"]), "jobs": int(jobs), "states": st["counts"],
            "sum_run_s": round(sum(walls), 1), "ideal_s": round(ideal, 1), "makespan_s": round(makespan, 1),
            "ratio": round(makespan / ideal, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--pack-minutes", type=float, default=0.5)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="isoflop-bench-") as d:
        for pack in (0.0, a.pack_minutes):
            r = one(Path(a.keep or d), pack, a.slots)
            label = "no packing" if pack == 0 else f"packing ({pack:g} min target)"
            print(f"{label:28s} {r['runs']} runs in {r['jobs']:2d} jobs: makespan {r['makespan_s']:6.1f} s, "
                  f"ideal (sum {r['sum_run_s']:.1f} s / {a.slots} slots) {r['ideal_s']:6.1f} s, "
                  f"ratio {r['ratio']:.3f}  {r['states']}")
            print(json.dumps(r))


if __name__ == "__main__":
    main()
