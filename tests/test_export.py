"""`isoflop export`: the same rows in every format, a CSV that `fit --csv` fits to `fit SWEEP`'s
result, and one-line errors that write nothing."""
from __future__ import annotations

import csv
import hashlib
import json

import pytest

from isoflop.records import CURVE_COLUMNS, RUN_COLUMNS

from .conftest import run_isoflop
from .filled_store import FIT_ARGS, RESULT, SWEEP, cli, cli_json, filled
from .simulated import profile, write_spec


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return filled(tmp_path_factory)


def test_csv_export_fits_to_the_same_result(store, tmp_path):
    workdir, _, diverged = store
    out = tmp_path / "runs.csv"
    run_isoflop("export", SWEEP, "--format", "csv", "-o", str(out), workdir=workdir)
    from_store = cli_json("fit", SWEEP, *FIT_ARGS, workdir=workdir)
    from_csv = json.loads(run_isoflop("fit", "--csv", str(out), "--json", *FIT_ARGS, workdir=workdir).stdout)
    # the suggested shape comes from the spec, which a CSV does not carry
    for p in from_store["predictions"]:
        assert p.pop("shape")["params"] > 0
    assert from_csv == from_store
    reasons = {e["run_id"]: e["reason"] for e in from_csv["excluded"]}
    assert "diverged at step 123" in reasons[diverged] and sum("not_best" in r for r in reasons.values()) == 27


def test_every_format_holds_the_same_rows(store, tmp_path):
    import pyarrow.parquet as pq

    workdir, with_attempt, diverged = store
    stdout_csv = run_isoflop("export", SWEEP, workdir=workdir).stdout   # csv to stdout by default
    rows_csv = list(csv.DictReader(stdout_csv.splitlines()))
    rows_jsonl = [json.loads(line) for line in run_isoflop("export", SWEEP, "-f", "jsonl", workdir=workdir
                                                           ).stdout.splitlines()]
    run_isoflop("export", SWEEP, "-f", "parquet", "-o", str(tmp_path / "r.parquet"), "--curves", workdir=workdir)
    table = pq.read_table(tmp_path / "r.parquet")
    rows_pq = table.to_pylist()
    assert table.column_names == list(RUN_COLUMNS) == list(rows_jsonl[0]) == list(rows_csv[0])
    assert len(rows_csv) == len(rows_jsonl) == len(rows_pq) == 56
    for c, j, p in zip(rows_csv, rows_jsonl, rows_pq):
        assert j == p
        # CSV is text: the same values once parsed, None as an empty cell
        assert c == {k: "" if v is None else str(v) for k, v in j.items()}
    # typed columns in JSON and Parquet, provenance included
    prov = next(r for r in rows_pq if r["run_id"] == with_attempt)
    assert isinstance(prov["params"], int) and isinstance(prov["loss"], float) and prov["job_id"] == "4242"
    assert {k: prov[k] for k in RESULT} == RESULT
    # --curves: the metrics beside the runs, FILE-curves.EXT
    curves = pq.read_table(tmp_path / "r-curves.parquet").to_pylist()
    assert [c["step"] for c in curves] == [10, 20, 30] and {c["run_id"] for c in curves} == {diverged}
    assert list(curves[0]) == list(CURVE_COLUMNS)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("args, expect", [
    (("nosuch",), "no sweep named 'nosuch'"),
    ((SWEEP, "--format", "xlsx"), "--format must be csv, parquet or jsonl"),
    ((SWEEP, "-f", "parquet"), "give it with -o FILE"),
    ((SWEEP, "--curves"), "--curves writes a second file"),
    ((SWEEP, "-o", "{tmp}/no/such/dir/r.csv"), "no such folder"),
    ((SWEEP, "-o", "{tmp}"), "is a folder"),
    ((SWEEP, "-o", "/proc/r.csv"), "cannot write"),
    ((SWEEP, "-f", "csv", "-o", "{tmp}/r.parquet"), "--format csv contradicts the file name r.parquet"),
    ((SWEEP, "-f", "parquet", "-o", "{tmp}/r.jsonl"), "contradicts the file name r.jsonl"),
])
def test_bad_export_is_one_line_and_writes_nothing(store, tmp_path, args, expect):
    workdir, _, _ = store
    db = workdir / "isoflop.db"
    before = _digest(db)
    p = cli("export", *[a.format(tmp=tmp_path) for a in args], workdir=workdir)
    assert p.exit_code == 2
    assert len(p.stderr.strip().splitlines()) == 1 and expect in p.stderr, p.stderr
    assert p.stdout == "" and list(tmp_path.iterdir()) == [] and _digest(db) == before


def test_format_follows_the_file_name(store, tmp_path):
    """Without --format, -o's extension picks the format (a .parquet file that pandas can read)."""
    import pyarrow.parquet as pq

    workdir, _, _ = store
    for name in ("r.parquet", "r.jsonl", "r.csv", "r.txt"):
        run_isoflop("export", SWEEP, "-o", str(tmp_path / name), workdir=workdir)
    assert len(pq.read_table(tmp_path / "r.parquet").to_pylist()) == 56
    jsonl = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(jsonl) == 56 and jsonl[0]["simulated"] is False
    # .csv and a name that says nothing are CSV (the default); an agreeing --format is accepted
    assert (tmp_path / "r.csv").read_text() == (tmp_path / "r.txt").read_text()
    assert next(csv.reader((tmp_path / "r.csv").open()))[:2] == ["sweep", "run_id"]
    run_isoflop("export", SWEEP, "-f", "jsonl", "-o", str(tmp_path / "s.jsonl"), workdir=workdir)
    assert (tmp_path / "s.jsonl").read_text() == (tmp_path / "r.jsonl").read_text()


@pytest.mark.slow
def test_simulated_sweep_keeps_its_label(tmp_path):
    """An export of a simulated sweep says so in every row, `fit --csv` of it says "simulated": true,
    and submit does not quote hours of training that will not happen."""
    workdir = tmp_path / "work"
    spec = write_spec(tmp_path / "sim.yaml", "sim", [1e17, 1e18, 1e19], points=5)
    run_isoflop("plan", str(spec), workdir=workdir)
    sub = run_isoflop("submit", "sim", "--profile", profile(tmp_path), "--wait", "--interval", "0.5", workdir=workdir)
    assert "SIMULATED" in sub.stdout and "hours" not in sub.stdout, sub.stdout
    run_isoflop("export", "sim", "-o", str(tmp_path / "sim.csv"), workdir=workdir)
    rows = list(csv.DictReader((tmp_path / "sim.csv").open()))
    assert len(rows) == 15 and {r["simulated"] for r in rows} == {"True"}
    import isoflop
    assert isoflop.sweeps(workdir=workdir).loc[0, "simulated"] == True  # noqa: E712 (numpy bool)
    fit = json.loads(run_isoflop("fit", "--csv", str(tmp_path / "sim.csv"), "--json", "--bootstrap", "0",
                                 workdir=workdir).stdout)
    assert fit["simulated"] is True
    # a file where one row was trained is not labelled simulated
    rows[0]["simulated"] = "False"
    with (tmp_path / "mixed.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert json.loads(run_isoflop("fit", "--csv", str(tmp_path / "mixed.csv"), "--json", "--bootstrap", "0",
                                  workdir=workdir).stdout)["simulated"] is False
