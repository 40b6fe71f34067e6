"""The sweep spec: pydantic models, YAML/TOML loading, one-line errors."""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError
from .yamlio import load_data, one_line

# Bounds beyond which a spec describes nothing trainable; they keep the planner from
# enumerating shapes for hours (or overflowing) before it could say so.
MAX_BUDGET = 1e30  # FLOPs: ~1000x the largest training run to date
MAX_BUDGETS = 1000  # budgets in one sweep
MAX_LR = 10.0  # Adam-style learning rates live far below this, muP ones too
MAX_INT = {"vocab_size": 2**24, "seq_len": 2**24, "head_dim": 2**14, "d_model_multiple": 2**16,
           "max_layers": 2**12, "mup_base_width": 2**20}
# control characters (a newline in a value would start a new line of a job script)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SpecError(UserError, ValueError):
    """A spec that cannot be used; the message is one line naming the field."""


class _Strict(BaseModel):
    # NaN and infinity are no value of any field: they would reach the store and the trainer
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _positive_finite(v: float, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what} must be a number, got {v!r}")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {v!r}")
    return float(v)


class BudgetRange(_Strict):
    """Budgets from start to stop (inclusive), evenly spaced in log C."""

    start: float
    stop: float
    per_decade: float = 2.0

    @model_validator(mode="after")
    def _check(self) -> "BudgetRange":
        _positive_finite(self.start, "budgets.start")
        _positive_finite(self.stop, "budgets.stop")
        _positive_finite(self.per_decade, "budgets.per_decade")
        if self.stop < self.start:
            raise ValueError(f"budgets.stop ({self.stop:g}) is below budgets.start ({self.start:g})")
        if self.stop > MAX_BUDGET:
            raise ValueError(f"budgets.stop ({self.stop:g}) is above {MAX_BUDGET:g} FLOPs")
        n = math.log10(self.stop / self.start) * self.per_decade + 1
        if n > MAX_BUDGETS:
            raise ValueError(f"budgets.per_decade gives {n:.3g} budgets; at most {MAX_BUDGETS}")
        return self

    def values(self) -> list[float]:
        n = int(math.floor(math.log10(self.stop / self.start) * self.per_decade + 1e-9)) + 1
        return [float(f"{self.start * 10 ** (i / self.per_decade):.6g}") for i in range(n)]


class Centre(_Strict):
    """Where a budget's grid is centred: N = k * C^power (Chinchilla: k ~ 0.0913, power 0.5)."""

    k: float = 0.0913
    power: float = 0.5

    @field_validator("k")
    @classmethod
    def _k(cls, v: float) -> float:
        return _positive_finite(v, "k")

    @field_validator("power")
    @classmethod
    def _power(cls, v: float) -> float:
        # compute-optimal N grows with C, slower than C itself (Chinchilla 0.5, Kaplan 0.73)
        if not 0 <= v <= 1:
            raise ValueError(f"power must be within [0, 1], got {v}")
        return v

    def params(self, budget: float) -> float:
        return self.k * budget**self.power


class Grid(_Strict):
    points: int = Field(5, description="model sizes per budget, evenly spaced in log N")
    span: Optional[float] = Field(
        16.0, description="ratio of the largest to the smallest N of a budget, centred on `centre`"
    )
    tokens_per_param: Optional[tuple[float, float]] = Field(
        None, description="[low, high] D/N bounds instead of span: N runs from sqrt(C/(6*high)) to sqrt(C/(6*low))"
    )
    centre: Centre = Centre()
    centre_at: Optional[dict[float, float]] = Field(
        None, description="budget C -> N its grid is centred on instead of `centre` (a guess per budget, e.g. "
                          "from an earlier sweep); budgets not listed use `centre`")

    @model_validator(mode="after")
    def _check(self) -> "Grid":
        for c, n in (self.centre_at or {}).items():
            _positive_finite(c, "grid.centre_at budget")
            _positive_finite(n, f"grid.centre_at[{c:g}]")
        if not 1 <= self.points <= 1000:
            raise ValueError(f"grid.points must be within [1, 1000], got {self.points}")
        if self.tokens_per_param is not None:
            lo, hi = self.tokens_per_param
            if not (lo > 0 and hi > lo):
                raise ValueError(f"grid.tokens_per_param must be [low, high] with 0 < low < high, got {[lo, hi]}")
        elif self.span is None or not (self.span >= 1 and math.isfinite(self.span)):
            raise ValueError(f"grid.span must be a number >= 1, got {self.span}")
        if self.points > 1 and self.tokens_per_param is None and self.span == 1:
            raise ValueError("grid.span must be above 1 when grid.points > 1")
        return self

    def param_range(self, budget: float) -> tuple[float, float]:
        if self.tokens_per_param is not None:
            lo, hi = self.tokens_per_param
            return math.sqrt(budget / (6 * hi)), math.sqrt(budget / (6 * lo))
        c = (self.centre_at or {}).get(budget) or self.centre.params(budget)
        half = math.sqrt(self.span or 1.0)
        return c / half, c * half


