"""Ingesting a run folder's files into the store: metrics.jsonl (incrementally, from
Run.metrics_offset) and result.json (through isoflop.schemas, which judges whether it counts).
Files are the source of truth for results; this module only reads them. Cheap imports only: `isoflop status` uses it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from .models import Metric

if TYPE_CHECKING:  # pydantic only where a result is read (status with no result file stays light)
    from ..schemas import Result

METRIC_KEYS = ("step", "tokens", "flops", "train_loss", "val_loss", "lr", "tokens_per_s")


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # NaN/inf losses of a diverged run: stored as NULL
    return v


def read_metrics(path: Path, offset: int) -> tuple[list[dict[str, Any]], int, bool]:
    """New complete lines of metrics.jsonl after `offset` bytes: (records, new offset, reset).
    `reset` is True when the file is shorter than the offset (it was replaced): read from 0."""
    try:
        size = path.stat().st_size
    except OSError:
        return [], offset, False
    reset = size < offset
    if reset:
        offset = 0
    if size == offset:
        return [], offset, reset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset, reset  # a line still being written
    recs = []
    for line in data[: end + 1].splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)  # Python's json reads NaN/Infinity
        except ValueError:
            continue
        if isinstance(d, dict) and isinstance(d.get("step"), int):
            recs.append(d)
    return recs, offset + end + 1, reset


def ingest_metrics(session: Session, run_pk: int, rdir: Path, offset: int) -> dict[str, Any]:
    """Store new metric records of a run; return the Run column updates (empty: nothing new)."""
    recs, new_offset, reset = read_metrics(Path(rdir) / "metrics.jsonl", offset)
    upd: dict[str, Any] = {}
    if reset:
        session.execute(delete(Metric).where(Metric.run_pk == run_pk))
        upd["metrics_offset"] = 0
    if not recs:
        if new_offset != offset:
            upd["metrics_offset"] = new_offset
        return upd
    # a resumed run logs again from its checkpoint's step: the newer records replace the older ones
    first = min(r["step"] for r in recs)
    session.execute(delete(Metric).where(Metric.run_pk == run_pk, Metric.step >= first))
    rows = []
    seen: dict[int, int] = {}
    for r in recs:
        row = {"run_pk": run_pk, **{k: _num(r.get(k)) for k in METRIC_KEYS}}
        if row["step"] in seen:  # repeated inside one batch (a resume): keep the newest
            rows[seen[row["step"]]] = row
        else:
            seen[row["step"]] = len(rows)
            rows.append(row)
    session.execute(insert(Metric), rows)
    last = recs[-1]
    upd.update(metrics_offset=new_offset, step_done=last["step"])
    if last.get("tokens") is not None:
        upd["tokens_done"] = int(last["tokens"])
    if last.get("tokens_per_s") is not None:
        upd["tokens_per_s"] = _num(float(last["tokens_per_s"]))
    for key in ("train_loss", "val_loss"):
        vals = [r[key] for r in recs if r.get(key) is not None]
        if vals:
            upd[key] = _num(float(vals[-1]))
    return upd


def result_updates(result: Result) -> dict[str, Any]:
    """Run column updates from a (valid or diverged) result; a non-finite loss is stored as NULL."""
    upd: dict[str, Any] = {}
    for col, v in (("val_loss", result.val_loss), ("train_loss", result.train_loss),
                   ("measured_flops", result.measured_flops), ("wall_s", result.wall_s)):
        if v is not None:
            upd[col] = _num(float(v))
    for col, v in (("diverged_step", result.diverged_step), ("step_done", result.step),
                   ("tokens_done", result.tokens)):
        if v is not None:
            upd[col] = int(v)
    return upd
