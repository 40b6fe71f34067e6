"""Wall time of `isoflop demo` (goal on a 2-core CPU: < 10 min, --quick < 5 min), the time of a
second run (finished runs reused: only the fit), and whether every budget's minimum lies
inside its grid.

    python benchmarks/demo_time.py            # --quick
    python benchmarks/demo_time.py --full
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    full = "--full" in sys.argv
    name = "cpu-demo" if full else "cpu-demo-quick"
    args = [] if full else ["--quick"]
    with tempfile.TemporaryDirectory() as d:
        wd = Path(d) / "demo"
        cmd = [sys.executable, "-m", "isoflop", "demo", "--workdir", str(wd), *args]
        t = time.perf_counter()
        first = subprocess.run(cmd, capture_output=True, text=True)
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        second = subprocess.run(cmd, capture_output=True, text=True)
        t2 = time.perf_counter() - t
        fit = subprocess.run([sys.executable, "-m", "isoflop", "--workdir", str(wd), "fit", name, "--json"],
                             capture_output=True, text=True)
        if first.returncode or second.returncode or fit.returncode:
            print(first.stdout[-3000:], first.stderr[-2000:], second.stderr[-2000:], fit.stderr[-2000:])
            return 1
        out = json.loads(fit.stdout)
    inside = all(b["in_range"] for b in out["budgets"])
    fr = out["frontier"]["params"] if out["frontier"] else None
    print(f"{'demo':24s} {name}")
    print(f"{'first run (train + fit)':24s} {t1:8.1f} s   goal {'600' if full else '300'} s")
    print(f"{'second run (refit only)':24s} {t2:8.1f} s")
    print(f"{'minima inside grid':24s} {inside}  " + ", ".join(
        f"{b['budget']:.3g}: N_opt {b['n_opt']:.3g} {b['flags'] or ''}" for b in out["budgets"]))
    if fr:
        print(f"{'exponent a':24s} {fr['exponent']:.3f} (5-95%: {fr['exponent_ci'][0]:.3f} - {fr['exponent_ci'][1]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
