"""Typed view of `<run_dir>/run.json`, the file the dispatcher writes before a job starts.

Required keys: run_id, shape, steps (or tokens), batch_seqs (or batch_tokens), lr.
Everything else has a default, taken from the spec's pydantic models (isoflop/spec.py) so that
a hand-written run.json trains as the planner would have planned it: defaults live there only.
Unknown keys are kept in `RunConfig.extra` and ignored.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from isoflop import spec as S
from isoflop.plan.flops import Shape


class ConfigError(ValueError):
    """run.json is missing, unreadable or inconsistent."""


def _default(model: type, name: str) -> Any:
    """The default of a spec model's field: the one place a default is declared."""
    return model.model_fields[name].default


def _sub(cls, d: dict | None):
    """Build a small dataclass from a dict, ignoring unknown keys and nulls."""
    d = d or {}
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names and v is not None})


def _shape(d: dict) -> Shape:
    try:
        sh = dict(d["shape"])
        shape = Shape(
            n_layer=int(sh["n_layer"]), d_model=int(sh["d_model"]), n_head=int(sh["n_head"]),
            # byte-level stdlib data: a hand-written run.json need not say so
            vocab_size=int(sh.get("vocab_size", 256)), seq_len=int(sh["seq_len"]),
            mlp=sh.get("mlp", _default(S.ModelFamily, "mlp")), tied=bool(sh.get("tied", _default(S.ModelFamily, "tied"))),
            qk_norm=bool(sh.get("qk_norm", _default(S.ModelFamily, "qk_norm"))),
        )
    except KeyError as e:
        raise ConfigError(f"run.json: shape lacks {e.args[0]!r}") from None
    if shape.mlp not in ("gelu", "swiglu"):
        raise ConfigError(f"run.json: shape.mlp must be 'gelu' or 'swiglu', not {shape.mlp!r}")
    if sh.get("position_embedding", "rotary") != "rotary":
        raise ConfigError("run.json: the built-in model has rotary positions, not shape.position_embedding "
                          f"{sh['position_embedding']!r} (that is for a template's trainer, e.g. nanogpt)")
    if shape.d_model % shape.n_head or shape.head_dim % 2:
        raise ConfigError(f"run.json: d_model {shape.d_model} must split into n_head {shape.n_head} heads of even size")
    return shape


