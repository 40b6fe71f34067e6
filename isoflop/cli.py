"""The `isoflop` command: parse, call one library function, render with rich.

Heavy imports (torch, matplotlib, scipy, submitit) happen inside the commands
that need them, so `isoflop --help` and `isoflop status` stay fast.
"""
from __future__ import annotations

import errno
import functools
import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_examples import add_examples
from .resources import spec_templates
from .errors import UserError

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
    from rich.markup import escape

    # the message quotes user input (paths, values): none of it is markup
    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# what a user's path can do wrong; any other OSError (and any other exception) is a bug
_USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP}


def friendly(fn):
    """A UserError, or an OSError about a path the user gave, becomes one line on stderr and exit
    code 2; every other exception is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except UserError as e:
            fail(str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__)
        except OSError as e:
            if e.errno not in _USER_ERRNOS or not e.filename:
                raise
            fail(f"{e.filename}: {e.strerror}" + (f" (-> {e.filename2})" if e.filename2 else ""))

    return wrapper


def _check(ok: bool, option: str, value, want: str) -> None:
    if not ok:
        fail(f"{option} must be {want}, got {value!r}")


def _positive(option: str, value: Optional[float], top: float = math.inf) -> None:
    """A finite number in (0, top] (None: the option was not given)."""
    if value is not None:
        _check(math.isfinite(value) and 0 < value <= top, option, value,
               "a positive finite number" + (f" (at most {top:g})" if top < math.inf else ""))


def _engine(create: bool = False, write: bool = True):
    from .store.engine import db_url, open_engine

    return open_engine(db_url(OPTS.db, OPTS.workdir), create=create, write=write)


def _fmt_n(x: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


# ---------------------------------------------------------------- plan / init / spec-schema


def _render_every_run(spec, runs, template, runs_dir: Path) -> None:
    """Render each run's command once: a template's fail() or a missing variable, which can
    depend on a run's values (a batch that gradient accumulation does not divide), stops the
    plan instead of failing its jobs one by one on the cluster."""
    from .dispatch.command import render_command

    for r in runs:
        try:
            render_command(r.definition | {"run_id": r.run_id, "sweep": spec.name}, runs_dir / r.run_id,
                           template=template)
        except UserError as e:
            raise type(e)(f"run {r.run_id} (budget {r.budget:.3g}, N={r.params:,}): {e}") from None


def _resolved(spec):
    """The spec with its `{from_sweep: NAME}` rules resolved from the store (iterate.resolve_rules)."""
    from .iterate import resolve_rules

    try:
        engine = _engine(write=False)
    except UserError as e:
        srcs = sorted({r.from_sweep for r in (spec.lr, spec.batch.rule) if hasattr(r, "from_sweep")})
        why = str(e).split(": run `isoflop plan SPEC` first")[0]
        raise type(e)(f"the spec's {{from_sweep: {', '.join(srcs)}}} reads the fitted law of sweep "
                      f"{', '.join(map(repr, srcs))} from its store, and there is {why}; pass the --workdir "
                      "(or --db) of the store that holds it") from None
    return resolve_rules(spec, engine)


@app.command()
@friendly
def plan(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="sweep spec (.yaml or .toml)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the runs, store nothing"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per run on stdout"),
    force: bool = typer.Option(False, "--force", help="replan a changed spec (keeps unchanged finished runs)"),
    show_command: Optional[str] = typer.Option(None, "--show-command", metavar="RUN", help="print a run's command"),
) -> None:
    """Plan the IsoFLOP grid of a spec and store its runs (one sweep per setting where `optimizer:` lists several)."""
    from .spec import load_specs

    specs = load_specs(spec_path)
    if len(specs) > 1:  # a setting that cannot be planned stops them all before any is stored
        from .plan.grid import plan as plan_runs

        for s in specs:
            if not s.uses_from_sweep:
                plan_runs(s)
    shown = [_plan_one(s, dry_run, as_json, force, show_command, several=len(specs) > 1) for s in specs]
    if show_command and not any(shown):
        fail(f"--show-command {show_command!r} matches no run of {', '.join(s.name for s in specs)}")
    if len(specs) > 1 and not (as_json or show_command):
        console.print(f"{len(specs)} sweeps share budgets and shapes: `isoflop compare {' '.join(s.name for s in specs)}`")


def _plan_one(spec, dry_run: bool, as_json: bool, force: bool, show_command: Optional[str], several: bool) -> bool:
    """Plan one sweep (print, store); with show_command print that run's command instead: whether it did."""
    from .plan.grid import gpu_hours
    from .plan.grid import plan as plan_runs
    from .store.engine import workdir_path

    law_notes: list[str] = []
    if spec.uses_from_sweep:
        spec, law_notes = _resolved(spec)
    if spec.trackers.on:  # a missing tracker package: one line here, not a warning in every job
        from .train.trackers import check_installed

        check_installed(spec.trackers)
    template = None
    if spec.trainer.template != "builtin":
        from .dispatch.command import load_template

        template = load_template(spec.trainer.template)  # a bad template fails here, not in a job
    if spec.trainer.template == "simulate":  # its vars are the law every run draws from: check them once here
        from .train.simulate_run import SimulateError, surface_of

        try:
            surface_of(spec.trainer.vars)
        except SimulateError as e:
            fail(f"simulate: {e}")
    runs = plan_runs(spec)
    if template is not None:
        _render_every_run(spec, runs, template, workdir_path(OPTS.workdir) / "runs" / spec.name)
    if show_command:
        from .dispatch.command import render_command

        match = [r for r in runs if r.run_id.startswith(show_command)]
        if several and not match:
            return False  # another optimizer setting's sweep has it
        if not match:
            fail(f"--show-command {show_command!r} matches no run of sweep {spec.name!r}; "
                 "`--dry-run` lists the run ids (their first 8 characters)")
        if len(match) > 1:
            fail(f"--show-command {show_command!r} matches {len(match)} runs; give a longer run id prefix")
        rdir = workdir_path(OPTS.workdir) / "runs" / spec.name / match[0].run_id
        print(render_command(match[0].definition | {"run_id": match[0].run_id, "sweep": spec.name}, rdir))
        return True
    result = None
    if not dry_run:
        from .store.engine import db_url, removed_on_error
        from .store.sweeps import save_plan

        with removed_on_error(db_url(OPTS.db, OPTS.workdir)):
            engine = _engine(create=True)
            try:
                result = save_plan(engine, spec, runs, workdir_path(OPTS.workdir), force=force)
            finally:
                engine.dispose()  # closes the file, so that a failed new store is really gone
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
    for note in law_notes:
        console.print(f"law: {note}")
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
        if result.superseded_active:
            console.print(f"{result.superseded_active} superseded run(s) still have jobs; "
                          f"`isoflop cancel {spec.name} --superseded` stops them")