class ModelFamily(_Strict):
    vocab_size: int = 50304
    seq_len: int = 1024
    head_dim: int = 64
    d_model_multiple: Optional[int] = Field(None, description="d_model is a multiple of this (default: head_dim)")
    aspect_ratio: float = Field(64.0, description="target d_model / n_layer")
    max_layers: int = 128
    mlp: Literal["gelu", "swiglu"] = "gelu"
    tied: bool = True
    qk_norm: bool = False
    position_embedding: Literal["rotary", "learned"] = Field(
        "rotary", description="learned: a seq_len x d_model embedding (nanoGPT's), counted in N under params: all")
    z_loss: float = 0.0
    mup: bool = False
    mup_base_width: int = 256

    @field_validator(*MAX_INT, mode="before")
    @classmethod
    def _bounded(cls, v: Any, info: Any) -> Any:
        # checked before the int conversion, which would report 1e30 as an unparsable string
        top = MAX_INT[info.field_name]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not 1 <= v <= top:
            raise ValueError(f"model.{info.field_name} must be an integer within [1, {top}], got {v:g}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "ModelFamily":
        for f, top in MAX_INT.items():
            v = getattr(self, f)
            if v is not None and not 1 <= v <= top:
                raise ValueError(f"model.{f} must be an integer within [1, {top}], got {v}")
        m = self.d_model_multiple or self.head_dim
        if m % self.head_dim:
            raise ValueError(f"model.d_model_multiple ({m}) must be a multiple of model.head_dim ({self.head_dim})")
        if not self.aspect_ratio > 0:
            raise ValueError(f"model.aspect_ratio must be positive, got {self.aspect_ratio}")
        if self.z_loss < 0:
            raise ValueError(f"model.z_loss must be >= 0, got {self.z_loss}")
        return self

    @property
    def width_step(self) -> int:
        return self.d_model_multiple or self.head_dim


class PowerRule(_Strict):
    """value = coef * X^power, X in {C, N, D}; optionally clamped to [min, max]."""

    coef: float
    of: Literal["C", "N", "D"] = "C"
    power: float = 0.0
    min: Optional[float] = None
    max: Optional[float] = None

    @field_validator("coef")
    @classmethod
    def _coef(cls, v: float) -> float:
        return _positive_finite(v, "coef")

    @field_validator("power")
    @classmethod
    def _power(cls, v: float) -> float:
        # published rules have |power| < 1; beyond 3 a rule overflows over a budget's range
        if not -3 <= v <= 3:
            raise ValueError(f"power must be within [-3, 3], got {v}")
        return v

    @field_validator("min", "max")
    @classmethod
    def _bound(cls, v: Optional[float], info: Any) -> Optional[float]:
        return None if v is None else _positive_finite(v, info.field_name)

    @model_validator(mode="after")
    def _order(self) -> "PowerRule":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        return self


class FromSweep(_Strict):
    """`lr: {from_sweep: NAME}`: the law η*(C) (or B*(C); `of: N` for η*(N)) that `isoflop fit` fits on
    another sweep in the store. Planning resolves it and records the law here (coef, power and where
    they came from), so the stored spec says which law planned its runs."""

    from_sweep: str
    of: Literal["C", "N"] = "C"
    coef: Optional[float] = Field(None, description="filled in by planning: the fitted coefficient")
    power: Optional[float] = Field(None, description="filled in by planning: the fitted exponent")
    power_ci: Optional[tuple[float, float]] = Field(None, description="filled in by planning: its 5–95%")
    cells: Optional[int] = Field(None, description="filled in by planning: cells the law was fitted on")
    fitted_at: Optional[str] = Field(None, description="filled in by planning: when (UTC)")

    @property
    def resolved(self) -> bool:
        return self.coef is not None and self.power is not None


Rule = Union[float, PowerRule, FromSweep, Literal["deepseek", "porian"]]


def _as_from_sweep(v: Any) -> Any:
    """A mapping with `from_sweep` is that rule: report its own mistakes, not those of the other rule
    forms it also fails (`of: D` would otherwise read as a PowerRule lacking `coef`)."""
    if not (isinstance(v, dict) and "from_sweep" in v):
        return v
    if v.get("of", "C") not in ("C", "N"):
        raise ValueError(f"from_sweep.of must be C or N (the law η*(C) or η*(N)), got {v.get('of')!r}")
    try:
        return FromSweep.model_validate(v)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"from_sweep.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


class BatchRule(_Strict):
    rule: Rule = 524288.0
    unit: Literal["tokens", "sequences"] = "tokens"

    _from_sweep = field_validator("rule", mode="before")(classmethod(lambda cls, v: _as_from_sweep(v)))

    @field_validator("rule")
    @classmethod
    def _rule(cls, v: Rule) -> Rule:
        # a batch of -8 would otherwise round up to one sequence without a word
        return _positive_finite(v, "rule") if isinstance(v, (int, float)) else v


class Schedule(_Strict):
    kind: Literal["cosine", "wsd"] = "cosine"
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    decay_frac: float = 0.2

    @model_validator(mode="after")
    def _check(self) -> "Schedule":
        for f in ("warmup_frac", "min_lr_frac", "decay_frac"):
            if not 0 <= getattr(self, f) <= 1:
                raise ValueError(f"schedule.{f} must be within [0, 1], got {getattr(self, f)}")
        return self


MUON_FIELDS = ("muon_lr_mult", "muon_momentum", "muon_adjust_lr")


class Optimizer(_Strict):
    name: Literal["adamw", "muon"] = Field(
        "adamw", description="adamw, or muon: Muon (Newton–Schulz orthogonalised momentum) on the 2-D hidden "
                             "matrices, AdamW on embeddings, output head, norms and biases")
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = Field(0.1, description="decoupled weight decay of the matrices (both optimizers)")
    grad_clip: float = Field(1.0, description="largest gradient norm (0: no clipping)")
    muon_lr_mult: float = Field(1.0, description="muon: the hidden matrices' lr is the lr rule's value times "
                                                 "this (AdamW groups get the rule's value)")
    muon_momentum: float = Field(0.95, description="muon: momentum (Nesterov)")
    muon_adjust_lr: Literal["match_rms_adamw", "original"] = Field(
        "match_rms_adamw", description="muon: match_rms_adamw scales each matrix's update to AdamW's RMS "
                                       "(0.2·√max(A, B)), so the lr rule of AdamW carries over; original: "
                                       "Keller Jordan's √max(1, A/B), for Muon's own lr (~0.02)")

    @model_validator(mode="after")
    def _check(self) -> "Optimizer":
        for f in ("beta1", "beta2"):
            if not 0 <= getattr(self, f) < 1:
                raise ValueError(f"optimizer.{f} must be within [0, 1), got {getattr(self, f)}")
        for f in ("weight_decay", "grad_clip"):
            if getattr(self, f) < 0:
                raise ValueError(f"optimizer.{f} must be >= 0, got {getattr(self, f)}")
        if not 0 <= self.muon_momentum < 1:
            raise ValueError(f"optimizer.muon_momentum must be within [0, 1), got {self.muon_momentum}")
        _positive_finite(self.muon_lr_mult, "optimizer.muon_lr_mult")
        if self.name == "adamw":
            # a stored spec carries every default, so only a value other than the default is refused
            given = sorted(f for f in MUON_FIELDS if getattr(self, f) != type(self).model_fields[f].default)
            if given:
                raise ValueError(f"optimizer.{given[0]} applies to optimizer.name: muon only")
        return self

    def definition(self) -> dict[str, Any]:
        """What a run's definition (and so its run id) carries: for AdamW the four fields it always had,
        so that specs written before Muon existed plan to the same run ids."""
        if self.name == "adamw":
            return self.model_dump(exclude={"name", *MUON_FIELDS})
        return self.model_dump()


class Data(_Strict):
    kind: Literal["stdlib", "text", "tokens"] = "stdlib"
    path: Optional[str] = None

    @model_validator(mode="after")
    def _check(self) -> "Data":
        if self.kind != "stdlib" and not self.path:
            raise ValueError(f"data.path is required for data.kind {self.kind!r}")
        return self


class Trainer(_Strict):
    """The built-in trainer (template 'builtin') or a command template for an external script."""

    template: str = "builtin"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    threads: Optional[int] = None
    eval_batches: int = 8
    eval_every: int = 0
    log_every: int = 10
    checkpoint_every_s: float = 300.0
    vars: dict[str, Any] = Field(default_factory=dict, description="extra values for a command template")

    @model_validator(mode="after")
    def _check(self) -> "Trainer":
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"trainer.threads must be at least 1 (or left out), got {self.threads}")
        for f, low in (("eval_batches", 1), ("log_every", 1), ("eval_every", 0)):
            if getattr(self, f) < low:
                raise ValueError(f"trainer.{f} must be at least {low}, got {getattr(self, f)}")
        if not self.checkpoint_every_s > 0:
            raise ValueError(f"trainer.checkpoint_every_s must be positive, got {self.checkpoint_every_s}")
        for k, v in self.vars.items():
            _plain_value(v, f"trainer.vars.{k}")
        return self


