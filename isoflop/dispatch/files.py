"""The files of a run folder that dispatch writes or reads (no heavy imports: the status path uses it).

    <workdir>/runs/<sweep>/<run_id>/
        run.json            the run's definition + run_id, sweep, planned, attempt, lr_scale (written by submit)
        attempt-<n>.json    the job's account of attempt n: state, job id, node, times, exit code, reason
        attempt-<n>.log     the command's output (written by the runner)
        metrics.jsonl, checkpoint.pt, result.json   (written by the trainer)
        cancel              marker: `isoflop cancel` asks the job to stop this run
        attempt-<n>/        what a retry moved aside (result, checkpoint, metrics of attempt n)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic  # noqa: F401  (re-exported: F.write_json_atomic)

RUN_JSON = "run.json"
RESULT = "result.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
CANCEL = "cancel"


def runs_root(workdir: str | Path, sweep: str) -> Path:
    return Path(workdir) / "runs" / sweep


def run_dir(workdir: str | Path, sweep: str, run_id: str) -> Path:
    return runs_root(workdir, sweep) / run_id


def status_path(rdir: Path, attempt: int) -> Path:
    return Path(rdir) / f"attempt-{attempt}.json"


def log_path(rdir: Path, attempt: int) -> Path:
    return Path(rdir) / f"attempt-{attempt}.log"


def move_aside(rdir: Path, paths: list[Path], number: int) -> Path | None:
    """Move those of `paths` that exist into a fresh RUN_DIR/attempt-<number>/ (or
    attempt-<number>.<i>/): kept, never deleted. The folder, or None when nothing was moved."""
    paths = [p for p in paths if p.exists()]
    if not paths:
        return None
    dest, i = Path(rdir) / f"attempt-{number}", 1
    while dest.exists():
        i += 1
        dest = Path(rdir) / f"attempt-{number}.{i}"
    dest.mkdir(parents=True)
    for p in paths:
        shutil.move(str(p), str(dest / p.name))
    return dest


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 10, max_bytes: int = 16384) -> list[str]:
    """The last lines of a (log) file; [] if it does not exist."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = [ln.rstrip("\r") for ln in data.splitlines() if ln.strip()]
    return out[-lines:]
