"""Calibration of `isoflop compare`: does the multiplier's 5–95% interval hold the truth 90% of the time?

Pairs of sweeps are drawn from known laws (`isoflop.fit.simulate`): the
reference from one of LAWS, the other from the same law with B·m^β in
place of B, i.e. L(N, D/m): it needs exactly m× the compute for every loss
(a constant multiplier m ∈ {1, 1.3, 2}); and pairs where the other law has
other exponents (α and β × 0.85), whose multiplier grows with C (the truth
from the closed-form L_opt of each law). 5 budgets 1e17–1e19, 7 sizes, one
run per size, noise σ ∈ {0.003, 0.01}. Printed: how often the interval at the
shared budgets and at 1e20 (a prediction 10× past the top budget) covers
the truth (nominal 90%), and the median relative error of the point value.

    .venv/bin/python benchmarks/compare_calibration.py [--pairs 40] [--bootstrap 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from isoflop.fit.compare import compare_sweeps
from isoflop.fit.simulate import LAWS, Law, draw_sweep

TARGET = 1e20


def true_multiplier(ref: Law, oth: Law, c: float) -> float:
    """C'/C with oth.loss_opt(C') = ref.loss_opt(C): both are E + K·C^−γ exactly (6ND, Hoffmann eq. 4)."""
    g = oth.alpha * oth.beta / (oth.alpha + oth.beta)
    k = (float(oth.loss_opt(1e18)) - oth.E) * 1e18 ** g
    gap = float(ref.loss_opt(c)) - oth.E
    return math.inf if gap <= 0 else (k / gap) ** (1 / g) / c


def pairs(rng: np.random.Generator):
    for law in LAWS:
        for m in (1.0, 1.3, 2.0):
            yield f"m={m:g}", law, Law(law.E, law.A, law.B * m ** law.beta, law.alpha, law.beta)
        yield "growing", law, Law(law.E, law.A, law.B, law.alpha * 0.85, law.beta * 0.85)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=40, help="draws per (law pair, noise)")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for noise in (0.003, 0.01):
        stats: dict[str, list] = {}
        for kind, ref, oth in pairs(rng):
            for _ in range(max(1, args.pairs // 4)):
                a, b = draw_sweep(ref, rng, noise=noise), draw_sweep(oth, rng, noise=noise)
                try:
                    cmp = compare_sweeps([("A", a), ("B", b)], bootstrap=args.bootstrap,
                                         seed=int(rng.integers(2**31)), predict=[TARGET])
                except Exception as exc:  # a pair without a frontier: counted, not fatal
                    stats.setdefault("failed", []).append(str(exc))
                    continue
                for mp in cmp.pairs[0].multiplier:
                    truth = true_multiplier(ref, oth, mp.budget)
                    where = "shared" if mp.kind == "shared" else "1e20"
                    for key in (f"{kind} {where}", f"all {where}"):
                        lo, hi = mp.ci if mp.ci is not None else (None, None)
                        inside = mp.ci is not None and (lo is None or lo <= truth) and (hi is None or truth <= hi)
                        stats.setdefault(key, []).append((inside, abs(mp.value / truth - 1)))
        print(f"noise {noise}:")
        for key in sorted(k for k in stats if k != "failed"):
            v = stats[key]
            cov = np.mean([i for i, _ in v])
            err = np.median([e for _, e in v])
            print(f"  {key:<16} coverage {cov:6.1%} of {len(v):4d}   median |value/truth − 1| {err:.3f}")
        if "failed" in stats:
            print(f"  {len(stats['failed'])} pair(s) without a comparison")
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
