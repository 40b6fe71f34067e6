"""Findings of issue 11 about which runs count, each reproduced with a real store (SQLite, the CLI)
and the files a job writes: superseded runs stay superseded, one bad result fails one run, a
corrupt result is moved aside and the run retrained, a non-finite loss is diverged, a stale loss
is flagged, never fitted."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from isoflop.dispatch import files as F
from isoflop.dispatch.job import run_finished
from isoflop.dispatch.runner import run_to_end
from isoflop.schemas import RunFile
from isoflop.store.models import Attempt, Run
from isoflop.store.results import fit_inputs

from .conftest import run_isoflop, tiny_spec
from .test_command_runner import _nanogpt_run
from .test_dispatch_local import local_profile, status, wait_done


def _submitted(engine, workdir: Path, state: str = "running", sweep: str = "tiny") -> dict[str, Path]:
    """Record one active local attempt per planned run and write its run.json, as submit does;
    {run_id: run folder}. No job file exists, so only the files decide."""
    out = {}
    with Session(engine) as s, s.begin():
        for i, r in enumerate(s.scalars(select(Run).where(Run.state == "planned")).all()):
            s.add(Attempt(run_pk=r.id, number=1, executor="local", job_id=f"faketok_{i}", state=state,
                          token="faketok", task=i))
            r.state = state
            rdir = F.run_dir(workdir, sweep, r.run_id)
            rdir.mkdir(parents=True, exist_ok=True)
            F.write_json_atomic(rdir / F.RUN_JSON, RunFile.of_run(r, sweep, 1, 1.0).to_json())
            out[r.run_id] = rdir
    return out


def _result(rdir: Path, loss, **over) -> None:
    """result.json as the built-in trainer writes it (from the planned last step)."""
    rj = json.loads((rdir / F.RUN_JSON).read_text())
    d = {"run_id": rj["run_id"], "sweep": rj["sweep"], "status": "ok", "val_loss": loss, "train_loss": 3.0,
         "step": rj["steps"], "steps": rj["steps"], "planned_steps": rj["steps"], "tokens": rj["tokens"],
         "diverged": False, "diverged_step": None, "wall_s": 1.0, **over}
    (rdir / F.RESULT).write_text(json.dumps(d))


def _runs(engine) -> dict[str, Run]:
    with Session(engine) as s:
        return {r.run_id: r for r in s.scalars(select(Run)).all()}


def test_superseded_runs_stay_superseded_and_are_never_fitted(planned_sweep, tmp_path):
    """Finding 1: plan A; submit A; plan A' --force (lr changed) while queued; status; fit."""
    engine, workdir = planned_sweep(points=3)
    old = _submitted(engine, workdir, state="queued")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(tiny_spec().replace("max: 0.01", "max: 0.001"))
    out = run_isoflop("plan", str(spec), "--force", workdir=workdir).stdout
    assert "superseded" in out, out
    gone = {rid: d for rid, d in old.items() if _runs(engine)[rid].state == "superseded"}
    assert gone, out  # the lr cap moved at least one run
    for i, rdir in enumerate(old.values()):  # the old-spec jobs run on and finish
        _result(rdir, 4.0 + i)
    st = status(workdir)
    assert {r["run_id"] for r in st["runs"]}.isdisjoint(gone), st
    runs = _runs(engine)
    for rid, rdir in gone.items():
        assert runs[rid].state == "superseded", (rid, runs[rid].state)
        assert runs[rid].val_loss is not None  # its result is kept in the store
        assert (rdir / F.RESULT).exists()  # and on disk
    with Session(engine) as s:
        assert {a.state for a in s.scalars(select(Attempt))} == {"completed"}
    _, rows, _ = fit_inputs(engine, "tiny")
    assert rows and {r["run_id"] for r in rows}.isdisjoint(gone)
    for _ in range(2):  # and later syncs do not bring them back
        status(workdir)
    assert {_runs(engine)[rid].state for rid in gone} == {"superseded"}


def test_one_bad_result_fails_one_run_and_the_rest_are_read(planned_sweep):
    """Finding 2: a loss of "abc" stopped every status/submit with a bare ValueError."""
    engine, workdir = planned_sweep(points=3)
    dirs = list(_submitted(engine, workdir).items())
    bad_id, bad = dirs[1]
    _result(dirs[0][1], 4.5)
    _result(bad, "abc")
    _result(dirs[2][1], 4.0)
    p = run_isoflop("status", "tiny", "--json", workdir=workdir, check=False)
    assert p.returncode == 0, p.stderr
    runs = {r["run_id"]: r for r in json.loads(p.stdout)["runs"]}
    assert runs[bad_id]["state"] == "failed"
    reason = runs[bad_id]["reason"]
    assert str(bad / "result.json") in reason and "val_loss" in reason and "'abc'" in reason, reason
    assert "result.rejected-1.json" in reason and (bad / "result.rejected-1.json").exists()
    assert not (bad / F.RESULT).exists()
    assert [runs[rid]["state"] for rid, _ in (dirs[0], dirs[2])] == ["completed", "completed"]
    assert runs[dirs[0][0]]["val_loss"] == 4.5 and runs[dirs[2][0]]["val_loss"] == 4.0


