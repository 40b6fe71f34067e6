"""Simulated sweeps for tests: specs with the `simulate` template, run end to end through
plan -> submit (local pool) -> status, in seconds."""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from .conftest import run_isoflop

HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

# every run of a sweep packs into a few local jobs (a simulated run takes milliseconds)
FAST_PROFILE = """\
description: local, packed (simulated sweeps)
executor: local
workers: 2
pack_target_minutes: 60
array_parallelism: 2    # two jobs, each running its runs in turn
max_attempts: 2
peak_flops: 1.0e30
mfu: 1.0
run_overhead_s: 0
"""


def write_spec(path: Path, name: str, budgets: list[float], *, points: int = 7, span: float = 16.0,
               centre_at: dict[float, float] | None = None, lr=3e-4, lr_grid=None, noise: float = 0.002,
               extra_vars: dict | None = None, **top) -> Path:
    spec = {"name": name, "budgets": budgets, "grid": {"points": points, "span": span},
            "lr": lr, "trainer": {"template": "simulate",
                                  "vars": {"law": HOFFMANN, "noise": noise, **(extra_vars or {})}}, **top}
    if centre_at:
        spec["grid"]["centre_at"] = {float(k): float(v) for k, v in centre_at.items()}
    if lr_grid:
        spec["lr_grid"] = lr_grid
    path.write_text(yaml.safe_dump(spec))
    return path


def profile(tmp: Path) -> str:
    p = tmp / "fast.yaml"
    p.write_text(FAST_PROFILE)
    return str(p)


def submit_and_wait(name: str, workdir: Path, prof: str, timeout: float = 240) -> dict:
    """Submit every submittable run of the sweep and sync until none is active; the final status JSON."""
    run_isoflop("submit", name, "--profile", prof, workdir=workdir)
    deadline = time.time() + timeout
    while True:
        st = json.loads(run_isoflop("status", name, "--json", workdir=workdir).stdout)
        if st["active"] == 0:
            return st
        assert time.time() < deadline, f"sweep {name} still has {st['active']} active runs: {st['counts']}"
        time.sleep(1.0)


def fit_json(name: str, workdir: Path, *extra: str) -> dict:
    return json.loads(run_isoflop("fit", name, "--json", *extra, workdir=workdir).stdout)
