"""The notebook API: a store's sweeps, runs, training curves and fits as pandas DataFrames.

    >>> import isoflop
    >>> isoflop.sweeps()                              # every sweep in ./isoflop-work (or $ISOFLOP_WORKDIR)
    >>> runs = isoflop.runs("chinchilla-small")       # one row per run: ledger, state, loss, provenance
    >>> runs[runs.state == "completed"].groupby("budget").loss.min()
    >>> curves = isoflop.curves("chinchilla-small")   # one row per logged step
    >>> fit = isoflop.fit_result("chinchilla-small", predict=[1e21])
    >>> fit.optima                                    # per-budget N_opt, D_opt, L_opt with 5–95% intervals
    >>> fit.frontier.loc["params", "exponent"]        # a in N_opt = k·C^a
    >>> fit.report.predictions[0].n_opt_estimate      # the frozen dataclasses behind the frames

The same library calls as the CLI (`status`, `fit`), no CLI in between; the frames hold what
`isoflop status --json` and `isoflop fit --json` print. `db`/`workdir` mean what `--db`/`--workdir`
mean (default: $ISOFLOP_DB, else $ISOFLOP_WORKDIR/isoflop.db, else ./isoflop-work/isoflop.db).
pandas is the optional extra `isoflop[pandas]`, imported only when a frame is built; the run and
curve columns are the export schema (README, "Export"; `isoflop.records`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .fit.report import FitReport

__all__ = ["sweeps", "runs", "curves", "fit_result", "FitResult"]

MINIMIZERS = ("akima", "parabola")
METHODS = ("auto", "lse", "varpro", "all", "none")


def _pd():
    try:
        import pandas
    except ImportError:
        raise UserError("the notebook API needs pandas: pip install 'isoflop[pandas]'") from None
    return pandas


def _engine(db: Optional[str], workdir: Optional[str | Path]):
    from .store.engine import db_url, open_engine

    return open_engine(db_url(db, workdir), create=False, write=False)


def sweeps(db: Optional[str] = None, workdir: Optional[str | Path] = None) -> "pd.DataFrame":
    """The sweeps in a store: one row each, with run counts (`runs`, `completed`, `active`, `failed`
    counts failed/diverged/lost), when it was planned and last changed, its spec digest and workdir.

    >>> isoflop.sweeps(workdir="isoflop-work").set_index("sweep").completed
    """
    from .records import SWEEP_COLUMNS, sweep_rows

    return _pd().DataFrame(sweep_rows(_engine(db, workdir)), columns=list(SWEEP_COLUMNS))


def runs(sweep: str, db: Optional[str] = None, workdir: Optional[str | Path] = None, *, sync: bool = False,
         provenance: bool = True) -> "pd.DataFrame":
    """A sweep's runs, one row each in `fit`'s order: every ledger column (budget, shape, N under
    each convention, D, steps, batch, lr, seed, FLOPs under each convention), `state`/`reason`/`loss`
    as `isoflop fit` sees them (`not_best`: lost its lr/batch cell), `run_state` as `status` shows
    it, what training left (train loss, steps and tokens done, tok/s, measured FLOPs, wall time),
    and provenance: the last attempt (executor, job id, node, exit code, times), the spec digest,
    the run folder and, from its result.json, torch version, device, dtype, threads, fingerprint.

    sync=True first syncs the scheduler's and the run folders' news into the store, as
    `isoflop status` does; the default only reads the store. provenance=False skips reading
    result.json files (faster on a slow shared filesystem).

    >>> df = isoflop.runs("chinchilla-small")
    >>> df.pivot_table(index="params", columns="budget", values="loss")
    """
    from .records import RUN_COLUMNS, run_rows

    pd = _pd()
    engine = _engine(db, workdir) if not sync else _sync(db, workdir, sweep)
    return pd.DataFrame(run_rows(engine, sweep, provenance=provenance), columns=list(RUN_COLUMNS))


def _sync(db, workdir, sweep):
    from .dispatch.sync import sync_sweep
    from .store.engine import db_url, is_read_only, open_engine

    engine = open_engine(db_url(db, workdir), write=False)
    if not is_read_only(engine):
        sync_sweep(engine, sweep)
    return engine


def curves(sweep: str, db: Optional[str] = None, workdir: Optional[str | Path] = None) -> "pd.DataFrame":
    """A sweep's training curves: one row per logged step of each run (step, tokens, FLOPs so far,
    train and validation loss, lr, tok/s), with the run's id, budget, N and state.

    >>> c = isoflop.curves("chinchilla-small")
    >>> for rid, g in c.groupby("run_id"): plt.plot(g.flops, g.train_loss)
    """
    from .records import CURVE_COLUMNS, curve_rows

    return _pd().DataFrame(curve_rows(_engine(db, workdir), sweep), columns=list(CURVE_COLUMNS))


@dataclass(frozen=True, eq=False)
class FitResult:
    """A fit of a sweep: the frozen `FitReport` (isoflop.fit.report) and frames of it.

    optima: one row per budget (index `budget`): N_opt, D_opt, L_opt with `_lo`/`_hi` 5–95%
        bounds, the estimate to act on (`n_opt_estimate`: the bootstrap median), points, flags
        (";"-joined), whether it entered the frontier (`used`).
    frontier: one row per law (index `law`: params, tokens, loss): exponent and coefficient of
        k·C^exponent with bounds and the exponent estimate; empty without a frontier.
    predictions: one row per predicted budget: N_opt, D_opt, L_opt (estimates and bounds), the model
        each came from, why L_opt is flagged (if it is), the suggested shape (from the spec).
    excluded: one row per run left out of the fit (run_id, budget, reason).
    json: `FitReport.to_json()` plus the suggested shapes, which is what `isoflop fit --json` prints.
    hparams_laws, hparams_cells: the lr/batch grid's fitted η*/B* laws and per-cell optima (properties;
        empty frames for a sweep without a grid).
    spec: the stored spec (None for a CSV): where `predict` takes its suggested shapes from.
    """

    report: "FitReport"
    optima: "pd.DataFrame"
    frontier: "pd.DataFrame"
    predictions: "pd.DataFrame"
    excluded: "pd.DataFrame"
    json: dict[str, Any]
    spec: Any = None

    def predict(self, budgets: Sequence[float]) -> "pd.DataFrame":
        """The frontier at new budgets, as `predictions`, with the suggested shape where the spec
        gives one (as `fit_result(predict=...)`).

        >>> fit.predict([1e21, 1e22])[["budget", "n_opt_estimate", "n_opt_lo", "n_opt_hi", "shape_d_model"]]
        """
        from .fit.report import _pred_json

        preds = self.report.predict([float(c) for c in budgets])
        shapes = _shapes(self.spec, preds)
        return _predictions_frame([{**_pred_json(p), **({"shape": shapes[p.budget]} if p.budget in shapes else {})}
                                   for p in preds])

    @property
    def hparams_laws(self) -> "pd.DataFrame":
        """One row per fitted law (index `law`: lr, lr_n = η* of C and of N; batch, batch_n = B*):
        `of` (C or N), exponent and coefficient of k·X^exponent with `_lo`/`_hi` 5–95% bounds, the
        cells it was fitted on. `fit --json`'s `hparams.laws`.

        >>> fit.hparams_laws.loc["lr", ["exponent", "exponent_lo", "exponent_hi"]]
        """
        rows = []
        for key, law in ((self.json.get("hparams") or {}).get("laws") or {}).items():
            row = {"law": key, **{k: v for k, v in law.items() if k != "excluded"}}
            _split(row, "exponent_ci")
            _split(row, "coefficient_ci")
            rows.append(row)
        df = _pd().DataFrame(rows)
        return df.set_index("law") if len(df) else df

    @property
    def hparams_cells(self) -> "pd.DataFrame":
        """One row per (budget, size) cell of the lr/batch grid: budget, params, runs, the optimum
        per axis (`lr_opt`, `batch_opt`), why a cell is left out of the laws (`lr_flags`,
        `batch_flags`, ";"-joined; None where the sweep has no such axis) and the grid's values.
        `fit --json`'s `hparams.cells`."""
        rows = []
        for c in (self.json.get("hparams") or {}).get("cells") or []:
            c = dict(c)
            for k in ("lr_flags", "batch_flags"):
                c[k] = None if c[k] is None else ";".join(c[k])
            rows.append(c)
        return _pd().DataFrame(rows)


