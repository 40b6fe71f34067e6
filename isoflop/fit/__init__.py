"""Analyzer of IsoFLOP sweeps: per-budget optima, frontier, bootstrap, parametric fit, envelope.

Pure functions over numpy arrays returning frozen dataclasses. The entry
point is `fit_sweep(table, ...) -> FitReport`; `FitReport.to_json()` is the
`--json` output; `render.render_report` (rich) and `plots.save_plots`
(matplotlib, imported only there) draw it. Only `csvio` does I/O.

Modules: `table` (runs as arrays), `noise` (sizes, seed noise, outliers),
`isoflop` + `akima` (per-budget minima and flags), `bootstrap` (seed-noise
resamples), `frontier` + `losslaw` (power laws in C; L_opt = E + k·C^−γ),
`parametric` (L(N, D), approach 3), `envelope` (approach 1), `report`
(`fit_sweep`), `simulate` (sweeps drawn from a known law, for calibration).
"""
from .csvio import read_csv
from .envelope import Envelope, fit_envelope
from .frontier import Frontier, PowerLaw, fit_frontier
from .isoflop import FLAGS, IsoflopFit, fit_budget, fit_isoflops
from .parametric import ParametricFit, fit_parametric
from .report import Backtest, Excluded, FitReport, Prediction, fit_sweep
from .table import FitTable, snap_budgets

__all__ = [
    "FLAGS", "Backtest", "Envelope", "Excluded", "FitReport", "FitTable", "Frontier", "IsoflopFit",
    "ParametricFit", "PowerLaw", "Prediction", "fit_budget", "fit_envelope", "fit_frontier",
    "fit_isoflops", "fit_parametric", "fit_sweep", "read_csv", "snap_budgets",
]