class WandbTracker(_Strict):
    """Weights & Biases: one W&B run per isoflop run, grouped by sweep, tagged with its budget."""

    project: str = Field(..., description="W&B project")
    entity: Optional[str] = Field(None, description="W&B entity (team); default: the user's")
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline: files under each run folder, `wandb sync` them later (compute nodes "
                               "without internet); WANDB_MODE on the node wins")
    tags: list[str] = Field(default_factory=list, description="extra tags on every run")

    @model_validator(mode="after")
    def _check(self) -> "WandbTracker":
        for i, v in enumerate((self.project, self.entity or "x", *self.tags)):
            if not v or CONTROL.search(v) or len(v) > 64:
                raise ValueError("project, entity and tags must be 1-64 characters, "
                                 f"no control characters; got {v!r}")
        return self


class Trackers(_Strict):
    """Experiment trackers the built-in trainer logs to (off by default; not part of a run's id)."""

    wandb: Optional[WandbTracker] = None
    tensorboard: bool = Field(False, description="TensorBoard event files under each run folder's tensorboard/")

    @property
    def on(self) -> bool:
        return self.wandb is not None or self.tensorboard


class Extension(_Strict):
    """Runs that `isoflop extend` added to a planned sweep: one size (shape) of one budget, at the
    sweep's own lr/batch rules and grids unless this entry says otherwise. Planned like every other
    run (same run ids for the same entry); written by `extend`, rarely by hand."""

    budget: float
    n_layer: int
    d_model: int
    point: int = Field(..., description="the size's index in its budget (beyond the grid: < 0 or >= points)")
    lr_grid: Optional[list[float]] = Field(None, description="lr multipliers (None: the sweep's lr_grid)")
    batch_grid: Optional[list[float]] = Field(None, description="batch multipliers (None: the sweep's)")
    lr: Optional[float] = Field(None, description="lr before multipliers, instead of the lr rule (a fitted law's)")
    batch: Optional[float] = Field(None, description="batch before multipliers (batch.unit), instead of the rule")
    why: str = ""

    @model_validator(mode="after")
    def _check(self) -> "Extension":
        _positive_finite(self.budget, "extend.budget")
        if self.n_layer < 1 or self.d_model < 1:
            raise ValueError("extend: n_layer and d_model must be positive")
        for f in ("lr", "batch"):
            if getattr(self, f) is not None:
                _positive_finite(getattr(self, f), f"extend.{f}")
        for f in ("lr_grid", "batch_grid"):
            for x in getattr(self, f) or []:
                _positive_finite(x, f"extend.{f}")
        return self


