"""Bad input of every kind: one line naming the field or file, a non-zero exit, no traceback,
and nothing stored changed.

The CLI runs in-process through typer's CliRunner (the same `app`, the same `friendly` wrapper
and exit codes as `python -m isoflop`; `test_in_process_matches_subprocess` checks that), which
keeps ~100 cases to seconds. Each case starts from a copy of one planned store (sweep `small`),
and the store's SQL dump and every file under the workdir are compared before and after.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from isoflop.cli import app

from .conftest import run_isoflop

SMALL = """\
name: small
budgets: [3.0e11, 3.0e12]
grid: {points: 4, span: 8, centre: {k: 0.045}}
model: {vocab_size: 256, seq_len: 64, head_dim: 16, aspect_ratio: 32}
flops: exact
params: all
batch: {rule: 4, unit: sequences}
lr: 0.003
"""

# runs on the Chinchilla law L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28, three budgets of five sizes
GOOD_CSV = "params,tokens,loss\n" + "".join(
    f"{n:.4g},{c / (6 * n):.4g},{1.69 + 406.4 / n ** 0.34 + 410.7 / (c / (6 * n)) ** 0.28:.4f}\n"
    for c in (1e17, 1e18, 1e19) for n in (c ** 0.5 * k for k in (0.02, 0.05, 0.1, 0.2, 0.5))
)


def spec(old: str, new: str) -> str:
    assert old in SMALL, old
    return SMALL.replace(old, new)


def with_line(line: str) -> str:
    return SMALL + line + "\n"


@dataclass
class Bad:
    args: list[str]
    expect: str  # what the one line must name (a field, an option or a file)
    files: dict[str, "str | bytes"] = field(default_factory=dict)
    setup: Optional[Callable[[Path], None]] = None
    max_s: Optional[float] = None  # must fail within this many seconds


def plan_bad(text: "str | bytes", expect: str, files: Optional[dict] = None, **kw) -> Bad:
    return Bad(["plan", "bad.yaml"], expect, files={"bad.yaml": text, **(files or {})}, **kw)


def submit_bad(text: "str | bytes", expect: str) -> Bad:
    return Bad(["submit", "small", "--profile", "./prof.yaml", "--dry-run"], expect, files={"prof.yaml": text})


def fit_csv_bad(text: "str | bytes", expect: str, *extra: str) -> Bad:
    return Bad(["fit", "--csv", "r.csv", "--bootstrap", "0", *extra], expect, files={"r.csv": text})


TPL_SPEC = SMALL + "trainer: {template: ./tpl.yaml}\n"

CASES: dict[str, Bad] = {
    # ---- specs (finding 7: specs that cannot train)
    "lr zero": plan_bad(spec("lr: 0.003", "lr: 0"), "lr"),
    "lr negative": plan_bad(spec("lr: 0.003", "lr: -0.001"), "lr"),
    "lr absurd": plan_bad(spec("lr: 0.003", "lr: 1.0e+30"), "lr"),
    "lr nan": plan_bad(spec("lr: 0.003", "lr: .nan"), "lr"),
    "lr inf": plan_bad(spec("lr: 0.003", "lr: .inf"), "lr"),
    "lr rule negative min": plan_bad(spec("lr: 0.003", "lr: {coef: 0.01, of: N, power: -0.3, min: -1}"), "lr.min"),
    "lr rule negative max": plan_bad(spec("lr: 0.003", "lr: {coef: 0.01, of: N, power: -0.3, max: -0.1}"), "lr.max"),
    "lr rule min above max": plan_bad(spec("lr: 0.003", "lr: {coef: 0.01, min: 0.1, max: 0.01}"), "lr"),
    "lr rule absurd value": plan_bad(spec("lr: 0.003", "lr: {coef: 1.0e+30, of: C, power: 0.1}"), "lr"),
    "lr rule power nan": plan_bad(spec("lr: 0.003", "lr: {coef: 0.01, of: N, power: .nan}"), "lr.power"),
    "batch rule -8": plan_bad(spec("rule: 4", "rule: -8"), "batch.rule"),
    "batch rule zero": plan_bad(spec("rule: 4", "rule: 0"), "batch.rule"),
    "batch rule nan": plan_bad(spec("rule: 4", "rule: .nan"), "batch.rule"),
    "batch below one sequence": plan_bad(spec("{rule: 4, unit: sequences}", "{rule: 20, unit: tokens}"), "batch.rule"),
    "batch rule negative max": plan_bad(spec("rule: 4", "rule: {coef: 1, power: 0.3, max: -8}"), "batch.rule.max"),
    "beta1 one": plan_bad(with_line("optimizer: {beta1: 1.0}"), "optimizer.beta1"),
    "beta2 negative": plan_bad(with_line("optimizer: {beta2: -0.1}"), "optimizer.beta2"),
    "beta1 nan": plan_bad(with_line("optimizer: {beta1: .nan}"), "optimizer.beta1"),
    "weight decay negative": plan_bad(with_line("optimizer: {weight_decay: -0.1}"), "optimizer.weight_decay"),
    "grad clip negative": plan_bad(with_line("optimizer: {grad_clip: -1}"), "optimizer.grad_clip"),
    "grad clip inf": plan_bad(with_line("optimizer: {grad_clip: .inf}"), "optimizer.grad_clip"),
    "threads zero": plan_bad(with_line("trainer: {threads: 0}"), "trainer.threads"),
    "threads negative": plan_bad(with_line("trainer: {threads: -2}"), "trainer.threads"),
    "eval batches zero": plan_bad(with_line("trainer: {eval_batches: 0}"), "trainer.eval_batches"),
    "eval batches negative": plan_bad(with_line("trainer: {eval_batches: -1}"), "trainer.eval_batches"),
    "eval every negative": plan_bad(with_line("trainer: {eval_every: -5}"), "trainer.eval_every"),
    "log every zero": plan_bad(with_line("trainer: {log_every: 0}"), "trainer.log_every"),
    "checkpoint every nan": plan_bad(with_line("trainer: {checkpoint_every_s: .nan}"), "trainer.checkpoint_every_s"),
    "template var nan": plan_bad(with_line("trainer: {vars: {warmup: .nan}}"), "trainer.vars.warmup"),
    "seed negative": plan_bad(with_line("seeds: [-1]"), "seeds"),
    "lr grid zero": plan_bad(with_line("lr_grid: [1.0, 0]"), "lr_grid"),
    "throughput negative": plan_bad(with_line("throughput: -1.0e+12"), "throughput"),
    "warmup above one": plan_bad(with_line("schedule: {warmup_frac: 2}"), "schedule.warmup_frac"),
    "z loss nan": plan_bad(spec("aspect_ratio: 32}", "aspect_ratio: 32, z_loss: .nan}"), "model.z_loss"),
    # ---- specs (finding 8/9: tracebacks, slow failures)
    "head_dim 1e30": plan_bad(spec("head_dim: 16", "head_dim: 1.0e+30"), "model.head_dim", max_s=5),
    "vocab 1e30": plan_bad(spec("vocab_size: 256", "vocab_size: 1.0e+30"), "model.vocab_size", max_s=5),
    "seq_len zero": plan_bad(spec("seq_len: 64", "seq_len: 0"), "model.seq_len"),
    "max layers huge": plan_bad(spec("aspect_ratio: 32}", "aspect_ratio: 32, max_layers: 1000000000}"),
                                "model.max_layers", max_s=5),
    "aspect ratio inf": plan_bad(spec("aspect_ratio: 32", "aspect_ratio: .inf"), "model.aspect_ratio"),
    "budget 1e40": plan_bad(spec("[3.0e11, 3.0e12]", "[3.0e11, 1.0e+40]"), "budgets", max_s=5),
    "budget nan": plan_bad(spec("[3.0e11, 3.0e12]", "[3.0e11, .nan]"), "budgets[1]"),
    "budget inf": plan_bad(spec("[3.0e11, 3.0e12]", "[.inf]"), "budgets[0]"),
    "budget range too dense": plan_bad(spec("[3.0e11, 3.0e12]", "{start: 3.0e11, stop: 3.0e12, per_decade: 1.0e+12}"),
                                       "budgets", max_s=5),
    "grid points huge": plan_bad(spec("points: 4", "points: 100000000"), "grid.points", max_s=5),
    "grid span nan": plan_bad(spec("span: 8", "span: .nan"), "grid.span"),
    "centre huge": plan_bad(spec("k: 0.045", "k: 1.0e+30"), "budget", max_s=5),
    "centre power inf": plan_bad(spec("k: 0.045", "k: 0.045, power: .inf"), "grid.centre.power"),
    "tokens per param nan": plan_bad(spec("span: 8", "tokens_per_param: [.nan, 20]"), "grid.tokens_per_param"),
    "budget not a number": plan_bad(spec("[3.0e11, 3.0e12]", "[abc]"), "budgets[0]"),
    "budgets empty": plan_bad(spec("[3.0e11, 3.0e12]", "[]"), "budgets"),
    "budget too small for the family": plan_bad(spec("[3.0e11, 3.0e12]", "[1.0e+6]"), "smallest shape"),
    "grid points zero": plan_bad(spec("points: 4", "points: 0"), "grid.points"),
    "unknown flop convention": plan_bad(spec("flops: exact", "flops: 7ND"), "flops"),
    "spec yaml syntax": plan_bad("name: bad\nbudgets: [1e18\n  x: : y\n", "YAML syntax error"),
    "spec not utf-8": plan_bad(SMALL.encode() + b"# caf\xe9\n", "bad.yaml"),
    "spec top level list": plan_bad("- 1\n- 2\n", "top level"),
    "spec unknown key": plan_bad(with_line("colour: red"), "colour"),
    "spec missing": Bad(["plan", "nosuch.yaml"], "nosuch.yaml"),
    "spec is a folder": Bad(["plan", "adir"], "adir", setup=lambda t: (t / "adir").mkdir()),
    "toml spec not utf-8": Bad(["plan", "bad.toml"], "bad.toml", files={"bad.toml": b'name = "caf\xe9"\n'}),
    # ---- command template files
    "template not utf-8": plan_bad(TPL_SPEC, "tpl.yaml", files={"tpl.yaml": b"command: echo caf\xe9\n"}),
    "template unknown key": plan_bad(TPL_SPEC, "tpl.yaml", files={"tpl.yaml": "command: echo hi\ncolour: red\n"}),
    "template jinja error": plan_bad(TPL_SPEC, "tpl.yaml", files={"tpl.yaml": "command: echo {{ run_dir\n"}),
    "template missing": plan_bad(TPL_SPEC, "tpl.yaml"),
    "template bad regex": plan_bad(TPL_SPEC, "tpl.yaml", files={"tpl.yaml": "command: echo\nresult_regex: '(('\n"}),
    "template fails for a run": plan_bad(SMALL + "trainer: {template: nanogpt, vars: {gradient_accumulation_steps: 3}}\n",
                                         "gradient_accumulation_steps"),
    "template variable undefined": plan_bad(TPL_SPEC, "nosuch", files={"tpl.yaml": "command: echo {{ vars.nosuch }}\n"}),
    # ---- cluster profiles
    "profile constraint newline": submit_bad("executor: slurm\nconstraint: \"gpu\\n#SBATCH --qos=high\"\n", "constraint"),
    "profile partition carriage return": submit_bad("executor: slurm\npartition: \"debug\\r\"\n", "partition"),
    "profile account escape": submit_bad("executor: slurm\naccount: \"me\\e[31m\"\n", "account"),
    "profile sbatch value newline": submit_bad("executor: slurm\nsbatch: {comment: \"a\\nb\"}\n", "sbatch"),
    "profile setup newline": submit_bad("setup: [\"module load x\\n#SBATCH --x\"]\n", "setup"),
    "profile name newline": submit_bad("name: \"a\\nb\"\n", "name"),
    "profile mem nan": submit_bad("mem_gb: .nan\n", "mem_gb"),
    "profile peak flops inf": submit_bad("peak_flops: .inf\n", "peak_flops"),
    "profile mfu zero": submit_bad("mfu: 0\n", "mfu"),
    "profile max time zero": submit_bad("max_time_minutes: 0\n", "max_time_minutes"),
    "profile gpus negative": submit_bad("gpus_per_run: -1\n", "gpus_per_run"),
    "profile unknown key": submit_bad("colour: red\n", "colour"),
    "profile not a mapping": submit_bad("- local\n", "prof.yaml"),
    "profile not utf-8": submit_bad(b"executor: local\ndescription: caf\xe9\n", "prof.yaml"),
    "profile yaml error": submit_bad("executor: [local\n", "prof.yaml"),
    "profile missing": Bad(["submit", "small", "--profile", "nosuch", "--dry-run"], "nosuch"),
    # ---- CLI arguments
    "predict inf": Bad(["fit", "small", "--predict", "inf"], "--predict"),
    "predict nan": Bad(["fit", "small", "--predict", "nan"], "--predict"),
    "predict zero": Bad(["fit", "small", "--predict", "0"], "--predict"),
    "predict negative": Bad(["fit", "small", "--predict", "-1e20"], "--predict"),
    "fit seed negative": Bad(["fit", "small", "--seed", "-1"], "--seed"),
    "fit window two": Bad(["fit", "small", "--window", "2"], "--window"),
    "fit plot format": Bad(["fit", "small", "--plot", "out.jpg"], "--plot"),
    "fit bootstrap negative": Bad(["fit", "small", "--bootstrap", "-1"], "--bootstrap"),
    "submit max runs zero": Bad(["submit", "small", "--max-runs", "0", "--dry-run"], "--max-runs"),
    "submit budget nan": Bad(["submit", "small", "--budget", "nan", "--dry-run"], "--budget"),
    "submit budget inf": Bad(["submit", "small", "--budget", "inf", "--dry-run"], "--budget"),
    "submit interval zero": Bad(["submit", "small", "--interval", "0", "--dry-run"], "--interval"),
    "status interval nan": Bad(["status", "small", "--interval", "nan"], "--interval"),
    "cancel budget nan": Bad(["cancel", "small", "--budget", "nan"], "--budget"),
    "retry lr scale nan": Bad(["retry", "small", "--lr-scale", "nan"], "--lr-scale"),
    "retry lr scale inf": Bad(["retry", "small", "--lr-scale", "inf"], "--lr-scale"),
    "retry lr scale zero": Bad(["retry", "small", "--lr-scale", "0"], "--lr-scale"),
    "retry budget negative": Bad(["retry", "small", "--budget", "-1"], "--budget"),
    "status unknown sweep": Bad(["status", "nosuch"], "nosuch"),
    "demo workers negative": Bad(["demo", "--workers", "-1"], "--workers"),
    "demo bootstrap negative": Bad(["demo", "--bootstrap", "-1"], "--bootstrap"),
    "init unknown template": Bad(["init", "x.yaml", "--template", "nosuch"], "nosuch"),
    "init under a file": Bad(["init", "afile/x.yaml"], "afile", files={"afile": "x"}),
    "show command no match": Bad(["plan", "s.yaml", "--dry-run", "--show-command", "zzzz"], "--show-command",
                                 files={"s.yaml": SMALL}),
    # ---- stores
    "db under a file": Bad(["--db", "afile/x.db", "plan", "s.yaml"], "afile", files={"afile": "x", "s.yaml": SMALL}),
    "workdir is a file": Bad(["--workdir", "afile", "plan", "s.yaml"], "afile", files={"afile": "x", "s.yaml": SMALL}),
    "db is a folder": Bad(["--db", "adir", "status", "small"], "adir", setup=lambda t: (t / "adir").mkdir()),
    "db not sqlite": Bad(["--db", "junk.db", "status", "small"], "junk.db", files={"junk.db": b"\x00junk" * 200}),
    "db bad url": Bad(["--db", "nosuchdialect://x/y", "status", "small"], "nosuchdialect"),
    "db missing": Bad(["--db", "none.db", "status", "small"], "none.db"),
    "db newer schema": Bad(["status", "small"], "schema version",
                           setup=lambda t: _sql(t / "work" / "isoflop.db",
                                                "UPDATE meta SET value='999' WHERE key='schema_version'")),
    "spec changed without force": plan_bad(spec("lr: 0.003", "lr: 0.002"), "--force"),
    # ---- CSVs for `fit --csv`
    "csv is a folder": Bad(["fit", "--csv", "adir"], "adir", setup=lambda t: (t / "adir").mkdir()),
    "csv missing": Bad(["fit", "--csv", "none.csv"], "none.csv"),
    "csv name like markup": Bad(["fit", "--csv", "r[red]x[/].csv"], "r[red]x[/].csv"),
    "csv ragged short row": fit_csv_bad(GOOD_CSV + "1e6,2e7\n", "line 17"),
    "csv ragged long row": fit_csv_bad("\n".join(ln + (",9" if i == 2 else "") for i, ln in enumerate(GOOD_CSV.splitlines())),
                                       "line 3"),
    "csv not utf-8": fit_csv_bad(GOOD_CSV.encode() + b"1e6,2e7,3.\xe9\n", "r.csv"),
    "csv duplicate rows": fit_csv_bad(GOOD_CSV + GOOD_CSV.splitlines()[3] + "\n", "duplicate"),
    "csv empty": fit_csv_bad("", "r.csv"),
    "csv missing loss column": fit_csv_bad("params,tokens\n1e6,2e7\n", "loss"),
    "csv negative params": fit_csv_bad("params,tokens,loss\n-1e6,2e7,3.1\n", "params"),
    "csv text loss": fit_csv_bad("params,tokens,loss\n1e6,2e7,abc\n", "loss"),
    "csv inf params": fit_csv_bad("params,tokens,loss\ninf,2e7,3.1\n", "params"),
    "csv negative loss": fit_csv_bad("params,tokens,loss\n1e6,2e7,-1\n", "loss"),
    "csv plot on read-only": fit_csv_bad(GOOD_CSV, "ro/plots", "--plot", "ro/plots/x.png"),
}


def _sql(db: Path, stmt: str) -> None:
    with sqlite3.connect(db) as c:
        c.execute(stmt)
    c.close()


# ------------------------------------------------------------------ harness


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A workdir with sweep `small` planned, written by a separate process (so the WAL is checkpointed)."""
    root = tmp_path_factory.mktemp("pristine")
    (root / "s.yaml").write_text(SMALL)
    run_isoflop("plan", str(root / "s.yaml"), workdir=root / "work")
    assert not (root / "work" / "isoflop.db-wal").exists()
    return root / "work"


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root by content hash (SQLite stores by their SQL dump; -wal/-shm come and go)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.endswith(("-wal", "-shm", "-journal")):
            continue
        data = p.read_bytes()
        if data.startswith(b"SQLite format 3\x00"):
            c = sqlite3.connect(f"file:{quote(str(p), safe='/')}?mode=ro", uri=True)
            try:
                data = "\n".join(c.iterdump()).encode()
            finally:
                c.close()
        out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    assert out, f"nothing to compare under {root}"
    return out