def _template_names() -> list[str]:
    from . import TEMPLATES

    return sorted(p.stem for p in TEMPLATES.glob("*.yaml"))


@app.command()
@friendly
def init(
    path: Path = typer.Argument(Path("sweep.yaml"), help="where to write the starter spec"),
    template: str = typer.Option("starter", "--template", "-t",
                                 help=f"a shipped spec template: {', '.join(spec_templates())}"),
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
@friendly
def spec_schema_cmd() -> None:
    """Print the JSON schema of a sweep spec."""
    from .spec import spec_schema

    print(json.dumps(spec_schema(), indent=2))


# ---------------------------------------------------------------- dispatch: profiles / submit / status / cancel / retry


def _dispatch_call(fn, *a, **k):
    """Run a dispatch library call; its expected errors become one line and exit code 2."""
    from .dispatch.slurm import SchedulerError
    from .dispatch.submit import DispatchError

    try:
        return fn(*a, **k)
    except (DispatchError, SchedulerError) as e:
        fail(str(e).splitlines()[0] if str(e) else e.__class__.__name__)


def _fmt_s(s: Optional[float]) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


_STATE_STYLE = {"completed": "green", "running": "cyan", "queued": "blue", "submitting": "blue", "failed": "red",
                "lost": "red", "diverged": "magenta", "cancelled": "yellow", "planned": "dim"}


def _status_renderable(st, *, all_runs: bool = False):
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    parts = []
    counts = ", ".join(f"[{_STATE_STYLE.get(k, '')}]{v} {k}[/]" for k, v in sorted(st.counts.items()))
    parts.append(Text.from_markup(f"sweep [bold]{st.sweep}[/]: {len(st.runs)} runs: {counts}  "
                                  f"[dim](scheduler: {st.scheduler})[/]"))
    if getattr(st, "simulated", False):
        parts.append(Text.from_markup("[bold magenta]SIMULATED[/] sweep (trainer template 'simulate'): "
                                      "losses drawn from a stated law, nothing was trained"))
    states = ("completed", "diverged", "running", "queued", "submitting", "planned", "failed", "lost", "cancelled")
    t = Table(title=None, show_edge=False)
    t.add_column("budget", justify="right")
    t.add_column("runs", justify="right")
    shown = [s for s in states if any(b.counts.get(s) for b in st.budgets)]
    for s in shown:
        t.add_column(s, justify="right", style=_STATE_STYLE.get(s, ""))
    t.add_column("progress", justify="left")
    t.add_column("ETA", justify="right")
    for b in st.budgets:
        t.add_row(f"{b.budget:.3g}", str(b.runs), *[str(b.counts.get(s, 0) or "") for s in shown],
                  ProgressBar(total=1.0, completed=b.progress, width=20), _fmt_s(b.eta_s))
    parts.append(t)
    running = [r for r in st.runs if r.state == "running"]
    if running:
        rt = Table(title="running", title_justify="left", show_edge=False)
        for c in ("run", "budget", "N", "job", "progress", "tokens", "tok/s", "loss", "ETA"):
            rt.add_column(c, justify="left" if c in ("run", "job", "progress") else "right")
        for r in running[:50]:
            rt.add_row(r.run_id[:8], f"{r.budget:.3g}", _fmt_n(r.params), r.job_id or "-",
                       ProgressBar(total=1.0, completed=r.progress, width=20),
                       f"{_fmt_n(r.tokens_done or 0)}/{_fmt_n(r.tokens)}",
                       _fmt_n(r.tokens_per_s) if r.tokens_per_s else "-",
                       f"{r.train_loss:.3f}" if r.train_loss is not None else "-", _fmt_s(r.eta_s))
        if len(running) > 50:
            rt.caption = f"... and {len(running) - 50} more running"
        parts.append(rt)
    bad = [r for r in st.runs if r.state in ("failed", "lost", "diverged")]
    if bad:
        parts.append(Text.from_markup("[bold]problems[/]"))
        for r in bad[:20]:
            parts.append(Text.assemble("  ", (r.state, _STATE_STYLE[r.state]),
                                       f" {r.run_id[:8]} (budget {r.budget:.3g}, attempt {r.attempt or '-'}, "
                                       f"job {r.job_id or '-'}): {r.reason or ''}"))
            for line in r.log_tail[-4:]:
                parts.append(Text(f"      | {line}", style="dim"))
        if len(bad) > 20:
            parts.append(Text(f"  ... and {len(bad) - 20} more (see --json)"))
    if all_runs:
        at = Table(title="runs", title_justify="left", show_edge=False)
        for c in ("run", "budget", "N", "state", "attempt", "job", "step", "val loss", "tok/s", "MFU"):
            at.add_column(c)
        for r in st.runs:
            at.add_row(r.run_id[:8], f"{r.budget:.3g}", _fmt_n(r.params), r.state, str(r.attempt or "-"),
                       r.job_id or "-", f"{r.step_done or 0}/{r.steps}",
                       f"{r.val_loss:.4f}" if r.val_loss is not None else "-",
                       _fmt_n(r.tokens_per_s) if r.tokens_per_s else "-",
                       f"{r.mfu:.1%}" if r.mfu is not None else "-")
        parts.append(at)
    for w in st.warnings:
        parts.append(Text(f"note: {w}", style="yellow"))
    return Group(*parts)


def _watch(engine, sweep: str, interval: float, *, until_done: bool = True, all_runs: bool = False):
    from rich.live import Live

    from .dispatch.sync import sync_sweep

    st = _dispatch_call(sync_sweep, engine, sweep)
    try:
        with Live(_status_renderable(st, all_runs=all_runs), console=console, refresh_per_second=2) as live:
            while not (until_done and st.finished):
                import time

                time.sleep(interval)
                st = _dispatch_call(sync_sweep, engine, sweep)
                live.update(_status_renderable(st, all_runs=all_runs))
    except KeyboardInterrupt:
        pass
    return st


@app.command()
@friendly
def profiles(as_json: bool = typer.Option(False, "--json", help="one JSON object per profile")) -> None:
    """List the cluster profiles: the shipped ones, and yours in $ISOFLOP_PROFILES folders (a name there wins)."""
    from .dispatch.profiles import ProfileError, list_profiles

    found = list_profiles()
    if as_json:
        for p in found:
            print(json.dumps({"name": getattr(p, "profile_name", None), "error": str(p)} if isinstance(p, ProfileError) else
                             {**p.model_dump(mode="json"), "path": p.path}))
        return
    t = Table(show_edge=False)
    for c in ("name", "executor", "partition", "GPUs/run", "GPUs/node", "max time", "path"):
        t.add_column(c)
    for p in found:
        if isinstance(p, ProfileError):
            t.add_row(f"{getattr(p, 'profile_name', '?')} [red](invalid)[/]", "", "", "", "", "", str(p))
            continue
        t.add_row(p.name, p.executor, p.partition or "-", str(p.gpus_per_run), str(p.gpus_per_node or "-"),
                  _fmt_s(p.max_time_minutes * 60) if p.executor == "slurm" else "-", str(p.path))
    console.print(t)
    console.print("use one with `isoflop submit SWEEP --profile NAME` (or --profile ./my.yaml)")


@app.command()
@friendly
def submit(
    sweep: str = typer.Argument(..., help="sweep name in the store"),
    profile: str = typer.Option("local", "--profile", "-p", help="cluster profile: a name (`isoflop profiles`) or a YAML path"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the jobs, sbatch script and GPU-hours; submit and store nothing"),
    max_runs: Optional[int] = typer.Option(None, "--max-runs", help="submit at most K runs"),
    budget: Optional[float] = typer.Option(None, "--budget", help="only the runs of this budget C"),
    wait: bool = typer.Option(False, "--wait", help="show progress until the sweep's runs end"),
    interval: float = typer.Option(5.0, "--interval", help="--wait: seconds between scheduler polls"),
) -> None:
    """Submit every run that is not finished and not queued/running (Slurm arrays or local processes)."""
    from .dispatch.profiles import load_profile
    from .dispatch.submit import submit_sweep

    if max_runs is not None and max_runs < 1:
        fail("--max-runs must be at least 1")
    _positive("--budget", budget)
    _positive("--interval", interval)
    prof = load_profile(profile)
    engine = _engine()
    res = _dispatch_call(submit_sweep, engine, sweep, prof, dry_run=dry_run, max_runs=max_runs, budget=budget)
    hours = "GPU-hours" if prof.gpus_per_run else "CPU-hours"
    if res.over_cap:
        console.print(f"[red]{len(res.over_cap)} run(s) failed:[/] they used up max_attempts "
                      f"({prof.max_attempts}); `isoflop retry {sweep}` resets them")
    if not res.runs:
        skipped = ", ".join(f"{v} {k}" for k, v in sorted(res.skipped.items())) or "none"
        console.print(f"nothing to submit for sweep {sweep!r} (runs by state: {skipped})")
        # a scancel from outside leaves runs cancelled: they are not submitted until reset
        again = [f"`isoflop retry {sweep}{flag}` ({res.skipped[st]} {st})" for st, flag in
                 (("cancelled", " --cancelled"), ("failed", ""), ("lost", " --lost")) if res.skipped.get(st)]
        if again:
            console.print("to run them again: " + ", ".join(again) + ", then submit")
        return
    t = Table(show_edge=False, title="dry run: nothing submitted, nothing stored" if dry_run else None,
              title_justify="left")
    for c in ("job name", "jobs", "runs", "time/job", "job ids"):
        t.add_column(c)
    for a in res.arrays:
        ids = a.job_ids
        idtxt = "-" if not ids else (ids[0] if len(ids) == 1 else f"{ids[0]} .. {ids[-1]}")
        t.add_row(a.name, str(len(a.jobs)), str(sum(len(j.run_ids) for j in a.jobs)), _fmt_s(a.minutes * 60), idtxt)
    console.print(t)
    if dry_run and res.sbatch_script:
        console.print("[bold]sbatch script[/] (first array):")
        console.print(res.sbatch_script, markup=False, highlight=False)
    verb = "would submit" if dry_run else "[green]submitted[/]"
    from .records import sweep_simulated

    # a simulated run draws its loss in milliseconds: the profile's estimate would be for real training
    cost = ("SIMULATED: nothing trains, losses are drawn from the spec's law" if sweep_simulated(engine, sweep)
            else f"about {res.gpu_hours:.3g} {hours}")
    console.print(f"{verb} {len(res.runs)} run(s) of sweep {sweep!r} in {res.jobs} job(s) "
                  f"({prof.executor}, profile {prof.name!r}); {cost}")
    if dry_run:
        return
    if wait:
        st = _watch(engine, sweep, interval)
        if st.counts.get("failed") or st.counts.get("lost"):
            raise typer.Exit(1)
    else:
        console.print(f"follow with `isoflop status {sweep} --watch`")


@app.command()
@friendly
def status(
    sweep: str = typer.Argument(..., help="sweep name in the store"),
    watch: bool = typer.Option(False, "--watch", help="refresh until no run is active (Ctrl-C stops watching)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object: per-run state, progress, loss; per-budget counts"),
    all_runs: bool = typer.Option(False, "--runs", help="also list every run"),
    interval: float = typer.Option(5.0, "--interval", help="--watch: seconds between polls"),
) -> None:
    """Sync scheduler state and run files into the store; show progress per budget."""
    from .dispatch.sync import read_status, sync_sweep
    from .store.engine import is_read_only

    _positive("--interval", interval)
    engine = _engine(write=False)
    if is_read_only(engine):  # nothing can be synced into it: show what it holds
        st = read_status(engine, sweep, warnings=("the store's folder is read-only: showing the stored state, "
                                                  "without asking the scheduler or reading run files",))
    elif watch and not as_json:
        _watch(engine, sweep, interval, all_runs=all_runs)
        return
    else:
        st = _dispatch_call(sync_sweep, engine, sweep)
    if as_json:
        print(json.dumps(st.to_json()))
        return
    console.print(_status_renderable(st, all_runs=all_runs))


@app.command()
@friendly
def cancel(
    sweep: str = typer.Argument(..., help="sweep name in the store"),
    budget: Optional[float] = typer.Option(None, "--budget", help="only the runs of this budget C"),
    run_ids: List[str] = typer.Option([], "--run", help="only this run (id or unique prefix; repeatable)"),
    superseded: bool = typer.Option(False, "--superseded",
                                    help="stop the jobs of superseded runs instead (the runs stay superseded)"),
) -> None:
    """Cancel runs that are not finished (scancel / stop local jobs); they become `cancelled`."""
    from .dispatch.control import cancel_sweep

    _positive("--budget", budget)
    res = _dispatch_call(cancel_sweep, _engine(), sweep, budget=budget, run_ids=run_ids or None, superseded=superseded)
    if not res.runs:
        console.print(f"no {'superseded run with a job' if superseded else 'unfinished run'} matched; nothing cancelled")
        return
    if superseded:
        console.print(f"[yellow]stopped[/] the jobs of {len(res.runs)} superseded run(s)"
                      + (f": job(s) {', '.join(res.jobs)}" if res.jobs else "") + "; they stay superseded")
        return
    console.print(f"[yellow]cancelled[/] {len(res.runs)} run(s)"
                  + (f"; stopped job(s) {', '.join(res.jobs)}" if res.jobs else "")
                  + (f"; {len(res.marked)} run(s) stopped inside packed jobs" if res.marked else ""))
    console.print(f"`isoflop retry {sweep} --cancelled` makes them submittable again")


@app.command()
@friendly
def retry(
    sweep: str = typer.Argument(..., help="sweep name in the store"),
    failed: bool = typer.Option(False, "--failed", help="retry failed runs"),
    diverged: bool = typer.Option(False, "--diverged", help="retry diverged runs (from scratch)"),
    lost: bool = typer.Option(False, "--lost", help="retry lost runs (resume from their checkpoint)"),
    cancelled: bool = typer.Option(False, "--cancelled", help="retry cancelled runs"),
    lr_scale: Optional[float] = typer.Option(None, "--lr-scale", help="multiply the learning rate (e.g. 0.5); restarts from scratch"),
    budget: Optional[float] = typer.Option(None, "--budget", help="only the runs of this budget C"),
    run_ids: List[str] = typer.Option([], "--run", help="only this run (id or prefix; repeatable)"),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="also submit them now with this profile"),
) -> None:
    """Reset failed/lost (default), diverged or cancelled runs so the next submit runs them again."""
    from .dispatch.control import retry_sweep

    states = [s for s, on in (("failed", failed), ("diverged", diverged), ("lost", lost), ("cancelled", cancelled)) if on]
    states = states or ["failed", "lost"]
    _positive("--budget", budget)
    _positive("--lr-scale", lr_scale, top=1e3)
    engine = _engine()
    res = _dispatch_call(retry_sweep, engine, sweep, states=states, lr_scale=lr_scale, budget=budget,
                         run_ids=run_ids or None)
    if not res.runs:
        console.print(f"no run of sweep {sweep!r} is {' or '.join(states)}; nothing to retry")
        return
    console.print(f"reset {len(res.runs)} run(s) to planned"
                  + (f" with lr x{lr_scale:g}" if lr_scale else "")
                  + (f"; moved the old results/checkpoints of {len(res.moved_aside)} into attempt-N/" if res.moved_aside else ""))
    if profile:
        from .dispatch.profiles import load_profile
        from .dispatch.submit import submit_sweep

        prof = load_profile(profile)
        sub = _dispatch_call(submit_sweep, engine, sweep, prof)
        console.print(f"[green]submitted[/] {len(sub.runs)} run(s) in {sub.jobs} job(s) (profile {prof.name!r})")
    else:
        console.print(f"submit them with `isoflop submit {sweep} --profile P`")



# ---------------------------------------------------------------- fit


def _parse_window(window: str) -> int | None:
    if window == "all":
        return None
    try:
        k = int(window)
    except ValueError:
        fail(f"--window must be a number of sizes (>= 3) or 'all', got {window!r}")
    if k < 3:
        fail(f"--window must be at least 3 sizes (a parabola has 3 coefficients), got {k}")
    return k


@app.command()
@friendly
def fit(
    sweep: Optional[str] = typer.Argument(None, help="sweep name in the store (or use --csv)"),
    csv: Optional[Path] = typer.Option(None, "--csv", help="fit results from elsewhere: columns params,tokens,loss[,flops,budget]"),
    window: str = typer.Option("5", "--window", help="with --minimizer parabola: sizes around the lowest loss it fits, or 'all' (refused with akima)"),
    minimizer: str = typer.Option("akima", "--minimizer", help="akima (default; see README) | parabola"),
    keep_flagged: bool = typer.Option(False, "--keep-flagged", help="let flagged budgets into the frontier"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="resamples for the intervals (0: none)"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    predict: List[float] = typer.Option([], "--predict", help="a budget C to predict N_opt, D_opt, L_opt at (repeatable)"),
    holdout_top: int = typer.Option(0, "--holdout-top", help="backtest: fit without the top K budgets, predict them"),
    method: str = typer.Option("auto", "--method", help="fit L(N,D) = E + A/N^a + B/D^b: auto (lse with >= 3 budgets) | lse | varpro | all | none"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the IsoFLOP and frontier plots: X.png gives X-isoflops.png and X-frontier.png (.png/.svg/.pdf)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Fit each budget's IsoFLOP minimum (Akima spline by default) and the compute-optimal frontier, with
    seed-noise bootstrap intervals and predictions at new budgets."""
    if (sweep is None) == (csv is None):
        fail("give either a SWEEP name or --csv FILE")
    if minimizer not in ("parabola", "akima"):
        fail(f"--minimizer must be 'parabola' or 'akima', got {minimizer!r}")
    if method not in ("auto", "lse", "varpro", "all", "none"):
        fail(f"--method must be auto, lse, varpro, all or none, got {method!r}")
    if bootstrap < 0 or holdout_top < 0:
        fail("--bootstrap and --holdout-top must be >= 0")
    if 0 < bootstrap < 20:
        fail(f"--bootstrap {bootstrap} is too few for a 5–95% interval: give at least 20 (default 1000), or 0 for none")
    for c in predict:
        _positive("--predict", c)
    _check(0 <= seed < 2**32, "--seed", seed, "within [0, 2^32)")
    if plot is not None:
        _check(plot.suffix.lower() in (".png", ".svg", ".pdf"), "--plot", str(plot), "a .png, .svg or .pdf file")
    k = _parse_window(window)
    if minimizer == "akima" and window != "5":
        fail(f"--window {window} applies to --minimizer parabola; the Akima minimizer (default) uses every size")
    from .api import fit_report

    # one code path with `isoflop report` and the notebook API (isoflop.fit_result)
    res = fit_report(sweep, csv=csv, engine=None if csv is not None else _engine(write=False),
                     window="all" if k is None else k, minimizer=minimizer, keep_flagged=keep_flagged,
                     bootstrap=bootstrap, seed=seed, predict=predict, holdout_top=holdout_top, method=method)
    report, spec, shapes, simulated = res.report, res.spec, res.shapes, res.simulated
    written = []
    if plot is not None:
        from .fit.plots import save_plots

        written = save_plots(report, plot)
        if report.hparams is not None:
            from .fit.hparams_render import save_hparams_plot

            written.append(save_hparams_plot(report.hparams, plot))
    if as_json:
        out = res.json
        if written:
            out["plots"] = [str(w) for w in written]
        print(json.dumps(out))
        return
    from .fit.render import render_report

    if simulated:
        console.print("[bold magenta]SIMULATED[/] sweep (trainer template 'simulate'): losses drawn from a stated "
                      "law, nothing was trained")
    render_report(report, console)
    if report.hparams is not None:
        from .fit.hparams_render import render_hparams

        render_hparams(report.hparams, console)
    for c, sh in shapes.items():
        console.print(
            f"suggested shape at C={c:.3g}: n_layer={sh['n_layer']}, d_model={sh['d_model']}, "
            f"n_head={sh['n_head']} (N={_fmt_n(sh['params'])} {spec.params})"
        )
    for w in written:
        console.print(f"wrote {w}")


# ---------------------------------------------------------------- export / report


@app.command()
@friendly
def export(
    sweep: str = typer.Argument(..., help="sweep name in the store"),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="csv | parquet | jsonl (parquet needs isoflop[pandas]); default: from -o's extension, else csv"),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="file to write (default: stdout; parquet needs one)"),
    curves: bool = typer.Option(False, "--curves", help="also write the training curves to FILE-curves.EXT"),
) -> None:
    """Write a sweep's runs (every ledger column, state, loss, provenance) as CSV, Parquet or JSON lines;
    the columns are in the README ("Export"). A CSV export is a `fit --csv` input: same fit as `fit SWEEP`."""
    from .export import export_sweep

    for w in export_sweep(_engine(write=False), sweep, fmt, out, curves=curves):
        err_console.print(f"wrote {w}", highlight=False)


@app.command()
@friendly
def report(
    sweep: str = typer.Argument(..., help="sweep name in the store"),
    out: Path = typer.Option(..., "--output", "-o", help="the .html file to write"),
    predict: List[float] = typer.Option([], "--predict", help="a budget C to predict N_opt, D_opt, L_opt at (repeatable)"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="resamples for the intervals (0: none)"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    minimizer: str = typer.Option("akima", "--minimizer", help="akima (default) | parabola"),
    method: str = typer.Option("auto", "--method", help="parametric L(N,D): auto | lse | varpro | all | none"),
    keep_flagged: bool = typer.Option(False, "--keep-flagged", help="let flagged budgets into the frontier"),
) -> None:
    """Write one self-contained HTML page (figures inline, nothing fetched when opened): the spec, the
    runs with their states, the IsoFLOP profiles, the frontier with bands, predictions, flags and
    exclusions. Its numbers are those of `isoflop fit --json` with the same options."""
    from .report_html import write_report

    path = write_report(_engine(write=False), sweep, out, predict=predict, bootstrap=bootstrap, seed=seed,
                        minimizer=minimizer, method=method, keep_flagged=keep_flagged)
    console.print(f"wrote {path}")


# ---------------------------------------------------------------- extend


@app.command()
@friendly
def extend(
    sweep: str = typer.Argument(..., help="sweep name in the store"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the runs it would add and their GPU-hours; store nothing"),
    budget: Optional[float] = typer.Option(None, "--budget", help="add this budget C, centred on the predicted N_opt"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="resamples of the fit it decides from"),
) -> None:
    """Add runs where the fit says the sweep is short: sizes beyond a budget whose minimum is at an edge,
    the next lr/batch multiplier beyond a cell's edge, or (--budget) a new budget. Existing runs stay."""
    from .iterate import extend_sweep
    from .store.engine import workdir_path

    _positive("--budget", budget)
    _check(bootstrap == 0 or bootstrap >= 20, "--bootstrap", bootstrap, "0 or at least 20")
    res = extend_sweep(_engine(), sweep, workdir_path(OPTS.workdir), budget=budget, dry_run=dry_run,
                       bootstrap=bootstrap)
    for note in res.notes:
        console.print(note)
    waiting = (f"{res.unfinished} run(s) added by an earlier extend are not finished yet (submit them: "
               f"`isoflop submit {sweep}`); " if res.unfinished else "")
    if not res.added:
        console.print(f"sweep {sweep!r}: {waiting}" + (
            "nothing more to add until they finish" if res.waiting else
            "every budget's minimum and every cell's optimum is bracketed; nothing to add"))
        return
    t = Table(title=f"{'would add' if dry_run else 'added'} {len(res.added)} run(s), by size", title_justify="left")
    for c in ("budget", "point", "N", "shape L×d×h", "runs", "lr", "B tok", "first run"):
        t.add_column(c, justify="left" if c in ("shape L×d×h", "first run") else "right")
    sizes: dict[tuple, list] = {}
    for r in res.added:
        sizes.setdefault((r.budget, r.point, r.n_layer, r.d_model), []).append(r)
    for (b, point, _, _), rs in sizes.items():
        r, lrs, bs = rs[0], sorted({x.lr for x in rs}), sorted({x.batch_tokens for x in rs})
        t.add_row(f"{b:.3g}", str(point), _fmt_n(r.params), f"{r.n_layer}×{r.d_model}×{r.n_head}", str(len(rs)),
                  f"{lrs[0]:.3g}" + (f"–{lrs[-1]:.3g}" if len(lrs) > 1 else ""),
                  _fmt_n(bs[0]) + (f"–{_fmt_n(bs[-1])}" if len(bs) > 1 else ""), r.run_id[:8])
    console.print(t)
    for why in sorted({e.why for e in res.extensions}):
        console.print(f"  why: {why}")
    cost = (f"about {res.gpu_hours:.3g} GPU-hours" if res.gpu_hours is not None
            else f"{res.flops:.3g} FLOPs (set `throughput:` in the spec for GPU-hours)")
    if dry_run:
        console.print(f"[yellow]dry run:[/] {len(res.added)} run(s), {cost}; nothing stored")
    else:
        console.print(f"[green]extended[/] sweep {sweep!r}: {len(res.added)} new run(s), {cost}; existing runs "
                      f"untouched. Submit them with `isoflop submit {sweep}`. The stored spec now has `extend:` "
                      f"entries that your spec file lacks: `isoflop spec {sweep} -o FILE` writes it back")
    if waiting:
        console.print(waiting.rstrip("; "))


@app.command("spec")
@friendly
def spec_cmd(
    sweep: str = typer.Argument(..., help="sweep name in the store"),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="write the YAML to this file (default: stdout)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing -o file"),
) -> None:
    """Print a sweep's stored spec as YAML: with the `extend:` entries and resolved `from_sweep` laws,
    so that `isoflop plan` of it is a no-op (the spec file to keep after `isoflop extend`)."""
    from .iterate import stored_spec_yaml

    text = stored_spec_yaml(_engine(write=False), sweep)
    if out is None:
        print(text, end="")
        return
    if out.exists() and (out.is_dir() or not overwrite):
        fail(f"{out} exists; pass --overwrite to replace it" if not out.is_dir() else f"-o {out} is a folder")
    try:
        out.write_text(text)
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror or e}")
    console.print(f"wrote {out}; `isoflop plan {out}` changes nothing")


# ---------------------------------------------------------------- design


@app.command()
@friendly
def design(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="sweep spec (.yaml or .toml); nothing is stored"),
    law: str = typer.Option(..., "--law", help="the assumed truth: E=…,A=…,B=…,alpha=…,beta=… of L = E + A/N^α + B/D^β"),
    noise: float = typer.Option(..., "--noise", help="σ of one run's final loss (seed noise)"),
    target: Optional[float] = typer.Option(None, "--target", help="budget C to predict at (default: 10× the largest)"),
    sims: int = typer.Option(16, "--sims", help="simulated sweeps per variant"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="resamples per simulated fit"),
    no_variants: bool = typer.Option(False, "--no-variants", help="only the spec as planned"),
    seed: int = typer.Option(0, "--seed", help="seed of the simulated noise"),
    minimizer: str = typer.Option("akima", "--minimizer", help="the fit's per-budget minimizer: akima (default) | parabola"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Simulate the planned sweep many times (no training), fit each, and show the precision it buys:
    interval widths of the exponent, N_opt and L_opt at the target, flagged budgets, GPU-hours, per variant."""
    from .design import design as run_design, parse_law, render_design
    from .spec import load_spec

    _positive("--target", target)
    _check(math.isfinite(noise) and noise >= 0, "--noise", noise, "a finite number >= 0")
    _check(2 <= sims <= 10_000, "--sims", sims, "within [2, 10000]")
    _check(bootstrap == 0 or 20 <= bootstrap <= 100_000, "--bootstrap", bootstrap, "0 or within [20, 100000]")
    spec = load_spec(spec_path)
    if spec.uses_from_sweep:
        spec, _ = _resolved(spec)
    rep = run_design(spec, parse_law(law), noise, target=target, sims=sims, bootstrap=bootstrap,
                     seed=seed, compare=not no_variants, minimizer=minimizer)
    if as_json:
        print(json.dumps(rep.to_json()))
        return
    render_design(rep, console)


# ---------------------------------------------------------------- compare


def _compare_input(arg: str):
    """(name, FitTable) of one `compare` argument: a CSV path (`fit --csv` format) or a sweep in the store."""
    from .fit import FitTable

    path = Path(arg)
    if path.suffix.lower() == ".csv" or path.is_file():
        from .fit import read_csv

        return path.stem, read_csv(path)
    from .store.results import fit_inputs

    _, rows, _ = fit_inputs(_engine(write=False), arg)
    if not any(r["state"] == "completed" for r in rows):
        fail(f"sweep {arg!r} has no completed runs yet ({len(rows)} planned); see `isoflop status {arg}`")
    return arg, FitTable.from_rows(rows)


@app.command()
@friendly
def compare(
    sweeps: List[str] = typer.Argument(..., help="two or more sweep names or CSV files; the first is the reference"),
    window: str = typer.Option("5", "--window", help="sizes around the lowest loss that the parabola fits, or 'all'"),
    minimizer: str = typer.Option("akima", "--minimizer", help="akima (default) | parabola"),
    keep_flagged: bool = typer.Option(False, "--keep-flagged", help="let flagged budgets into the frontiers"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="resamples per sweep for the joint intervals (0: none)"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap (sweep i uses seed + i)"),
    predict: List[float] = typer.Option([], "--predict", help="also give the multiplier at this budget C (repeatable)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the comparison figure (.png/.svg/.pdf)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Which sweep scales better: exponent differences, compute multiplier and crossover, with joint intervals."""
    if len(sweeps) < 2:
        fail("compare needs at least two sweeps (the first is the reference)")
    if minimizer not in ("parabola", "akima"):
        fail(f"--minimizer must be 'parabola' or 'akima', got {minimizer!r}")
    _check(bootstrap >= 0, "--bootstrap", bootstrap, ">= 0")
    for c in predict:
        _positive("--predict", c)
    _check(0 <= seed < 2**32, "--seed", seed, "within [0, 2^32)")
    if plot is not None:
        _check(plot.suffix.lower() in (".png", ".svg", ".pdf"), "--plot", str(plot), "a .png, .svg or .pdf file")
    k = _parse_window(window)
    inputs = [_compare_input(a) for a in sweeps]
    names = [n for n, _ in inputs]
    if len(set(names)) != len(names):   # two CSVs with one stem: name them by the path given
        inputs = [(a, t) for a, (_, t) in zip(sweeps, inputs)]
    from .fit.compare import compare_sweeps

    cmp = compare_sweeps(inputs, window=k, minimizer=minimizer, keep_flagged=keep_flagged, bootstrap=bootstrap,
                         seed=seed, predict=sorted(predict))
    from .export import csv_simulated
    from .records import sweep_simulated

    # drawn losses stay labelled: a stored simulate sweep, or a CSV export whose every row says so
    simulated = [n for a, (n, _) in zip(sweeps, inputs)
                 if (csv_simulated(a) if Path(a).suffix.lower() == ".csv" or Path(a).is_file()
                     else sweep_simulated(_engine(write=False), a))]
    written = None
    if plot is not None:
        from .fit.compare_plots import save_compare_plot

        written = save_compare_plot(cmp, plot)
    if as_json:
        out = cmp.to_json()
        out["simulated"] = simulated
        if written is not None:
            out["plot"] = str(written)
        print(json.dumps(out))
        return
    from .fit.compare_render import render_comparison

    if simulated:
        console.print(f"[bold magenta]SIMULATED[/] {', '.join(simulated)}: losses drawn from a stated law, "
                      "nothing was trained")
    render_comparison(cmp, console)
    if written is not None:
        console.print(f"wrote {written}")


# ---------------------------------------------------------------- demo


def _demo_sweep(engine, spec, wd: Path, n_workers: int):
    """Plan (replanning a changed demo spec, keeping finished runs), run on the local pool, watch; the fit rows."""
    from .dispatch.profiles import load_profile
    from .dispatch.submit import submit_sweep
    from .plan.grid import plan as plan_runs
    from .store.results import fit_inputs
    from .store.sweeps import save_plan

    # --force: a demo spec changed by an upgrade replans, keeping every finished run it still has
    res = save_plan(engine, spec, plan_runs(spec), wd, force=True)
    prof = load_profile("local").model_copy(update={"workers": n_workers})
    console.print(
        f"[bold]isoflop demo[/]: sweep {spec.name!r}, {len(spec.budget_values())} budgets x {spec.grid.points} sizes, "
        f"{n_workers} worker(s), workdir {wd}" + ("" if res.created else f" ({res.kept} run(s) already planned)")
    )
    sub = _dispatch_call(submit_sweep, engine, spec.name, prof)
    if sub.runs:
        console.print(f"running {len(sub.runs)} run(s) on this machine")
    else:
        console.print("every run is finished or running already: reusing them")
    st = _watch(engine, spec.name, 2.0)
    console.print()
    if not st.finished:
        fail(f"stopped watching; the runs go on in the background: `isoflop --workdir {wd} status {spec.name} --watch`", 130)
    _, rows, curves = fit_inputs(engine, spec.name)
    bad = [r for r in rows if r["state"] != "completed"]
    if bad:
        console.print(f"[yellow]{len(bad)} run(s) did not complete[/]; the fit leaves them out (see `isoflop status`)")
    return rows, curves


def _muon_twin(spec):
    """The same sweep (budgets, shapes, lr rule, seeds) trained with Muon, named <name>-muon."""
    from .spec import parse_spec

    d = spec.model_dump(mode="json")
    d["name"] = f"{spec.name}-muon"
    d["optimizer"] = {**spec.optimizer.definition(), "name": "muon"}
    return parse_spec(d)


@app.command()
@friendly
def demo(
    quick: bool = typer.Option(False, "--quick", help="three smaller budgets (under 5 minutes on 2 cores)"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="where the demo's store, runs and plots go [./isoflop-demo]"),
    workers: int = typer.Option(0, "--workers", help="runs at once (0: one per CPU core)"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="resamples for the frontier's intervals"),
    spec_path: Optional[Path] = typer.Option(None, "--spec", help="run another small spec the same way (one that "
                                             "lists several optimizer settings is compared like --compare)"),
    compare_muon: bool = typer.Option(False, "--compare", help="the quick budgets with AdamW and with Muon, then `compare` them"),
) -> None:
    """The embedded default end to end: plan, run locally, fit, plot (a byte-level GPT on Python's stdlib)."""
    import os
    import time

    from . import TEMPLATES
    from .spec import load_specs
    from .store.engine import db_url, open_engine

    _check(workers >= 0, "--workers", workers, ">= 0 (0: one per CPU core)")
    _check(bootstrap >= 0, "--bootstrap", bootstrap, ">= 0")
    t0 = time.time()
    wd = (workdir or Path(OPTS.workdir or "isoflop-demo")).resolve()
    specs = load_specs(spec_path or TEMPLATES / ("cpu-demo-quick.yaml" if quick or compare_muon else "cpu-demo.yaml"))
    spec = specs[0]
    if compare_muon and len(specs) == 1 and spec.optimizer.name != "adamw":
        fail(f"demo --compare trains the spec with AdamW and with Muon; {spec.name!r} already names {spec.optimizer.name}")
    engine = open_engine(db_url(OPTS.db, wd), create=True)
    # one thread per run and one run per core: tiny models are bound by per-step overhead, which
    # threads do not shorten, so parallel runs finish the sweep sooner than parallel threads
    n_workers = workers or max(1, (os.cpu_count() or 1) // max(1, spec.trainer.threads or 1))
    from .fit import FitTable

    if compare_muon or len(specs) > 1:
        from .fit.compare import compare_sweeps
        from .fit.compare_plots import save_compare_plot
        from .fit.compare_render import render_comparison

        sweeps = specs if len(specs) > 1 else [spec, _muon_twin(spec)]
        tables = [(s.name, FitTable.from_rows(_demo_sweep(engine, s, wd, n_workers)[0])) for s in sweeps]
        cmp = compare_sweeps(tables, bootstrap=bootstrap)
        render_comparison(cmp, console)
        console.print(f"wrote {save_compare_plot(cmp, wd / f'{spec.name}-compare.png')}")
        console.print(f"demo finished in {time.time() - t0:.0f} s; run it again to refit (finished runs are reused)")
        return
    from .fit import fit_sweep
    from .fit.plots import save_plots
    from .fit.render import render_report

    rows, curves = _demo_sweep(engine, spec, wd, n_workers)
    report = fit_sweep(FitTable.from_rows(rows), bootstrap=bootstrap, curves=curves or None)
    render_report(report, console)
    for w in save_plots(report, wd / f"{spec.name}.png"):
        console.print(f"wrote {w}")
    console.print(f"demo finished in {time.time() - t0:.0f} s; run it again to refit (finished runs are reused)")


# after every command above: each one's --help ends with its examples (cli_examples.py)
add_examples(app)


def run() -> None:  # pragma: no cover - console entry for `python -m isoflop`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