def _plain_value(v: Any, where: str) -> None:
    """Template values are rendered into a command: no NaN/infinity, no control characters."""
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{where} must be finite, got {v}")
    if isinstance(v, str) and CONTROL.search(v):
        raise ValueError(f"{where} contains a control character (newline, tab, ...)")
    if isinstance(v, dict):
        for k, x in v.items():
            _plain_value(x, f"{where}.{k}")
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _plain_value(x, f"{where}[{i}]")


class Spec(_Strict):
    name: str
    budgets: Union[list[float], BudgetRange]
    grid: Grid = Grid()
    model: ModelFamily = ModelFamily()
    flops: Literal["6ND", "6ND+attention", "exact"] = Field(
        "6ND", description="FLOP convention that a run's FLOPs must match its budget under"
    )
    params: Literal["non_embedding", "with_output", "all"] = Field(
        "non_embedding", description="which parameters count as N"
    )
    batch: BatchRule = BatchRule()
    lr: Rule = 3e-4
    lr_grid: list[float] = Field(default_factory=lambda: [1.0], description="multipliers of the lr rule per cell")
    batch_grid: list[float] = Field(default_factory=lambda: [1.0], description="multipliers of the batch rule")
    seeds: list[int] = Field(default_factory=lambda: [0])
    schedule: Schedule = Schedule()
    optimizer: Optimizer = Optimizer()
    trainer: Trainer = Trainer()
    data: Data = Data()
    throughput: Optional[float] = Field(
        None, description="sustained FLOP/s per GPU (peak x MFU) for GPU-hour estimates"
    )
    trackers: Trackers = Trackers()
    extend: list[Extension] = Field(default_factory=list, description="runs added by `isoflop extend`")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v):
            raise ValueError(f"name must be 1-64 letters, digits, '.', '_' or '-', got {v!r}")
        return v

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("budgets is empty")
            out = []
            for i, b in enumerate(v):
                if isinstance(b, str):
                    try:
                        b = float(b)
                    except ValueError:
                        raise ValueError(f"budgets[{i}] is not a number: {b!r}") from None
                out.append(_positive_finite(b, f"budgets[{i}]"))
                if out[-1] > MAX_BUDGET:
                    raise ValueError(f"budgets[{i}] ({b:g}) is above {MAX_BUDGET:g} FLOPs")
            if len(out) > MAX_BUDGETS:
                raise ValueError(f"budgets has {len(out)} values; at most {MAX_BUDGETS}")
            if len(set(out)) != len(out):
                raise ValueError("budgets has duplicate values")
            return sorted(out)
        return v

    @field_validator("lr_grid", "batch_grid")
    @classmethod
    def _mults(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("multiplier grid is empty")
        for x in v:
            _positive_finite(x, "multiplier")
        return v

    _lr_from_sweep = field_validator("lr", mode="before")(classmethod(lambda cls, v: _as_from_sweep(v)))

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: Rule) -> Rule:
        if isinstance(v, (int, float)):
            v = _positive_finite(v, "lr")
            if v > MAX_LR:
                raise ValueError(f"lr ({v:g}) is above {MAX_LR:g}: no optimizer trains at that rate")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("seeds is empty")
        if any(not 0 <= s < 2**32 for s in v):
            raise ValueError(f"seeds must be within [0, 2^32), got {[s for s in v if not 0 <= s < 2**32][0]}")
        if len(set(v)) != len(v):
            raise ValueError("seeds has duplicates")
        return v

    @field_validator("throughput")
    @classmethod
    def _throughput(cls, v: Optional[float]) -> Optional[float]:
        return None if v is None else _positive_finite(v, "throughput")

    @model_validator(mode="after")
    def _trackers_builtin(self) -> "Spec":
        if self.trackers.on and self.trainer.template != "builtin":
            raise ValueError(f"trackers: only the built-in trainer logs to them (trainer.template is "
                             f"{self.trainer.template!r}); an external trainer logs to its own")
        if self.model.position_embedding == "learned" and self.trainer.template == "builtin":
            raise ValueError("model.position_embedding: learned is for a trainer that learns one (e.g. the nanogpt "
                             "template); the built-in trainer uses rotary embeddings")
        return self

    @property
    def uses_from_sweep(self) -> bool:
        return isinstance(self.lr, FromSweep) or isinstance(self.batch.rule, FromSweep)

    def budget_values(self) -> list[float]:
        return list(self.budgets) if isinstance(self.budgets, list) else self.budgets.values()

    def digest(self) -> str:
        d = self.model_dump(mode="json")
        d["optimizer"] = self.optimizer.definition()   # an AdamW spec keeps the digest it had before Muon
        if not self.trackers.on:
            d.pop("trackers")  # nor does a spec without trackers change its digest
        if not self.extend:
            d.pop("extend")  # nor without extensions
        if self.grid.centre_at is None:
            d["grid"].pop("centre_at")
        if self.model.position_embedding == "rotary":
            d["model"].pop("position_embedding")  # nor a spec of the built-in (rotary) model
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def parse_spec(data: Any) -> Spec:
    if not isinstance(data, dict):
        raise SpecError("spec: the top level must be a mapping of keys to values")
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError(one_line(e, "spec")) from None