def test_snapshot_sees_a_changed_store(tmp_path, pristine):
    """The before/after comparison is not vacuous: one changed value in the store shows."""
    work = tmp_path / "w #1?"
    shutil.copytree(pristine, work)
    before = snapshot(work)
    assert "isoflop.db" in before
    _sql(work / "isoflop.db", "UPDATE runs SET lr = lr * 2 WHERE id = 1")
    assert snapshot(work) != before


@contextmanager
def read_only(path: Path):
    """Make a folder read-only in a way that binds root too: a read-only bind mount onto itself."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    r = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"root cannot make a read-only folder here: mount --bind failed: {r.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True, capture_output=True)
        yield
    finally:
        # lazy: an in-process engine may still hold the store open
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def invoke(args: list[str], cwd: Path, workdir: Path):
    """The real CLI in-process: returns (exit code, stdout, stderr, exception or None)."""
    runner = CliRunner()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        env = {"ISOFLOP_WORKDIR": str(workdir), "ISOFLOP_DB": None, "ISOFLOP_PROFILES": None, "COLUMNS": "200"}
        r = runner.invoke(app, args, env=env)
    finally:
        os.chdir(old)
    exc = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
    return r.exit_code, r.stdout, r.stderr, exc


def assert_one_line_error(code: int, out: str, err: str, exc, expect: str) -> None:
    assert exc is None, f"exception instead of one line: {exc!r}"
    assert code != 0
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert expect in lines[0], f"{expect!r} not in {lines[0]!r}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, pristine):
    bad = CASES[case]
    work = tmp_path / "work"
    shutil.copytree(pristine, work)
    for name, content in bad.files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    if bad.setup:
        bad.setup(tmp_path)
    with read_only(tmp_path / "ro") if "ro/" in " ".join(bad.args) else _nothing():
        before = snapshot(tmp_path)
        t0 = time.monotonic()
        code, out, err, exc = invoke(bad.args, tmp_path, work)
        took = time.monotonic() - t0
        assert snapshot(tmp_path) == before, "the bad input changed a stored file"
    assert_one_line_error(code, out, err, exc, bad.expect)
    if bad.max_s is not None:
        assert took < bad.max_s, f"took {took:.1f} s to fail"


@contextmanager
def _nothing():
    yield


@pytest.mark.parametrize("body", [spec("lr: 0.003", "lr: .nan"), spec("head_dim: 16", "head_dim: 1.0e+30"),
                                  spec("[3.0e11, 3.0e12]", "[1.0e+40]"), spec("rule: 4", "rule: -8")])
def test_failed_plan_creates_nothing(tmp_path, body):
    (tmp_path / "s.yaml").write_text(body)
    code, out, err, exc = invoke(["plan", "s.yaml"], tmp_path, tmp_path / "work")
    assert exc is None and code != 0 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "work").exists()


def test_read_only_workdir_plan_names_the_folder(tmp_path):
    (tmp_path / "s.yaml").write_text(SMALL)
    with read_only(tmp_path / "ro"):
        code, out, err, exc = invoke(["plan", "s.yaml"], tmp_path, tmp_path / "ro" / "work")
        assert_one_line_error(code, out, err, exc, str(tmp_path / "ro"))
        assert not any((tmp_path / "ro").iterdir())


@pytest.mark.parametrize("args", [["plan", "s.yaml"], ["plan", "s.yaml", "--force"], ["submit", "small"],
                                  ["cancel", "small"], ["retry", "small", "--cancelled"]])
def test_read_only_store_folder_refuses_changes(tmp_path, pristine, args):
    shutil.copytree(pristine, tmp_path / "work")
    (tmp_path / "s.yaml").write_text(SMALL.replace("name: small", "name: other"))
    before = snapshot(tmp_path / "work")
    with read_only(tmp_path / "work"):
        code, out, err, exc = invoke(args, tmp_path, tmp_path / "work")
        assert_one_line_error(code, out, err, exc, "read-only")
        assert str(tmp_path / "work") in err
    assert snapshot(tmp_path / "work") == before


@contextmanager
def small_disk(path: Path, size: str = "256k"):
    """A tiny filesystem (tmpfs) that a big plan fills up."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_is_one_line_and_changes_nothing(tmp_path):
    """A disk that fills up during `plan`: one line naming the store; a new store is removed again,
    an existing one keeps exactly what it held (the transaction rolls back)."""
    many = SMALL + "seeds: [" + ", ".join(map(str, range(50))) + "]\nlr_grid: [0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6]\n"
    (tmp_path / "small.yaml").write_text(SMALL)
    (tmp_path / "many.yaml").write_text(many)
    (tmp_path / "other.yaml").write_text(many.replace("name: small", "name: other"))
    with small_disk(tmp_path / "disk"):
        work = tmp_path / "disk" / "work"
        code, out, err, exc = invoke(["plan", "other.yaml"], tmp_path, work)
        assert_one_line_error(code, out, err, exc, "database or disk is full")
        assert str(work / "isoflop.db") in err and not work.exists()
        assert invoke(["plan", "small.yaml"], tmp_path, work)[0] == 0
        before = snapshot(work)
        code, out, err, exc = invoke(["plan", "many.yaml", "--force"], tmp_path, work)
        assert_one_line_error(code, out, err, exc, "database or disk is full")
        assert snapshot(work) == before