def _shapes(spec: Any, preds: Sequence[Any]) -> dict[float, dict[str, Any]]:
    """Predicted budget -> the shape the spec's grid would give its N_opt (none without a spec, or
    where the spec cannot make that size)."""
    if spec is None:
        return {}
    from .plan.grid import shape_for_params

    shapes = {}
    for p in preds:
        try:
            shapes[p.budget] = shape_for_params(spec, p.n_opt_estimate)
        except ValueError:
            pass
    return shapes


def _split(row: dict[str, Any], key: str) -> None:
    """An interval `key` ([lo, hi] or None) becomes the columns key_lo, key_hi (key without its `_ci`)."""
    ci = row.pop(key)
    base = key[: -len("_ci")]
    row[f"{base}_lo"], row[f"{base}_hi"] = (None, None) if ci is None else ci


def _optima_frame(budgets: list[dict[str, Any]]) -> "pd.DataFrame":
    rows = []
    for b in budgets:
        b = dict(b)
        for key in ("n_opt_ci", "d_opt_ci", "loss_opt_ci"):
            _split(b, key)
        rel = b.pop("tokens_relation")
        b["tokens_relation_slope"] = None if rel is None else rel["slope"]
        b["tokens_relation_intercept"] = None if rel is None else rel["intercept"]
        b["flags"] = ";".join(b["flags"])
        rows.append(b)
    pd = _pd()
    df = pd.DataFrame(rows)
    return df.set_index("budget") if len(df) else df


