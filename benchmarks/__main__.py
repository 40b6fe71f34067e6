"""Run every benchmark and print what each one measured.

    python -m benchmarks            # all of them
    python -m benchmarks plan fit   # those whose name contains a word

Each benchmark is a script that prints its own measured numbers beside a
reference taken in the same run; this runner only runs them one after
another and collects their output, so that one command reproduces the
tables in benchmarks/README.md.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "plan_speed", "status_speed", "fit_speed", "fit_accuracy", "compare_calibration", "flops_check", "trainer_throughput",
    "sweep_overhead", "demo_time", "mup_transfer",
]


def main(argv: list[str]) -> int:
    names = [n for n in ORDER if (HERE / f"{n}.py").exists()]
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    print(f"# {platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} cpus · "
          f"Python {platform.python_version()} · {time.strftime('%Y-%m-%d %H:%M')}")
    failed = 0
    summary = []
    for n in names:
        print(f"\n## {n}\n", flush=True)
        t = time.perf_counter()
        p = subprocess.run([sys.executable, str(HERE / f"{n}.py")], cwd=HERE.parent)
        dt = time.perf_counter() - t
        summary.append((n, p.returncode, dt))
        failed += p.returncode != 0
    print("\n## summary\n")
    print(f"{'benchmark':22s} {'status':>8s} {'wall s':>8s}")
    for n, rc, dt in summary:
        print(f"{n:22s} {'ok' if rc == 0 else f'rc={rc}':>8s} {dt:8.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
