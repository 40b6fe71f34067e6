"""Discrete shapes of the model family nearest a target N.

A shape has whole heads (d_model a multiple of the family's width step, itself
a multiple of head_dim) and an aspect ratio d_model / n_layer near the
family's target. Candidates are enumerated once per family and range, and
scored by |ln N - ln N_target| with a small penalty for leaving the aspect
ratio, so that the picked shapes look like the family and still land near N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .flops import ParamConvention, Shape, params

# how much a factor e away from the target aspect ratio costs, against a factor e in N
ASPECT_WEIGHT = 0.1
# shapes enumerated at once (8 arrays of this length): beyond it a request is refused, not run
MAX_CANDIDATES = 4_000_000


class ShapeError(UserError, ValueError):
    """No shape of the family fits (or too many would have to be enumerated to know)."""


@dataclass(frozen=True)
class Family:
    vocab_size: int
    seq_len: int
    head_dim: int
    width_step: int
    aspect_ratio: float
    max_layers: int
    mlp: str = "gelu"
    tied: bool = True
    qk_norm: bool = False
    learned_positions: bool = False

    def shape(self, n_layer: int, d_model: int) -> Shape:
        return Shape(
            n_layer=int(n_layer),
            d_model=int(d_model),
            n_head=int(d_model) // self.head_dim,
            vocab_size=self.vocab_size,
            seq_len=self.seq_len,
            mlp=self.mlp,  # type: ignore[arg-type]
            tied=self.tied,
            qk_norm=self.qk_norm,
            learned_positions=self.learned_positions,
        )


@dataclass(frozen=True)
class Candidates:
    n_layer: np.ndarray
    d_model: np.ndarray
    log_params: np.ndarray
    aspect_cost: np.ndarray


def candidates(family: Family, convention: ParamConvention, n_min: float, n_max: float) -> Candidates:
    """All shapes whose N could be picked for targets in [n_min, n_max]."""
    # non-embedding N ~ 12 L d^2 = 12 d^3 / r: invert for the width range, then widen generously
    if not (0 < n_min <= n_max < math.inf):
        raise ShapeError(f"no shape has N in [{n_min:.4g}, {n_max:.4g}]")
    r = family.aspect_ratio
    d_lo = max(family.width_step, (n_min * r / 12) ** (1 / 3) / 4)
    d_hi = max(4 * family.width_step, (n_max * r / 12) ** (1 / 3) * 4)
    # counted in floats first: d_hi is infinite where n_max * r overflows
    n_widths = math.ceil(d_hi / family.width_step) - d_lo // family.width_step + 1 if math.isfinite(d_hi) else math.inf
    if n_widths * family.max_layers > MAX_CANDIDATES:
        raise ShapeError(
            f"N up to {n_max:.4g} needs {n_widths:,.0f} widths x {family.max_layers} layer counts of shapes; "
            f"at most {MAX_CANDIDATES:,}: lower the budget, or raise model.head_dim/d_model_multiple"
        )
    first, last = max(1, int(d_lo // family.width_step)), int(math.ceil(d_hi / family.width_step))
    widths = np.arange(first, last + 1) * family.width_step
    layers = np.arange(1, family.max_layers + 1)
    d, L = np.meshgrid(widths, layers, indexing="ij")
    d, L = d.ravel(), L.ravel()
    aspect = d / L
    # the same formulas as flops.params, evaluated on whole arrays at once
    n = params(
        Shape(L, d, d // family.head_dim, family.vocab_size, family.seq_len,  # type: ignore[arg-type]
              family.mlp, family.tied, family.qk_norm, family.learned_positions),  # type: ignore[arg-type]
        convention,
    ).astype(float)
    cost = ASPECT_WEIGHT * np.abs(np.log(aspect / r))
    # keep shapes within a factor 4 of the aspect ratio, and every one-layer shape (none shallower exists)
    keep = (cost <= ASPECT_WEIGHT * math.log(4)) | (L == 1)
    order = np.argsort(n[keep], kind="stable")
    return Candidates(L[keep][order], d[keep][order], np.log(n[keep][order]), cost[keep][order])


def pick_shapes(
    cands: Candidates, targets: list[float], tolerance: float
) -> list[tuple[int, int, float]]:
    """For increasing targets, pick distinct shapes with strictly increasing N.

    tolerance: largest allowed |ln N - ln target|; beyond it the family cannot
    realise the grid and a ShapeError says which point.
    Returns (n_layer, d_model, N) per target.
    """
    out: list[tuple[int, int, float]] = []
    prev = -np.inf
    for t in targets:
        lt = math.log(t)
        # candidates sorted by log N: only those above the previous pick are free
        start = int(np.searchsorted(cands.log_params, prev, side="right"))
        if start >= len(cands.log_params):
            raise ShapeError(f"no shape of the model family has N above {math.exp(prev):.4g}")
        # only shapes within the tolerance can be picked; look at those alone when there are any
        lo = max(start, int(np.searchsorted(cands.log_params, lt - tolerance, side="left")))
        hi = int(np.searchsorted(cands.log_params, lt + tolerance, side="right"))
        if lo < hi:
            start, stop = lo, hi
        else:
            stop = len(cands.log_params)
        lp = cands.log_params[start:stop]
        score = np.abs(lp - lt) + cands.aspect_cost[start:stop]
        i = int(np.argmin(score))
        if abs(lp[i] - lt) > tolerance:
            near = math.exp(lp[i])
            if t < math.exp(cands.log_params[0]):
                raise ShapeError(
                    f"target N={t:.4g} is below the smallest shape of the model family "
                    f"(N={math.exp(cands.log_params[0]):.4g}); raise the budget or shrink the family"
                )
            raise ShapeError(
                f"the model family has no free shape near N={t:.4g} (nearest {near:.4g}); "
                "use fewer grid points, a wider span, or a finer d_model_multiple/head_dim"
            )
        j = start + i
        out.append((int(cands.n_layer[j]), int(cands.d_model[j]), float(math.exp(cands.log_params[j]))))
        prev = cands.log_params[j]
    return out
