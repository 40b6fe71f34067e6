"""The job entry point: `train(run_dir)` is what a submitit job (or `python -m isoflop.train`) calls.

Combining with submitit (or any handler already installed for SIGUSR1/SIGUSR2/SIGTERM):
`train(run_dir)` installs its own handlers for the duration of the call and restores the
previous ones when it returns or raises. On a signal it checkpoints at the next step boundary
and raises `Preempted` (with `.signum`). A wrapper that wants the previous handler to run too
(submitit's requeue on SIGUSR2) re-delivers the signal once train() has returned:

    try:
        return train(run_dir)
    except Preempted as e:
        if e.signum is not None:
            os.kill(os.getpid(), e.signum)   # submitit's handler is back in place: it requeues
        raise

With install_signal_handlers=False nothing is installed; call `request_stop()` (from a signal
handler or a callback) to get the same checkpoint-then-Preempted behaviour.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from isoflop.state import ResultKind
from isoflop.schemas import check_result, set_aside_result
from isoflop.train import checkpoint as ckpt
from isoflop.train import distributed
from isoflop.train.checkpoint import Preempted, request_stop
from isoflop.train.config import RunConfig
from isoflop.train.loop import METRICS_NAME, RESULT_NAME, fingerprint, pick_device, run

__all__ = ["train", "Preempted", "request_stop", "read_result"]


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's result.json when it is a result at all (valid, diverged or stale); None when
    absent or invalid."""
    check = check_result(Path(run_dir) / RESULT_NAME)
    return check.result.to_json() if check.result is not None else None


def _reusable(run_dir: str | Path, cfg: RunConfig, fp: str) -> dict[str, Any] | None:
    """A finished result of this very definition (a requeued job that had finished), or None.
    A result that does not count (unreadable, wrong types, stale) is moved aside, never reused."""
    check = check_result(Path(run_dir) / RESULT_NAME, run_id=cfg.run_id, planned_steps=cfg.steps)
    if check.kind in (ResultKind.INVALID, ResultKind.STALE):
        # the trainer does not know its attempt number: "0" marks a move made by the trainer itself
        set_aside_result(Path(run_dir), 0, f"{RESULT_NAME}: {check.reason}")
        return None
    if check.result is not None and check.result.model_extra.get("fingerprint") == fp:
        return check.result.to_json()
    return None


def _stale_result(run_dir: str | Path, fp: str) -> Path | None:
    p = Path(run_dir) / RESULT_NAME
    prev = read_result(run_dir)
    return p if prev is not None and prev.get("fingerprint") != fp else None


def train(run_dir: str | Path, install_signal_handlers: bool = True, force: bool = False) -> dict[str, Any]:
    """Train the run in run_dir (reads run_dir/run.json) and return the result dict.

    Resumes from run_dir/checkpoint.pt when one of the same run definition exists. If
    result.json already exists for this run definition (same `fingerprint`: shape, model,
    steps, batch, lr, lr_scale, optimizer, schedule, seed, data), it is returned without
    training (a requeued job that had finished); force=True trains anyway. A result.json of
    another definition (say, before an lr_scale retry) is renamed result.<fingerprint>.json
    (and its metrics.jsonl metrics.<fingerprint>.jsonl).
    Raises `Preempted` after checkpointing when SIGUSR1/SIGUSR2/SIGTERM arrived (or
    `request_stop()` was called); requeue the job to resume.
    """
    cfg = RunConfig.load(run_dir)
    rank = distributed.rank_env()
    if install_signal_handlers:  # before the ranks meet: a stop that comes early is not lost
        ckpt.install_signal_handlers()
    group = None
    try:
        if rank.world > 1:
            dev_type = pick_device(cfg).type
            distributed.bind_device(rank, dev_type)
            group = distributed.Group(rank, dev_type)
        # rank 0 alone looks at (and moves) earlier results; the others follow its decision
        prev = None
        if rank.is_main:
            prev = _previous_result(run_dir, cfg, force)
        reuse = group.max_ints([int(prev is not None)])[0] if group else int(prev is not None)
        if reuse:
            return prev if prev is not None else (read_result(run_dir) or {})
        return run(cfg, run_dir, group)
    finally:
        if group is not None:
            group.close()
        if install_signal_handlers:
            ckpt.uninstall_signal_handlers()
        ckpt.clear_stop()


def _previous_result(run_dir: str | Path, cfg: RunConfig, force: bool) -> dict[str, Any] | None:
    """This definition's finished result, or None (after moving another definition's aside)."""
    if not force and (prev := _reusable(run_dir, cfg, fingerprint(cfg))) is not None:
        return prev
    if prev_path := _stale_result(run_dir, fingerprint(cfg)):
        # a result of another run definition (e.g. before an lr_scale retry): keep it aside
        old_fp = (read_result(run_dir) or {}).get("fingerprint", "old")
        metrics = Path(run_dir) / METRICS_NAME
        if metrics.exists():
            metrics.rename(metrics.with_name(f"metrics.{old_fp}.jsonl"))
        prev_path.rename(prev_path.with_name(f"result.{old_fp}.json"))
    return None
