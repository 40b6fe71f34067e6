"""The process runner with real processes: tests/scripts/toy_train.py (numpy logistic regression)
through a test-local command template, and the built-in trainer through `builtin`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from isoflop.dispatch.runner import CommandRun, Outcome, forward_signals, run_to_end

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "scripts" / "toy_train.py"

TEMPLATE = r"""# test-local template for tests/scripts/toy_train.py
description: toy logistic regression
command: >-
  {{ python }} {{ vars.script }} --steps={{ steps }} --lr={{ lr }} --seed={{ seed }} --batch={{ batch_seqs }}
  --out_dir={{ checkpoint_dir }} --resume_from={{ resume_from }}
  --data={{ data_path }} --tag={{ vars.tag | default('') }} {{ vars.args | default([]) }}
result_regex: 'final loss (?P<loss>\S+)'
progress_regex: '^step (?P<step>\d+) loss (?P<train_loss>\S+)'
resumable: %(resumable)s
%(extra)s
"""


def make_run(tmp_path: Path, name: str = "run", *, args=(), resumable: bool = True, steps: int = 60,
             data_path: str | None = None, tag: str = "", extra: str = "", **over) -> Path:
    tpl = tmp_path / f"toy-{name}.yaml"
    tpl.write_text(TEMPLATE % {"resumable": "true" if resumable else "false", "extra": extra})
    run_dir = tmp_path / name
    run_dir.mkdir()
    definition = {
        "run_id": name, "sweep": "toy", "budget": 1e9, "attempt": 1, "lr_scale": 1.0,
        "shape": {"n_layer": 1, "d_model": 16, "n_head": 1, "vocab_size": 2, "seq_len": 1},
        "tokens": steps * 64, "steps": steps, "batch_seqs": 64, "batch_tokens": 64, "lr": 0.5, "seed": 3,
        "schedule": {"kind": "cosine", "warmup_frac": 0.0, "min_lr_frac": 0.1, "decay_frac": 0.2},
        "optimizer": {"beta1": 0.9, "beta2": 0.95, "weight_decay": 0.0, "grad_clip": 1.0},
        "data": {"kind": "text", "path": data_path}, "trainer": str(tpl),
        "vars": {"script": str(TOY), "tag": tag, "args": list(args)},
    }
    definition.update(over)
    (run_dir / "run.json").write_text(json.dumps(definition))
    return run_dir


def metrics(run_dir: Path) -> list[dict]:
    p = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_result_file_and_metrics_file(tmp_path):
    run_dir = make_run(tmp_path, args=["--result=file", "--progress=metrics"])
    out = run_to_end(run_dir, attempt=1)
    assert isinstance(out, Outcome) and out.state == "completed", out.reason
    res = json.loads((run_dir / "result.json").read_text())
    assert res == out.result and res["source"] == "result_file" and res["run_id"] == "run"
    assert 0 < res["val_loss"] < 0.7 and res["tokens"] == 60 * 64 and res["steps"] == 60
    assert res["diverged"] is False and res["diverged_step"] is None and res["wall_s"] > 0
    m = metrics(run_dir)
    assert [x["step"] for x in m] == list(range(1, 61))
    assert m[0]["tokens"] == 64 and all("train_loss" in x for x in m) and m[-1]["train_loss"] == res["train_loss"]
    log = (run_dir / "attempt-1.log").read_text()
    assert "[isoflop]" in log and "done" in log
    rec = json.loads((run_dir / "attempt-1.outcome.json").read_text())
    assert rec["state"] == "completed" and rec["exit_code"] == 0


def test_loss_only_in_log_is_read_by_regex(tmp_path):
    run_dir = make_run(tmp_path, args=["--result=log", "--progress=log"])
    out = run_to_end(run_dir, attempt=1)
    assert out.state == "completed", out.reason
    assert out.result["source"] == "log_regex" and 0 < out.result["val_loss"] < 0.7
    log = (run_dir / "attempt-1.log").read_text()
    assert f"final loss {out.result['val_loss']!r}" in log
    m = metrics(run_dir)
    assert [x["step"] for x in m] == list(range(1, 61)) and out.result["train_loss"] == m[-1]["train_loss"]


def test_exit_zero_without_result_is_failed(tmp_path):
    run_dir = make_run(tmp_path, args=["--result=none", "--progress=none"])
    out = run_to_end(run_dir, attempt=1)
    assert out.state == "failed" and out.exit_code == 0 and out.result is None
    assert "exited 0 without a readable result" in out.reason
    assert not (run_dir / "result.json").exists()


def test_nonzero_exit_is_failed_with_last_line(tmp_path):
    run_dir = make_run(tmp_path, args=["--exit_code=5", "--progress=none", "--result=none"])
    out = run_to_end(run_dir, attempt=1)
    assert out.state == "failed" and out.exit_code == 5 and out.reason == "exit code 5: done"


def test_nan_loss_is_diverged(tmp_path):
    run_dir = make_run(tmp_path, args=["--nan_at=20"])
    out = run_to_end(run_dir, attempt=1)
    assert out.state == "diverged" and out.result["diverged_step"] == 20 and out.result["val_loss"] is None
    assert json.loads((run_dir / "result.json").read_text())["diverged"] is True
    assert [x for x in metrics(run_dir) if x.get("diverged")][0]["step"] == 20


def test_injection_is_passed_literally(tmp_path):
    marker = Path("/tmp") / f"isoflop-pwned-{uuid.uuid4().hex}"
    tag = f"a; touch {marker}.1 #"
    data = f"$(touch {marker}.2)`touch {marker}.3`"
    run_dir = make_run(tmp_path, tag=tag, data_path=data, args=[f"--tag=x' ; touch {marker}.4 ; echo '"], steps=5)
    out = run_to_end(run_dir, attempt=1)
    assert out.state == "completed", out.reason
    assert not any(Path(f"{marker}.{i}").exists() for i in range(1, 5))
    argv_line = next(x for x in (run_dir / "attempt-1.log").read_text().splitlines() if x.startswith("argv="))
    argv = json.loads(argv_line[len("argv="):])
    assert f"--tag={tag}" in argv and f"--data={data}" in argv
    assert f"--tag=x' ; touch {marker}.4 ; echo '" in argv


def _interrupt_when_checkpointed(run: CommandRun, sig=signal.SIGUSR1) -> Outcome:
    ckpt = run.run_dir / "checkpoint" / "ckpt.npz"
    wait_for(lambda: ckpt.exists() or run.poll() is not None)
    assert run.wait(timeout=0.05) is None, "the run ended before it could be interrupted"
    run.interrupt(sig)
    out = run.wait(timeout=30)
    assert out is not None
    return out


def test_interrupt_then_resume_matches_uninterrupted(tmp_path):
    steps = 150
    ref = run_to_end(make_run(tmp_path, "ref", steps=steps), attempt=1)
    assert ref.state == "completed", ref.reason

    run_dir = make_run(tmp_path, "split", steps=steps, args=["--step_sleep=0.02"])
    first = CommandRun(run_dir, attempt=1)
    assert "--resume_from=''" in first.command
    first.start()
    out = _interrupt_when_checkpointed(first)
    assert out.state == "preempted" and out.exit_code == 3, out.reason
    assert not (run_dir / "result.json").exists()
    stopped_at = max(x["step"] for x in metrics(run_dir))
    assert 0 < stopped_at < steps

    second = CommandRun(run_dir, attempt=2)
    assert f"--resume_from={run_dir / 'checkpoint'}" in second.command
    second.start()
    out2 = second.wait()
    assert out2.state == "completed", out2.reason
    log2 = (run_dir / "attempt-2.log").read_text()
    assert "start step 0" not in log2 and "start step" in log2
    assert out2.result["val_loss"] == ref.result["val_loss"]
    assert out2.result["train_loss"] == ref.result["train_loss"]
    steps_logged = [x["step"] for x in metrics(run_dir)]
    assert steps_logged == list(range(1, steps + 1)), "metrics.jsonl has gaps or duplicates across attempts"
    assert out2.result["wall_s"] >= json.loads((run_dir / "attempt-1.outcome.json").read_text())["wall_s"]


def test_interrupt_with_other_exit_code_is_preempted(tmp_path):
    # the template's stop_signal replaces the signal asked for
    run_dir = make_run(tmp_path, steps=400, args=["--step_sleep=0.02", "--preempt_exit=42"], extra="stop_signal: TERM")
    run = CommandRun(run_dir, attempt=1)
    run.start()
    out = _interrupt_when_checkpointed(run, signal.SIGUSR1)
    assert "got signal 15" in (run_dir / "attempt-1.log").read_text()
    assert out.state == "preempted" and out.exit_code == 42 and "SIGTERM" in out.reason


def test_non_resumable_restarts_from_scratch(tmp_path):
    run_dir = make_run(tmp_path, steps=150, resumable=False, args=["--step_sleep=0.01"])
    first = CommandRun(run_dir, attempt=1)
    first.start()
    out = _interrupt_when_checkpointed(first)
    assert out.state == "preempted" and "cannot resume" in out.reason
    old_metrics = (run_dir / "metrics.jsonl").read_text()

    second = CommandRun(run_dir, attempt=2)
    assert "--resume_from=''" in second.command
    second.start()
    out2 = second.wait()
    assert out2.state == "completed", out2.reason
    assert second.moved_aside == "attempt-1"
    aside = run_dir / "attempt-1"
    assert (aside / "checkpoint" / "ckpt.npz").exists() and (aside / "metrics.jsonl").read_text() == old_metrics
    assert "start step 0" in (run_dir / "attempt-2.log").read_text()
    assert [x["step"] for x in metrics(run_dir)] == list(range(1, 151))
    assert out2.result["moved_aside"] == "attempt-1"
    assert (run_dir / "attempt-1.log").exists()  # logs are never moved or overwritten


def test_forward_signals(tmp_path):
    run_dir = make_run(tmp_path, steps=400, args=["--step_sleep=0.02"])
    run = CommandRun(run_dir, attempt=1)
    before = signal.getsignal(signal.SIGUSR1)
    run.start()
    with forward_signals(run):
        wait_for(lambda: (run_dir / "checkpoint" / "ckpt.npz").exists())
        os.kill(os.getpid(), signal.SIGUSR1)  # what Slurm/submitit would send to the job
        out = run.wait(timeout=30)
    assert signal.getsignal(signal.SIGUSR1) is before
    assert out is not None and out.state == "preempted" and out.exit_code == 3


def test_interrupt_before_start_is_preempted(tmp_path):
    run = CommandRun(make_run(tmp_path), attempt=1)
    run.interrupt()
    run.start()
    out = run.wait()
    assert out.state == "preempted" and "before the command started" in out.reason and run.pid is None


def test_wait_reentered_from_signal_handler(tmp_path):
    """What submitit does on USR2: its handler calls interrupt() and wait() while the job's main
    loop is itself inside wait()."""
    run_dir = make_run(tmp_path, steps=400, args=["--step_sleep=0.02"])
    run = CommandRun(run_dir, attempt=1)
    inner = []

    def handler(signum, frame):
        run.interrupt(signal.SIGUSR1)
        inner.append(run.wait(timeout=30))

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        run.start()
        wait_for(lambda: (run_dir / "checkpoint" / "ckpt.npz").exists())
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR2)).start()
        out = run.wait()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert inner and inner[0] is out and out.state == "preempted"
    assert (run_dir / "attempt-1.log").read_text().count("[isoflop]") == 3  # start, command, one end line


def test_runner_module_cli(tmp_path):
    run_dir = make_run(tmp_path, steps=10)
    p = subprocess.run([sys.executable, "-m", "isoflop.dispatch.runner", str(run_dir)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["state"] == "completed"
    p = subprocess.run([sys.executable, "-m", "isoflop.dispatch.runner", str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "run.json: not found" in p.stderr


def test_unstartable_run_is_failed_not_raised(tmp_path):
    run = CommandRun(tmp_path, attempt=1)  # no run.json
    assert "run.json: not found" in run.error
    with pytest.raises(ValueError, match="run.json: not found"):
        run.check()
    run.start()
    out = run.wait()
    assert out.state == "failed" and "run.json: not found" in out.reason and out.exit_code == 2
    run_dir = make_run(tmp_path, trainer="no-such-template")
    out = run_to_end(run_dir, attempt=1)
    assert out.state == "failed" and "unknown command template 'no-such-template'" in out.reason
    assert "cannot start" in (run_dir / "attempt-1.log").read_text()


# ------------------------------------------------------------------ the built-in trainer


@pytest.mark.skipif(not (REPO / "isoflop" / "train" / "__main__.py").exists(), reason="isoflop/train not written yet")
def test_builtin_round_trip(tmp_path, monkeypatch):
    from isoflop.plan.grid import plan
    from isoflop.spec import parse_spec

    spec = parse_spec({
        "name": "tiny", "budgets": [1e9], "grid": {"points": 1, "span": 1, "centre": {"k": 0.3}},
        "model": {"vocab_size": 256, "seq_len": 32, "head_dim": 16, "aspect_ratio": 32},
        "batch": {"rule": 4, "unit": "sequences"}, "lr": 0.003, "flops": "exact", "params": "all",
        "trainer": {"device": "cpu", "threads": 1, "eval_batches": 2, "log_every": 5},
    })
    r = plan(spec)[0]
    assert r.steps <= 200, r.steps
    run_dir = tmp_path / r.run_id
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps(
        r.definition | {"run_id": r.run_id, "sweep": "tiny", "attempt": 1, "lr_scale": 1.0,
                        "planned": {"flops": r.flops}}))
    monkeypatch.setenv("ISOFLOP_TEST_STEP_SLEEP", "0.01")  # the trainer's test hook: room to interrupt
    run = CommandRun(run_dir, attempt=1)
    assert run.command.split()[1:3] == ["-m", "isoflop.train"] and run.command.split()[0] == sys.executable
    run.start()
    # interrupted once it has logged progress: the trainer checkpoints and exits 3
    wait_for(lambda: bool(metrics(run_dir)) or run.poll() is not None, timeout=60)
    if run.poll() is None:
        run.interrupt(signal.SIGUSR1)
        out = run.wait(timeout=60)
        log = (run_dir / "attempt-1.log").read_text()[-3000:]
        assert out is not None and out.state == "preempted" and out.exit_code == 3, (out, log)
        assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists(), log
        run = CommandRun(run_dir, attempt=2)
        run.start()
    out = run.wait(timeout=120)
    assert out is not None and out.state == "completed", (out, (run_dir / f"attempt-{run.attempt}.log").read_text()[-2000:])
    res = json.loads((run_dir / "result.json").read_text())
    assert out.result == res and res["run_id"] == r.run_id and res["val_loss"] > 0
    assert metrics(run_dir)[-1]["step"] == r.steps, metrics(run_dir)[-3:]
    assert run.attempt == 1 or res.get("resumed_from_step"), res


# ------------------------------------------------------------------ the shipped nanogpt template


def _nanogpt_run(tmp_path: Path, name: str, **over) -> Path:
    """A run for the shipped nanogpt template as the template needs it: nanoGPT's model family,
    vocab_size from the dataset's meta.pkl, no data: block, its learned position embedding."""
    import pickle

    ng = tmp_path / "nanoGPT"
    (ng / "data" / "toy").mkdir(parents=True, exist_ok=True)
    (ng / "data" / "toy" / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 2}))
    fields = dict(steps=40, trainer="nanogpt", lr=0.5,
                  schedule={"kind": "cosine", "warmup_frac": 0.1, "min_lr_frac": 0.1, "decay_frac": 0.2},
                  compile=False, dtype="fp32", device="cpu", data={"kind": "stdlib", "path": None},
                  shape={"n_layer": 1, "d_model": 16, "n_head": 1, "vocab_size": 2, "seq_len": 1, "mlp": "gelu",
                         "tied": True, "qk_norm": False, "position_embedding": "learned"}, param_convention="all",
                  vars={"nanogpt_dir": str(ng), "train_py": str(REPO / "tests/scripts/nanogpt_like/train.py"),
                        "dataset": "toy", "eval_interval": 10, "log_interval": 5, "eval_iters": 2})
    return make_run(tmp_path, name, **(fields | over))


