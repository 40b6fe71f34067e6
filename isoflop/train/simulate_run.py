"""The `simulate` trainer: a run's final loss drawn from a stated law, no training.

    python -m isoflop.train.simulate_run RUN_DIR     (what templates/commands/simulate.yaml runs)

For tutorials, tests and `isoflop design`: the truth is known, so what `fit` recovers can be
checked against it. Every result it writes says `"simulated": true`, and the sweep's trainer is
`simulate` in the store; status and fit print that the losses are simulated.

The loss of a run with N parameters (the spec's convention), D tokens, compute C, peak learning
rate η and batch B (tokens):

    L = E + A/N^alpha + B/D^beta                                  (Hoffmann et al.'s form)
        + lr_curvature    · ln(η / η*)²     with η* = coef · X^power  (X = C, N or D; `lr_opt`)
        + batch_curvature · ln(B / B*)²     with B* likewise          (`batch_opt`)
        + noise · z,  z ~ N(0, 1) from a generator seeded by the run id and `noise_seed`

so a cell's optimal η is exactly η* (a parabola in ln η), and a known η*(C) exponent is there to
recover. Settings come from `trainer.vars` of the spec (all optional):

    law: {E: 1.69, A: 406.4, B: 410.7, alpha: 0.34, beta: 0.28}   # default: Hoffmann et al. 2022
    noise: 0.0                     # σ of the Gaussian noise on every loss
    noise_seed: 0                  # another draw of the noise for the same runs
    lr_opt: {coef: 0.3188, of: C, power: -0.125}     # with lr_curvature > 0
    lr_curvature: 0.0
    batch_opt: {coef: 0.292, of: C, power: 0.3271}   # with batch_curvature > 0
    batch_curvature: 0.0

Pure standard library (no numpy, no torch): a run takes a few milliseconds after start-up.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


class SimulateError(ValueError):
    """trainer.vars that do not describe a loss surface; one line naming the key."""


@dataclass(frozen=True)
class Surface:
    """The stated loss surface of a simulated sweep (see the module docstring)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    noise: float = 0.0
    noise_seed: int = 0
    lr_opt: tuple[float, str, float] | None = None      # (coef, of, power)
    lr_curvature: float = 0.0
    batch_opt: tuple[float, str, float] | None = None
    batch_curvature: float = 0.0

    def mean_loss(self, *, params: float, tokens: float, compute: float, lr: float | None = None,
                  batch: float | None = None) -> float:
        """The loss without noise."""
        loss = self.E + self.A / params ** self.alpha + self.B / tokens ** self.beta
        x = {"C": compute, "N": params, "D": tokens}
        for opt, curv, value in ((self.lr_opt, self.lr_curvature, lr), (self.batch_opt, self.batch_curvature, batch)):
            if opt is not None and curv > 0 and value is not None:
                coef, of, power = opt
                loss += curv * math.log(value / (coef * x[of] ** power)) ** 2
        return loss

    def draw(self, key: str) -> float:
        """The run's standard normal draw: the same run id (and noise_seed) always gives the same loss."""
        h = hashlib.sha256(f"{self.noise_seed}|{key}".encode()).digest()
        return random.Random(int.from_bytes(h[:8], "big")).gauss(0.0, 1.0)

    def loss(self, key: str, **kw: float) -> float:
        return self.mean_loss(**kw) + (self.noise * self.draw(key) if self.noise > 0 else 0.0)


