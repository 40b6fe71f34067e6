"""Cluster profiles: how to reach a cluster (or this machine) and how big its jobs may be.

A profile is a YAML file. `load_profile(name_or_path)` finds `cluster_profiles/<name>.yaml`
(or `$ISOFLOP_PROFILES/<name>.yaml`, or a path) and validates it; every problem is one line.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..resources import CLUSTER_PROFILES
from ..errors import UserError
from ..yamlio import load_data, one_line

# a newline in a value would add a line (an #SBATCH directive, a command) to the job script
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ProfileError(UserError, ValueError):
    """A profile that cannot be used; one line naming the file and the field."""


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = ""
    description: str = ""
    executor: Literal["local", "slurm"] = "local"
    # --- where the jobs go (slurm)
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    # --- what one job asks for
    gpus_per_node: int = Field(0, ge=0, description="GPUs a node has (informational for whole-node clusters)")
    gpus_per_run: int = Field(0, ge=0, description="GPUs one run uses (0: a CPU run); one rank per GPU")
    tasks_per_run: int = Field(0, ge=0, description="ranks of one run (0: one per GPU, or 1 for a CPU run)")
    nodes_per_run: int = Field(1, ge=1, description="nodes one run spans (its ranks split evenly over them)")
    micro_batch_seqs: int = Field(0, ge=0, description="sequences per rank per forward/backward; the rest of "
                                  "the batch is gradient accumulation (0: the rank's whole share at once)")
    sharding: Literal["ddp", "fsdp"] = Field("ddp", description="ddp: every rank holds the whole model and "
                                             "optimizer; fsdp: FSDP2 shards them over the run's ranks")
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: Optional[float] = Field(None, gt=0)
    max_time_minutes: int = Field(60, ge=1, description="the longest job the partition allows")
    min_time_minutes: int = Field(1, ge=1, description="the shortest time a job requests (floor)")
    setup: list[str] = Field(default_factory=list, description="lines run before the job (module load, venv)")
    sbatch: dict[str, Any] = Field(default_factory=dict, description="extra sbatch parameters (no leading --)")
    signal_delay_s: int = Field(120, ge=0, description="the time-limit signal (USR2) comes this long before the limit")
    srun: bool = Field(False, description="start each run's command under srun (multi-task external trainers)")
    # --- arrays and packing
    max_array_size: int = Field(1001, ge=1, description="the cluster's MaxArraySize (largest index + 1)")
    array_parallelism: int = Field(64, ge=1, description="array tasks running at once (%N)")
    pack_target_minutes: float = Field(10.0, ge=0, description="pack short runs into jobs of about this length; 0: one run per job")
    # --- attempts
    max_attempts: int = Field(3, ge=1, description="scheduler jobs per run before it is failed")
    max_requeues: int = Field(3, ge=0, description="time-limit/preemption requeues of one job (beyond what its runs' length needs)")
    # --- local executor
    workers: int = Field(0, ge=0, description="local: runs at once (0: CPU count // threads per run)")
    # --- time estimate: seconds = flops_exact / (peak_flops * mfu * max(gpus_per_run, 1)) * time_margin + run_overhead_s
    peak_flops: float = Field(1e11, gt=0, description="peak FLOP/s of one GPU (or of the CPUs of a CPU run)")
    mfu: float = Field(0.4, gt=0, le=1, description="expected model FLOPs utilisation")
    time_margin: float = Field(1.5, ge=1.0, description="safety factor on the estimated run time")
    run_overhead_s: float = Field(60.0, ge=0, description="start-up time of one run (imports, data, compile)")
    path: Optional[str] = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> "Profile":
        if self.min_time_minutes > self.max_time_minutes:
            raise ValueError(f"min_time_minutes ({self.min_time_minutes}) exceeds max_time_minutes ({self.max_time_minutes})")
        if self.gpus_per_run and self.tasks_per_run and self.tasks_per_run != self.gpus_per_run:
            raise ValueError(f"tasks_per_run ({self.tasks_per_run}) must equal gpus_per_run ({self.gpus_per_run}): "
                             "one rank per GPU")
        if self.ranks % self.nodes_per_run:
            raise ValueError(f"{self.ranks} ranks per run do not split evenly over nodes_per_run ({self.nodes_per_run})")
        if self.gpus_per_node and self.gpus_per_run // self.nodes_per_run > self.gpus_per_node:
            need = -(-self.gpus_per_run // self.gpus_per_node)
            raise ValueError(f"gpus_per_run ({self.gpus_per_run}) exceeds gpus_per_node ({self.gpus_per_node}) "
                             f"on {self.nodes_per_run} node(s): set nodes_per_run to {need}")
        for k in ("account", "partition", "qos", "constraint"):
            v = getattr(self, k)
            if isinstance(v, str) and ("FILL" in v or "<" in v):
                raise ValueError(f"{k} is {v!r}: fill in your value (see the comment in the profile)")
        for k in self.sbatch:
            if k.startswith("-"):
                raise ValueError(f"sbatch: write {k.lstrip('-')!r} without leading dashes")
        values = [(k, getattr(self, k)) for k in ("name", "partition", "account", "qos", "constraint")]
        values += [(f"setup[{i}]", v) for i, v in enumerate(self.setup)]
        values += [(f"sbatch.{k}", k) for k in self.sbatch] + [(f"sbatch.{k}", v) for k, v in self.sbatch.items()]
        for where, v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{where} must be finite, got {v}")
            if isinstance(v, str) and _CONTROL.search(v):
                raise ValueError(f"{where} contains a control character ({_CONTROL.search(v).group()!r}); "
                                 "one value must stay on one line")
        return self

    @property
    def ranks(self) -> int:
        """Processes of one run: one per GPU, or tasks_per_run CPU ranks."""
        return self.tasks_per_run or max(self.gpus_per_run, 1)

    @property
    def devices_per_run(self) -> int:
        """What peak_flops counts per run: GPUs, or CPU ranks."""
        return max(self.gpus_per_run, self.ranks, 1)

    @property
    def peak_per_run(self) -> float:
        """Peak FLOP/s of all the devices of one run: what a run's MFU is measured against."""
        return self.peak_flops * self.devices_per_run

    @property
    def throughput(self) -> float:
        """Sustained FLOP/s of one run (all its devices at the profile's MFU)."""
        return self.peak_flops * self.mfu * self.devices_per_run

    def launch_env(self) -> dict[str, str]:
        """What a job tells the built-in trainer about its ranks (isoflop/train/distributed.py)."""
        env = {"ISOFLOP_PEAK_FLOPS": repr(float(self.peak_flops))}
        if self.ranks > 1:
            env.update(ISOFLOP_TASKS_PER_RUN=str(self.ranks), ISOFLOP_NODES_PER_RUN=str(self.nodes_per_run),
                       ISOFLOP_CPUS_PER_TASK=str(self.cpus_per_task))
        if self.micro_batch_seqs:
            env["ISOFLOP_MICRO_BATCH_SEQS"] = str(self.micro_batch_seqs)
        if self.sharding != "ddp":  # ddp is the trainer's default: existing job files stay as they were
            env["ISOFLOP_SHARDING"] = self.sharding
        return env

    def run_seconds(self, flops_exact: float) -> float:
        """The time a run of these FLOPs is expected to take, margin included."""
        return flops_exact / self.throughput * self.time_margin + self.run_overhead_s

    def job_minutes(self, seconds: float) -> int:
        """The time request (minutes) for a job expected to take `seconds`, floored and capped."""
        return int(min(self.max_time_minutes, max(self.min_time_minutes, math.ceil(seconds / 60))))

    def local_workers(self, threads_per_run: int = 1) -> int:
        if self.workers:
            return self.workers
        return max(1, (os.cpu_count() or 1) // max(1, threads_per_run * self.ranks))

    def gpu_hours(self, flops_exact: float) -> float:
        """Device-hours of a run: its wall time (no margin) times the devices it holds."""
        return flops_exact / self.throughput * self.devices_per_run / 3600


def _search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("ISOFLOP_PROFILES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(CLUSTER_PROFILES)
    return dirs


def parse_profile(data: Any, *, name: str, path: Optional[Path] = None) -> Profile:
    where = str(path) if path else name
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile must be a mapping of keys to values")
    data = {"name": name, **data, "path": str(path) if path else None}
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(f"{where}: {one_line(e, 'profile')}") from None


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by name (cluster_profiles/<name>.yaml, $ISOFLOP_PROFILES) or by path."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if not (s.endswith((".yaml", ".yml")) or os.sep in s) or not p.is_file():
        found = [d / f"{s}.yaml" for d in _search_dirs() if (d / f"{s}.yaml").is_file()]
        if found:
            p = found[0]
        elif not p.is_file():
            names = ", ".join(sorted({q.stem for d in _search_dirs() if d.is_dir() for q in d.glob("*.yaml")})) or "none"
            raise ProfileError(f"no cluster profile {s!r} (a name in cluster_profiles/ or a YAML path); known: {names}")
    data = load_data(p, ProfileError, "profile")
    name = p.stem if p.suffix in (".yaml", ".yml") else p.name
    return parse_profile(data, name=(data or {}).get("name", name) if isinstance(data, dict) else name, path=p.resolve())


def list_profiles() -> list[Profile | ProfileError]:
    """Every profile in the search path (a broken one as its error)."""
    out: list[Profile | ProfileError] = []
    seen: set[str] = set()
    for d in _search_dirs():
        for p in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            if p.stem in seen:
                continue
            seen.add(p.stem)
            try:
                out.append(parse_profile(load_data(p, ProfileError, "profile"), name=p.stem, path=p.resolve()))
            except ProfileError as e:
                e.profile_name = p.stem   # `isoflop profiles` names a broken profile by its file
                out.append(e)
    return out
