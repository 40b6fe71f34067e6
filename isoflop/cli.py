"""The `isoflop` command: parse, call one library function, render with rich.

Heavy imports (torch, matplotlib, scipy, submitit) happen inside the commands
that need them, so `isoflop --help` and `isoflop status` stay fast.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Plan, dispatch, track and fit IsoFLOP scaling-law sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# rich wraps to 80 columns when piped; tables of runs need more
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class _Opts:
    db: Optional[str] = None
    workdir: Optional[str] = None


OPTS = _Opts()


@app.callback()
def main(
    db: Optional[str] = typer.Option(None, "--db", help="SQLAlchemy URL or SQLite path of the store [env ISOFLOP_DB]"),
    workdir: Optional[str] = typer.Option(
        None, "--workdir", help="folder for the store and run folders [env ISOFLOP_WORKDIR; default ./isoflop-work]"
    ),
) -> None:
    OPTS.db, OPTS.workdir = db, workdir


def fail(msg: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def friendly(fn):
    """Turn the library's expected errors into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*a, **k):
        from .plan.grid import PlanError
        from .spec import SpecError
        from .store.engine import StoreError

        try:
            return fn(*a, **k)
        except (SpecError, PlanError, StoreError, ValueError, FileNotFoundError) as e:
            fail(str(e).splitlines()[0] if str(e) else e.__class__.__name__)

    return wrapper


def _engine(create: bool = False):
    from .store.engine import db_url, open_engine

    return open_engine(db_url(OPTS.db, OPTS.workdir), create=create)


