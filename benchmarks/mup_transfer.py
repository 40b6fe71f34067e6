"""Does the built-in model's muP transfer the learning rate across width? SP vs muP on CPU.

At widths 32, 64, 128 (4x; 2 layers, head_dim 16, byte-level stdlib data, seq 64, batch 16,
AdamW β=(0.9, 0.95), no weight decay, clipping 1.0, warmup 10 steps then linear decay to 10%), every width
is trained at a small grid of learning rates, once with the standard parametrisation (SP) and
once with `model.mup` (base width 32: at width 32 both are the same model). Per width the optimal
η is the vertex of a parabola of the final held-out loss (8 fixed batches) in ln η
(`isoflop.fit.hparams.fit_axis`, the same as `isoflop fit` uses per cell); then the exponent of
η*(width) ∝ width^e by least squares. muP promises e ≈ 0; under SP with Adam the optimum falls
with width (e ≈ −1 in theory for the hidden matrices).

Coordinate check (Yang et al.): after 10 steps at a fixed lr, the RMS of the embedding output,
each block's output and the logits, against width. Under muP they stay flat; under SP the logits
grow with width.

    .venv/bin/python benchmarks/mup_transfer.py            # a few CPU-minutes (much longer on a loaded machine)
    .venv/bin/python benchmarks/mup_transfer.py --steps 60 --widths 32 64 128 256
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from isoflop.fit.hparams import fit_axis
from isoflop.plan.flops import Shape
from isoflop.train import data as data_mod
from isoflop.train.model import build

BASE = 32
HEAD_DIM = 16
SEQ = 64
BATCH = 16
WARMUP = 10
EVAL_BATCHES = 8


def train(width: int, mup: bool, lr: float, steps: int, splits, seed: int = 0,
          probe: bool = False) -> tuple[float, dict[str, float]]:
    torch.manual_seed(seed)
    model = build(Shape(n_layer=2, d_model=width, n_head=width // HEAD_DIM, vocab_size=256, seq_len=SEQ),
                  mup=mup, mup_base_width=BASE)
    groups = model.param_groups(weight_decay=0.0)
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    params = [p for g in groups for p in g["params"]]
    losses = []
    for step in range(steps):
        # warmup, then linear decay to 10%: the final loss is the schedule's, not one noisy step's
        scale = min((step + 1) / WARMUP, 1.0 - 0.9 * max(0, step - WARMUP) / max(1, steps - WARMUP))
        for g in opt.param_groups:
            g["lr"] = lr * scale * g["lr_mult"]
        xy = torch.from_numpy(data_mod.train_batch(splits, seed, step, BATCH, SEQ))
        _, loss = model(xy[:, :-1], xy[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        v = float(loss.detach())
        losses.append(v if math.isfinite(v) else 20.0)
    with torch.no_grad():  # the same held-out batches for every run
        held = [model(torch.from_numpy(b)[:, :-1], torch.from_numpy(b)[:, 1:])[1] for b in
                data_mod.eval_batches(splits, EVAL_BATCHES, BATCH, SEQ)]
    final = float(torch.stack(held).mean())
    rms: dict[str, float] = {}
    if probe:
        hooks = []

        def keep(name):
            def hook(_m, _i, out):
                t = out[0] if isinstance(out, tuple) else out
                rms[name] = float(t.detach().float().pow(2).mean().sqrt())
            return hook

        hooks.append(model.wte.register_forward_hook(keep("embedding")))
        for i, b in enumerate(model.blocks):
            hooks.append(b.register_forward_hook(keep(f"block {i}")))
        xy = torch.from_numpy(data_mod.train_batch(splits, seed, 10_000, BATCH, SEQ))
        with torch.no_grad():
            logits, _ = model(xy[:, :-1])
        rms["logits"] = float(logits.float().pow(2).mean().sqrt())
        for h in hooks:
            h.remove()
    return (final if math.isfinite(final) else 20.0), rms


def slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lrs", type=float, nargs="+", default=[2 ** -k for k in (10, 9, 8, 7, 6, 5)])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    splits = data_mod.load("stdlib", None, seq_len=SEQ, vocab_size=256)
    t0 = time.time()
    opt_lr: dict[str, list[float]] = {}
    for mode in ("SP", "muP"):
        opt_lr[mode] = []
        for w in a.widths:
            losses = [train(w, mode == "muP", lr, a.steps, splits)[0] for lr in a.lrs]
            fit = fit_axis(np.array(a.lrs), np.array(losses))
            opt_lr[mode].append(fit.opt)
            row = "  ".join(f"{lr:.2e}:{loss:.3f}" for lr, loss in zip(a.lrs, losses))
            print(f"{mode:3s} width {w:4d}: η* = {fit.opt:.3g} {list(fit.flags) or ''}   {row}", flush=True)
    for mode in ("SP", "muP"):
        print(f"{mode:3s}: η*(width) exponent {slope(a.widths, opt_lr[mode]):+.3f} "
              f"(η* {', '.join(f'{v:.3g}' for v in opt_lr[mode])} at widths {a.widths})")
    print("coordinate check: activation RMS after 10 steps at lr 2^-7, per width "
          f"{a.widths}, and the exponent of RMS against width")
    for mode in ("SP", "muP"):
        per = [train(w, mode == "muP", 2 ** -7, 10, splits, probe=True)[1] for w in a.widths]
        for name in per[0]:
            vals = [p[name] for p in per]
            print(f"  {mode:3s} {name:10s} " + "  ".join(f"{v:8.3f}" for v in vals) + f"   slope {slope(a.widths, vals):+.2f}")
    print(f"took {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