def _steps_and_batch(d: dict, T: int) -> tuple[int, int]:
    """(steps, batch_seqs), each given or derived from tokens and batch_tokens."""
    batch_seqs = d.get("batch_seqs")
    if batch_seqs is None:
        if not d.get("batch_tokens"):
            raise ConfigError("run.json lacks 'batch_seqs' (or 'batch_tokens')")
        batch_seqs = max(1, int(d["batch_tokens"]) // T)
    steps = d.get("steps")
    if steps is None:
        if not d.get("tokens"):
            raise ConfigError("run.json lacks 'steps' (or 'tokens')")
        steps = max(1, math.ceil(int(d["tokens"]) / (int(batch_seqs) * T)))
    if int(steps) < 1 or int(batch_seqs) < 1:
        raise ConfigError(f"run.json: steps ({steps}) and batch_seqs ({batch_seqs}) must be positive")
    return int(steps), int(batch_seqs)


def _given(d: dict, key: str, default: Any) -> Any:
    return default if d.get(key) is None else d[key]


@dataclass(frozen=True)
class ModelOptions:
    z_loss: float = _default(S.ModelFamily, "z_loss")  # coefficient of logsumexp(logits)^2; 0 = off
    mup: bool = _default(S.ModelFamily, "mup")
    mup_base_width: int = _default(S.ModelFamily, "mup_base_width")


@dataclass(frozen=True)
class OptimizerOptions:
    beta1: float = _default(S.Optimizer, "beta1")
    beta2: float = _default(S.Optimizer, "beta2")
    weight_decay: float = _default(S.Optimizer, "weight_decay")
    grad_clip: float = _default(S.Optimizer, "grad_clip")  # 0 or negative = off
    eps: float = 1e-8  # not a spec field
    name: str = _default(S.Optimizer, "name")  # "adamw" | "muon" (see isoflop/train/optim.py)
    muon_lr_mult: float = _default(S.Optimizer, "muon_lr_mult")
    muon_momentum: float = _default(S.Optimizer, "muon_momentum")
    muon_adjust_lr: str = _default(S.Optimizer, "muon_adjust_lr")

    def trajectory(self) -> dict[str, Any]:
        """The fields that shape training; for AdamW the ones it had before Muon (a run's fingerprint,
        and so whether its finished result is reused, must not change with an upgrade)."""
        d = asdict(self)
        if self.name == "adamw":
            for k in ("name", *S.MUON_FIELDS):
                d.pop(k)
        return d


@dataclass(frozen=True)
class ScheduleOptions:
    kind: str = _default(S.Schedule, "kind")  # "cosine" | "wsd"
    warmup_frac: float = _default(S.Schedule, "warmup_frac")
    min_lr_frac: float = _default(S.Schedule, "min_lr_frac")
    decay_frac: float = _default(S.Schedule, "decay_frac")  # wsd only: the last fraction decays linearly


@dataclass(frozen=True)
class DataOptions:
    kind: str = _default(S.Data, "kind")  # "stdlib" | "text" | "tokens"
    path: str | None = _default(S.Data, "path")


@dataclass(frozen=True)
class EvalOptions:
    batches: int = _default(S.Trainer, "eval_batches")  # fixed held-out batches, the same for every run
    every: int = _default(S.Trainer, "eval_every")  # steps between evaluations; 0 = only at the end
    batch_seqs: int = 16  # sequences per eval batch (fixed, independent of the run's batch size)
    seed: int = 1234  # the held-out batches depend on this only


@dataclass(frozen=True)
class RunConfig:
    run_id: str
    shape: Shape
    steps: int
    batch_seqs: int
    lr: float
    sweep: str = ""
    budget: float | None = None
    model: ModelOptions = field(default_factory=ModelOptions)
    tokens: int = 0
    batch_tokens: int = 0
    lr_scale: float = 1.0
    optimizer: OptimizerOptions = field(default_factory=OptimizerOptions)
    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)
    seed: int = 0
    data: DataOptions = field(default_factory=DataOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)
    log_every: int = _default(S.Trainer, "log_every")
    checkpoint_every_s: float = _default(S.Trainer, "checkpoint_every_s")
    keep_checkpoint: bool = False  # keep checkpoint.pt after the run finished
    device: str = _default(S.Trainer, "device")  # "auto" | "cpu" | "cuda"
    compile: bool = _default(S.Trainer, "compile")  # torch.compile, CUDA only
    dtype: str = _default(S.Trainer, "dtype")  # "auto" (bf16 on CUDA, fp32 on CPU) | "bf16" | "fp32"
    threads: int | None = _default(S.Trainer, "threads")
    flop_convention: str = _default(S.Spec, "flops")
    param_convention: str = _default(S.Spec, "params")
    planned: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_lr(self) -> float:
        return self.lr * self.lr_scale

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError("run.json must hold a JSON object")
        shape = _shape(d)
        for key in ("run_id", "lr"):
            if key not in d:
                raise ConfigError(f"run.json lacks {key!r}")
        T = shape.seq_len
        steps, batch_seqs = _steps_and_batch(d, T)
        known = {f.name for f in fields(cls)}
        sched = _sub(ScheduleOptions, d.get("schedule"))
        if sched.kind not in ("cosine", "wsd"):
            raise ConfigError(f"run.json: schedule.kind must be 'cosine' or 'wsd', not {sched.kind!r}")
        opt = _sub(OptimizerOptions, d.get("optimizer"))
        if opt.name not in ("adamw", "muon"):
            raise ConfigError(f"run.json: optimizer.name must be 'adamw' or 'muon', not {opt.name!r}")
        if opt.muon_adjust_lr not in ("match_rms_adamw", "original"):
            raise ConfigError("run.json: optimizer.muon_adjust_lr must be 'match_rms_adamw' or 'original', "
                              f"not {opt.muon_adjust_lr!r}")
        data = _sub(DataOptions, d.get("data"))
        if data.kind not in ("stdlib", "text", "tokens"):
            raise ConfigError(f"run.json: data.kind must be 'stdlib', 'text' or 'tokens', not {data.kind!r}")
        if data.kind != "stdlib" and not data.path:
            raise ConfigError(f"run.json: data.kind {data.kind!r} needs data.path")
        threads = d.get("threads")
        return cls(
            run_id=str(d["run_id"]),
            shape=shape,
            steps=steps,
            batch_seqs=batch_seqs,
            lr=float(d["lr"]),
            sweep=str(d.get("sweep") or ""),
            budget=None if d.get("budget") is None else float(d["budget"]),
            model=_sub(ModelOptions, d.get("model")),
            tokens=int(d.get("tokens") or steps * batch_seqs * T),
            batch_tokens=int(d.get("batch_tokens") or batch_seqs * T),
            lr_scale=float(d.get("lr_scale") if d.get("lr_scale") is not None else 1.0),
            optimizer=opt,
            schedule=sched,
            seed=int(d.get("seed") or 0),
            data=data,
            eval=_sub(EvalOptions, d.get("eval")),
            log_every=max(1, int(d.get("log_every") or cls.log_every)),
            checkpoint_every_s=float(_given(d, "checkpoint_every_s", cls.checkpoint_every_s)),
            keep_checkpoint=bool(d.get("keep_checkpoint", False)),
            device=str(d.get("device") or cls.device),
            compile=bool(_given(d, "compile", cls.compile)),
            dtype=str(d.get("dtype") or cls.dtype),
            threads=None if threads is None else int(threads),
            flop_convention=str(d.get("flop_convention") or cls.flop_convention),
            param_convention=str(d.get("param_convention") or cls.param_convention),
            planned=dict(d.get("planned") or {}),
            extra={k: v for k, v in d.items() if k not in known},
        )

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunConfig":
        p = Path(run_dir) / "run.json"
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{p} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON: {e}") from None
        return cls.from_json(d)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d
