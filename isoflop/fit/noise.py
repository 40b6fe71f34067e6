"""Sizes, seed noise and outliers of a sweep's IsoFLOP profiles.

- Near-duplicate sizes: within one budget, sizes whose ln N differ by less
  than `MERGE_TOL` (2%) are one size (Epoch's Chinchilla points have pairs a
  few hundred parameters apart: as separate sizes they make a window collapse
  and an Akima spline overshoot). `size_groups` gives each run its size.
- Noise: the standard deviation σ of one run's final loss (seed noise). From
  repeated seeds where the sweep has them (pooled within-size variance), else
  from the residuals of each size's mean against a parabola through its
  neighbouring sizes (2 on each side, leave-one-out), each residual divided
  by its own standard error factor √(1/k + leverage) so that every budget
  and position counts alike; σ is their robust scale (1.4826·median |r|),
  pooled over budgets. Only sizes within 3 places of a budget's lowest mean
  count: far out on a wide sweep a parabola through 4 neighbours misses the
  profile's bend, and these are not the sizes that place the minimum.
- Outliers: an IsoFLOP profile is convex in ln N near its minimum
  (A·N^−α + B·(C/6N)^−β is), so a point above the chord of its two
  neighbours can only be there by noise. A run whose excess over the chord
  exceeds `OUTLIER_Z` standard errors is an outlier
  (the largest first, then tested again, at most a quarter of a budget's
  sizes); with repeated seeds, also a run more than `OUTLIER_Z`·σ from its
  size's median. Only sizes within 3 places of the lowest mean are tested:
  far out, real profiles flatten (losses saturate) and are not convex. A steep, strongly curved profile (Porian et al.'s sweeps
  rise 0.4 nats per size) violates nothing, where a residual against a
  parabola would call half of it outliers. A run too low (below the
  parabola through its 4 neighbouring sizes by > `LOW_Z` = 5 standard
  errors) or at an end of the grid (off that parabola by > 6) is an outlier
  only where the miss is also large against how much the profile bends
  there (its second difference over one grid step: > `LOW_BEND` = 2 times
  for a low run, > `END_BEND` = 6 at an end). Real profiles have kinks:
  on Porian et al.'s 15 configurations the largest low miss beyond 5
  standard errors is 1.8 bends, the largest end miss 4.4 bends; a
  synthetic run 0.05 (10σ) below a minimum misses by 1.3–3.9 bends. Each
  size is judged by a σ estimated without it (`leave_out_sigmas`): judged by
  the pooled σ, which its own residual and its neighbours' inflated by up to
  1.7×, such a run went unnamed in 6 of 15 sweeps; now every miss is a dip
  under 2 bends (at the minimum 12 of 15 named, next to it 9 of 15, on 7
  sizes over 8× in N). A run 0.3 high at the largest size misses by ≥ 9.9
  bends and is found in 14 of 14.
  Outliers are named (run ids) and left out of every fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MERGE_TOL = 0.02
OUTLIER_Z = 6.0
#: a run below its neighbours' parabola by more than LOW_Z standard errors and LOW_BEND times the profile's
#: bend over one grid step; a run at an end of the grid off by OUTLIER_Z and END_BEND (measured: see docstring)
LOW_Z = 5.0
LOW_BEND = 2.0
END_BEND = 6.0
NEIGHBOURS = 4
#: sizes this many places either side of the lowest mean are where noise and outliers are judged
CORE = 3


def core_sizes(means: np.ndarray) -> np.ndarray:
    """Sizes near the lowest mean: they decide the minimum, and a parabola through 4 neighbours fits them
    (far out on a wide sweep the profile bends too fast for it, and every point would look off)."""
    j = int(np.argmin(means))
    pos = np.arange(len(means))
    return np.abs(pos - j) <= CORE


@dataclass(frozen=True)
class NoiseEstimate:
    sigma: float      # one run's loss noise (same units as the loss)
    dof: int          # residuals (or seed degrees of freedom) behind it
    source: str       # "seeds", "residuals" or "none"


def size_groups(log_n: np.ndarray, tol: float = MERGE_TOL) -> tuple[np.ndarray, np.ndarray]:
    """(size index per run, ln N per size) for runs sorted by ln N; sizes closer than tol are one."""
    x = np.asarray(log_n, dtype=float)
    if x.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0)
    # a new size starts where the gap to the previous run exceeds tol (a chain of tiny gaps stays one size)
    idx = np.concatenate([[0], np.cumsum(np.diff(x) > tol)])
    counts = np.bincount(idx)
    return idx, np.bincount(idx, weights=x) / counts


def size_means(idx: np.ndarray, y: np.ndarray, n_sizes: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean loss, runs) per size."""
    k = np.bincount(idx, minlength=n_sizes).astype(float)
    return np.bincount(idx, weights=y, minlength=n_sizes) / np.maximum(k, 1.0), k


