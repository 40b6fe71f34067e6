"""The notebook API: frames of the store hold what the CLI's --json prints for the same sweep."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import isoflop
from isoflop.errors import UserError

from .filled_store import FIT_ARGS, PREDICT, RESULT, SWEEP, cli_json, filled



@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return filled(tmp_path_factory)


def same(a, b) -> bool:
    """Equal, where a frame's NaN stands for JSON's null."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_runs_frame_equals_status_json(store):
    workdir, with_attempt, diverged = store
    st = cli_json("status", SWEEP, workdir=workdir)
    df = isoflop.runs(SWEEP, workdir=workdir)
    assert len(df) == len(st["runs"]) == 56 and df.run_id.is_unique
    by_id = df.set_index("run_id")
    div_cell = tuple(by_id.loc[diverged, ["budget", "point"]])
    for r in st["runs"]:
        row = by_id.loc[r["run_id"]]
        assert row.run_state == r["state"]
        # fit's view of the state: an lr x0.5 twin loses its cell (not_best), unless its lr x1 twin diverged
        lost = row.lr_mult == 0.5 and (row.budget, row.point) != div_cell
        assert row.state == ("not_best" if lost else r["state"])
        for col, key in (("budget", "budget"), ("point", "point"), ("params", "params"), ("tokens", "tokens"),
                         ("steps", "steps"), ("loss", "val_loss"), ("train_loss", "train_loss"),
                         ("step_done", "step"), ("tokens_done", "tokens_done"), ("lr_scale", "lr_scale")):
            assert same(row[col], r[key]), (col, row[col], r[key])
    assert by_id.loc[diverged, "state"] == "diverged" and "123" in by_id.loc[diverged, "reason"]
    # provenance: the attempt in the store, the result.json in the run folder
    prov = by_id.loc[with_attempt]
    assert (prov.attempts, prov.executor, prov.job_id, prov.node, prov.exit_code) == (1, "local", "4242", "n1", "0")
    assert prov.started_at == "2026-11-30T01:00:01" and prov.run_dir.endswith(f"/runs/{SWEEP}/{with_attempt}")
    assert {k: prov[k] for k in RESULT} == RESULT
    others = df[df.run_id != with_attempt]
    assert (others.attempts == 0).all() and others.torch_version.isna().all()
    # every ledger column of the store is there, under its own name
    from isoflop.store.models import Run
    ledger = {c.name for c in Run.__table__.columns} - {"id", "sweep_id", "definition", "metrics_offset",
                                                       "attempt_base", "updated_at", "val_loss", "state", "reason"}
    assert ledger <= set(df.columns)


def test_fit_frames_equal_fit_json(store):
    workdir, _, diverged = store
    cli = cli_json("fit", SWEEP, *FIT_ARGS, workdir=workdir)
    fit = isoflop.fit_result(SWEEP, workdir=workdir, bootstrap=40, predict=PREDICT)
    assert fit.json == cli   # one code path (api.fit_report) behind both
    assert fit.report.predictions[0].budget == 1e21   # the frozen dataclasses are there too
    assert list(fit.optima.index) == [b["budget"] for b in cli["budgets"]]
    for b in cli["budgets"]:
        row = fit.optima.loc[b["budget"]]
        assert (row.n_opt, row.n_opt_estimate, row.d_opt, row.loss_opt) == (b["n_opt"], b["n_opt_estimate"],
                                                                            b["d_opt"], b["loss_opt"])
        assert [row.n_opt_lo, row.n_opt_hi] == b["n_opt_ci"] and [row.loss_opt_lo, row.loss_opt_hi] == b["loss_opt_ci"]
        assert row["flags"] == ";".join(b["flags"]) and bool(row.used) == b["used"]
    for law in ("params", "tokens", "loss"):
        f, j = fit.frontier.loc[law], cli["frontier"][law]
        assert (f.exponent, f.exponent_estimate, f.coefficient) == (j["exponent"], j["exponent_estimate"],
                                                                    j["coefficient"])
        assert [f.exponent_lo, f.exponent_hi] == j["exponent_ci"]
    assert len(fit.predictions) == 2
    for (_, p), j in zip(fit.predictions.iterrows(), cli["predictions"]):
        assert (p.budget, p.n_opt_estimate, p.d_opt_estimate, p.loss_opt) == (
            j["budget"], j["n_opt_estimate"], j["d_opt_estimate"], j["loss_opt"])
        assert [p.n_opt_lo, p.n_opt_hi] == j["n_opt_ci"] and p.shape_d_model == j["shape"]["d_model"]
    assert fit.excluded.to_dict("records") == cli["excluded"]
    assert diverged in set(fit.excluded.run_id)
    # predict() at new budgets: the report's own predictions at the same budget
    again = fit.predict([1e21])
    assert again.loc[0, "n_opt_estimate"] == fit.predictions.loc[0, "n_opt_estimate"]
    # ... with the same suggested shape, from the stored spec
    assert again.loc[0, "shape_d_model"] == fit.predictions.loc[0, "shape_d_model"] == cli["predictions"][0]["shape"]["d_model"]
    # the lr grid's cells, as fit --json's hparams.cells
    cells = fit.hparams_cells
    assert len(cells) == len(cli["hparams"]["cells"]) == 28
    for (_, c), j in zip(cells.iterrows(), cli["hparams"]["cells"]):
        assert (c.budget, c.params, c.runs, c.lr_flags) == (j["budget"], j["params"], j["runs"], ";".join(j["lr_flags"]))
        assert same(c.lr_opt, j["lr_opt"]) and c.batch_flags is None
    assert fit.hparams_laws.empty and not cli["hparams"]["laws"]   # a 2-value grid gives no law


