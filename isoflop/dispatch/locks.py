"""Locks and job names: who may submit into a workdir, who may train in a run folder.

The submit lock (`<workdir>/.submit.lock`) makes submits of one workdir take turns, and keeps
cancel, retry and the settling of a dead submit's intents away from a submit in progress.
The run-folder lock (`<run_dir>/.trainer.lock`) is held by the process that trains in the
folder and by everything it starts, so a second trainer refuses to start beside an orphan.
No heavy imports: the status path uses this module.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import IO, Iterator, Optional

from ..errors import UserError

RUN_LOCK = ".trainer.lock"


class DispatchError(UserError):
    """A submission (or cancel, retry) that could not be made; one line says why."""


def job_name(sweep: str, token: str) -> str:
    """The scheduler job name of a submission: how a dead submit's jobs are found again."""
    return f"isoflop-{sweep}-{token}"


def flock_file(path: Path) -> Optional[IO[str]]:
    """`path` opened and exclusively flocked (close it to release), or None when held elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return f
    except BlockingIOError:
        f.close()
        return None


def try_lock(workdir: str | Path) -> Optional[IO[str]]:
    """The workdir's submit lock if it is free, else None."""
    return flock_file(Path(workdir) / ".submit.lock")


@contextlib.contextmanager
def lock_or_refuse(workdir: str | Path, verb: str) -> Iterator[None]:
    """The submit lock for a command that must not run beside a submit (cancel, retry)."""
    f = try_lock(workdir)
    if f is None:
        raise DispatchError(f"an `isoflop submit` is in progress in this workdir; {verb} after it returns")
    with f:
        yield


@contextlib.contextmanager
def submit_lock(workdir: str | Path, timeout_s: float = 600) -> Iterator[None]:
    deadline = time.time() + timeout_s
    while (f := try_lock(workdir)) is None:
        if time.time() > deadline:
            raise DispatchError(f"another `isoflop submit` holds {Path(workdir) / '.submit.lock'} "
                                f"for over {timeout_s:.0f} s")
        time.sleep(0.5)
    with f:
        yield


def lock_run_folder(run_dir: str | Path) -> Optional[IO[str]]:
    """The run folder's trainer lock, or None when a trainer (perhaps an orphan) holds it.
    The file names the pid that took it, for the message of whoever is refused."""
    f = flock_file(Path(run_dir) / RUN_LOCK)
    if f is not None:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
    return f


def run_folder_holder(run_dir: str | Path) -> str:
    """The pid written by whoever took the run folder's lock ("" when unknown)."""
    try:
        return (Path(run_dir) / RUN_LOCK).read_text().strip()
    except OSError:
        return ""
