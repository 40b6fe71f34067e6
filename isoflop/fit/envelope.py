"""Chinchilla approach 1: the lower envelope of the training curves.

Input: every run's logged training curve as (flops, loss) arrays, with its N.
At `levels` FLOP values spaced evenly in log C over the span the curves
cover, each curve's loss is interpolated linearly in ln C (never
extrapolated past a curve's first or last logged point); the envelope is
the lowest loss at each level, and the run that attains it gives N at that
level. N_opt ∝ C^a is fitted by least squares in log space over the levels.

Levels are left out of the power-law fit (and counted) when fewer than 2
curves cover them, or when the envelope is attained by the smallest or
largest N of all runs (censored: a smaller/larger model might do better,
so that N is a bound, not an optimum). Curves of the same run should be
from runs whose learning-rate schedule ends at the curve's end (as in
Hoffmann et al.); an intermediate point of a longer cosine schedule is
not an optimum, which this function cannot detect.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .frontier import PowerLaw, line_fit


@dataclass(frozen=True, eq=False)
class Envelope:
    flops: np.ndarray        # (levels,)
    loss: np.ndarray         # envelope loss (NaN where no curve covers the level)
    params: np.ndarray       # N attaining the envelope (NaN where none)
    run_id: tuple[str, ...]  # run attaining it ("" where none)
    used: np.ndarray         # bool: level enters the power-law fit
    params_law: PowerLaw | None   # N_opt ∝ C^a from the envelope (None with < 2 usable levels / distinct N)
    tokens_law: PowerLaw | None   # D_opt = C/(6 N_opt)
    censored: int                 # levels attained at the smallest/largest N
    uncovered: int                # levels covered by < 2 curves


def _curve(item: Any, i: int) -> tuple[str, float, np.ndarray, np.ndarray]:
    if isinstance(item, Mapping):
        rid = str(item.get("run_id", f"curve-{i}"))
        return rid, float(item["params"]), np.asarray(item["flops"], float), np.asarray(item["loss"], float)
    rid = getattr(item, "run_id", f"curve-{i}")
    return str(rid), float(item.params), np.asarray(item.flops, float), np.asarray(item.loss, float)


def fit_envelope(curves: Sequence[Any], *, levels: int = 200) -> Envelope:
    """curves: mappings (or objects) with params, flops (array), loss (array), optional run_id."""
    parsed = []
    for i, item in enumerate(curves):
        rid, n, c, y = _curve(item, i)
        ok = np.isfinite(c) & np.isfinite(y) & (c > 0)
        c, y = c[ok], y[ok]
        if len(c) == 0 or not (n > 0):
            continue
        o = np.argsort(c, kind="stable")
        parsed.append((rid, n, np.log(c[o]), y[o]))
    if not parsed:
        empty = np.zeros(0)
        return Envelope(empty, empty, empty, (), np.zeros(0, bool), None, None, 0, 0)
    lo = min(p[2][0] for p in parsed)
    hi = max(p[2][-1] for p in parsed)
    grid = np.linspace(lo, hi, levels) if hi > lo else np.array([lo])
    mat = np.full((len(parsed), len(grid)), np.nan)
    for k, (_, _, lc, y) in enumerate(parsed):
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        mat[k, inside] = np.interp(grid[inside], lc, y)
    cover = np.isfinite(mat).sum(0)
    filled = np.where(np.isfinite(mat), mat, np.inf)
    arg = np.argmin(filled, axis=0)
    env = filled[arg, np.arange(len(grid))]
    has = np.isfinite(env)
    env = np.where(has, env, np.nan)
    ns = np.array([p[1] for p in parsed])
    n_at = np.where(has, ns[arg], np.nan)
    rid_at = tuple(parsed[a][0] if h else "" for a, h in zip(arg, has))
    edge = has & ((n_at == ns.min()) | (n_at == ns.max()))
    uncovered = cover < 2
    used = has & ~uncovered & ~edge
    law = dlaw = None
    if used.sum() >= 2 and len(np.unique(n_at[used])) >= 2:
        slope, icpt, rstd = line_fit(grid[used], np.log(n_at[used]))
        law = PowerLaw(exponent=slope, coefficient=math.exp(icpt), n_budgets=int(used.sum()), residual_std=rstd)
        dlaw = PowerLaw(exponent=1.0 - slope, coefficient=math.exp(-icpt) / 6.0, n_budgets=int(used.sum()),
                        residual_std=rstd)
    return Envelope(flops=np.exp(grid), loss=env, params=n_at, run_id=rid_at, used=used, params_law=law,
                    tokens_law=dlaw, censored=int((edge & ~uncovered).sum()), uncovered=int((has & uncovered).sum()))