def test_nanogpt_template_end_to_end(tmp_path, monkeypatch):
    ref = run_to_end(_nanogpt_run(tmp_path, "ref"), attempt=1)
    assert ref.state == "completed", ref.reason
    assert ref.result["source"] == "log_regex" and ref.result["steps"] == 40 and ref.result["tokens"] == 40 * 64
    m = metrics(tmp_path / "ref")
    assert [x["step"] for x in m if "val_loss" in x] == [0, 10, 20, 30, 40] and m[-1]["val_loss"] == ref.result["val_loss"]

    run_dir = _nanogpt_run(tmp_path, "split")
    monkeypatch.setenv("NANOGPT_LIKE_SLEEP", "0.03")
    first = CommandRun(run_dir, attempt=1)
    assert "--init_from=scratch" in first.command
    first.start()
    wait_for(lambda: (run_dir / "checkpoint" / "ckpt.pt").exists() or first.poll() is not None)
    first.interrupt()  # nanoGPT does not catch SIGUSR1: it dies, and resumes from its last eval checkpoint
    out = first.wait(timeout=30)
    assert out.state == "preempted" and "SIGUSR1" in out.reason, out
    monkeypatch.delenv("NANOGPT_LIKE_SLEEP")
    second = CommandRun(run_dir, attempt=2)
    assert "--init_from=resume" in second.command
    second.start()
    out = second.wait(timeout=60)
    assert out.state == "completed", out.reason
    assert out.result["val_loss"] == ref.result["val_loss"]


