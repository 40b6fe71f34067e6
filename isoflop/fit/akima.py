"""Minimum of an Akima spline through a profile, exactly and for many profiles at once.

The spline is scipy's `Akima1DInterpolator` (Akima 1970, as Porian et al.
2024 use it); its minimum is found per cubic piece in closed form (the ends
of the piece and the roots of its derivative inside it), not on a grid, so
one call handles every bootstrap resample of a budget: `ys` is (R, S), one
row per resample over the same sizes. The minimum always lies inside the
sampled range [x[0], x[-1]]: a spline is never extrapolated.
"""
from __future__ import annotations

import numpy as np


def akima_minimum(x: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x*, y*) per row of ys (R, S) over ascending distinct x (S ≥ 3)."""
    from scipy.interpolate import Akima1DInterpolator

    x = np.asarray(x, dtype=float)
    y2 = np.atleast_2d(np.asarray(ys, dtype=float))
    c = Akima1DInterpolator(x, y2.T, axis=0).c          # (4, S-1, R): c0·t³ + c1·t² + c2·t + c3, t = x − x_i
    h = np.diff(x)[:, None]                              # (S-1, 1)
    c0, c1, c2, c3 = c
    # roots of 3c0·t² + 2c1·t + c2 inside (0, h), in the cancellation-free form (c0 may be 0 or tiny)
    qa, qb, qc = 3.0 * c0, 2.0 * c1, c2
    disc = qb * qb - 4.0 * qa * qc
    with np.errstate(invalid="ignore", divide="ignore"):
        q = -0.5 * (qb + np.where(qb >= 0, 1.0, -1.0) * np.sqrt(np.where(disc >= 0, disc, np.nan)))
        r1 = q / qa
        r2 = qc / q
    cands = [np.zeros_like(c3), np.broadcast_to(h, c3.shape)]
    for r in (r1, r2):
        ok = np.isfinite(r) & (r > 0) & (r < h)
        cands.append(np.where(ok, r, 0.0))
    t = np.stack(cands)                                  # (4, S-1, R)
    vals = ((c0 * t + c1) * t + c2) * t + c3
    flat_vals = vals.transpose(2, 1, 0).reshape(vals.shape[2], -1)   # (R, (S-1)·4)
    k = np.argmin(flat_vals, axis=1)
    seg, cand = np.divmod(k, 4)
    rows = np.arange(flat_vals.shape[0])
    x_star = x[seg] + t[cand, seg, rows]
    y_star = flat_vals[rows, k]
    return np.minimum(x_star, x[-1]), y_star