def test_truncated_result_is_set_aside_and_the_job_trains_again(planned_sweep, tmp_path):
    """Finding 3: a truncated result.json made the run `lost`, and the job skipped it on every retry."""
    engine, workdir = planned_sweep(points=1)
    prof = local_profile(tmp_path)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    (rid, rdir), = ((r.run_id, F.run_dir(workdir, "tiny", r.run_id)) for r in _runs(engine).values())
    t0 = time.time()  # wait for the job to finish without a status (which would ingest the result)
    while (F.read_json(F.status_path(rdir, 1)) or {}).get("state") != "completed":
        assert time.time() - t0 < 120
        time.sleep(0.5)
    good = (rdir / F.RESULT).read_text()
    (rdir / F.RESULT).write_text(good[: len(good) // 2])  # truncated
    run = status(workdir)["runs"][0]
    assert run["state"] == "failed" and "not valid JSON" in run["reason"] and "truncated?" in run["reason"], run
    assert (rdir / "result.rejected-1.json").read_text() == good[: len(good) // 2]
    run_isoflop("retry", "tiny", "--failed", workdir=workdir)
    run_isoflop("submit", "tiny", "--profile", prof, workdir=workdir)
    run = wait_done(workdir)["runs"][0]
    assert run["state"] == "completed" and run["attempt"] == 2 and math.isfinite(run["val_loss"]), run
    assert json.loads((rdir / F.RESULT).read_text())["val_loss"] == run["val_loss"]


def test_the_job_never_skips_a_run_whose_result_does_not_count(tmp_path):
    rdir = tmp_path / "r1"
    rdir.mkdir()
    (rdir / F.RUN_JSON).write_text(json.dumps({"run_id": "r1", "steps": 100, "lr": 0.1, "attempt": 2}))
    (rdir / F.RESULT).write_text('{"run_id": "r1", "val_loss": 3.')
    assert not run_finished(rdir)
    assert not (rdir / F.RESULT).exists() and (rdir / "result.rejected-2.json").exists()
    assert "not valid JSON" in (rdir / "result.rejected-2.reason").read_text()
    (rdir / F.RESULT).write_text(json.dumps({"run_id": "r1", "val_loss": 3.0, "step": 100}))
    assert run_finished(rdir)
    (rdir / F.RESULT).write_text(json.dumps({"run_id": "r1", "val_loss": 3.0, "step": 60, "planned_steps": 100}))
    assert not run_finished(rdir)  # stale: trained again
    (rdir / F.RESULT).write_text(json.dumps({"run_id": "r1", "val_loss": float("nan"), "step": 100}))
    assert run_finished(rdir)  # diverged is finished: `retry --diverged` restarts it


def test_nan_loss_is_diverged_and_can_be_retried(planned_sweep):
    """Finding 6: a NaN loss counted as completed, and `retry --diverged` found no run."""
    engine, workdir = planned_sweep(points=2)
    (rid, rdir), (ok_id, ok_dir) = _submitted(engine, workdir).items()
    _result(rdir, float("nan"))
    _result(ok_dir, 4.0)
    runs = {r["run_id"]: r for r in status(workdir)["runs"]}
    assert runs[rid]["state"] == "diverged" and "val_loss nan" in runs[rid]["reason"], runs[rid]
    assert runs[ok_id]["state"] == "completed"
    _, rows, _ = fit_inputs(engine, "tiny")
    assert [r["loss"] for r in rows if r["state"] == "completed"] == [4.0]
    out = run_isoflop("retry", "tiny", "--diverged", workdir=workdir).stdout
    assert "reset 1 run(s) to planned" in out, out
    assert _runs(engine)[rid].state == "planned" and (rdir / "attempt-1" / F.RESULT).exists()


def test_stale_loss_is_flagged_never_fitted(planned_sweep):
    """Finding 10 in the store: a result from before the planned last step fails its run."""
    engine, workdir = planned_sweep(points=2)
    (rid, rdir), (ok_id, ok_dir) = _submitted(engine, workdir).items()
    steps = json.loads((rdir / F.RUN_JSON).read_text())["steps"]
    _result(rdir, 3.5, step=steps - 90, steps=steps - 90, source="log_regex")
    _result(ok_dir, 4.0)
    runs = {r["run_id"]: r for r in status(workdir)["runs"]}
    assert runs[rid]["state"] == "failed", runs[rid]
    assert f"from step {steps - 90} of {steps} planned" in runs[rid]["reason"]
    assert runs[rid]["val_loss"] is None and (rdir / "result.rejected-1.json").exists()
    _, rows, _ = fit_inputs(engine, "tiny")
    assert [r["run_id"] for r in rows if r["state"] == "completed"] == [ok_id]


def test_nanogpt_eval_interval_not_dividing_steps_is_stale(tmp_path):
    """Finding 10 with the nanoGPT template: eval_interval 15 of 40 steps, last evaluation at 30."""
    run_dir = _nanogpt_run(tmp_path, "stale")
    rj = json.loads((run_dir / F.RUN_JSON).read_text())
    rj["vars"]["eval_interval"] = 15
    (run_dir / F.RUN_JSON).write_text(json.dumps(rj))
    out = run_to_end(run_dir, attempt=1)
    assert out.state == "failed" and "from step 30 of 40 planned" in out.reason, out
    res = json.loads((run_dir / F.RESULT).read_text())
    assert res["step"] == 30 and res["planned_steps"] == 40
    assert not run_finished(run_dir)  # the job trains it again rather than skipping it


def test_a_live_trainer_keeps_its_run_running(planned_sweep, tmp_path):
    """Finding 4's evidence: a job gone from the scheduler while its trainer still trains the run
    folder is not `lost` (a retry would start a second trainer there); a pid reused by another
    process, or a dead one, is not that trainer."""
    import os
    import socket
    import subprocess
    import sys

    from isoflop.dispatch.evidence import trainer_alive

    engine, workdir = planned_sweep(points=1)
    (rid, rdir), = _submitted(engine, workdir).items()
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    trainer = subprocess.Popen(sleep, env={**os.environ, "ISOFLOP_RUN_DIR": str(rdir)})
    other = subprocess.Popen(sleep)
    try:
        host = socket.gethostname()
        assert trainer_alive(trainer.pid, host, rdir) is True
        assert trainer_alive(other.pid, host, rdir) is False  # a reused pid
        assert trainer_alive(trainer.pid, "elsewhere", rdir) is None  # cannot be known from here
        F.write_json_atomic(F.status_path(rdir, 1), {"state": "running", "node": host, "trainer_pid": trainer.pid})
        run = status(workdir)["runs"][0]
        assert run["state"] == "running" and "trainer still runs" in run["reason"], run
        trainer.kill()
        trainer.wait()
        assert trainer_alive(trainer.pid, host, rdir) is False
        run = status(workdir)["runs"][0]
        assert run["state"] == "lost" and "left the scheduler without a result" in run["reason"], run
    finally:
        for p in (trainer, other):
            p.kill()
            p.wait()


def test_nanogpt_sweep_with_stale_losses_fits_none_of_them(tmp_path):
    """Finding 10 end to end: the nanoGPT template through the local pool with an eval_interval (17)
    that divides the steps of one run (170) but not of the others (433, 53)."""
    from isoflop.store.engine import open_engine

    import pickle

    ng = tmp_path / "nanoGPT"
    (ng / "data" / "toy").mkdir(parents=True)
    (ng / "data" / "toy" / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 256}))  # the spec's vocab_size
    trainer = ("trainer: {template: nanogpt, device: cpu, vars: {nanogpt_dir: '%s', train_py: '%s', dataset: toy, "
               "eval_interval: 17, eval_iters: 2, log_interval: 10}}\n"
               % (ng, Path(__file__).parent / "scripts" / "nanogpt_like" / "train.py"))
    # nanoGPT's model (learned positions); params with_output, which leaves the position embedding
    # out of N: the same sizes and steps as the tiny spec's
    text = "".join(trainer if ln.startswith("trainer:") else "params: with_output\n" if ln.startswith("params:")
                   else ln.replace("tied: true}", "tied: true, position_embedding: learned}") + "\n"
                   for ln in tiny_spec().splitlines())
    spec = tmp_path / "tiny.yaml"
    spec.write_text(text)
    workdir = tmp_path / "work"
    run_isoflop("plan", str(spec), workdir=workdir)
    run_isoflop("submit", "tiny", "--profile", local_profile(tmp_path), workdir=workdir)
    runs = {r["steps"]: r for r in wait_done(workdir, timeout=180)["runs"]}
    assert sorted(runs) == [53, 170, 433], runs
    assert runs[170]["state"] == "completed", runs[170]
    for steps, last in ((433, 425), (53, 51)):
        assert runs[steps]["state"] == "failed", runs[steps]
        assert f"from step {last} of {steps} planned" in runs[steps]["reason"], runs[steps]["reason"]
    engine = open_engine(f"sqlite:///{workdir / 'isoflop.db'}", create=False)
    _, rows, _ = fit_inputs(engine, "tiny")
    assert [r["run_id"] for r in rows if r["state"] == "completed"] == [runs[170]["run_id"]]