def test_init_into_read_only_folder(tmp_path):
    with read_only(tmp_path / "ro"):
        code, out, err, exc = invoke(["init", "ro/mine.yaml"], tmp_path, tmp_path / "work")
        assert_one_line_error(code, out, err, exc, "ro/mine.yaml")


@pytest.mark.parametrize("folder", ["work", "w #1?%20"])  # the second is no valid URI unencoded
def test_store_in_read_only_folder_can_be_read(tmp_path, pristine, folder):
    """status and fit read a store whose folder is not writable (SQLite's WAL would need it)."""
    work = tmp_path / folder
    shutil.copytree(pristine, work)
    before = snapshot(work)
    with read_only(work):
        code, out, err, exc = invoke(["status", "small", "--json"], tmp_path, work)
        assert exc is None and code == 0, err
        st = json.loads(out)
        assert st["counts"] == {"planned": 8}
        assert "read-only" in " ".join(st.get("warnings", []))
        code, out, err, exc = invoke(["fit", "small"], tmp_path, work)
        # the store was read: it knows the sweep has no completed runs yet
        assert_one_line_error(code, out, err, exc, "no completed runs yet (8 planned)")
    assert snapshot(work) == before


def test_finished_sweep_in_read_only_folder_fits(tmp_path, pristine):
    shutil.copytree(pristine, tmp_path / "work")
    # losses on the Chinchilla law, as if every run had finished
    _sql(tmp_path / "work" / "isoflop.db", "UPDATE runs SET state='completed', "
         "val_loss = 1.69 + 406.4 / pow(params, 0.34) + 410.7 / pow(tokens, 0.28)")
    before = snapshot(tmp_path / "work")
    with read_only(tmp_path / "work"):
        code, out, err, exc = invoke(["fit", "small", "--bootstrap", "0", "--json"], tmp_path, tmp_path / "work")
        assert exc is None and code == 0, err
        assert len(json.loads(out)["budgets"]) == 2
    assert snapshot(tmp_path / "work") == before


