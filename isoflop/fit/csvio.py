"""Read a CSV of runs into a FitTable (the only module of isoflop.fit that does I/O).

Columns (case-insensitive; aliases in brackets):
  params  [n, model size, model_size, parameters]      required, > 0
  loss    [final_loss]                                 required; empty = run without a loss (reported, not fitted)
  tokens  [d, training tokens]                         > 0; optional when flops or budget is given (D = C/(6N))
  flops   [training flop, training_flops, compute]     optional, > 0
  budget  [budget_flops]                               optional, > 0; empty cells are snapped from FLOPs
  run_id, state, reason, config                        optional

With no budget column, budgets are found by `fit_sweep` from the FLOPs
(the flops column, else 6·N·D), snapped within ±10%. A file with several
`config` values (Porian et al.'s CSV) needs `config=` to pick one.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from .table import FitTable

ALIASES: dict[str, tuple[str, ...]] = {
    "params": ("params", "n", "model size", "model_size", "parameters"),
    "tokens": ("tokens", "d", "training tokens", "training_tokens"),
    "loss": ("loss", "final_loss"),
    "flops": ("flops", "training flop", "training_flop", "training_flops", "compute"),
    "budget": ("budget", "budget_flops"),
    "run_id": ("run_id", "id"),
    "state": ("state", "status"),
    "reason": ("reason",),
    "config": ("config",),
}


def _number(text: str, column: str, line: int, *, positive: bool, allow_empty: bool) -> float:
    t = text.strip()
    if t == "" or t.lower() in ("nan", "na", "none", "null"):
        if allow_empty:
            return math.nan
        raise ValueError(f"line {line}: column {column!r} is empty")
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"line {line}: column {column!r} has non-numeric value {t!r}") from None
    if positive and not v > 0:
        raise ValueError(f"line {line}: column {column!r} must be positive, got {t!r}")
    return v


def read_csv(path: str | Path, *, config: str | None = None) -> FitTable:
    """Read runs from a CSV file; raise ValueError naming the problem (one line)."""
    p = Path(path)
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise ValueError(f"{p}: empty file (no header)")
        lower = {name.strip().lower(): name for name in reader.fieldnames}
        cols: dict[str, str] = {}
        for key, names in ALIASES.items():
            for alias in names:
                if alias in lower:
                    cols[key] = lower[alias]
                    break
        for key in ("params", "loss"):
            if key not in cols:
                raise ValueError(f"{p}: missing column {key!r} (accepted names: {', '.join(ALIASES[key])})")
        if not ({"tokens", "flops", "budget"} & cols.keys()):
            raise ValueError(f"{p}: missing column 'tokens' (or 'flops'/'budget' to derive D = C/(6N))")
        rows_in = list(reader)
    if "config" in cols:
        configs = sorted({r[cols["config"]] for r in rows_in})
        if config is None and len(configs) > 1:
            raise ValueError(f"{p}: {len(configs)} configs in the file; pick one with config= (e.g. {configs[0]!r})")
        if config is not None:
            rows_in = [r for r in rows_in if r[cols["config"]] == config]
            if not rows_in:
                raise ValueError(f"{p}: no rows with config {config!r}; known: {', '.join(configs)}")
    elif config is not None:
        raise ValueError(f"{p}: config={config!r} given but the file has no 'config' column")
    if not rows_in:
        raise ValueError(f"{p}: no rows")
    rows = []
    for i, r in enumerate(rows_in):
        line = i + 2
        row: dict[str, object] = {
            "params": _number(r[cols["params"]], cols["params"], line, positive=True, allow_empty=False),
            "loss": _number(r[cols["loss"]], cols["loss"], line, positive=True, allow_empty=True),
        }
        for key in ("tokens", "flops", "budget"):
            if key in cols:
                row[key] = _number(r[cols[key]], cols[key], line, positive=True, allow_empty=key != "tokens")
        for key in ("run_id", "state", "reason"):
            if key in cols:
                row[key] = r[cols[key]]
        if "tokens" not in row and math.isnan(float(row.get("flops", math.nan))) and math.isnan(float(row.get("budget", math.nan))):
            raise ValueError(f"line {line}: no tokens and no flops/budget to derive them")
        rows.append(row)
    return FitTable.from_rows(rows)
