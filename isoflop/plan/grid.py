"""Spec -> runs. Pure: the same spec always gives the same runs and run ids."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..spec import MAX_LR, Spec
from . import flops, hparams
from .shapes import Family, ShapeError, candidates, pick_shapes

# a run's FLOPs under the spec's convention must be within this of its budget
FLOP_TOLERANCE = 0.01


class PlanError(UserError, ValueError):
    """The spec cannot be planned; one line says why and where."""


@dataclass(frozen=True)
class Run:
    run_id: str
    budget: float
    point: int  # index of the size within its budget, smallest first
    n_layer: int
    d_model: int
    n_head: int
    params: int  # N under the spec's parameter convention
    tokens: int
    steps: int
    batch_seqs: int
    batch_tokens: int
    lr: float
    seed: int
    lr_mult: float
    batch_mult: float
    flops: int  # under the spec's FLOP convention
    ledger: dict[str, int] = field(hash=False)  # N and FLOPs under every convention
    definition: dict[str, Any] = field(hash=False)  # what run.json carries; hashed into run_id
    definition_json: str = field(default="", hash=False, repr=False)  # the same, serialised once

    @property
    def flops_deviation(self) -> float:
        return self.flops / self.budget - 1

    def to_json(self) -> dict[str, Any]:
        out = {
            "run_id": self.run_id, "budget": self.budget, "point": self.point,
            "params": self.params, "tokens": self.tokens, "tokens_per_param": self.tokens / self.params,
            "flops": self.flops, "flops_deviation": self.flops_deviation,
            "flops_6nd": self.ledger["flops_6nd"], "flops_6nd_attention": self.ledger["flops_6nd_attention"],
            "flops_exact": self.ledger["flops_exact"],
            "params_non_embedding": self.ledger["params_non_embedding"],
            "params_with_output": self.ledger["params_with_output"], "params_all": self.ledger["params_all"],
            "n_layer": self.n_layer, "d_model": self.d_model, "n_head": self.n_head,
            "batch_seqs": self.batch_seqs, "batch_tokens": self.batch_tokens, "lr": self.lr,
            "steps": self.steps, "seed": self.seed, "lr_mult": self.lr_mult, "batch_mult": self.batch_mult,
        }
        return out


def family_of(spec: Spec) -> Family:
    m = spec.model
    return Family(
        vocab_size=m.vocab_size, seq_len=m.seq_len, head_dim=m.head_dim, width_step=m.width_step,
        aspect_ratio=m.aspect_ratio, max_layers=m.max_layers, mlp=m.mlp, tied=m.tied, qk_norm=m.qk_norm,
        learned_positions=m.position_embedding == "learned",
    )


def _canonical(part: dict[str, Any]) -> bytes:
    return json.dumps(part, sort_keys=True, separators=(",", ":"), default=repr).encode()


def _digest(common_blob: bytes, own_blob: bytes) -> str:
    return hashlib.sha256(common_blob + b"|" + own_blob).hexdigest()[:12]


def run_id_of(definition: dict[str, Any]) -> str:
    """A stable hash of everything that defines the run (its definition dict).

    The spec-wide part is hashed apart from the per-run part, so that plan() serialises the
    shared part once for all of a sweep's runs."""
    common = {k: v for k, v in definition.items() if k in _COMMON_KEYS}
    own = {k: v for k, v in definition.items() if k not in _COMMON_KEYS}
    return _digest(_canonical(common), _canonical(own))


def _merged_json(common_blob: bytes, own_blob: bytes) -> str:
    """One JSON object from the two canonical halves (their keys are disjoint)."""
    return (common_blob[:-1] + b"," + own_blob[1:]).decode()


def _targets(spec: Spec, budget: float) -> list[float]:
    lo, hi = spec.grid.param_range(budget)
    k = spec.grid.points
    out = [math.sqrt(lo * hi)] if k == 1 else [lo * (hi / lo) ** (i / (k - 1)) for i in range(k)]
    if not all(math.isfinite(t) and t > 0 for t in out):
        raise PlanError(f"budget {budget:.4g}: grid.centre or grid.tokens_per_param give no finite model size")
    return out


