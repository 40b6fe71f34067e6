"""Experiment trackers for the built-in trainer: Weights & Biases and TensorBoard.

Switched on in the spec (`trackers:`); the dispatcher copies that block into each run.json, so a
run's id does not change when trackers are switched on or off. Every run carries its run id,
sweep, budget and ledger (N under each convention, D, B, lr, seed, shape, FLOPs) as W&B config
and tags and as TensorBoard hparams, so a dashboard groups runs by budget.

A tracker never costs a run: a package missing on the node or a tracker that fails is one warning
on stderr, and training goes on without it (the plan-time check, `check_installed`, catches a
missing package before anything is submitted). Only rank 0 of a multi-process run logs.

This module imports neither torch nor the trackers at import time: the planner imports it.
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

from isoflop.errors import UserError

EXTRA_HINT = "pip install 'isoflop[trackers]'"
TB_DIR = "tensorboard"  # under the run folder: `tensorboard --logdir <workdir>/runs/<sweep>`
PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}


def check_installed(trackers: Any) -> None:
    """One UserError line when a tracker the spec switches on has no package in this environment
    (the planner's environment stands for the nodes': a shared venv on the login node)."""
    for name, on in (("wandb", trackers.wandb is not None), ("tensorboard", bool(trackers.tensorboard))):
        if on and importlib.util.find_spec(PACKAGES[name]) is None:
            raise UserError(f"trackers.{name}: the {PACKAGES[name]} package is not installed here; "
                            f"{EXTRA_HINT}, or remove trackers.{name} from the spec")


def _warn(what: str, e: BaseException | str) -> None:
    msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    print(f"[isoflop.train] {what}: {msg}; training goes on without it", file=sys.stderr, flush=True)


def _rank() -> int:
    """This process's rank in a multi-process run (0 when there is none)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover - the trainer always has torch
        pass
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit() and os.environ.get("WORLD_SIZE", "1") != "1":
            return int(os.environ[var])
    return 0


def ledger(cfg: Any) -> dict[str, Any]:
    """The run's definition as flat config values: what a dashboard filters and groups by."""
    planned = cfg.planned or {}
    shape = cfg.shape
    out: dict[str, Any] = {
        "run_id": cfg.run_id, "sweep": cfg.sweep, "budget": cfg.budget, "attempt": cfg.extra.get("attempt"),
        "N": planned.get(f"params_{cfg.param_convention}"), "D": cfg.tokens,
        "B_tokens": cfg.batch_tokens, "B_seqs": cfg.batch_seqs, "lr": cfg.lr, "lr_scale": cfg.lr_scale,
        "peak_lr": cfg.peak_lr, "seed": cfg.seed, "steps": cfg.steps,
        "n_layer": shape.n_layer, "d_model": shape.d_model, "n_head": shape.n_head,
        "vocab_size": shape.vocab_size, "seq_len": shape.seq_len,
        "flop_convention": cfg.flop_convention, "param_convention": cfg.param_convention,
        "optimizer": cfg.optimizer.name, "schedule": cfg.schedule.kind,
    }
    for k in ("params_non_embedding", "params_with_output", "params_all", "flops",
              "flops_6nd", "flops_6nd_attention", "flops_exact"):
        if k in planned:
            out[k] = planned[k]
    if out["N"] and cfg.tokens:
        out["D_per_N"] = cfg.tokens / out["N"]
    return {k: v for k, v in out.items() if v is not None}


def _budget_label(budget: Optional[float]) -> str:
    return "unknown" if budget is None else f"{budget:.3g}"


