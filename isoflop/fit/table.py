"""The analyzer's input: one row per run, as numpy arrays.

`FitTable` is what every fit in `isoflop.fit` reads. It carries every run of a
sweep, usable or not; `usable_mask` says which runs may enter a fit, and
`exclusion_reasons` why the others may not (failed, diverged, lost, NaN loss,
non-positive size ...). Nothing here does I/O: `csvio.read_csv` and the CLI
(rows from the store) build tables.

Budgets: a run's budget C is given (`budget`), or unknown (NaN). Unknown
budgets are found from the run's FLOPs (the `flops` column, else 6·N·D) by
`snap_budgets`: to the nearest of a given list of budgets within a relative
tolerance (|C/B − 1| ≤ 10% by default), or, with no list, by clustering the
sorted log-FLOPs into groups that all lie within the tolerance of the group's
geometric centre. Runs that cannot be snapped keep NaN and are reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

#: run states that count as finished with a valid final loss. None/"" (a table
#: without a state column, e.g. a CSV of published points) also counts.
COMPLETED_STATES = frozenset({"completed", "complete", "succeeded", "success", "done", "finished", "ok"})


def _float_array(values: Iterable[Any], name: str) -> np.ndarray:
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and v.strip() == ""):
            out.append(math.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(f"{name}: row {i} has a non-numeric value {v!r}") from None
    return np.asarray(out, dtype=float)


@dataclass(frozen=True, eq=False)
class FitTable:
    """Runs of a sweep as parallel arrays (length n each).

    budget: C in FLOPs, NaN when unknown (then snapped from flops/6ND).
    params: N. tokens: D. loss: final loss (NaN when none).
    flops: the run's own FLOP count (NaN when unknown; 6·N·D is used then).
    run_id: strings (row numbers "row-<i>" when not given).
    state: run state strings ("completed", "failed", "diverged", "lost", ...).
    reason: free text why a run failed ("" when none).
    """

    budget: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray = field(default=None)  # type: ignore[assignment]
    run_id: np.ndarray = field(default=None)  # type: ignore[assignment]
    state: np.ndarray = field(default=None)  # type: ignore[assignment]
    reason: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(np.asarray(self.params))
        set_ = object.__setattr__
        for name in ("budget", "params", "tokens", "loss"):
            arr = np.asarray(getattr(self, name), dtype=float).reshape(-1)
            if arr.shape[0] != n:
                raise ValueError(f"FitTable: column {name} has {arr.shape[0]} rows, params has {n}")
            set_(self, name, arr)
        flops = np.full(n, np.nan) if self.flops is None else np.asarray(self.flops, dtype=float).reshape(-1)
        if flops.shape[0] != n:
            raise ValueError(f"FitTable: column flops has {flops.shape[0]} rows, params has {n}")
        set_(self, "flops", flops)
        for name, default in (("run_id", None), ("state", "completed"), ("reason", "")):
            val = getattr(self, name)
            if val is None:
                arr = np.array([f"row-{i}" for i in range(n)] if name == "run_id" else [default] * n, dtype=object)
            else:
                arr = np.array(["" if v is None else str(v) for v in val], dtype=object)
                if arr.shape[0] != n:
                    raise ValueError(f"FitTable: column {name} has {arr.shape[0]} rows, params has {n}")
            set_(self, name, arr)
        for name in ("budget", "params", "tokens", "loss", "flops", "run_id", "state", "reason"):
            getattr(self, name).setflags(write=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> "FitTable":
        """Build from dicts with keys budget, params, tokens, loss, flops, run_id, state, reason.

        Missing keys are allowed except params; tokens may be missing when
        flops (or budget) is given (D = C/(6N)).
        """
        rows = list(rows)
        if rows and any("params" not in r for r in rows):
            raise ValueError("FitTable.from_rows: every row needs 'params'")

        def col(key: str) -> list[Any]:
            return [r.get(key) for r in rows]

        params = _float_array(col("params"), "params")
        flops = _float_array(col("flops"), "flops")
        budget = _float_array(col("budget"), "budget")
        tokens = _float_array(col("tokens"), "tokens")
        loss = _float_array(col("loss"), "loss")
        # D from C when missing (Epoch's convention for its digitised points)
        c_for_d = np.where(np.isfinite(flops), flops, budget)
        tokens = np.where(np.isfinite(tokens), tokens, c_for_d / (6.0 * params))
        run_id = [r.get("run_id") if r.get("run_id") not in (None, "") else f"row-{i}" for i, r in enumerate(rows)]
        state = [r.get("state") or "completed" for r in rows]
        reason = [r.get("reason") or "" for r in rows]
        return cls(budget=budget, params=params, tokens=tokens, loss=loss, flops=flops,
                   run_id=run_id, state=state, reason=reason)

    # ------------------------------------------------------------------ helpers
    def __len__(self) -> int:
        return int(self.params.shape[0])

    @property
    def compute(self) -> np.ndarray:
        """Each run's FLOPs: the flops column, else 6·N·D."""
        return np.where(np.isfinite(self.flops), self.flops, 6.0 * self.params * self.tokens)

    def exclusion_reasons(self) -> list[str | None]:
        """Per run: None when the run may enter a fit, else a short reason."""
        out: list[str | None] = []
        for i in range(len(self)):
            st = str(self.state[i]).strip().lower()
            if st not in COMPLETED_STATES and st != "":
                why = str(self.reason[i]).strip()
                out.append(f"{st}: {why}" if why else st)
            elif not math.isfinite(self.loss[i]):
                out.append("non-finite loss" + (f" ({self.loss[i]}: diverged)" if math.isinf(self.loss[i]) else ""))
            elif self.loss[i] <= 0:
                out.append("non-positive loss")
            elif not (math.isfinite(self.params[i]) and self.params[i] > 0):
                out.append("non-positive or missing params")
            elif not (math.isfinite(self.tokens[i]) and self.tokens[i] > 0):
                out.append("non-positive or missing tokens")
            else:
                out.append(None)
        return out

    def usable_mask(self) -> np.ndarray:
        return np.array([r is None for r in self.exclusion_reasons()], dtype=bool)

    def subset(self, mask: np.ndarray) -> "FitTable":
        m = np.asarray(mask)
        return FitTable(budget=self.budget[m], params=self.params[m], tokens=self.tokens[m], loss=self.loss[m],
                        flops=self.flops[m], run_id=self.run_id[m], state=self.state[m], reason=self.reason[m])


