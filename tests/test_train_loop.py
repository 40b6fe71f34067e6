"""The built-in trainer end to end: real training on CPU, real processes, real signals."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isoflop.train import EXIT_CONFIG, EXIT_OK, EXIT_PREEMPTED
from isoflop.train.job import train

ROOT = Path(__file__).resolve().parents[1]


def write_run(run_dir: Path, **kw) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    d = {
        "run_id": run_dir.name, "sweep": "test", "budget": 1e10,
        "shape": {"n_layer": 1, "d_model": 32, "n_head": 2, "vocab_size": 256, "seq_len": 64,
                  "mlp": "gelu", "tied": True, "qk_norm": False},
        "model": {"z_loss": 0.0, "mup": False, "mup_base_width": 64},
        "steps": 120, "batch_seqs": 4, "batch_tokens": 256, "tokens": 120 * 256, "lr": 3e-3,
        "optimizer": {"beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1, "grad_clip": 1.0},
        "schedule": {"kind": "cosine", "warmup_frac": 0.05, "min_lr_frac": 0.1},
        "seed": 7, "data": {"kind": "stdlib", "path": None}, "eval": {"batches": 2, "every": 0},
        "log_every": 10, "checkpoint_every_s": 0, "device": "cpu", "compile": False, "dtype": "fp32",
        "threads": 1, "flop_convention": "6ND", "param_convention": "non_embedding",
    }
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    (run_dir / "run.json").write_text(json.dumps(d))
    return run_dir


def spawn(run_dir: Path, **env) -> subprocess.Popen:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **{k: str(v) for k, v in env.items()}}
    return subprocess.Popen([sys.executable, "-m", "isoflop.train", str(run_dir)], env=e, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(pred, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read().decode()}")
        if time.time() - t > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.01)


def metric_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    d = write_run(tmp_path_factory.mktemp("ref") / "run")
    return d, train(d)


def test_result_complete(reference):
    d, r = reference
    on_disk = json.loads((d / "result.json").read_text())
    assert on_disk == r
    for k in ("run_id", "val_loss", "train_loss", "tokens", "steps", "measured_flops", "measured_flops_per_token",
              "planned_flops_per_token", "wall_s", "diverged", "diverged_step", "torch_version", "device", "dtype",
              "resumed_from_step"):
        assert k in r
    assert r["steps"] == 120 and r["tokens"] == 120 * 256 and not r["diverged"] and r["resumed_from_step"] is None
    assert r["measured_flops_per_token"] == r["planned_flops_per_token"]["exact"]
    assert r["measured_flops"] == r["measured_flops_per_token"] * r["tokens"]
    assert metric_steps(d) == list(range(10, 121, 10))
    last = json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_loss"] == r["val_loss"] and last["flops"] == r["measured_flops"]
    assert not (d / "checkpoint.pt").exists()
    assert sorted(p.name for p in d.iterdir()) == ["metrics.jsonl", "result.json", "run.json"]
    # a requeued job that had finished returns the stored result without training
    assert train(d) == r


def test_loss_falls(tmp_path):
    d = write_run(tmp_path / "fall", shape={"n_layer": 2, "d_model": 64, "n_head": 2, "seq_len": 64},
                  steps=300, batch_seqs=8, lr=1e-2, log_every=50, eval={"batches": 4})
    r = train(d)
    assert not r["diverged"]
    assert r["val_loss"] < 3.0 < math.log(256)
    ls = losses(d)
    assert ls[-1] < ls[0] - 0.5


def test_absurd_lr_diverges(tmp_path):
    d = write_run(tmp_path / "div", lr=1e3, steps=200)
    r = train(d)
    assert r["diverged"] is True and r["status"] == "diverged"
    assert r["val_loss"] is None and isinstance(r["diverged_step"], int) and 1 <= r["diverged_step"] <= 200
    assert r["steps"] == r["diverged_step"] and r["tokens"] == r["diverged_step"] * 256
    text = (d / "result.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["val_loss"] is None
    for line in (d / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # strict JSON: no NaN
    assert "NaN" not in (d / "metrics.jsonl").read_text()


def test_sigkill_then_resume_matches(reference, tmp_path):
    ref_dir, ref = reference
    d = write_run(tmp_path / "kill")
    p = spawn(d, ISOFLOP_CHECKPOINT_EVERY_STEPS=20, ISOFLOP_TEST_STEP_SLEEP=0.01)
    wait_for(lambda: (d / "checkpoint.pt").exists(), p)
    time.sleep(0.15)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (d / "result.json").exists()
    assert not any(x.name.startswith("result.json") for x in d.iterdir())
    assert (d / "checkpoint.pt").exists()
    r = train(d)
    assert r["resumed_from_step"] is not None and 20 <= r["resumed_from_step"] < 120
    assert r["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-6)
    assert r["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-6)
    assert metric_steps(d) == metric_steps(ref_dir)  # lines past the checkpoint were replaced, not duplicated
    assert losses(d) == pytest.approx(losses(ref_dir), abs=1e-6)


def test_sigterm_checkpoints_and_exits_preempted(reference, tmp_path):
    ref_dir, ref = reference
    d = write_run(tmp_path / "term")
    p = spawn(d, ISOFLOP_TEST_STEP_SLEEP=0.01)
    wait_for(lambda: (d / "metrics.jsonl").exists() and len((d / "metrics.jsonl").read_text().splitlines()) >= 2, p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_PREEMPTED, err.decode()
    assert (d / "checkpoint.pt").exists() and not (d / "result.json").exists()
    q = spawn(d)
    out, err = q.communicate(timeout=120)
    assert q.returncode == EXIT_OK, err.decode()
    r = json.loads((d / "result.json").read_text())
    assert r["resumed_from_step"] is not None and r["resumed_from_step"] >= 20
    assert r["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-6)
    assert r["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-6)
    assert not (d / "checkpoint.pt").exists()


def test_bad_run_json_exit_code(tmp_path):
    p = subprocess.run([sys.executable, "-m", "isoflop.train", str(tmp_path)], cwd=ROOT, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == EXIT_CONFIG and b"run.json" in p.stderr


def test_package_import_is_light():
    code = "import sys, isoflop.train, isoflop.train.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_options_train_end_to_end(tmp_path):
    d = write_run(tmp_path / "opts", shape={"n_layer": 2, "d_model": 64, "n_head": 2, "mlp": "swiglu", "tied": False,
                                            "qk_norm": True},
                  model={"z_loss": 1e-4, "mup": True, "mup_base_width": 32}, steps=40, lr_scale=0.5,
                  schedule={"kind": "wsd", "decay_frac": 0.25}, eval={"batches": 2, "every": 20}, log_every=20)
    r = train(d)
    assert not r["diverged"] and r["val_loss"] < math.log(256)
    assert r["lr"] == pytest.approx(1.5e-3)
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [20, 40] and all("val_loss" in x for x in lines)
    assert lines[-1]["lr"] == pytest.approx(1.5e-4)  # WSD ends at min_lr_frac x peak


def test_text_and_token_data_train(tmp_path):
    import numpy as np

    txt = tmp_path / "corpus.txt"
    txt.write_text("the quick brown fox jumps over the lazy dog. " * 3000)
    r = train(write_run(tmp_path / "txt", data={"kind": "text", "path": str(txt)}, steps=30))
    assert not r["diverged"]
    tok = tmp_path / "tok"
    tok.mkdir()
    np.random.default_rng(0).integers(0, 1000, 20_000, dtype=np.uint16).tofile(tok / "train.bin")
    np.random.default_rng(1).integers(0, 1000, 5_000, dtype=np.uint16).tofile(tok / "val.bin")
    r = train(write_run(tmp_path / "tokrun", data={"kind": "tokens", "path": str(tok)}, steps=30,
                        shape={"vocab_size": 1024}))
    assert not r["diverged"] and r["val_loss"] < math.log(1024) + 0.5


def test_retry_with_lr_scale_sets_old_result_aside(tmp_path):
    d = write_run(tmp_path / "retry", lr=1e3, steps=40)
    r1 = train(d)
    assert r1["diverged"]
    write_run(d, lr=1e3, steps=40, lr_scale=3e-6)
    r2 = train(d)
    assert not r2["diverged"] and r2["fingerprint"] != r1["fingerprint"]
    assert json.loads((d / f"result.{r1['fingerprint']}.json").read_text())["diverged"]
    assert json.loads((d / "result.json").read_text()) == r2
    assert (d / f"metrics.{r1['fingerprint']}.jsonl").exists()
    assert metric_steps(d) == [10, 20, 30, 40]


def test_signal_handlers_restored_and_request_stop(tmp_path):
    from isoflop.train.checkpoint import Preempted, request_stop

    def mine(signum, frame):  # noqa: ARG001
        pass

    old = signal.signal(signal.SIGUSR2, mine)
    try:
        d = write_run(tmp_path / "h", steps=20)
        train(d)
        assert signal.getsignal(signal.SIGUSR2) is mine
        # a real signal delivered to ourselves mid-run: checkpoint, Preempted, handlers restored
        d2 = write_run(tmp_path / "h2", steps=30)
        import isoflop.train.loop as loop_mod

        orig = loop_mod.make_train_step

        def make(*a, **k):
            step = orig(*a, **k)
            calls = []

            def wrapped(xy):
                calls.append(1)
                if len(calls) == 5:
                    os.kill(os.getpid(), signal.SIGUSR1)
                return step(xy)
            return wrapped

        loop_mod.make_train_step = make
        try:
            with pytest.raises(Preempted) as ei:
                train(d2)
        finally:
            loop_mod.make_train_step = orig
        assert ei.value.step == 5 and ei.value.signum == signal.SIGUSR1
        assert (d2 / "checkpoint.pt").exists() and not (d2 / "result.json").exists()
        assert signal.getsignal(signal.SIGUSR2) is mine
        r = train(d2)
        assert r["resumed_from_step"] == 5 and r["steps"] == 30
        # without our handlers, request_stop() does the same
        d3 = write_run(tmp_path / "h3", steps=30)
        request_stop()
        with pytest.raises(Preempted):
            train(d3, install_signal_handlers=False)
    finally:
        signal.signal(signal.SIGUSR2, old)