def _rule_value(spec: Spec, kind: str, *, C: float, N: float, D: float) -> float:
    """A rule's value at one run, refused where it cannot train (a rule can be fine at one budget only)."""
    rule = spec.lr if kind == "lr" else spec.batch.rule
    v = hparams.evaluate(rule, kind, C=C, N=N, D=D)
    top = MAX_LR if kind == "lr" else math.inf
    if not (math.isfinite(v) and 0 < v <= top):
        field = "lr" if kind == "lr" else "batch.rule"
        raise PlanError(f"{field}: gives {v:.4g} at budget {C:.4g}, N={N:.4g}" + (
            f"; it must be within (0, {top:g}]" if kind == "lr" else "; it must be a positive finite number"))
    return v


def _common(spec: Spec) -> dict[str, Any]:
    """The parts of every run's definition that come straight from the spec."""
    m, t = spec.model, spec.trainer
    return {
        "model": {"z_loss": m.z_loss, "mup": m.mup, "mup_base_width": m.mup_base_width},
        "optimizer": spec.optimizer.definition(),
        "schedule": spec.schedule.model_dump(),
        "data": spec.data.model_dump(),
        "trainer": t.template,
        "eval": {"batches": t.eval_batches, "every": t.eval_every},
        "log_every": t.log_every,
        "checkpoint_every_s": t.checkpoint_every_s,
        "device": t.device, "compile": t.compile, "dtype": t.dtype, "threads": t.threads,
        "vars": dict(sorted(t.vars.items())),
        "flop_convention": spec.flops,
        "param_convention": spec.params,
    }


_COMMON_KEYS = frozenset(_common(Spec(name="x", budgets=[1.0])))


def plan(spec: Spec) -> list[Run]:
    """Every run of the sweep, by budget, then size, then (lr, batch) multipliers and seed."""
    budgets = spec.budget_values()
    fam = family_of(spec)
    all_targets = {b: _targets(spec, b) for b in budgets}
    lo = min(min(t) for t in all_targets.values())
    hi = max(max(t) for t in all_targets.values())
    try:
        cands = candidates(fam, spec.params, lo, hi)
    except ShapeError as e:
        raise PlanError(f"budget {max(budgets):.4g}: {e}") from None
    k = spec.grid.points
    step = math.log(all_targets[budgets[0]][-1] / all_targets[budgets[0]][0]) / (k - 1) if k > 1 else math.log(2)
    # half a grid step keeps the order and the spacing recognisable; never demand more than ~10%
    tolerance = max(step / 2, math.log(1.1))
    common = _common(spec)
    common_blob = _canonical(common)
    runs: list[Run] = []
    for budget in budgets:
        try:
            picks = pick_shapes(cands, all_targets[budget], tolerance)
        except ShapeError as e:
            raise PlanError(f"budget {budget:.4g}: {e}") from None
        for point, (n_layer, d_model, _) in enumerate(picks):
            runs += _size_runs(spec, fam, common, common_blob, budget, point, n_layer, d_model)
    runs += _extension_runs(spec, fam, common, common_blob, {r.run_id for r in runs})
    return runs


