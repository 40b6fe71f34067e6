"""The job entry point: `train(run_dir)` is what a submitit job (or `python -m isoflop.train`) calls."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from isoflop.train import checkpoint as ckpt
from isoflop.train.checkpoint import Preempted, request_stop
from isoflop.train.config import RunConfig
from isoflop.train.loop import RESULT_NAME, fingerprint, run

__all__ = ["train", "Preempted", "request_stop", "read_result"]


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    p = Path(run_dir) / RESULT_NAME
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def train(run_dir: str | Path, install_signal_handlers: bool = True, force: bool = False) -> dict[str, Any]:
    """Train the run in run_dir (reads run_dir/run.json) and return the result dict.

    Resumes from run_dir/checkpoint.pt when one of the same run definition exists. If
    result.json already exists for this run definition, it is returned without training
    (a requeued job that had finished); force=True trains anyway.
    Raises `Preempted` after checkpointing when SIGUSR1/SIGUSR2/SIGTERM arrived (or
    `request_stop()` was called); requeue the job to resume.
    """
    cfg = RunConfig.load(run_dir)
    if not force:
        prev = read_result(run_dir)
        if prev is not None and prev.get("fingerprint") == fingerprint(cfg):
            return prev
    if install_signal_handlers:
        ckpt.install_signal_handlers()
    try:
        return run(cfg, run_dir)
    finally:
        if install_signal_handlers:
            ckpt.uninstall_signal_handlers()
        ckpt.clear_stop()