MAX_VARIANTS = 16
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


def parse_specs(data: Any) -> list[Spec]:
    """A spec as sweeps: itself, or, where `optimizer:` lists several settings (as `budgets:` lists
    budgets), one sweep per setting named <name>-<label>, each with every other field of the spec, so
    that all of them plan the same budgets and shapes and `compare` pairs them. An entry is an
    `optimizer:` mapping plus `label` (default: its name) and `lr` (its own lr rule, else the spec's)."""
    opts = data.get("optimizer") if isinstance(data, dict) else None
    if not isinstance(opts, list):
        return [parse_spec(data)]
    if not opts or len(opts) > MAX_VARIANTS:
        raise SpecError(f"spec: optimizer lists {len(opts)} settings; give 1 to {MAX_VARIANTS}")
    if not isinstance(data.get("name"), str):
        raise SpecError("spec: name is required (each optimizer setting becomes the sweep <name>-<label>)")
    out: list[Spec] = []
    for i, entry in enumerate(opts):
        if not isinstance(entry, dict):
            raise SpecError(f"spec: optimizer[{i}] must be a mapping (name: adamw | muon, ...), got {entry!r}")
        entry = dict(entry)
        label, lr = entry.pop("label", None), entry.pop("lr", None)
        label = str(entry.get("name", "adamw")) if label is None else label
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise SpecError(f"spec: optimizer[{i}].label must be 1-32 letters, digits, '.', '_' or '-', got {label!r}")
        d = {**data, "name": f"{data['name']}-{label}", "optimizer": entry, **({} if lr is None else {"lr": lr})}
        try:
            out.append(parse_spec(d))
        except SpecError as e:
            raise SpecError(f"optimizer[{i}] ({label}): {e}") from None
    names = [s.name for s in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SpecError(f"spec: two optimizer settings would both be the sweep {dup!r}; give each a distinct label")
    return out


def load_specs(path: str | Path) -> list[Spec]:
    """Read a YAML or TOML spec as its sweeps (see parse_specs); every problem becomes one SpecError line."""
    p = Path(path)
    data = load_data(p, SpecError, "spec")
    try:
        specs = parse_specs(data)
    except SpecError as e:
        raise SpecError(f"{p}: {e}") from None
    return [_template_beside(s, p) for s in specs]


def load_spec(path: str | Path) -> Spec:
    """Read a YAML or TOML spec of one sweep; every problem becomes one SpecError line."""
    specs = load_specs(path)
    if len(specs) > 1:
        raise SpecError(f"{path}: optimizer lists {len(specs)} settings ({', '.join(s.name for s in specs)}); "
                        "`isoflop plan` plans one sweep for each, this command takes one sweep")
    return specs[0]


def _template_beside(spec: Spec, p: Path) -> Spec:
    tpl = spec.trainer.template
    if ("/" in tpl or tpl.endswith((".yaml", ".yml"))) and not Path(tpl).is_absolute():
        # a template path in a spec means: beside the spec, wherever the job later runs
        trainer = spec.trainer.model_copy(update={"template": str((p.parent / tpl).resolve())})
        spec = spec.model_copy(update={"trainer": trainer})
    return spec


def spec_schema() -> dict:
    return Spec.model_json_schema()
