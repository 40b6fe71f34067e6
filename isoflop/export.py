"""`isoflop export`: a sweep's runs (and training curves) as CSV, JSON lines or Parquet.

The columns are `records.RUN_COLUMNS` / `records.CURVE_COLUMNS` (README, "Export"). CSV and JSON
lines need nothing beyond the standard library; Parquet needs pyarrow (`isoflop[pandas]`).
A CSV export is a valid `isoflop fit --csv` input that fits to the same result as `fit SWEEP`.

Files are written to a temporary name beside the target and renamed, so an interrupted export
never leaves half a file under the name asked for.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import UserError

FORMATS = ("csv", "parquet", "jsonl")
#: the format a file name asks for, when --format is not given (and what --format must agree with)
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def resolve_format(fmt: Optional[str], out: Optional[Path]) -> str:
    """The format to write: --format if given, else the one -o's extension names, else CSV.

    A --format that contradicts the extension is refused: `-f csv -o runs.parquet` would leave a
    file that every reader of .parquet files rejects."""
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"--format must be csv, parquet or jsonl, got {fmt!r}")
    implied = SUFFIXES.get(out.suffix.lower()) if out is not None else None
    if fmt is None:
        return implied or "csv"
    if implied is not None and implied != fmt:
        raise UserError(f"--format {fmt} contradicts the file name {out.name} ({implied}); "
                        f"drop --format or name the file .{fmt}")
    return fmt


def csv_simulated(path: str | Path) -> bool:
    """Whether a `fit --csv` file is an export of a simulated sweep: it has a `simulated` column
    and every row says true (a file mixing trained and simulated rows is not labelled simulated)."""
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        name = next((f for f in (reader.fieldnames or []) if f.strip().lower() == "simulated"), None)
        if name is None:
            return False
        cells = [(r.get(name) or "").strip().lower() for r in reader]
    return bool(cells) and all(c in ("true", "1") for c in cells)


def curves_path(out: Path) -> Path:
    """Where `--curves` writes the metrics beside the runs file: runs.csv -> runs-curves.csv."""
    return out.with_name(f"{out.stem}-curves{out.suffix}")


def _cell(v: Any) -> Any:
    # a non-finite loss (a diverged run's inf) stays readable by `fit --csv`; None is an empty cell
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return "" if v is None else v


def _csv_bytes(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r[c]) for c in columns])
    return buf.getvalue().encode()


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _jsonl_bytes(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> bytes:
    return "".join(json.dumps({c: _json_value(r[c]) for c in columns}) + "\n" for r in rows).encode()


def _parquet_bytes(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("--format parquet needs pyarrow: pip install 'isoflop[pandas]'") from None
    table = pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows],
                                 schema=None if rows else pa.schema([(c, pa.null()) for c in columns]))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


ENCODERS = {"csv": _csv_bytes, "jsonl": _jsonl_bytes, "parquet": _parquet_bytes}


def encode(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> bytes:
    if fmt not in ENCODERS:
        raise UserError(f"--format must be csv, parquet or jsonl, got {fmt!r}")
    return ENCODERS[fmt](rows, columns)


def _write(path: Path, data: bytes) -> None:
    """Temp file beside `path`, then rename; a path that cannot be written is one UserError line."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a folder; give a file name with -o")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UserError(f"{path}: cannot write ({e.strerror})") from None


def export_sweep(engine: Any, sweep: str, fmt: Optional[str], out: Optional[Path] = None, *,
                 curves: bool = False) -> list[Path]:
    """Write the runs of `sweep` to `out` (stdout when None) and, with curves=True, its training
    curves to `curves_path(out)`. fmt None: from out's extension (CSV when it names none).
    Returns the files written."""
    from .records import CURVE_COLUMNS, RUN_COLUMNS, curve_rows, run_rows

    fmt = resolve_format(fmt, out)
    if out is None and fmt == "parquet":
        raise UserError("--format parquet writes a binary file: give it with -o FILE")
    if out is None and curves:
        raise UserError("--curves writes a second file beside the runs: give the runs file with -o FILE")
    if out is not None and not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such folder")
    # everything is read (and a missing sweep refused) before anything is written
    runs = encode(run_rows(engine, sweep), RUN_COLUMNS, fmt)
    metrics = encode(curve_rows(engine, sweep), CURVE_COLUMNS, fmt) if curves else None
    if out is None:
        sys.stdout.buffer.write(runs)
        sys.stdout.buffer.flush()
        return []
    _write(out, runs)
    written = [out]
    if metrics is not None:
        _write(curves_path(out), metrics)
        written.append(curves_path(out))
    return written
