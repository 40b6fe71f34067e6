"""Measured training FLOPs per token (torch FlopCounterMode, one forward+backward step, math SDPA)
vs the planner's figures (isoflop/plan/flops.py) under each FLOP convention.

    .venv/bin/python benchmarks/flops_check.py [--param-convention non_embedding|with_output|all]

"exact" should agree with the measurement to well under 2%; 6ND and 6ND+attention show how far
the usual approximations are from what the model really computes at each size.
"""
from __future__ import annotations

import argparse

import torch

from isoflop.plan import flops
from isoflop.plan.flops import Shape
from isoflop.train.flops_count import measured_flops_per_token
from isoflop.train.model import build

SHAPES = [
    Shape(1, 32, 2, 256, 128),
    Shape(2, 64, 2, 256, 128),
    Shape(4, 128, 4, 256, 128, "swiglu", False, True),
    Shape(4, 256, 4, 256, 256),
    Shape(6, 384, 6, 50304, 512, "swiglu", False),
    Shape(8, 512, 8, 32000, 1024, "swiglu", True, True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--param-convention", default="non_embedding", choices=flops.PARAM_CONVENTIONS)
    args = ap.parse_args()
    pc = args.param_convention
    print(f"FLOPs per token, forward+backward; N under '{pc}'; torch {torch.__version__}")
    hdr = (f"{'L':>2} {'d':>4} {'H':>2} {'V':>6} {'T':>5} {'mlp':>6} {'tied':>5} {'qkn':>4} {'measured':>12} "
           f"{'exact':>12} {'err':>7} {'6ND':>12} {'6ND/meas':>8} {'6ND+att':>12} {'+att/meas':>9}")
    print(hdr)
    worst = 0.0
    for s in SHAPES:
        torch.manual_seed(0)
        m = build(s)
        meas = measured_flops_per_token(m, s.seq_len, s.vocab_size)
        ex = flops.exact_flops_per_token(s)
        a = flops.flops_per_token(s, "6ND", pc)
        b = flops.flops_per_token(s, "6ND+attention", pc)
        err = (meas - ex) / ex
        worst = max(worst, abs(err))
        print(f"{s.n_layer:>2} {s.d_model:>4} {s.n_head:>2} {s.vocab_size:>6} {s.seq_len:>5} {s.mlp:>6} "
              f"{s.tied!s:>5} {s.qk_norm!s:>4} {meas:>12.4g} {ex:>12.4g} {err:>+7.2%} {a:>12.4g} "
              f"{a / meas:>8.3f} {b:>12.4g} {b / meas:>9.3f}", flush=True)
    print(f"worst |measured - exact| / exact = {worst:.3%}")


if __name__ == "__main__":
    main()