def test_hparams_laws_frame():
    law = {"of": "C", "exponent": -0.14, "exponent_ci": [-0.2, -0.1], "coefficient": 0.43, "coefficient_ci": None,
           "cells": 9, "excluded": [{"budget": 1e18, "params": 1e7, "reason": "at_low_edge"}]}
    fit = isoflop.FitResult(report=None, optima=None, frontier=None, predictions=None, excluded=None,
                            json={"hparams": {"laws": {"lr": law, "lr_n": {**law, "of": "N"}}, "cells": []}})
    laws = fit.hparams_laws
    assert list(laws.index) == ["lr", "lr_n"] and list(laws.of) == ["C", "N"]
    assert (laws.loc["lr", "exponent"], laws.loc["lr", "exponent_lo"], laws.loc["lr", "exponent_hi"]) == (-0.14, -0.2, -0.1)
    assert laws.loc["lr", "coefficient_lo"] is None and laws.loc["lr", "cells"] == 9
    empty = isoflop.FitResult(report=None, optima=None, frontier=None, predictions=None, excluded=None, json={})
    assert empty.hparams_laws.empty and empty.hparams_cells.empty


def test_sweeps_and_curves(store):
    workdir, _, diverged = store
    sw = isoflop.sweeps(workdir=workdir)
    assert sw.to_dict("records")[0] | {"created_at": None, "updated_at": None, "spec_digest": None} == {
        "sweep": SWEEP, "runs": 56, "completed": 55, "active": 0, "failed": 1, "created_at": None,
        "updated_at": None, "spec_digest": None, "simulated": False, "workdir": str(workdir.resolve())}
    c = isoflop.curves(SWEEP, workdir=workdir)
    assert list(c.step) == [10, 20, 30] and set(c.run_id) == {diverged} and set(c.state) == {"diverged"}
    assert list(c.train_loss) == [4.9, 4.8, 4.7] and same(c.val_loss[0], None) and c.val_loss[2] == 4.8


def test_api_errors_are_one_line(store):
    workdir, _, _ = store
    with pytest.raises(UserError, match="no sweep named 'nope'"):
        isoflop.runs("nope", workdir=workdir)
    with pytest.raises(UserError, match="minimizer"):
        isoflop.fit_result(SWEEP, workdir=workdir, minimizer="cubic")
    with pytest.raises(UserError, match="either a sweep"):
        isoflop.fit_result()
    with pytest.raises(UserError, match="no store"):
        isoflop.sweeps(workdir=workdir / "elsewhere")


def test_import_isoflop_loads_no_pandas():
    """`isoflop --help`/`status` import the package and the CLI: pandas only comes with a frame."""
    code = ("import sys, isoflop, isoflop.cli, isoflop.api, isoflop.export, isoflop.report_html, isoflop.records; "
            "f = isoflop.runs; heavy = {'pandas', 'pyarrow', 'matplotlib', 'torch'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