def _size_runs(spec: Spec, fam: Family, common: dict[str, Any], common_blob: bytes, budget: float, point: int,
               n_layer: int, d_model: int, *, lr_grid: list[float] | None = None,
               batch_grid: list[float] | None = None, lr_value: float | None = None,
               batch_value: float | None = None) -> list[Run]:
    """The runs of one size of one budget: every (batch, lr) multiplier and seed. lr_value/batch_value
    replace the rules' values (an extension planned with a fitted law)."""
    runs: list[Run] = []
    shape = fam.shape(n_layer, d_model)
    n = flops.params(shape, spec.params)
    per_token = flops.flops_per_token(shape, spec.flops, spec.params)
    d_ideal = budget / per_token
    for bm in batch_grid or spec.batch_grid:
        base_b = batch_value if batch_value is not None else _rule_value(spec, "batch", C=budget, N=n, D=d_ideal)
        b_val = base_b * bm
        seqs = hparams.batch_seqs(b_val, spec.batch.unit, fam.seq_len)
        asked = b_val if spec.batch.unit == "sequences" else b_val / fam.seq_len
        if asked < 0.5:  # rounding up to one sequence would silently multiply the batch
            raise PlanError(
                f"batch.rule: gives {asked:.3g} sequences of {fam.seq_len} tokens at budget {budget:.4g}, "
                f"N={n:,} (x{bm:g} batch_grid); a step needs at least one sequence"
            )
        batch_tokens = seqs * fam.seq_len
        steps = max(1, round(d_ideal / batch_tokens))
        tokens = steps * batch_tokens
        run_flops = per_token * tokens
        dev = run_flops / budget - 1
        if abs(dev) > FLOP_TOLERANCE:
            raise PlanError(
                f"budget {budget:.4g}, N={n:,}: {steps} step(s) of {batch_tokens:,} tokens give "
                f"{run_flops:.4g} FLOPs ({dev:+.1%} off the budget, limit ±{FLOP_TOLERANCE:.0%}); "
                "the budget is too small for this batch size: raise it or lower batch"
            )
        for lm in lr_grid or spec.lr_grid:
            base_lr = lr_value if lr_value is not None else _rule_value(spec, "lr", C=budget, N=n, D=tokens)
            lr = base_lr * lm
            if not 0 < lr <= MAX_LR:
                raise PlanError(f"lr: {lr:.4g} at budget {budget:.4g}, N={n:,} (x{lm:g}) is not within (0, {MAX_LR:g}]")
            for seed in spec.seeds:
                own = {
                    "budget": budget,
                    "shape": {
                        "n_layer": n_layer, "d_model": d_model, "n_head": shape.n_head,
                        "vocab_size": fam.vocab_size, "seq_len": fam.seq_len, "mlp": fam.mlp,
                        "tied": fam.tied, "qk_norm": fam.qk_norm,
                        # only where it is learned: the run ids of rotary sweeps stay as they were
                        **({"position_embedding": "learned"} if fam.learned_positions else {}),
                    },
                    "tokens": tokens, "steps": steps, "batch_seqs": seqs, "batch_tokens": batch_tokens,
                    "lr": float(f"{lr:.6g}"), "seed": seed,
                }
                own_blob = _canonical(own)
                runs.append(Run(
                    run_id=_digest(common_blob, own_blob),
                    budget=budget, point=point,
                    n_layer=n_layer, d_model=d_model, n_head=shape.n_head, params=n,
                    tokens=tokens, steps=steps, batch_seqs=seqs, batch_tokens=batch_tokens,
                    lr=own["lr"], seed=seed, lr_mult=lm, batch_mult=bm, flops=run_flops,
                    ledger=flops.ledger(shape, tokens, spec.params), definition={**common, **own},
                    definition_json=_merged_json(common_blob, own_blob),
                ))
    return runs


def _extension_runs(spec: Spec, fam: Family, common: dict[str, Any], common_blob: bytes,
                    planned: set[str]) -> list[Run]:
    """The runs of the spec's `extend` entries (isoflop extend); one that repeats a planned run is refused."""
    out: list[Run] = []
    for i, e in enumerate(spec.extend):
        rs = _size_runs(spec, fam, common, common_blob, e.budget, e.point, e.n_layer, e.d_model,
                        lr_grid=e.lr_grid, batch_grid=e.batch_grid, lr_value=e.lr, batch_value=e.batch)
        for r in rs:
            if r.run_id in planned:
                raise PlanError(f"extend[{i}] (budget {e.budget:.4g}, {e.n_layer}x{e.d_model}): run {r.run_id} is "
                                "already planned; remove the entry")
            planned.add(r.run_id)
        out += rs
    return out


def gpu_hours(runs: list[Run], throughput: float | None) -> float | None:
    """Estimated GPU-hours at a sustained FLOP/s, from each run's exact FLOPs."""
    if not throughput:
        return None
    return sum(r.ledger["flops_exact"] for r in runs) / throughput / 3600


def shape_for_params(spec: Spec, n_target: float) -> dict[str, int]:
    """The family's shape nearest a (predicted) N, for `isoflop fit --predict`."""
    fam = family_of(spec)
    cands = candidates(fam, spec.params, n_target, n_target)
    (n_layer, d_model, n), = pick_shapes(cands, [n_target], tolerance=math.inf)
    return {"n_layer": n_layer, "d_model": d_model, "n_head": d_model // fam.head_dim, "params": int(n)}