def _fmt_n(x: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


# ---------------------------------------------------------------- plan / init / spec-schema


@app.command()
@friendly
def plan(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="sweep spec (.yaml or .toml)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the runs, store nothing"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per run on stdout"),
    force: bool = typer.Option(False, "--force", help="replan a changed spec (keeps unchanged finished runs)"),
    show_command: Optional[str] = typer.Option(None, "--show-command", metavar="RUN", help="print a run's command"),
) -> None:
    """Plan the IsoFLOP grid of a spec and store its runs."""
    from .plan.grid import gpu_hours
    from .plan.grid import plan as plan_runs
    from .spec import load_spec
    from .store.engine import workdir_path

    spec = load_spec(spec_path)
    runs = plan_runs(spec)
    if show_command:
        from .dispatch.command import render_command

        match = [r for r in runs if r.run_id.startswith(show_command)]
        if len(match) != 1:
            fail(f"--show-command {show_command!r} matches {len(match)} runs; give a longer run id prefix")
        rdir = workdir_path(OPTS.workdir) / "runs" / spec.name / match[0].run_id
        print(render_command(spec, match[0].definition | {"run_id": match[0].run_id}, rdir))
        return
    result = None
    if not dry_run:
        from .store.sweeps import save_plan

        result = save_plan(_engine(create=True), spec, runs, workdir_path(OPTS.workdir), force=force)
    if as_json:
        for r in runs:
            print(json.dumps(r.to_json()))
        return
    by_budget: dict[float, list] = {}
    for r in runs:
        by_budget.setdefault(r.budget, []).append(r)
    for budget, rs in by_budget.items():
        t = Table(title=f"budget {budget:.3g} FLOPs ({spec.flops}, N = {spec.params})", title_justify="left")
        for col in ("run", "N", "shape L×d×h", "D", "D/N", "B tok", "lr", "steps", "FLOPs", "dev"):
            t.add_column(col, justify="right" if col not in ("run", "shape L×d×h") else "left")
        if spec.throughput:
            t.add_column("GPU-h", justify="right")
        for r in rs:
            row = [
                r.run_id[:8], _fmt_n(r.params), f"{r.n_layer}×{r.d_model}×{r.n_head}", _fmt_n(r.tokens),
                f"{r.tokens / r.params:.1f}", _fmt_n(r.batch_tokens), f"{r.lr:.3g}", str(r.steps),
                f"{r.flops:.4g}", f"{r.flops_deviation:+.2%}",
            ]
            if spec.throughput:
                row.append(f"{gpu_hours([r], spec.throughput):.3g}")
            t.add_row(*row)
        console.print(t)
    total = gpu_hours(runs, spec.throughput)
    summary = f"{len(runs)} runs over {len(by_budget)} budgets"
    if total is not None:
        summary += f", about {total:.3g} GPU-hours at {spec.throughput:.3g} FLOP/s"
    if result is None:
        console.print(f"[yellow]dry run:[/] {summary}; nothing stored")
    elif result.created:
        console.print(f"[green]planned[/] sweep {spec.name!r}: {summary}")
    elif not result.changed:
        console.print(f"sweep {spec.name!r} is already planned with this spec: {summary}; nothing changed")
    else:
        console.print(
            f"[green]replanned[/] sweep {spec.name!r}: {result.added} new, {result.kept} kept, "
            f"{result.superseded} superseded (kept with their results), {result.deleted} removed (never run)"
        )


def _template_names() -> list[str]:
    from . import TEMPLATES

    return sorted(p.stem for p in TEMPLATES.glob("*.yaml"))


@app.command()
@friendly
def init(
    path: Path = typer.Argument(Path("sweep.yaml"), help="where to write the starter spec"),
    template: str = typer.Option("starter", "--template", "-t", help="a spec template from templates/"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file"),
) -> None:
    """Write a commented starter spec."""
    from . import TEMPLATES

    src = TEMPLATES / f"{template}.yaml"
    if not src.is_file():
        fail(f"no template {template!r}; available: {', '.join(_template_names())}")
    if path.exists() and not overwrite:
        fail(f"{path} exists; pass --overwrite to replace it")
    path.write_text(src.read_text())
    console.print(f"wrote {path} (from template {template!r}); edit it, then `isoflop plan {path}`")


@app.command("spec-schema")
def spec_schema_cmd() -> None:
    """Print the JSON schema of a sweep spec."""
    from .spec import spec_schema

    print(json.dumps(spec_schema(), indent=2))


# ---------------------------------------------------------------- fit


def _parse_window(window: str) -> int | None:
    if window == "all":
        return None
    try:
        k = int(window)
    except ValueError:
        raise ValueError(f"--window must be a number of sizes (>= 3) or 'all', got {window!r}") from None
    if k < 3:
        raise ValueError(f"--window must be at least 3 sizes (a parabola has 3 coefficients), got {k}")
    return k


@app.command()
@friendly
def fit(
    sweep: Optional[str] = typer.Argument(None, help="sweep name in the store (or use --csv)"),
    csv: Optional[Path] = typer.Option(None, "--csv", help="fit results from elsewhere: columns params,tokens,loss[,flops,budget]"),
    window: str = typer.Option("5", "--window", help="sizes around the lowest loss that the parabola fits, or 'all'"),
    minimizer: str = typer.Option("parabola", "--minimizer", help="parabola | akima"),
    keep_flagged: bool = typer.Option(False, "--keep-flagged", help="let flagged budgets into the frontier"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="resamples for the intervals (0: none)"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    predict: List[float] = typer.Option([], "--predict", help="a budget C to predict N_opt, D_opt, L_opt at (repeatable)"),
    holdout_top: int = typer.Option(0, "--holdout-top", help="backtest: fit without the top K budgets, predict them"),
    method: Optional[str] = typer.Option(None, "--method", help="also fit L(N,D) = E + A/N^a + B/D^b: lse | varpro | all"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the IsoFLOP and frontier plots (.png/.svg/.pdf)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Fit per-budget parabolas and the compute-optimal frontier, with bootstrap intervals."""
    if (sweep is None) == (csv is None):
        fail("give either a SWEEP name or --csv FILE")
    if minimizer not in ("parabola", "akima"):
        fail(f"--minimizer must be 'parabola' or 'akima', got {minimizer!r}")
    if method not in (None, "lse", "varpro", "all"):
        fail(f"--method must be lse, varpro or all, got {method!r}")
    if bootstrap < 0 or holdout_top < 0:
        fail("--bootstrap and --holdout-top must be >= 0")
    if any(not (c > 0) for c in predict):
        fail("--predict takes positive FLOP budgets")
    k = _parse_window(window)
    from .fit import FitTable, fit_sweep

    spec = curves = None
    if csv is not None:
        from .fit import read_csv

        table = read_csv(csv)
    else:
        from sqlalchemy.orm import Session

        from .spec import parse_spec
        from .store.results import fit_curves, fit_rows
        from .store.sweeps import get_sweep

        with Session(_engine()) as s:
            sw = get_sweep(s, sweep)
            spec = parse_spec(sw.spec)
            rows = fit_rows(s, sw)
            curves = fit_curves(s, sw) or None
        if not any(r["state"] == "completed" for r in rows):
            fail(f"sweep {sweep!r} has no completed runs yet ({len(rows)} planned); see `isoflop status {sweep}`")
        table = FitTable.from_rows(rows)
    report = fit_sweep(
        table, window=k, minimizer=minimizer, keep_flagged=keep_flagged, bootstrap=bootstrap, seed=seed,
        predict=predict, holdout_top=holdout_top, parametric=method, curves=curves,
    )
    shapes = {}
    if spec is not None:
        from .plan.grid import shape_for_params

        for p in report.predictions:
            try:
                shapes[p.budget] = shape_for_params(spec, p.n_opt)
            except ValueError:
                pass
    written = []
    if plot is not None:
        from .fit.plots import save_plots

        written = save_plots(report, plot)
    if as_json:
        out = report.to_json()
        for p in out.get("predictions") or []:
            if p.get("budget") in shapes:
                p["shape"] = shapes[p["budget"]]
        if written:
            out["plots"] = [str(w) for w in written]
        print(json.dumps(out))
        return
    from .fit.render import render_report

    render_report(report, console)
    for c, sh in shapes.items():
        console.print(
            f"suggested shape at C={c:.3g}: n_layer={sh['n_layer']}, d_model={sh['d_model']}, "
            f"n_head={sh['n_head']} (N={_fmt_n(sh['params'])} {spec.params})"
        )
    for w in written:
        console.print(f"wrote {w}")


def run() -> None:  # pragma: no cover - console entry for `python -m isoflop`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