def _frontier_frame(frontier: Optional[dict[str, Any]]) -> "pd.DataFrame":
    rows = []
    for law in ("params", "tokens", "loss"):
        if frontier is None:
            break
        row = {"law": law, **frontier[law]}
        _split(row, "exponent_ci")
        _split(row, "coefficient_ci")
        rows.append(row)
    df = _pd().DataFrame(rows)
    return df.set_index("law") if len(df) else df


def _predictions_frame(preds: list[dict[str, Any]]) -> "pd.DataFrame":
    rows = []
    for p in preds:
        p = dict(p)
        for key in ("n_opt_ci", "d_opt_ci", "loss_opt_ci", "loss_opt_law_ci"):
            _split(p, key)
        par = p.pop("parametric") or {}
        p["parametric_method"] = par.get("method")
        for key in ("n_opt", "d_opt", "loss_opt"):
            p[f"{key}_parametric"] = par.get(key)
            ci = par.get(f"{key}_ci")
            p[f"{key}_parametric_lo"], p[f"{key}_parametric_hi"] = (None, None) if ci is None else ci
        p["parametric_used_for_loss"] = par.get("used_for_loss")
        shape = p.pop("shape", None) or {}
        for key in ("n_layer", "d_model", "n_head"):
            p[f"shape_{key}"] = shape.get(key)
        rows.append(p)
    return _pd().DataFrame(rows)


def check_fit_options(*, minimizer: str, method: str, bootstrap: int, seed: int, predict: Sequence[float],
                      window: int | str, holdout_top: int) -> None:
    """The checks `isoflop fit` makes of its options, as one-line UserErrors."""
    import math

    if minimizer not in MINIMIZERS:
        raise UserError(f"minimizer must be 'akima' or 'parabola', got {minimizer!r}")
    if method not in METHODS:
        raise UserError(f"method must be auto, lse, varpro, all or none, got {method!r}")
    if bootstrap < 0 or holdout_top < 0:
        raise UserError("bootstrap and holdout_top must be >= 0")
    if 0 < bootstrap < 20:
        raise UserError(f"bootstrap {bootstrap} is too few for a 5–95% interval: give at least 20, or 0 for none")
    if not 0 <= seed < 2**32:
        raise UserError(f"seed must be within [0, 2^32), got {seed}")
    for c in predict:
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
            raise UserError(f"a budget to predict must be a positive finite number, got {c!r}")
    if window != "all" and (not isinstance(window, int) or window < 3):
        raise UserError(f"window must be a number of sizes (>= 3) or 'all', got {window!r}")
    if minimizer == "akima" and window != 5:
        raise UserError(f"window {window} applies to minimizer 'parabola'; the Akima minimizer uses every size")


@dataclass(frozen=True, eq=False)
class SweepFit:
    """What `isoflop fit` computes before it prints: `fit_report`'s answer (no pandas)."""

    report: "FitReport"
    json: dict[str, Any]            # what `isoflop fit --json` prints (less `plots`)
    spec: Any                       # the stored Spec (None for a CSV)
    shapes: dict[float, dict[str, Any]]   # predicted budget -> suggested shape (from the spec)
    simulated: bool                 # the sweep's losses were drawn by the `simulate` template