@pytest.mark.parametrize("args, files", [
    (["plan", "bad.yaml"], {"bad.yaml": spec("lr: 0.003", "lr: .nan")}),
    (["fit", "--csv", "adir"], {}),
    (["submit", "small", "--profile", "./prof.yaml", "--dry-run"], {"prof.yaml": "constraint: \"a\\nb\"\n"}),
    (["fit", "small", "--predict", "inf"], {}),
])
def test_in_process_matches_subprocess(tmp_path, pristine, args, files):
    """The in-process runner shows what `python -m isoflop` shows: same exit code, same line."""
    shutil.copytree(pristine, tmp_path / "work")
    (tmp_path / "adir").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code, out, err, exc = invoke(args, tmp_path, tmp_path / "work")
    p = run_isoflop(*args, workdir=tmp_path / "work", check=False)
    assert exc is None
    assert (code, err.strip()) == (p.returncode, p.stderr.strip())
    assert code == 2


def test_a_bug_keeps_its_traceback(tmp_path):
    """A ValueError that is not a UserError is a bug: the wrapper must not hide it as one line."""
    code = (
        "import typer, isoflop.cli as c\n"
        "@c.app.command('boom')\n@c.friendly\ndef boom():\n    raise ValueError('internal')\n"
        "c.app(['boom'])\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0 and "Traceback" in p.stderr and "ValueError: internal" in p.stderr


def test_every_command_has_the_wrapper():
    import isoflop.cli as c

    for cmd in c.app.registered_commands:
        fn = cmd.callback
        assert getattr(fn, "__wrapped__", None) is not None, f"{fn.__name__} lacks @friendly"


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60


# ------------------------------------------------------------------ result files a job left behind

BAD_RESULTS = {
    "loss text": lambda good: {**good, "val_loss": "abc"},
    "loss boolean": lambda good: {**good, "val_loss": True},
    "loss missing": lambda good: {k: v for k, v in good.items() if k != "val_loss"},
    "loss null": lambda good: {**good, "val_loss": None},
    "loss a list": lambda good: {**good, "val_loss": [3.0]},
    "not an object": lambda good: [good],
    "truncated": lambda good: json.dumps(good)[:40],
    "empty": lambda good: "",
    "not utf-8": lambda good: json.dumps(good).encode().replace(b'"ok"', b'"\xe9"'),
    "other run's result": lambda good: {**good, "run_id": "0" * 12},
    "loss negative": lambda good: {**good, "val_loss": -1.0},
    "loss zero": lambda good: {**good, "val_loss": 0.0},
}


@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_bad_result_file_fails_its_run_only(case, tmp_path):
    """A result.json that does not hold a finished run's loss: `status` exits 0, that run is
    `failed` with a reason naming the file, and every other run's result is read in."""
    from .test_run_faults import _result, _submitted

    from isoflop.store.engine import open_engine

    work = tmp_path / "work"
    (tmp_path / "s.yaml").write_text(SMALL)
    assert invoke(["plan", "s.yaml"], tmp_path, work)[0] == 0  # the store records its workdir: plan here
    dirs = list(_submitted(open_engine(f"sqlite:///{work / 'isoflop.db'}", create=False), work,
                           sweep="small").items())
    for i, (_, rdir) in enumerate(dirs):
        _result(rdir, 4.0 + i / 10)
    bad_id, bad = dirs[3]
    good = json.loads((bad / "result.json").read_text())
    content = BAD_RESULTS[case](good)
    data = content if isinstance(content, bytes) else (
        content if isinstance(content, str) else json.dumps(content)).encode()
    (bad / "result.json").write_bytes(data)
    code, out, err, exc = invoke(["status", "small", "--json"], tmp_path, work)
    assert exc is None and code == 0 and "Traceback" not in err, (exc, err)
    runs = {r["run_id"]: r for r in json.loads(out)["runs"]}
    assert runs[bad_id]["state"] == "failed", [(r["state"], r["reason"]) for r in runs.values()]
    assert str(bad / "result.json") in runs[bad_id]["reason"], runs[bad_id]["reason"]
    assert all(r["state"] == "completed" for rid, r in runs.items() if rid != bad_id), runs


# ------------------------------------------------------------------ any numbers: a plan or one UserError

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-3, max_value=1e3),
    st.integers(min_value=-10, max_value=10**40),
    st.integers(min_value=1, max_value=128),
    st.sampled_from([0, 1, -1, 0.5, 1.0 - 1e-12, 1e30, 1e40]),
)
FIELDS = [("lr",), ("batch", "rule"), ("model", "head_dim"), ("model", "seq_len"), ("model", "vocab_size"),
          ("model", "aspect_ratio"), ("model", "max_layers"), ("grid", "points"), ("grid", "span"),
          ("grid", "centre", "k"), ("grid", "centre", "power"), ("optimizer", "beta1"), ("optimizer", "grad_clip"),
          ("trainer", "threads"), ("trainer", "eval_batches"), ("schedule", "warmup_frac"),
          ("lr", "coef"), ("lr", "power"), ("lr", "min"), ("lr", "max"), ("batch", "rule", "coef"),
          ("batch", "rule", "power"), ("batch", "rule", "max")]


