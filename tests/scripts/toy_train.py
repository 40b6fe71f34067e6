#!/usr/bin/env python3
"""A small, real, stand-alone training script for the command-template tests.

Trains a logistic-regression model with SGD + momentum (numpy, float64) on synthetic data
fixed by --seed. Each step's minibatch depends only on (seed, step), so a run resumed from
a checkpoint ends with exactly the same loss as an uninterrupted one.

  --out_dir DIR        checkpoints go to DIR/ckpt.npz (every --ckpt_every steps, and on a signal)
  --resume_from DIR    resume from DIR/ckpt.npz ("" = from scratch)
  --result file|log|none   write {"loss", "train_loss", "tokens", "steps"} to $ISOFLOP_RESULT,
                       or print "final loss X" in the log, or report nothing
  --progress metrics|log|none   JSON lines to $ISOFLOP_METRICS, or "step N loss X" log lines
  --nan_at N           the loss becomes NaN from step N on (a diverging run)
  --exit_code N        exit with N at the end
  --preempt_exit N     on SIGUSR1/SIGUSR2/SIGTERM: checkpoint, exit N (default 3)
  --step_sleep S       sleep S seconds per step (so a test can interrupt mid-run)
  --tag / --data       any strings: echoed back (as JSON) on the "argv=" line

It prints "argv=<json of sys.argv[1:]>" and "start step K" first.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import numpy as np

STOP = {"sig": None}


def _on_signal(signum, frame):  # noqa: ARG001
    STOP["sig"] = signum


def data(seed: int, dim: int, n: int = 4096):
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=dim)
    x = rng.normal(size=(n, dim))
    p = 1 / (1 + np.exp(-(x @ w_true)))
    y = (rng.random(n) < p).astype(np.float64)
    return x, y


def loss_and_grad(w, x, y):
    z = x @ w
    p = 1 / (1 + np.exp(-z))
    # log(1 + e^z) - y z, stably
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    return loss, x.T @ (p - y) / len(y)


def save(out_dir: str, w, v, step: int) -> None:
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, "ckpt.tmp.npz")
    np.savez(tmp, w=w, v=v, step=step)
    os.replace(tmp, os.path.join(out_dir, "ckpt.npz"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--out_dir", default="")
    ap.add_argument("--resume_from", default="")
    ap.add_argument("--result", choices=["file", "log", "none"], default="file")
    ap.add_argument("--progress", choices=["metrics", "log", "none"], default="metrics")
    ap.add_argument("--ckpt_every", type=int, default=10)
    ap.add_argument("--nan_at", type=int, default=0)
    ap.add_argument("--exit_code", type=int, default=0)
    ap.add_argument("--preempt_exit", type=int, default=3)
    ap.add_argument("--step_sleep", type=float, default=0.0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--data", default="")
    args = ap.parse_args()
    print("argv=" + json.dumps(sys.argv[1:]), flush=True)
    for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(s, _on_signal)

    x, y = data(args.seed, args.dim)
    w = np.zeros(args.dim)
    v = np.zeros(args.dim)
    start = 0
    if args.resume_from:
        ck = np.load(os.path.join(args.resume_from, "ckpt.npz"))
        w, v, start = ck["w"], ck["v"], int(ck["step"])
    print(f"start step {start}", flush=True)

    loss = float("nan")
    metrics = open(os.environ["ISOFLOP_METRICS"], "a") if args.progress == "metrics" else None
    for step in range(start + 1, args.steps + 1):
        rng = np.random.default_rng([args.seed, step])
        idx = rng.integers(0, len(y), size=args.batch)
        loss, g = loss_and_grad(w, x[idx], y[idx])
        v = 0.9 * v + g
        w = w - args.lr * v
        if args.nan_at and step >= args.nan_at:
            loss = float("nan")
        if args.progress == "metrics":
            metrics.write(json.dumps({"step": step, "train_loss": loss, "lr": args.lr}) + "\n")
            metrics.flush()
        elif args.progress == "log":
            print(f"step {step} loss {loss:.6f}", flush=True)
        if args.out_dir and step % args.ckpt_every == 0:
            save(args.out_dir, w, v, step)
        if STOP["sig"] is not None:
            if args.out_dir:
                save(args.out_dir, w, v, step)
            print(f"got signal {STOP['sig']}: checkpointed at step {step}, exiting {args.preempt_exit}",
                  flush=True)
            return args.preempt_exit
        if args.step_sleep:
            time.sleep(args.step_sleep)

    final, _ = loss_and_grad(w, x, y)  # full-data loss: the run's "val" loss
    if args.nan_at:
        final = float("nan")
    if args.result == "file":
        path = os.environ["ISOFLOP_RESULT"]
        with open(path + ".tmp", "w") as f:
            json.dump({"loss": final, "train_loss": loss, "steps": args.steps,
                       "tokens": args.steps * args.batch}, f)
        os.replace(path + ".tmp", path)
    elif args.result == "log":
        print(f"final loss {final!r}", flush=True)
    print("done", flush=True)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
