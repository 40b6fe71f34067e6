"""Several ranks for one run: who this process is, how the ranks meet, and how they are started.

A rank learns its place from its environment, torchrun's variables first (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), else those of the Slurm step that started it (SLURM_PROCID,
SLURM_STEP_NUM_TASKS, SLURM_LOCALID; the rendezvous host is the step's first node and the port a
function of the job and step ids, so every rank derives the same one). Without either it is the
only rank and nothing here is used.

Backend: NCCL on CUDA, gloo on CPU, chosen from the device. Control flags (stop, checkpoint due)
travel on a gloo group beside NCCL, so asking "does any rank want to stop?" every step never
waits for the GPU.

Launch: `python -m isoflop.train RUN_DIR` with ISOFLOP_TASKS_PER_RUN=N (set by the dispatching job
from the profile) is a launcher, not a rank: inside a Slurm allocation it becomes
`srun --ntasks=N ... python -m isoflop.train RUN_DIR` (a step of the job's own allocation);
elsewhere it starts N local processes with torchrun's variables and waits for them, forwarding
stop signals and killing the rest when one fails.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

ENV_TASKS = "ISOFLOP_TASKS_PER_RUN"  # ranks of one run (the profile's tasks per run)
ENV_NODES = "ISOFLOP_NODES_PER_RUN"  # nodes they span
ENV_CPUS = "ISOFLOP_CPUS_PER_TASK"
ENV_MICRO = "ISOFLOP_MICRO_BATCH_SEQS"  # sequences per rank per forward/backward; 0: the rank's whole share
ENV_PEAK = "ISOFLOP_PEAK_FLOPS"  # peak FLOP/s of one device, for MFU
ENV_LAUNCHER = "ISOFLOP_LAUNCHER"  # "srun" | "local" | "auto" (default)
ENV_IS_RANK = "ISOFLOP_IS_RANK"  # set on the processes a launcher started: they never launch again
PORT_BASE, PORT_SPAN = 20000, 30000


class LayoutError(ValueError):
    """The batch does not split over the ranks and micro-batches asked for."""


@dataclass(frozen=True)
class RankEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # "torchrun" | "slurm" | "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist expression: "gpu[003-005,9],cpu1" -> "gpu003"."""
    s = nodelist.strip()
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", s)
    if not m or not m.group(1):
        raise ValueError(f"not a Slurm node list: {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def rendezvous_port(job_id: str, step_id: str = "0") -> int:
    """A port every rank of one step derives alike; two steps of one job (packed runs one after
    another) and two jobs on one node (packed multi-GPU runs) get different ones."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    step = re.sub(r"\D", "", str(step_id)) or "0"
    return PORT_BASE + (int(digits) * 97 + int(step)) % PORT_SPAN


def rank_env(env: Mapping[str, str] | None = None) -> RankEnv:
    """This process's rank, from torchrun's or a Slurm step's variables (pure in `env`)."""
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE") and env.get("RANK") is not None and int(env["WORLD_SIZE"]) > 1:
        return RankEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", "29500")), "torchrun")
    # SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: the batch script of a many-task job has the latter
    # but is one process, not one of many
    n = int(env.get("SLURM_STEP_NUM_TASKS") or 1)
    if n > 1 and env.get("SLURM_PROCID") is not None:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        job = env.get("SLURM_JOB_ID", "0")
        return RankEnv(int(env["SLURM_PROCID"]), n, int(env.get("SLURM_LOCALID", "0")),
                       env.get("MASTER_ADDR") or first_host(nodes),
                       int(env.get("MASTER_PORT") or rendezvous_port(job, env.get("SLURM_STEP_ID", "0"))), "slurm")
    return RankEnv()


def micro_batches(batch_seqs: int, world: int, micro_seqs: int = 0) -> tuple[int, int]:
    """(sequences per rank, accumulation steps) for a global batch split over `world` ranks in
    micro-batches of `micro_seqs` sequences (0: one micro-batch per rank and step)."""
    if batch_seqs % world:
        raise LayoutError(f"batch_seqs {batch_seqs} does not split evenly over {world} ranks")
    per_rank = batch_seqs // world
    micro = micro_seqs or per_rank
    if micro < 1 or per_rank % micro:
        raise LayoutError(f"{per_rank} sequences per rank do not split into micro-batches of {micro_seqs}")
    return per_rank, per_rank // micro


def micro_seqs_setting(cfg_extra: Mapping[str, Any], env: Mapping[str, str] | None = None) -> int:
    """The micro-batch size: the job's (profile's) setting, else run.json's `micro_batch_seqs`."""
    env = os.environ if env is None else env
    v = env.get(ENV_MICRO) or cfg_extra.get("micro_batch_seqs") or 0
    return int(v)


# ---- the process group -------------------------------------------------------------------------
class Group:
    """The ranks of one run once they have met; with one rank every call is a cheap no-op."""

    def __init__(self, re_: RankEnv, device_type: str):
        self.env = re_
        self.rank, self.world = re_.rank, re_.world
        self.is_main = re_.rank == 0
        self.backend = None
        self._control = None
        if re_.world > 1:
            import datetime

            import torch.distributed as dist

            self.backend = "nccl" if device_type == "cuda" else "gloo"
            dist.init_process_group(self.backend, init_method=f"tcp://{re_.master_addr}:{re_.master_port}",
                                    rank=re_.rank, world_size=re_.world,
                                    timeout=datetime.timedelta(seconds=float(os.environ.get("ISOFLOP_DIST_TIMEOUT_S",
                                                                                            "600"))))
            self._control = dist.new_group(backend="gloo") if self.backend != "gloo" else dist.group.WORLD

    @property
    def active(self) -> bool:
        return self.world > 1

    def mean_(self, t):
        """In place: the mean of `t` over ranks (for losses each rank computed on its shard)."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.world
        return t

    def sum_(self, t):
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def max_ints(self, values: Sequence[int]) -> list[int]:
        """Elementwise max over ranks of a few small integers (control flags), on the CPU group."""
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._control)
        return [int(x) for x in t.tolist()]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier(group=self._control)

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def bind_device(re_: RankEnv, device_type: str) -> None:
    """One GPU per rank: the node's local rank picks it (all of the step's GPUs are visible)."""
    if device_type == "cuda" and re_.world > 1:
        import torch

        torch.cuda.set_device(re_.local_rank % max(torch.cuda.device_count(), 1))


# ---- launching ---------------------------------------------------------------------------------
def wanted_tasks(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return max(1, int(env.get(ENV_TASKS) or 1))


def should_launch(env: Mapping[str, str] | None = None) -> bool:
    """Whether this `python -m isoflop.train` is a launcher: ranks asked for, and not a rank itself."""
    env = os.environ if env is None else env
    return wanted_tasks(env) > 1 and not env.get(ENV_IS_RANK) and rank_env(env).world == 1


def srun_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The srun line that starts the run's ranks as one step of the job's allocation. --overlap:
    the job's own step (the submitit process that waits for this one) holds the allocation's CPUs;
    --kill-on-bad-exit: a rank that dies takes the others with it instead of leaving them waiting
    in a collective."""
    env = os.environ if env is None else env
    n = wanted_tasks(env)
    nodes = max(1, int(env.get(ENV_NODES) or 1))
    cmd = ["srun", "--overlap", "--kill-on-bad-exit=1", "--unbuffered", f"--ntasks={n}", f"--nodes={nodes}",
           f"--ntasks-per-node={-(-n // nodes)}"]
    if env.get(ENV_CPUS):
        cmd.append(f"--cpus-per-task={int(env[ENV_CPUS])}")
    return cmd + [sys.executable, *argv]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: Sequence[str]) -> int:
    """Start the ranks of `python -m isoflop.train ARGV` and return the run's exit code."""
    how = os.environ.get(ENV_LAUNCHER, "auto")
    env = dict(os.environ, **{ENV_IS_RANK: "1"})
    if how == "srun" or (how == "auto" and os.environ.get("SLURM_JOB_ID") and shutil.which("srun")):
        cmd = srun_command(["-m", "isoflop.train", *argv])
        print(f"isoflop.train: {' '.join(cmd)}", file=sys.stderr, flush=True)
        os.execvpe(cmd[0], cmd, env)  # srun forwards our stop signals to every rank
    return launch_local(argv, wanted_tasks(), env)


def launch_local(argv: Sequence[str], n: int, env: dict[str, str]) -> int:
    """N ranks on this machine (torchrun's variables); stop signals forwarded; a failed rank ends
    the others. Exit code: the first failure's, else 3 if any rank was preempted, else 0."""
    port = _free_port()
    procs = []
    for r in range(n):
        e = dict(env, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(n),
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "isoflop.train", *argv], env=e))

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    stop_signals = [s for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)]
    previous = {s: signal.signal(s, forward) for s in stop_signals}
    try:
        failed: Optional[int] = None
        while any(p.poll() is None for p in procs):
            bad = [p.returncode for p in procs if p.returncode not in (None, 0, 3)]
            if bad and failed is None:
                failed = bad[0]
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.05)
        codes = [p.returncode for p in procs]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    bad = [c for c in codes if c not in (0, 3)]
    if bad:
        code = failed if failed is not None else bad[0]
        return 128 - code if code < 0 else code  # a rank killed by a signal: the shell's 128+N
    return 3 if 3 in codes else 0