def _number(v: Any, key: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SimulateError(f"trainer.vars.{key} must be a finite number, got {v!r}")
    if positive and not v > 0:
        raise SimulateError(f"trainer.vars.{key} must be positive, got {v!r}")
    if nonneg and v < 0:
        raise SimulateError(f"trainer.vars.{key} must be >= 0, got {v!r}")
    return float(v)


def _rule(v: Any, key: str) -> tuple[float, str, float] | None:
    if v is None:
        return None
    if not isinstance(v, Mapping) or "coef" not in v:
        raise SimulateError(f"trainer.vars.{key} must be {{coef, of, power}}, got {v!r}")
    of = v.get("of", "C")
    if of not in ("C", "N", "D"):
        raise SimulateError(f"trainer.vars.{key}.of must be C, N or D, got {of!r}")
    return _number(v["coef"], f"{key}.coef", positive=True), of, _number(v.get("power", 0.0), f"{key}.power")


def surface_of(vars_: Mapping[str, Any]) -> Surface:
    """The surface a spec's trainer.vars state (defaults: Hoffmann et al.'s law, no noise, no penalty)."""
    known = {"law", "noise", "noise_seed", "lr_opt", "lr_curvature", "batch_opt", "batch_curvature"}
    law = vars_.get("law") or HOFFMANN
    if not isinstance(law, Mapping):
        raise SimulateError(f"trainer.vars.law must be a mapping {{E, A, B, alpha, beta}}, got {law!r}")
    missing = [k for k in HOFFMANN if k not in law]
    if missing:
        raise SimulateError(f"trainer.vars.law lacks {missing[0]!r} (needs E, A, B, alpha, beta)")
    extra = sorted(set(vars_) - known)
    if extra:
        raise SimulateError(f"trainer.vars.{extra[0]}: unknown to the simulate template (known: {', '.join(sorted(known))})")
    seed = vars_.get("noise_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SimulateError(f"trainer.vars.noise_seed must be an integer, got {seed!r}")
    return Surface(
        E=_number(law["E"], "law.E", nonneg=True), A=_number(law["A"], "law.A", nonneg=True),
        B=_number(law["B"], "law.B", nonneg=True), alpha=_number(law["alpha"], "law.alpha", positive=True),
        beta=_number(law["beta"], "law.beta", positive=True),
        noise=_number(vars_.get("noise", 0.0), "noise", nonneg=True), noise_seed=seed,
        lr_opt=_rule(vars_.get("lr_opt"), "lr_opt"),
        lr_curvature=_number(vars_.get("lr_curvature", 0.0), "lr_curvature", nonneg=True),
        batch_opt=_rule(vars_.get("batch_opt"), "batch_opt"),
        batch_curvature=_number(vars_.get("batch_curvature", 0.0), "batch_curvature", nonneg=True),
    )


def simulate(run: Mapping[str, Any]) -> dict[str, Any]:
    """The result of one run (its run.json as a dict): what the script reports to $ISOFLOP_RESULT."""
    surface = surface_of(run.get("vars") or {})
    conv = run.get("param_convention") or "non_embedding"
    planned = run.get("planned") or {}
    params = planned.get(f"params_{conv}") or run.get("params")
    if not params:
        raise SimulateError("run.json names no parameter count (planned.params_<convention>)")
    tokens = float(run.get("tokens") or 0)
    if not tokens > 0:
        raise SimulateError("run.json has no positive 'tokens'")
    lr = float(run["lr"]) * float(run.get("lr_scale") or 1.0)
    loss = surface.loss(str(run.get("run_id", "")), params=float(params), tokens=tokens,
                        compute=float(run.get("budget") or 6.0 * params * tokens), lr=lr,
                        batch=float(run.get("batch_tokens") or 0) or None)
    return {"loss": loss, "val_loss": loss, "steps": int(run.get("steps") or 0), "tokens": int(tokens),
            "simulated": True, "wall_s": 0.0}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m isoflop.train.simulate_run RUN_DIR", file=sys.stderr)
        return 2
    t0 = time.time()
    run_dir = Path(args[0])
    try:
        run = json.loads((run_dir / "run.json").read_text())
        out = simulate(run)
    except (OSError, ValueError, KeyError) as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 2
    out["wall_s"] = time.time() - t0
    dest = Path(os.environ.get("ISOFLOP_RESULT") or run_dir / "result.json")
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, dest)
    print(f"simulated loss {out['loss']:.6g} (no training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