@settings(max_examples=int(os.environ.get('BADINPUT_EXAMPLES', 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), NUMBERS), min_size=1, max_size=3),
       budget=st.one_of(st.floats(min_value=3e11, max_value=1e14), NUMBERS))
def test_any_numbers_plan_to_trainable_runs_or_one_user_error(changes, budget):
    """Whatever numbers a spec holds, planning gives runs that can train or one UserError line:
    never another exception, never a NaN, a non-positive lr or batch, never minutes of enumeration."""
    import math

    import yaml

    from isoflop.errors import UserError
    from isoflop.plan.grid import plan
    from isoflop.spec import parse_spec

    data = yaml.safe_load(SMALL)
    data["budgets"] = [budget]
    data["grid"]["points"] = 3
    for path, value in changes:
        d = data
        for k in path[:-1]:
            if not isinstance(d.get(k, {}), dict):  # a number becomes a power rule of that value
                d[k] = {"coef": d[k]}
            d = d.setdefault(k, {})
        d[path[-1]] = value
    t0 = time.monotonic()
    try:
        runs = plan(parse_spec(data))
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        event("refused")
        return
    finally:
        assert time.monotonic() - t0 < 10
    event("planned")
    for r in runs:
        assert math.isfinite(r.lr) and 0 < r.lr <= 10
        assert r.batch_seqs >= 1 and r.steps >= 1 and r.n_layer >= 1 and r.d_model >= 1
        assert abs(r.flops / r.budget - 1) <= 0.01