def snap_budgets(flops: np.ndarray, budgets: Sequence[float] | None = None, tolerance: float = 0.10,
                 min_points: int = 3) -> np.ndarray:
    """Snap each run's FLOPs to a budget; NaN where it cannot be snapped.

    With `budgets`: the nearest budget B (in log) with |C/B − 1| ≤ tolerance.
    Without: sort log C and cut greedily into groups whose members all lie
    within the tolerance of the group's centre (geometric mid-range); groups
    with fewer than `min_points` runs are not budgets (NaN).
    """
    c = np.asarray(flops, dtype=float)
    out = np.full(c.shape, np.nan)
    ok = np.isfinite(c) & (c > 0)
    if budgets is not None:
        b = np.asarray(sorted(float(x) for x in budgets), dtype=float)
        if b.size == 0:
            return out
        idx = np.argmin(np.abs(np.log(c[ok, None]) - np.log(b[None, :])), axis=1)
        near = b[idx]
        good = np.abs(c[ok] / near - 1.0) <= tolerance
        vals = np.where(good, near, np.nan)
        out[ok] = vals
        return out
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(np.log(c[idx]))]
    logc = np.log(c[order])
    # a group spans at most 2·log(1+t), so its geometric mid-range is within ±t of every member
    span = 2.0 * math.log1p(tolerance)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and logc[stop + 1] - logc[start] <= span:
            stop += 1
        members = order[start:stop + 1]
        if len(members) >= min_points:
            centre = math.exp(0.5 * (logc[start] + logc[stop]))
            out[members] = _round_budget(centre, c[members], tolerance)
        start = stop + 1
    return out


def _round_budget(centre: float, members: np.ndarray, tolerance: float) -> float:
    """The roundest number (fewest significant digits) still within tolerance of every member."""
    for digits in range(1, 6):
        r = float(f"{centre:.{digits - 1}e}")
        if np.all(np.abs(members / r - 1.0) <= tolerance):
            return r
    return centre
