"""Command templates: loading, rendering with shell quoting, environment, result collection.
No training here (see test_command_runner.py for real processes)."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from isoflop.dispatch.command import (
    collect_result, job_environment, load_template, render_command, shipped_templates, template_context,
)
from isoflop.plan.grid import plan
from isoflop.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]


def _definition(**over) -> dict:
    spec = parse_spec({
        "name": "t", "budgets": [3e11], "grid": {"points": 1, "span": 1},
        "model": {"vocab_size": 256, "seq_len": 128, "head_dim": 16, "aspect_ratio": 32},
        "batch": {"rule": 8, "unit": "sequences"}, "lr": 0.01, "flops": "exact", "params": "all",
    })
    r = plan(spec)[0]
    d = json.loads(json.dumps(r.definition)) | {"run_id": r.run_id, "sweep": "t", "attempt": 1, "lr_scale": 1.0}
    d.update(over)
    return d


def _tpl(tmp_path: Path, text: str, name: str = "t.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_shipped_templates_load():
    assert {"builtin", "nanogpt", "torchrun"} <= set(shipped_templates())
    for name in shipped_templates():
        t = load_template(name)
        assert t.name == name and t.command.strip() and t.description
        text = (REPO / "templates" / "commands" / f"{name}.yaml").read_text()
        assert text.startswith("#"), f"{name}.yaml has no header comment documenting its variables"
    assert load_template("builtin").native


def test_template_search_path(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("# mine\ndescription: x\ncommand: echo {{ run_id }}\n")
    monkeypatch.setenv("ISOFLOP_COMMAND_TEMPLATES", str(tmp_path))
    assert load_template("mine").path == str(tmp_path / "mine.yaml") and "mine" in shipped_templates()
    assert render_command(_definition(trainer="mine"), tmp_path) == "echo " + _definition()["run_id"]


def test_builtin_renders_module_invocation(tmp_path):
    d = _definition()
    run_dir = tmp_path / "run dir"
    assert shlex.split(render_command(d, run_dir)) == [sys.executable, "-m", "isoflop.train", str(run_dir)]
    # srun only where the template asks for it
    assert not render_command(d, run_dir, srun=True).startswith("srun")


@pytest.mark.parametrize("bad, msg", [
    ("nosuchtemplate", "unknown command template 'nosuchtemplate'"),
    ("./missing.yaml", "not found"),
])
def test_unknown_template_is_one_line_error(bad, msg):
    with pytest.raises(ValueError, match=msg) as e:
        load_template(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, msg", [
    ("command: [1, 2\n", "YAML syntax error"),
    ("- a\n- b\n", "must be a mapping"),
    ("description: x\n", "'command' must be a non-empty string"),
    ("command: echo\ncommnd: x\n", "unknown key"),
    ("command: echo {{ steps \n", "Jinja2 syntax error"),
    ("command: echo {{ vars.x | raw }}\n", "string literals only"),
    ("command: echo\nresult_regex: 'final loss'\n", "needs a group"),
    ("command: echo\nresult_regex: '(unclosed'\n", "not a valid regular expression"),
    ("command: echo\nresumable: maybe\n", "must be true or false"),
    ("command: echo\nstop_signal: KILL\n", "stop_signal"),
])
def test_bad_template_files(tmp_path, text, msg):
    with pytest.raises(ValueError, match=msg) as e:
        load_template(_tpl(tmp_path, text))
    assert "\n" not in str(e.value)


def test_every_value_is_shell_quoted(tmp_path):
    evil = {"tag": "x; rm -rf / #", "sub": "$(touch /tmp/pwned)", "tick": "`id`", "q": "it's \"q\"",
            "nl": "a\nb", "list": ["--a=1", "b c", "$(id)"]}
    d = _definition(vars=evil, data={"kind": "text", "path": "/data/$(touch x)/; ls"})
    t = _tpl(tmp_path, "command: >-\n  echo {{ vars.tag }} --sub={{ vars.sub }} {{ vars.tick }} {{ vars.q }}"
                       " {{ vars.nl }} --data={{ data_path }} {{ vars.list }} {{ 'lit const' | raw }}\n")
    cmd = render_command(d | {"trainer": t}, tmp_path)
    assert shlex.split(cmd) == ["echo", evil["tag"], "--sub=" + evil["sub"], evil["tick"], evil["q"], evil["nl"],
                                "--data=/data/$(touch x)/; ls", "--a=1", "b c", "$(id)", "lit", "const"]


def test_context_values(tmp_path):
    d = _definition(lr_scale=0.5)
    ctx = template_context(d, tmp_path, attempt=2, template=load_template("nanogpt"))
    assert ctx["lr"] == pytest.approx(d["lr"] * 0.5)
    assert ctx["min_lr"] == pytest.approx(ctx["lr"] * d["schedule"]["min_lr_frac"])
    assert ctx["warmup_steps"] == round(d["schedule"]["warmup_frac"] * d["steps"])
    assert ctx["n_layer"] == d["shape"]["n_layer"] and ctx["params"] > 0 and ctx["params_all"] == ctx["params"]
    assert ctx["resume_from"] == "" and ctx["checkpoint_dir"] == str(tmp_path / "checkpoint")
    assert ctx["result_path"] == str(tmp_path / "attempt-2.result.json")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "ckpt.pt").write_bytes(b"x")
    assert template_context(d, tmp_path, template=load_template("nanogpt"))["resume_from"] == str(tmp_path / "checkpoint")


def test_nanogpt_flags(tmp_path):
    d = _definition(trainer="nanogpt", vars={"dataset": "shakespeare_char", "gradient_accumulation_steps": 2})
    d["shape"]["position_embedding"] = "learned"
    words = shlex.split(render_command(d, tmp_path))
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    assert words[:2] == [sys.executable, "train.py"]
    assert flags["n_layer"] == str(d["shape"]["n_layer"]) and flags["n_embd"] == str(d["shape"]["d_model"])
    assert flags["block_size"] == "128" and flags["batch_size"] == str(d["batch_seqs"] // 2)
    assert flags["max_iters"] == str(d["steps"]) and flags["init_from"] == "scratch"
    assert flags["out_dir"] == str(tmp_path / "checkpoint") and flags["dataset"] == "shakespeare_char"
    assert float(flags["learning_rate"]) == d["lr"]
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "events.out").write_bytes(b"x")  # not a checkpoint (checkpoint_glob)
    assert "--init_from=scratch" in render_command(d, tmp_path)
    (tmp_path / "checkpoint" / "ckpt.pt").write_bytes(b"x")
    assert "--init_from=resume" in render_command(d, tmp_path)
    with pytest.raises(ValueError, match="not a multiple"):
        render_command(d | {"vars": {"gradient_accumulation_steps": 3}}, tmp_path)
    # nanoGPT's result line, last match wins (from the last step: an earlier one is stale)
    log = tmp_path / "attempt-1.log"
    log.write_text("step 0: train loss 5.5, val loss 5.6\niter 0: loss 5.5, time 1ms, mfu -100.00%\n"
                   f"step {d['steps']}: train loss 2.0, val loss 2.25\n")
    out = collect_result(d, tmp_path, 0, log)
    assert out.state == "completed" and out.result["val_loss"] == 2.25 and out.result["train_loss"] == 2.0
    assert out.result["source"] == "log_regex"
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, d["steps"]] and lines[-1]["val_loss"] == 2.25


def test_torchrun_srun_and_needs_script(tmp_path):
    d = _definition(trainer="torchrun", vars={"script": "train.py", "nproc_per_node": 4})
    cmd = render_command(d, tmp_path, srun=True)
    assert cmd.startswith("srun --ntasks-per-node=1 torchrun ") and "--nproc_per_node=4" in cmd
    assert not render_command(d, tmp_path).startswith("srun")
    with pytest.raises(ValueError, match="needs vars.script"):
        render_command(d | {"vars": {}}, tmp_path)


def test_job_environment(tmp_path):
    d = _definition(trainer="nanogpt")
    env = job_environment(d, tmp_path, attempt=3)
    assert env["ISOFLOP_RUN_ID"] == d["run_id"] and env["ISOFLOP_RUN_DIR"] == str(tmp_path)
    assert env["ISOFLOP_RESULT"] == str(tmp_path / "attempt-3.result.json")
    assert env["ISOFLOP_METRICS"] == str(tmp_path / "attempt-3.metrics.jsonl")
    assert "ISOFLOP_RESUME_FROM" not in env
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "ckpt.pt").write_text("x")
    assert job_environment(d, tmp_path)["ISOFLOP_RESUME_FROM"] == str(tmp_path / "checkpoint")
    b = job_environment(_definition(), tmp_path)
    assert b["ISOFLOP_RESULT"] == str(tmp_path / "result.json") and "ISOFLOP_RESUME_FROM" not in b


def _collect(tmp_path, result=None, log="", exit_code=0, regex=None, interrupted=None):
    tpl = "command: echo\n" + (f"result_regex: '{regex}'\n" if regex else "")
    d = _definition(trainer=_tpl(tmp_path, tpl))
    if result is not None:
        (tmp_path / "attempt-1.result.json").write_text(result if isinstance(result, str) else json.dumps(result))
    (tmp_path / "attempt-1.log").write_text(log)
    return collect_result(d, tmp_path, exit_code, tmp_path / "attempt-1.log", interrupted=interrupted), d


def test_collect_result_file(tmp_path):
    out, d = _collect(tmp_path, {"loss": 3.5, "flops": 1e12})
    assert out.state == "completed" and out.exit_code == 0
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk == out.result
    assert on_disk["val_loss"] == 3.5 and on_disk["source"] == "result_file" and on_disk["diverged"] is False
    assert on_disk["tokens"] == d["tokens"] and on_disk["measured_flops"] == 1e12 and on_disk["run_id"] == d["run_id"]
    for k in ("val_loss", "train_loss", "tokens", "diverged", "diverged_step", "wall_s", "source", "steps"):
        assert k in on_disk


@pytest.mark.parametrize("loss", ['NaN', '"nan"', 'Infinity'])
def test_nonfinite_loss_is_diverged(tmp_path, loss):
    out, _ = _collect(tmp_path, '{"loss": %s, "steps": 7}' % loss)
    assert out.state == "diverged" and out.result["diverged"] and out.result["val_loss"] is None
    assert out.result["diverged_step"] == 7
    json.loads((tmp_path / "result.json").read_text())  # strict JSON on disk


def test_exit_zero_without_result_is_failed(tmp_path):
    out, _ = _collect(tmp_path, log="all good\n", regex=r"final loss (\S+)")
    assert out.state == "failed" and "without a readable result" in out.reason and out.result is None
    assert not (tmp_path / "result.json").exists()


def test_bad_result_file_is_failed(tmp_path):
    out, _ = _collect(tmp_path, "{not json")
    assert out.state == "failed" and "not valid JSON" in out.reason
    out, _ = _collect(tmp_path, {"accuracy": 0.9})
    assert out.state == "failed" and "no numeric 'loss'" in out.reason


def test_regex_last_match_wins_and_nonzero_exit(tmp_path):
    out, _ = _collect(tmp_path, log="final loss 9\nfinal loss 2.5\nbye\n", regex=r"final loss (\S+)")
    assert out.state == "completed" and out.result["val_loss"] == 2.5 and out.result["source"] == "log_regex"
    out, _ = _collect(tmp_path, log="Traceback\nRuntimeError: CUDA out of memory\n", exit_code=1)
    assert out.state == "failed" and out.reason == "exit code 1: RuntimeError: CUDA out of memory"


def test_preemption_classification(tmp_path):
    assert _collect(tmp_path, exit_code=3)[0].state == "preempted"
    assert _collect(tmp_path, exit_code=-15)[0].state == "preempted"  # died of SIGTERM
    assert _collect(tmp_path, exit_code=138)[0].state == "preempted"  # a shell's 128 + SIGUSR1
    assert _collect(tmp_path, exit_code=7, interrupted=10)[0].state == "preempted"
    assert _collect(tmp_path, exit_code=0, interrupted=10)[0].state == "preempted"  # stopped, no result
    out = _collect(tmp_path, exit_code=-9)[0]
    assert out.state == "failed" and "SIGKILL" in out.reason


# ------------------------------------------------------------------ what the nanogpt template checks


def _nano(tmp_path: Path, meta=None, **over) -> dict:
    """A planned run for nanoGPT (nanoGPT's model family) with a checkout whose data/toy holds
    `meta` as meta.pkl (none when None)."""
    import pickle

    ng = tmp_path / "nanoGPT"
    (ng / "data" / "toy").mkdir(parents=True, exist_ok=True)
    if meta is not None:
        (ng / "data" / "toy" / "meta.pkl").write_bytes(pickle.dumps(meta))
    d = _definition(trainer="nanogpt", data={"kind": "stdlib", "path": None},
                    vars={"nanogpt_dir": str(ng), "dataset": "toy"})
    d["shape"].update(mlp="gelu", tied=True, qk_norm=False, position_embedding="learned")
    return d | over


def _flags(cmd: str) -> dict:
    return dict(w[2:].split("=", 1) for w in shlex.split(cmd) if w.startswith("--"))


def test_nanogpt_device_auto_asks_torch_at_run_time(tmp_path):
    d = _nano(tmp_path, {"vocab_size": 256})
    assert _flags(render_command(d | {"device": "cpu"}, tmp_path))["device"] == "cpu"
    auto = render_command(d | {"device": "auto"}, tmp_path)
    assert "torch.cuda.is_available()" in auto
    # the shell resolves it: what `bash -c` passes to nanoGPT is cpu or cuda, never nothing
    echo = subprocess.run(["bash", "-c", "printf '%s\\n' " + auto.split(" ", 1)[1]], capture_output=True, text=True,
                          check=True).stdout.split("\n")
    import torch

    assert f"--device={'cuda' if torch.cuda.is_available() else 'cpu'}" in echo


def test_nanogpt_threads_become_omp_num_threads(tmp_path):
    d = _nano(tmp_path, {"vocab_size": 256})
    assert job_environment(d | {"threads": 2}, tmp_path)["OMP_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in job_environment(d | {"threads": None}, tmp_path)


@pytest.mark.parametrize("meta, over, msg", [
    ({"vocab_size": 65, "itos": {0: "a"}}, {}, "model.vocab_size is 256 but nanoGPT will build 65 (data/toy/meta.pkl)"),
    (None, {}, "nanoGPT will build 50304 (data/toy has no meta.pkl"),
    ({"vocab_size": 256}, {"position_embedding": "rotary"}, "model.position_embedding: learned"),
    ({"vocab_size": 256}, {"data": {"kind": "text", "path": "/data/x.txt"}}, "data: block is not used"),
    ({"vocab_size": 256}, {"mlp": "swiglu"}, "model.mlp: gelu"),
    ({"vocab_size": 256}, {"tied": False}, "model.tied: true"),
])
def test_nanogpt_refuses_what_it_would_not_train(tmp_path, meta, over, msg):
    d = _nano(tmp_path, meta)
    for k in ("mlp", "tied", "position_embedding"):
        if k in over:
            d["shape"][k] = over.pop(k)
    with pytest.raises(ValueError, match=re.escape(msg)) as e:
        render_command(d | over, tmp_path)
    assert "\n" not in str(e.value)
    ok = _nano(tmp_path / "ok", {"vocab_size": 256})
    assert "--n_layer=" in render_command(ok, tmp_path)  # the same run, made right, renders


def test_nanogpt_meta_pickle_runs_no_code(tmp_path):
    import pickle

    d = _nano(tmp_path)
    (tmp_path / "nanoGPT" / "data" / "toy" / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": Path("x")}))
    with pytest.raises(ValueError, match="not a pickle of plain data"):
        render_command(d, tmp_path)


@pytest.mark.parametrize("steps, every", [(40, 4), (1000, 100), (433, 433), (2500, 250), (1, 1)])
def test_nanogpt_default_eval_interval_divides_steps(tmp_path, steps, every):
    d = _nano(tmp_path, {"vocab_size": 256}) | {"steps": steps}
    ei = int(_flags(render_command(d, tmp_path))["eval_interval"])
    assert ei == every and steps % ei == 0


def test_killed_reason_is_short(tmp_path):
    """The shell's "Killed <whole command line>" is not the reason; an earlier evaluation's line
    matched by result_regex is not "a result was written"."""
    d = _nano(tmp_path, {"vocab_size": 256}) | {"steps": 40}
    cmd = render_command(d, tmp_path)
    log = tmp_path / "attempt-1.log"
    log.write_text(f"step 10: train loss 2.0, val loss 2.1\niter 17: loss 1.9, time 1.00ms, mfu -100.00%\n"
                   f"/bin/bash: line 2: 4711 Killed                  {cmd}\n")
    out = collect_result(d, tmp_path, 137, log)
    assert out.state == "failed" and out.reason == (
        "exit code 137 (killed by SIGKILL, out of memory?): iter 17: loss 1.9, time 1.00ms, mfu -100.00%"), out.reason


def test_learned_position_embedding_is_in_n_under_params_all():
    """nanoGPT's wpe (seq_len x d_model) counts in N under `all`, in no other convention, and only
    a template's trainer may have one (the built-in model is rotary)."""
    base = {"name": "t", "budgets": [1e12], "grid": {"points": 3, "span": 4},
            "model": {"vocab_size": 256, "seq_len": 128, "head_dim": 16, "aspect_ratio": 32},
            "batch": {"rule": 8, "unit": "sequences"}, "lr": 0.01, "flops": "exact", "params": "all"}
    rotary = parse_spec(base)
    learned = parse_spec(base | {"model": base["model"] | {"position_embedding": "learned"},
                                 "trainer": {"template": "nanogpt"}})
    for r in plan(learned):
        sh = r.definition["shape"]
        assert sh["position_embedding"] == "learned"
        assert r.ledger["params_all"] == r.ledger["params_with_output"] + sh["seq_len"] * sh["d_model"]
        assert r.params == r.ledger["params_all"]
    for r in plan(rotary):  # unchanged: no key in the shape (the same run ids as before), no wpe
        assert "position_embedding" not in r.definition["shape"]
        assert r.ledger["params_all"] == r.ledger["params_with_output"]
    with pytest.raises(ValueError, match="built-in trainer uses rotary"):
        parse_spec(base | {"model": base["model"] | {"position_embedding": "learned"}})