def test_nanogpt_device_auto_threads_and_tok_s(tmp_path, monkeypatch):
    """device: auto reaches nanoGPT as the node's device (its own default, cuda, fails on a CPU
    node); trainer.threads as OMP_NUM_THREADS; progress lines get tok/s, so status has an ETA."""
    import torch

    monkeypatch.setenv("NANOGPT_LIKE_SLEEP", "0.05")  # ~2 s: several progress pumps
    run_dir = _nanogpt_run(tmp_path, "auto", device="auto", threads=1)
    out = run_to_end(run_dir, attempt=1)
    log = (run_dir / "attempt-1.log").read_text()
    assert out.state == "completed", (out.reason, log[-2000:])
    assert f"Overriding: device = {'cuda' if torch.cuda.is_available() else 'cpu'}" in log
    assert "threads: OMP_NUM_THREADS=1" in log
    rates = [x["tokens_per_s"] for x in metrics(run_dir) if "tokens_per_s" in x]
    # 64 tokens per step, one step per >= 0.05 s: at most ~1300 tok/s
    assert rates and all(0 < r < 64 / 0.05 * 1.2 for r in rates), metrics(run_dir)


def _trainer_pid(run: CommandRun) -> int:
    """The script itself, below the command's shell: what an OOM killer would pick."""
    kids = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
    assert len(kids) == 1, kids
    return int(kids[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_nanogpt_killed_reason_and_wall_of_the_reused_attempts(tmp_path, monkeypatch):
    """Attempt 1 is killed (-9) before nanoGPT's first checkpoint: discarded, attempt 2 starts from
    scratch. Attempt 2 is killed after one: attempt 3 resumes from it. The result's wall_s is that
    of attempts 2 and 3, and each killed attempt's reason is short (no command line, no "result")."""
    run_dir = _nanogpt_run(tmp_path, "killed")
    monkeypatch.setenv("NANOGPT_LIKE_SLEEP", "0.03")
    ckpt = run_dir / "checkpoint" / "ckpt.pt"
    for attempt, ready in ((1, lambda: "iter 0:" in (run_dir / "attempt-1.log").read_text()), (2, ckpt.exists)):
        run = CommandRun(run_dir, attempt=attempt)
        assert run.command and ("--init_from=scratch" in run.command)
        run.start()
        wait_for(lambda: ready() or run.poll() is not None)
        assert not ckpt.exists() or attempt == 2
        os.kill(_trainer_pid(run), signal.SIGKILL)
        out = run.wait(timeout=30)
        assert out.state == "failed" and out.reason.startswith("exit code 137 (killed by SIGKILL"), out
        assert "--out_dir" not in out.reason and "result" not in out.reason and len(out.reason) < 150, out.reason
    monkeypatch.delenv("NANOGPT_LIKE_SLEEP")
    third = CommandRun(run_dir, attempt=3)
    assert "--init_from=resume" in third.command
    third.start()
    out = third.wait(timeout=60)
    assert out.state == "completed", out.reason
    walls = {k: json.loads((run_dir / f"attempt-{k}.outcome.json").read_text())["wall_s"] for k in (1, 2, 3)}
    assert out.result["wall_s"] == pytest.approx(walls[2] + walls[3]), walls


def test_submit_with_only_cancelled_runs_points_to_retry(tmp_path):
    """After an outside scancel (here: isoflop cancel) every run is cancelled: "nothing to submit"
    says how to submit them again."""
    from .conftest import run_isoflop, tiny_spec

    (tmp_path / "tiny.yaml").write_text(tiny_spec(points=1))
    work = tmp_path / "work"
    run_isoflop("plan", str(tmp_path / "tiny.yaml"), workdir=work)
    run_isoflop("cancel", "tiny", workdir=work)
    out = run_isoflop("submit", "tiny", workdir=work).stdout
    assert "nothing to submit" in out and "isoflop retry tiny --cancelled" in out, out


def _run_lock_free(run_dir: Path) -> bool:
    from isoflop.dispatch.locks import lock_run_folder

    f = lock_run_folder(run_dir)
    if f is None:
        return False
    f.close()
    return True


def _procs_running(script: Path, run_dir: Path) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes() if d.name.isdigit() else b""
        except OSError:
            continue
        if str(script).encode() in cmd and str(run_dir).encode() in cmd:
            out.append(int(d.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc")
def test_one_trainer_per_run_folder_even_an_orphan(tmp_path):
    """The run folder is locked by whatever trains in it: a second attempt refuses to start beside
    it, also beside a trainer orphaned by a job killed with -9 (whose shell died with the job)."""
    run_dir = make_run(tmp_path, args=["--step_sleep=0.05"], steps=400)
    runner = subprocess.Popen([sys.executable, "-m", "isoflop.dispatch.runner", str(run_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = run_dir / "attempt-1.metrics.jsonl"
    wait_for(lambda: progress.exists() and progress.stat().st_size > 0, timeout=30)

    def second_attempt() -> Outcome:
        run = CommandRun(run_dir, attempt=2)
        run.start()
        return run.wait(timeout=60)

    out = second_attempt()
    assert out.state == "failed" and "another trainer" in out.reason, out
    runner.kill()
    runner.wait()
    wait_for(lambda: not _procs_running(Path("/bin/bash"), run_dir), timeout=5)  # the shell died with it
    orphans = _procs_running(TOY, run_dir)
    assert orphans, "the trainer should outlive a runner killed with -9 (here nobody reaps it)"
    out = second_attempt()
    assert out.state == "failed" and "another trainer" in out.reason, out
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    # a dying process's cmdline empties (its memory goes) before its files close: wait for the lock
    wait_for(lambda: not _procs_running(TOY, run_dir) and _run_lock_free(run_dir), timeout=10)
    out = second_attempt()
    assert out.state == "completed", out
