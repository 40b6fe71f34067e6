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

A row repeated verbatim is refused, naming both lines: counted twice it would weigh its
budget's fit without anyone having run it twice (two seeds differ in their loss).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from ..errors import UserError
from .table import FitTable


class CSVError(UserError, ValueError):
    """A CSV of runs that cannot be fitted; one line naming the file (and line)."""

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


def _number(text: str, column: str, line: int, *, positive: bool, allow_empty: bool,
            allow_inf: bool = False) -> float:
    t = text.strip()
    if t == "" or t.lower() in ("nan", "na", "none", "null"):
        if allow_empty:
            return math.nan
        raise CSVError(f"line {line}: column {column!r} is empty")
    try:
        v = float(t)
    except ValueError:
        raise CSVError(f"line {line}: column {column!r} has non-numeric value {t!r}") from None
    if math.isinf(v) and allow_inf:
        return v   # a diverged run logs inf: kept as a run, excluded from the fit with its reason (like NaN)
    if not math.isfinite(v):
        raise CSVError(f"line {line}: column {column!r} must be finite, got {t!r}")
    if positive and not v > 0:
        raise CSVError(f"line {line}: column {column!r} must be positive, got {t!r}")
    return v


def read_csv(path: str | Path, *, config: str | None = None) -> FitTable:
    """Read runs from a CSV file; raise CSVError naming the file and the problem (one line)."""
    p = Path(path)
    try:
        return _read_csv(p, config)
    except CSVError as e:
        msg = str(e)
        raise CSVError(msg if msg.startswith(f"{p}:") else f"{p}: {msg}") from None
    except OSError as e:
        raise CSVError(f"{p}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise CSVError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except csv.Error as e:
        raise CSVError(f"{p}: not a CSV file ({e})") from None


def _read_csv(p: Path, config: str | None) -> FitTable:
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise CSVError(f"{p}: empty file (no header)")
        lower = {name.strip().lower(): name for name in reader.fieldnames}
        cols: dict[str, str] = {}
        for key, names in ALIASES.items():
            for alias in names:
                if alias in lower:
                    cols[key] = lower[alias]
                    break
        for key in ("params", "loss"):
            if key not in cols:
                raise CSVError(f"{p}: missing column {key!r} (accepted names: {', '.join(ALIASES[key])})")
        if not ({"tokens", "flops", "budget"} & cols.keys()):
            raise CSVError(f"{p}: missing column 'tokens' (or 'flops'/'budget' to derive D = C/(6N))")
        rows_in = list(reader)
    width = len(reader.fieldnames)
    seen: dict[tuple, int] = {}
    for i, r in enumerate(rows_in):
        line = i + 2
        if None in r or None in r.values():  # DictReader's marks of a long and a short row
            n = width + len(r.get(None) or ()) - sum(v is None for k, v in r.items() if k is not None)
            raise CSVError(f"line {line}: {n} field(s), the header has {width}")
        key = tuple(r.values())
        if key in seen:
            raise CSVError(f"lines {seen[key]} and {line} are the same row (duplicate run); remove one")
        seen[key] = line
    if "config" in cols:
        configs = sorted({r[cols["config"]] for r in rows_in})
        if config is None and len(configs) > 1:
            raise CSVError(f"{p}: {len(configs)} configs in the file; pick one with config= (e.g. {configs[0]!r})")
        if config is not None:
            rows_in = [r for r in rows_in if r[cols["config"]] == config]
            if not rows_in:
                raise CSVError(f"{p}: no rows with config {config!r}; known: {', '.join(configs)}")
    elif config is not None:
        raise CSVError(f"{p}: config={config!r} given but the file has no 'config' column")
    if not rows_in:
        raise CSVError(f"{p}: no rows")
    rows = []
    for i, r in enumerate(rows_in):
        line = i + 2
        row: dict[str, object] = {
            "params": _number(r[cols["params"]], cols["params"], line, positive=True, allow_empty=False),
            "loss": _number(r[cols["loss"]], cols["loss"], line, positive=True, allow_empty=True, allow_inf=True),
        }
        for key in ("tokens", "flops", "budget"):
            if key in cols:
                row[key] = _number(r[cols[key]], cols[key], line, positive=True, allow_empty=key != "tokens")
        for key in ("run_id", "state", "reason"):
            if key in cols:
                row[key] = r[cols[key]]
        if "tokens" not in row and math.isnan(float(row.get("flops", math.nan))) and math.isnan(float(row.get("budget", math.nan))):
            raise CSVError(f"line {line}: no tokens and no flops/budget to derive them")
        rows.append(row)
    return FitTable.from_rows(rows)
