"""Shared fixtures.

Slurm: tests marked `@pytest.mark.slurm` take the session fixture `slurm_cluster`, which starts
the local single-node cluster with tests/slurm_cluster.sh (root + apt on Debian 12; FAKE_GPUS=2,
SACCT_SHIM=1). Where it cannot start they are skipped with the reason; with
ISOFLOP_REQUIRE_SLURM=1 (CI) that skip is a failure.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = REPO / "tests" / "slurm_cluster.sh"

# Tiny runs of the built-in trainer (a few seconds each on one CPU thread).
TINY_SPEC = """\
name: {name}
budgets: {budgets}
grid: {{points: {points}, span: 9, centre: {{k: 0.15}}}}
model: {{vocab_size: 256, seq_len: 128, head_dim: 16, aspect_ratio: 32, mlp: gelu, tied: true}}
flops: exact
params: all
batch: {{rule: 8, unit: sequences}}
lr: {{coef: 9.765625e-09, of: D, power: 1.0, max: 0.01}}
schedule: {{kind: cosine, warmup_frac: 0.05, min_lr_frac: 0.1}}
seeds: [0]
data: {{kind: stdlib}}
trainer: {{template: builtin, device: cpu, threads: 1, eval_batches: 4, log_every: 10, checkpoint_every_s: {ckpt}}}
"""


def tiny_spec(name: str = "tiny", budgets: str = "[3.0e10]", points: int = 3, ckpt: float = 60) -> str:
    return TINY_SPEC.format(name=name, budgets=budgets, points=points, ckpt=ckpt)


def isoflop_env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ISOFLOP_WORKDIR": str(workdir), "COLUMNS": "200", **extra}
    env.pop("ISOFLOP_DB", None)
    return env


def run_isoflop(*args: str, workdir: Path, check: bool = True, timeout: float = 300,
                **env: str) -> subprocess.CompletedProcess:
    """`python -m isoflop ARGS` with the store and run folders in `workdir`."""
    p = subprocess.run([sys.executable, "-m", "isoflop", *args], cwd=workdir.parent, env=isoflop_env(workdir, **env),
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"isoflop {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture
def planned_sweep(tmp_path):
    """plan(name, budgets, points, ckpt) -> (engine, workdir): a tiny sweep planned in a fresh store."""

    def make(name: str = "tiny", budgets: str = "[3.0e10]", points: int = 3, ckpt: float = 60):
        from isoflop.store.engine import open_engine

        workdir = tmp_path / "work"
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(tiny_spec(name, budgets, points, ckpt))
        run_isoflop("plan", str(spec), workdir=workdir)
        return open_engine(f"sqlite:///{workdir / 'isoflop.db'}", create=False), workdir

    return make


def _unavailable(msg: str):
    if os.environ.get("ISOFLOP_REQUIRE_SLURM") == "1":
        pytest.fail(f"ISOFLOP_REQUIRE_SLURM=1 but {msg}")
    pytest.skip(msg)


# The settings the suite's cluster runs with (tests/slurm_cluster.sh); modules that change them
# restore these afterwards (tests/test_slurm_accounting.py).
SLURM_DEFAULTS = {"FAKE_GPUS": "2", "SACCT_SHIM": "1", "WITH_ACCOUNTING": "0", "MIN_JOB_AGE": "300"}


def start_slurm_cluster(what: str = "the local Slurm cluster", **settings: str) -> tuple[bool, str]:
    """tests/slurm_cluster.sh start with SLURM_DEFAULTS updated by `settings`: (ok, why not)."""
    if sys.platform != "linux":
        return False, f"{what} needs Linux"
    if os.geteuid() != 0:
        return False, f"starting {what} needs root (run `sudo tests/slurm_cluster.sh start`)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return False, "Slurm is not installed and there is no apt-get to install it"
    env = {**os.environ, **SLURM_DEFAULTS, **settings}
    try:
        r = subprocess.run([str(SLURM_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return False, "tests/slurm_cluster.sh start did not finish within 15 minutes"
    finally:
        from isoflop.dispatch import slurm

        slurm.reset_cache()
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        return False, f"{what} did not start: {last}"
    return True, ""


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local Slurm cluster (FAKE_GPUS=2, sacct shim), started once per session."""
    ok, why = start_slurm_cluster()
    if not ok:
        _unavailable(why)
    yield {"gpus": 2, "sacct": "shim", "partition": "debug"}