class Trackers:
    """What the loop calls: log(record) at each metrics line, finish(result) at the end, close()
    always. With nothing switched on (or on ranks other than 0) every call does nothing."""

    def __init__(self, cfg: Any, run_dir: Path, spec: Optional[dict[str, Any]]):
        self._wandb = None
        self._tb = None
        spec = spec or {}
        if not spec or _rank() != 0:
            return
        self.config = ledger(cfg)
        if spec.get("wandb"):
            self._open_wandb(cfg, run_dir, spec["wandb"])
        if spec.get("tensorboard"):
            self._open_tensorboard(cfg, run_dir)

    # ---- opening --------------------------------------------------------------------------------
    def _open_wandb(self, cfg: Any, run_dir: Path, w: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError as e:
            return _warn(f"trackers.wandb: cannot import wandb ({EXTRA_HINT})", e)
        budget = _budget_label(cfg.budget)
        # a run id is a hash of the definition: two sweeps may share one, so the sweep is part of it
        wid = re.sub(r"[^A-Za-z0-9_-]", "_", f"{cfg.sweep or 'isoflop'}-{cfg.run_id}")[:128]
        n = self.config.get("N")
        name = f"C={budget} N={n:.3g} lr={cfg.peak_lr:.3g} s{cfg.seed}" if n else f"C={budget} {cfg.run_id[:8]}"
        kw: dict[str, Any] = dict(
            project=w.get("project"), entity=w.get("entity"), id=wid, name=name, resume="allow",
            group=cfg.sweep or None, job_type=f"budget={budget}", config=self.config,
            tags=[f"budget={budget}", f"sweep={cfg.sweep}", *w.get("tags", [])], dir=str(run_dir),
        )
        # WANDB_MODE on the node wins over the spec (a cluster without internet sets it once)
        if not os.environ.get("WANDB_MODE"):
            kw["mode"] = w.get("mode") or "offline"
        try:
            # console capture off: the runner already keeps the trainer's output in its log
            kw["settings"] = wandb.Settings(console="off", silent=True, x_disable_stats=True)
        except Exception:  # an older wandb without one of these settings
            kw["settings"] = wandb.Settings(silent=True)
        try:
            self._wandb = wandb.init(**kw)
            self._wandb.define_metric("*", step_metric="step")
        except Exception as e:
            self._wandb = None
            _warn("trackers.wandb: wandb.init failed", e)

    def _open_tensorboard(self, cfg: Any, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError as e:
            return _warn(f"trackers.tensorboard: cannot import tensorboard ({EXTRA_HINT})", e)
        try:
            # the folder name is what TensorBoard lists the run as: budget first, so runs sort and
            # filter (regex `C=1e\+15`) by budget
            n = self.config.get("N")
            sub = f"C={_budget_label(cfg.budget)},N={n:.3g}" if n else f"C={_budget_label(cfg.budget)}"
            self._tb = SummaryWriter(log_dir=str(run_dir / TB_DIR / sub))
            hp = {k: v for k, v in self.config.items() if isinstance(v, (int, float, str, bool))}
            # the HParams dashboard: one row per run, every ledger column, grouped/sorted by budget
            for summary in hparams(hp, {"final/val_loss": math.nan}):
                self._tb.file_writer.add_summary(summary)
            self._tb.add_text("ledger", "\n".join(f"    {k}: {v}" for k, v in self.config.items()), 0)
            self._tb.flush()
        except Exception as e:
            self._tb = None
            _warn("trackers.tensorboard: cannot write events", e)

    # ---- what the loop calls --------------------------------------------------------------------
    def log(self, rec: dict[str, Any]) -> None:
        """One metrics line (the same record metrics.jsonl gets)."""
        if self._wandb is None and self._tb is None:
            return
        step = int(rec["step"])
        vals = {k: float(v) for k, v in rec.items()
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if self._wandb is not None:
            try:
                self._wandb.log({"step": step, **vals})
            except Exception as e:
                self._wandb = None
                _warn("trackers.wandb: log failed", e)
        if self._tb is not None:
            try:
                for k, v in vals.items():
                    self._tb.add_scalar(k, v, step)
            except Exception as e:
                self._tb = None
                _warn("trackers.tensorboard: log failed", e)

    def finish(self, result: dict[str, Any]) -> None:
        """The run's outcome as summary values, then close."""
        final = {k: result.get(k) for k in ("val_loss", "train_loss", "tokens", "step", "measured_flops",
                                           "wall_s", "diverged", "diverged_step")}
        if self._wandb is not None:
            try:
                self._wandb.summary.update({f"final/{k}": v for k, v in final.items() if v is not None})
            except Exception as e:
                _warn("trackers.wandb: summary failed", e)
        if self._tb is not None and final["val_loss"] is not None:
            try:
                self._tb.add_scalar("final/val_loss", float(final["val_loss"]), int(final["step"] or 0))
            except Exception as e:
                _warn("trackers.tensorboard: summary failed", e)
        self.close(0 if not result.get("diverged") else 1)

    def close(self, exit_code: int = 0) -> None:
        """Flush and close; also after an exception or a preemption (the run resumes later)."""
        run, self._wandb = self._wandb, None
        tb, self._tb = self._tb, None
        if run is not None:
            try:
                run.finish(exit_code=exit_code)
            except Exception as e:
                _warn("trackers.wandb: finish failed", e)
        if tb is not None:
            try:
                tb.close()
            except Exception as e:
                _warn("trackers.tensorboard: close failed", e)


def open_trackers(cfg: Any, run_dir: str | Path, main: bool = True) -> Trackers:
    """The trackers run.json asks for (its `trackers` block, copied from the spec at submit);
    `main`: this process is the run's rank 0 (the others log nothing)."""
    spec = cfg.extra.get("trackers")
    return Trackers(cfg, Path(run_dir), spec if main and isinstance(spec, dict) else None)