def neighbour_residuals(ux: np.ndarray, means: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(residual, standard-error factor) of each size's mean against a parabola through its neighbours.

    The residual's variance is σ²·factor² when each run has noise σ. NaN
    where there are fewer than NEIGHBOURS + 1 sizes.
    """
    res, fac, _ = neighbour_fit(ux, means, counts)
    return res, fac


def neighbour_fit(ux: np.ndarray, means: np.ndarray, counts: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`neighbour_residuals` and, per size, the neighbours' parabola's second difference over one grid
    step (how much the profile bends there: the scale a real kink is measured against)."""
    s = len(ux)
    res = np.full(s, np.nan)
    fac = np.full(s, np.nan)
    bend = np.full(s, np.nan)
    if s < NEIGHBOURS + 1:
        return res, fac, bend
    step = float(np.median(np.diff(ux)))
    half = NEIGHBOURS // 2
    for i in range(s):
        lo = min(max(i - half, 0), s - NEIGHBOURS - 1)
        nb = [j for j in range(lo, lo + NEIGHBOURS + 1) if j != i]
        u = ux[nb] - ux[i]
        w = counts[nb]
        x = np.stack([np.ones_like(u), u, u * u], axis=1)
        xtw = x.T * w
        try:
            cov = np.linalg.inv(xtw @ x)
        except np.linalg.LinAlgError:
            continue
        coef = cov @ (xtw @ means[nb])
        res[i] = means[i] - coef[0]           # the parabola at u = 0
        fac[i] = math.sqrt(1.0 / counts[i] + cov[0, 0])
        bend[i] = abs(2.0 * coef[2]) * step * step
    return res, fac, bend


def robust_scale(z: np.ndarray) -> float:
    z = np.asarray(z, dtype=float)
    z = z[np.isfinite(z)]
    return float(1.4826 * np.median(np.abs(z))) if z.size else math.nan


def seed_noise(groups: list[tuple[np.ndarray, np.ndarray]]) -> NoiseEstimate | None:
    """Pooled within-size standard deviation over (size index, loss) per budget; None without repeats."""
    ss = 0.0
    dof = 0
    for idx, y in groups:
        means, k = size_means(idx, y, int(idx.max()) + 1 if idx.size else 0)
        ss += float(((y - means[idx]) ** 2).sum())
        dof += int((k - 1)[k > 1].sum())
    if dof < 2:
        return None
    return NoiseEstimate(sigma=math.sqrt(ss / dof), dof=dof, source="seeds")


def convexity_violations(ux: np.ndarray, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per size: how far its mean lies above the chord of its neighbours, in standard errors per unit σ
    (the noise of one run); ≤ 0: not above. −inf at the two ends."""
    s = len(ux)
    z = np.full(s, -np.inf)

    def line_at(i: int, j1: int, j2: int) -> tuple[float, float]:
        """(value at ux[i] of the line through sizes j1, j2; its variance factor)."""
        t = (ux[i] - ux[j1]) / (ux[j2] - ux[j1])
        w1, w2 = 1.0 - t, t
        return w1 * means[j1] + w2 * means[j2], w1 * w1 / counts[j1] + w2 * w2 / counts[j2]

    for i in range(s):
        tests = []
        if 0 < i < s - 1:   # above the chord of its neighbours
            v, f = line_at(i, i - 1, i + 1)
            tests.append((means[i] - v) / math.sqrt(f + 1.0 / counts[i]))
        if tests:
            z[i] = max(tests)
    return z


def find_outliers(ux: np.ndarray, idx: np.ndarray, y: np.ndarray, sigma: float | np.ndarray
                  ) -> list[tuple[int, float, float]]:
    """Outlying runs of one budget, worst first, given the noise σ: (index into y, deviation, deviation/σ).

    sigma: one σ, or one per size (`leave_out_sigmas`: each size judged by a σ it did not inflate)."""
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (len(ux),))
    if not np.all((sigma > 0) & np.isfinite(sigma)):
        return []
    keep = np.ones(len(y), dtype=bool)
    out: list[tuple[int, float, float]] = []
    n_sizes = len(ux)
    for _ in range(max(1, n_sizes // 4)):
        means, k = size_means(idx[keep], y[keep], n_sizes)
        present = k > 0
        if k.max(initial=0) > 1:  # repeated seeds: a run far from its size's median
            med = np.array([np.median(y[keep & (idx == s)]) if present[s] else np.nan for s in range(n_sizes)])
            dev = np.where(keep & (k[idx] > 2), np.abs(y - med[idx]), 0.0)
            j = int(np.argmax(dev))
            if dev[j] > OUTLIER_Z * sigma[idx[j]]:
                keep[j] = False
                out.append((j, float(y[j] - med[idx[j]]), float(dev[j] / sigma[idx[j]])))
                continue
        if present.sum() < 4:
            break
        pm, pk, px, ps = means[present], k[present], ux[present], sigma[present]
        z, res, low = _suspicion(px, pm, pk, ps)
        s_worst = int(np.argmax(z))
        if not z[s_worst] > (LOW_Z if low[s_worst] else OUTLIER_Z):
            break
        # one bad run also makes a neighbour look bad (a low run drags its neighbour's chord down, a high
        # one pulls its neighbour's parabola up): of the two, remove the one that leaves the rest consistent
        rivals = [j for j in (s_worst - 1, s_worst + 1) if 0 <= j < len(pm) and z[j] > LOW_Z]
        if rivals and len(pm) > 4:
            def left(j: int) -> float:
                m = np.arange(len(pm)) != j
                return float(np.max(_suspicion(px[m], pm[m], pk[m], ps[m])[0], initial=-np.inf))
            s_worst = min([s_worst] + rivals, key=left)
        size = int(np.flatnonzero(present)[s_worst])
        members = np.flatnonzero(keep & (idx == size))
        if len(members) != 1:   # a whole size off with several seeds is a real feature, not one bad run
            break
        # how far it is off: against the neighbours' parabola (the number a user can check by eye)
        keep[members[0]] = False
        out.append((int(members[0]), float(res[s_worst]), float(z[s_worst])))
    return out


def _suspicion(ux: np.ndarray, means: np.ndarray, counts: np.ndarray, sigma: float | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(how far off each size is in standard errors, −inf where untested; its residual against the
    neighbours' parabola; whether it is a low-side candidate) for the outlier test."""
    core = core_sizes(means)
    z = np.where(core, convexity_violations(ux, means, counts) / sigma, -np.inf)
    # too low, or off at an end of the grid (where no chord exists): against the neighbours' parabola,
    # and only where the miss is large against the profile's own bend there (see the module docstring)
    res, fac, bend = neighbour_fit(ux, means, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        zr = res / (fac * sigma)
        ratio = np.abs(res) / bend
    ends = np.zeros(len(means), dtype=bool)
    ends[[0, -1]] = True
    low = core & ~ends & (zr < -LOW_Z) & (ratio > LOW_BEND)
    end = core & ends & (np.abs(zr) > OUTLIER_Z) & (ratio > END_BEND)
    z = np.where(low | end, np.maximum(z, np.abs(np.nan_to_num(zr))), z)
    return z, res, low


def _standard_residuals(ux: np.ndarray, means: np.ndarray, k: np.ndarray) -> np.ndarray:
    """One budget's neighbour residuals in standard errors per unit σ, over its core sizes."""
    if len(ux) == 0:
        return np.zeros(0)
    res, fac = neighbour_residuals(ux, means, k)
    ok = np.isfinite(res) & core_sizes(means)
    return res[ok] / fac[ok]


def residual_noise(per_budget: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   z_budgets: list[np.ndarray] | None = None) -> NoiseEstimate:
    """σ from neighbour residuals pooled over budgets; per_budget: (ln N per size, mean loss, runs).
    z_budgets: the budgets' `_standard_residuals` where the caller has them already."""
    zs = z_budgets if z_budgets is not None else [_standard_residuals(*b) for b in per_budget]
    z = np.concatenate(zs) if zs else np.zeros(0)
    if z.size >= 3:
        return NoiseEstimate(sigma=robust_scale(z), dof=int(z.size), source="residuals")
    # budgets of 4 sizes: the residuals of one parabola through all of them (1 degree of freedom each)
    ss, dof = 0.0, 0
    for ux, means, k in per_budget:
        if len(ux) < 4:
            continue
        x = np.stack([np.ones_like(ux), ux - ux.mean(), (ux - ux.mean()) ** 2], axis=1)
        coef = np.linalg.lstsq(x * np.sqrt(k)[:, None], means * np.sqrt(k), rcond=None)[0]
        ss += float((k * (means - x @ coef) ** 2).sum())
        dof += len(ux) - 3
    if dof >= 2:
        return NoiseEstimate(sigma=math.sqrt(ss / dof), dof=dof, source="residuals")
    return NoiseEstimate(sigma=math.nan, dof=dof, source="none")



def sweep_noise(budgets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> NoiseEstimate:
    """The sweep's σ: from repeated seeds where it has them, else from neighbour residuals.
    budgets: per budget (size index per run, loss per run, ln N per size)."""
    seeds = seed_noise([(idx, y) for idx, y, _ in budgets])
    if seeds is not None:
        return seeds
    return residual_noise([_present(idx, y, ux) for idx, y, ux in budgets])


def _present(idx: np.ndarray, y: np.ndarray, ux: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    means, cnt = size_means(idx, y, len(ux))
    p = cnt > 0
    return ux[p], means[p], cnt[p]


def leave_out_sigmas(budgets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], noise: NoiseEstimate
                     ) -> list[np.ndarray]:
    """Per budget, per size: σ as `sweep_noise` estimates it with that size's runs left out.

    A run far off inflates the σ it is judged by: its own residual and those
    of the neighbours whose parabolas pass through it enter the pooled scale
    (a run 10σ below a minimum raised σ by up to 1.7× and went unnamed in 6
    of 15 sweeps). Left out, none of them does. Only the sizes near each
    budget's lowest mean (where outliers are looked for) get their own σ; the
    others, and any size whose leave-out estimate fails, keep `noise.sigma`.
    """
    out = [np.full(len(ux), noise.sigma) for _, _, ux in budgets]
    if noise.source == "seeds":   # pooled within-size variance: subtract the size's own sum of squares
        ss_dof = []
        for idx, y, ux in budgets:
            means, k = size_means(idx, y, len(ux))
            ss_dof.append((np.bincount(idx, weights=(y - means[idx]) ** 2, minlength=len(ux)),
                           np.maximum(k - 1, 0)))
        ss = noise.sigma ** 2 * noise.dof
        for (ss_b, dof_b), sig in zip(ss_dof, out):
            rest = noise.dof - dof_b
            ok = rest >= 2
            sig[ok] = np.sqrt(np.maximum(ss - ss_b[ok], 0.0) / rest[ok])
        return out
    if noise.source != "residuals":
        return out
    per = [_present(idx, y, ux) for idx, y, ux in budgets]
    zs = [_standard_residuals(*b) for b in per]
    for b, ((idx, y, ux), sig) in enumerate(zip(budgets, out)):
        means, cnt = size_means(idx, y, len(ux))
        sizes = np.flatnonzero(cnt > 0)
        if len(sizes) == 0:
            continue
        core = sizes[core_sizes(means[sizes])]
        for s in core:
            m = sizes[sizes != s]
            z_b = _standard_residuals(ux[m], means[m], cnt[m])
            est = residual_noise([p if i != b else (ux[m], means[m], cnt[m]) for i, p in enumerate(per)],
                                 zs[:b] + [z_b] + zs[b + 1:])
            if est.source == "residuals" and est.sigma > 0:
                sig[s] = est.sigma
    return out
