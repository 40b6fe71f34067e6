"""Checkpoints and preemption signals.

A checkpoint (`<run_dir>/checkpoint.pt`) holds the model, the optimizer, the number of completed
steps, RNG states and the loop's bookkeeping; it is written atomically (tmp + fsync + os.replace),
so a killed process leaves either the previous checkpoint or the new one.

Signals: `install_signal_handlers()` makes SIGUSR1, SIGUSR2 and SIGTERM set a flag (nothing else
happens inside the handler); the loop checks the flag at each step boundary, writes a checkpoint
and raises `Preempted`. `uninstall_signal_handlers()` restores the previous handlers, so a caller
(submitit's own handlers, for instance) can combine its handling with ours; such a caller may
also call `request_stop()` itself.
"""
from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isoflop.atomic import fsync_dir

CHECKPOINT_NAME = "checkpoint.pt"
SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGUSR1", "SIGUSR2", "SIGTERM")) if s is not None)


class Preempted(Exception):
    """The run stopped at a step boundary because it was asked to; a checkpoint was written."""

    def __init__(self, step: int, signum: int | None = None, checkpoint: str | None = None):
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        name = signal.Signals(signum).name if signum else "a request"
        super().__init__(f"preempted by {name} after step {step}; checkpoint {checkpoint}")


# ---- stop requests ---------------------------------------------------------------------------
_stop_signum: int | None = None
_stop_requested = False
_previous: dict[int, Any] = {}


def request_stop(signum: int | None = None) -> None:
    """Ask the running loop to checkpoint at the next step boundary and raise Preempted."""
    global _stop_requested, _stop_signum
    _stop_requested, _stop_signum = True, signum


def clear_stop() -> None:
    global _stop_requested, _stop_signum
    _stop_requested, _stop_signum = False, None


def stop_requested() -> tuple[bool, int | None]:
    return _stop_requested, _stop_signum


def _handler(signum, frame) -> None:  # noqa: ARG001
    request_stop(signum)


def install_signal_handlers(signals: tuple[int, ...] = SIGNALS) -> None:
    """Route the given signals to `request_stop` (main thread only); remember the old handlers."""
    for s in signals:
        prev = signal.signal(s, _handler)
        _previous.setdefault(s, prev)


def uninstall_signal_handlers() -> None:
    for s, prev in list(_previous.items()):
        signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        del _previous[s]


# ---- files -------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to <run_dir>/checkpoint.pt atomically."""
    d = Path(run_dir)
    path = d / CHECKPOINT_NAME
    tmp = d / f".{CHECKPOINT_NAME}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(d)
    return path


def load(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location=map_location, weights_only=False)


def remove(run_dir: str | Path) -> None:
    try:
        (Path(run_dir) / CHECKPOINT_NAME).unlink()
    except FileNotFoundError:
        pass