def fit_report(sweep: Optional[str] = None, *, csv: Optional[str | Path] = None, engine: Any = None,
               db: Optional[str] = None, workdir: Optional[str | Path] = None, window: int | str = 5,
               minimizer: str = "akima", keep_flagged: bool = False, bootstrap: int = 1000, seed: int = 0,
               predict: Sequence[float] = (), holdout_top: int = 0, method: str = "auto") -> SweepFit:
    """The fit of a sweep in the store (or of a CSV of runs) as `isoflop fit` makes it: the one code
    path behind `isoflop fit`, `isoflop report` and `fit_result`. `engine` (an open store) takes the
    place of db/workdir."""
    import math
    from dataclasses import replace

    from .fit import FitTable, fit_sweep
    from .fit.hparams import hparams_of_table, mark_best_variants, read_hparam_columns, row_columns

    if (sweep is None) == (csv is None):
        raise UserError("give either a sweep name or csv=FILE")
    predict = [float(c) for c in predict]
    check_fit_options(minimizer=minimizer, method=method, bootstrap=bootstrap, seed=seed, predict=predict,
                      window=window, holdout_top=holdout_top)
    spec = curves_in = None
    if csv is not None:
        from .fit import read_csv

        table = read_csv(csv)
        lr_col, batch_col = read_hparam_columns(csv)
        table = mark_best_variants(table, lr_col, batch_col)
    else:
        from .spec import parse_spec
        from .store.results import fit_inputs

        spec_json, rows, curves_in = fit_inputs(engine if engine is not None else _engine(db, workdir), sweep)
        spec, curves_in = parse_spec(spec_json), curves_in or None
        if not any(r["state"] == "completed" for r in rows):
            raise UserError(f"sweep {sweep!r} has no completed runs yet ({len(rows)} planned); "
                            f"see `isoflop status {sweep}`")
        table = FitTable.from_rows(rows)
        lr_col, batch_col = row_columns(rows)
    report = fit_sweep(table, window=None if window == "all" else window, minimizer=minimizer,
                       keep_flagged=keep_flagged, bootstrap=bootstrap, seed=seed, predict=predict,
                       holdout_top=holdout_top, parametric=None if method == "none" else method, curves=curves_in)
    report = replace(report, hparams=hparams_of_table(
        table, lr_col, batch_col, [f.budget for f in report.budgets], bootstrap=bootstrap, seed=seed,
        sigma=report.noise.sigma if report.noise is not None else math.nan))
    if csv is not None:
        from .export import csv_simulated

        simulated = csv_simulated(csv)   # an export of a simulated sweep keeps its label
    else:
        simulated = spec.trainer.template == "simulate"
    shapes = _shapes(spec, report.predictions)
    out = report.to_json()
    out["simulated"] = simulated
    for pj in out.get("predictions") or []:
        if pj.get("budget") in shapes:
            pj["shape"] = shapes[pj["budget"]]
    return SweepFit(report=report, json=out, spec=spec, shapes=shapes, simulated=simulated)


def fit_result(sweep: Optional[str] = None, *, csv: Optional[str | Path] = None, db: Optional[str] = None,
               workdir: Optional[str | Path] = None, window: int | str = 5, minimizer: str = "akima",
               keep_flagged: bool = False, bootstrap: int = 1000, seed: int = 0, predict: Sequence[float] = (),
               holdout_top: int = 0, method: str = "auto") -> FitResult:
    """Fit a sweep in the store (or a CSV of runs, as `fit --csv`) exactly as `isoflop fit` does,
    with the same options and defaults; see FitResult for what comes back.

    >>> fit = isoflop.fit_result("chinchilla-small", predict=[1e21], bootstrap=1000)
    >>> fit.optima[["n_opt_estimate", "n_opt_lo", "n_opt_hi", "loss_opt", "flags"]]
    >>> fit.predictions.loc[0, ["n_opt_estimate", "d_opt_estimate", "loss_opt"]]
    >>> fit.json == json.loads(subprocess.check_output(["isoflop", "fit", "chinchilla-small", "--json",
    ...                                                "--predict", "1e21"]))
    True
    """
    pd = _pd()
    res = fit_report(sweep, csv=csv, db=db, workdir=workdir, window=window, minimizer=minimizer,
                     keep_flagged=keep_flagged, bootstrap=bootstrap, seed=seed, predict=predict,
                     holdout_top=holdout_top, method=method)
    out = res.json
    return FitResult(report=res.report, optima=_optima_frame(out["budgets"]), frontier=_frontier_frame(out["frontier"]),
                     predictions=_predictions_frame(out["predictions"]),
                     excluded=pd.DataFrame(out["excluded"], columns=["run_id", "budget", "reason"]), json=out,
                     spec=res.spec)
