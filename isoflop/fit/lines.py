"""Weighted least-squares lines y ≈ intercept + slope·z, many rows (bootstrap resamples) at once.

One solver for the frontier's power laws in ln C (`frontier.batched_line_fit`)
and the loss law's (E, k) at fixed γ (`losslaw`), so that a fix to one (its
conditioning, its degenerate rows) is a fix to both.
"""
from __future__ import annotations

import numpy as np


def weighted_lines(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intercept, slope, ok) per row minimising Σ w·(y − intercept − slope·z)².

    z: abscissae shared by every row (G,) or one row each (R, G); y, w: (R, G),
    w ≥ 0 (0 leaves a point out; y there may be anything finite). `ok` is False
    where fewer than 2 points carry weight or z has no spread among them: the
    line is undetermined, and intercept and slope are NaN or meaningless there.
    z is centred first (its plain mean per row): ln C ≈ 40 would otherwise make
    the 2×2 system lose about 3 digits.
    """
    z = np.asarray(z, dtype=float)
    zbar = z.mean(-1, keepdims=True)
    zc = z - zbar
    s0 = w.sum(1)
    t0 = (w * y).sum(1)
    if zc.ndim == 1:
        s1, s2, t1 = w @ zc, w @ (zc * zc), (w * y) @ zc
    else:
        s1, s2, t1 = (w * zc).sum(1), (w * zc * zc).sum(1), (w * y * zc).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        det = s0 * s2 - s1 * s1
        slope = (s0 * t1 - s1 * t0) / det
        intercept = (t0 - slope * s1) / s0 - slope * zbar.reshape(-1)
    ok = ((w > 0).sum(1) >= 2) & (det > 1e-12 * np.maximum(s0 * s2, 1e-300))
    return intercept, slope, ok
