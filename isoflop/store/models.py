"""Tables: sweeps, runs, attempts, metrics, and the schema version."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import json

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ..state import RUN_ACTIVE, RUN_FINAL, AttemptState, RunState

SCHEMA_VERSION = 1

# The lifecycle's vocabulary lives in isoflop/state.py (documented in the README); these tuples of
# plain strings are what queries compare the columns with.
RUN_STATES = tuple(s.value for s in RunState)
ACTIVE_STATES = tuple(s.value for s in RUN_ACTIVE)
FINAL_STATES = tuple(s.value for s in RUN_FINAL)
ATTEMPT_STATES = tuple(s.value for s in AttemptState)


# Counts that pass 2^31 in real sweeps (tokens, parameters, seeds up to 2^32, byte offsets): 64-bit
# on a server, where INTEGER is 32-bit; plain INTEGER (already 64-bit) on SQLite, so that the
# SQLite schema, and its version, stay as they were.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class JSONText(TypeDecorator):
    """JSON in a text column that also accepts an already serialised string (the planner
    serialises each run's definition once; re-encoding 10,000 of them costs a third of a second)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Sweep(Base):
    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_digest: Mapped[str] = mapped_column(String(32))
    workdir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("sweep_id", "run_id"), Index("ix_runs_sweep_state", "sweep_id", "state"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    run_id: Mapped[str] = mapped_column(String(32))
    budget: Mapped[float] = mapped_column(Float)
    point: Mapped[int] = mapped_column(Integer)
    n_layer: Mapped[int] = mapped_column(Integer)
    d_model: Mapped[int] = mapped_column(Integer)
    n_head: Mapped[int] = mapped_column(Integer)
    params: Mapped[int] = mapped_column(BigInt)
    params_non_embedding: Mapped[int] = mapped_column(BigInt)
    params_with_output: Mapped[int] = mapped_column(BigInt)
    params_all: Mapped[int] = mapped_column(BigInt)
    tokens: Mapped[int] = mapped_column(BigInt)
    steps: Mapped[int] = mapped_column(Integer)
    batch_seqs: Mapped[int] = mapped_column(Integer)
    batch_tokens: Mapped[int] = mapped_column(BigInt)
    lr: Mapped[float] = mapped_column(Float)
    lr_mult: Mapped[float] = mapped_column(Float, default=1.0)
    batch_mult: Mapped[float] = mapped_column(Float, default=1.0)
    seed: Mapped[int] = mapped_column(BigInt)
    flops: Mapped[float] = mapped_column(Float)
    flops_6nd: Mapped[float] = mapped_column(Float)
    flops_6nd_attention: Mapped[float] = mapped_column(Float)
    flops_exact: Mapped[float] = mapped_column(Float)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONText)
    # derived from attempts and run files (ingestion); never written by compute nodes
    state: Mapped[str] = mapped_column(String(16), default="planned")
    reason: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    val_loss: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    train_loss: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    step_done: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    tokens_done: Mapped[Optional[int]] = mapped_column(BigInt, nullable=True)
    tokens_per_s: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    measured_flops: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    wall_s: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    diverged_step: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    metrics_offset: Mapped[int] = mapped_column(BigInt, default=0)  # bytes of metrics.jsonl ingested
    # dispatch: the lr scale of the next attempts (retry --lr-scale), and how many attempts a retry
    # stopped counting against the profile's max_attempts
    lr_scale: Mapped[float] = mapped_column(Float, default=1.0)
    attempt_base: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attempt(Base):
    """One scheduler job executing a run."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_run", "run_pk"), Index("ix_attempts_job", "job_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per run
    executor: Mapped[str] = mapped_column(String(16))  # local | slurm
    job_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)  # None until sbatch answered
    state: Mapped[str] = mapped_column(String(16), default="submitting")
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)
    ended_at: Mapped[Optional[datetime]] = mapped_column(nullable=True)
    node: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    exit_code: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)
    stdout: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    stderr: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    reason: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    lr_scale: Mapped[float] = mapped_column(Float, default=1.0)
    # the submission this attempt belongs to: recorded before sbatch, it is in the job's name, so a
    # submit that died between sbatch and recording the job id can find (adopt) its job again
    token: Mapped[Optional[str]] = mapped_column(String(64), nullable=True, index=True)
    task: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # job index within the submission


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run", "run_pk", "step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    step: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[Optional[int]] = mapped_column(BigInt, nullable=True)
    flops: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    train_loss: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    val_loss: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    lr: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    tokens_per_s: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