# ------------------------------------------------------------------ any text in a profile: no line of its own

_PRINTABLE = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=12)
PROFILE_TEXT = st.one_of(_PRINTABLE, _PRINTABLE, _PRINTABLE, st.text(st.characters(codec="utf-8"), max_size=12))


@pytest.fixture(scope="module")
def sweep_for_slurm(tmp_path_factory, pristine) -> Path:
    if shutil.which("sbatch") is None:
        pytest.skip("submit --dry-run of a Slurm profile needs sbatch on PATH")
    root = tmp_path_factory.mktemp("slurm-dry")
    shutil.copytree(pristine, root / "work")
    return root


@settings(max_examples=int(os.environ.get("BADINPUT_EXAMPLES", 40)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({k: PROFILE_TEXT for k in ("partition", "account", "qos", "constraint")}),
       comment=PROFILE_TEXT, setup=PROFILE_TEXT)
def test_no_profile_text_adds_a_line_to_the_job_script(sweep_for_slurm, values, comment, setup):
    """Whatever text a profile holds, the sbatch script keeps one line per parameter and one per
    setup entry (a newline would add an #SBATCH directive or a command), or the profile is
    refused in one line naming the file."""
    import re

    import yaml

    root = sweep_for_slurm
    prof = {"executor": "slurm", **values, "sbatch": {"comment": comment}, "setup": [setup]}
    (root / "prof.yaml").write_text(yaml.safe_dump(prof))
    code, out, err, exc = invoke(["submit", "small", "--profile", "./prof.yaml", "--dry-run"], root, root / "work")
    assert exc is None, exc
    if code != 0:
        assert_one_line_error(code, out, err, exc, "prof.yaml")
        event("refused")
        return
    event("script")
    script = out.split("sbatch script (first array):\n", 1)[1].split("\n\n# command\n", 1)[0]
    params, setup_block = script.split("\n# setup\n") if "\n# setup\n" in script else (script, "")
    lines = params.split("\n")
    directives = [ln for ln in lines if ln.startswith("#SBATCH")]
    assert all(re.match(r"#SBATCH --[a-z][a-z-]*(=|$)", ln) for ln in directives), directives
    assert len([ln for ln in lines if ln.strip() and not ln.startswith("#")]) == 0, lines
    assert len(setup_block.strip("\n").split("\n")) <= 1, setup_block
