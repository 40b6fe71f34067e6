"""Experiment trackers: a tiny sweep trained by the local pool with W&B (offline) and TensorBoard
on, read back from the files the real libraries wrote; the spec option changes no run id; a
missing package is one line at plan time and only a warning on a node."""
from __future__ import annotations

import glob
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from isoflop.plan.grid import plan
from isoflop.spec import SpecError, parse_spec

from .conftest import REPO, isoflop_env, run_isoflop, tiny_spec

wandb = pytest.importorskip("wandb", reason="pip install 'isoflop[trackers]'")
pytest.importorskip("tensorboard", reason="pip install 'isoflop[trackers]'")

TRACKERS = "trackers: {wandb: {project: isoflop-ci, tags: [ci]}, tensorboard: true}\n"
LOCAL = "executor: local\nworkers: 2\npack_target_minutes: 0\npeak_flops: 2.0e10\nmfu: 0.3\nrun_overhead_s: 4\n"


def wandb_records(path: Path):
    """The records of a W&B offline run file (.wandb): a LevelDB-style log of protobuf Records
    after a 7-byte ':W&B' header; read here so that no network and no `wandb sync` is needed."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST chunk of a record
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_trackers_change_no_run_id_and_no_digest_when_off():
    base = {"name": "a", "budgets": [1e18, 1e19]}
    plain = parse_spec(base)
    off = parse_spec({**base, "trackers": {"tensorboard": False}})
    on = parse_spec({**base, "trackers": {"wandb": {"project": "p"}, "tensorboard": True}})
    assert plain.digest() == off.digest() != on.digest()  # a spec written before trackers: same digest
    assert [r.run_id for r in plan(plain)] == [r.run_id for r in plan(on)]
    assert on.trackers.wandb.mode == "offline"
    with pytest.raises(SpecError, match="only the built-in trainer"):
        parse_spec({**base, "trackers": {"tensorboard": True}, "trainer": {"template": "nanogpt"}})
    with pytest.raises(SpecError, match="trackers.wandb.project"):
        parse_spec({**base, "trackers": {"wandb": {"mode": "offline"}}})


def test_missing_package_is_one_line_at_plan(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text(tiny_spec("t") + TRACKERS)
    workdir = tmp_path / "work"
    # None in sys.modules is how Python spells "not installed" for import and find_spec alike
    code = ("import sys, runpy; sys.modules['wandb'] = None; sys.argv = ['isoflop', 'plan', sys.argv[1]]; "
            "runpy.run_module('isoflop', run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code, str(spec)], env=isoflop_env(workdir), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "trackers.wandb" in lines[0] and "isoflop[trackers]" in lines[0], p.stderr
    assert not (workdir / "isoflop.db").exists()  # nothing was stored


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory):
    """Two budgets, one size each, trained by the local pool with both trackers on."""
    tmp = tmp_path_factory.mktemp("trackers")
    spec, prof, workdir = tmp / "trk.yaml", tmp / "local.yaml", tmp / "work"
    spec.write_text(tiny_spec("trk", budgets="[1.0e10, 2.0e10]", points=1) + TRACKERS)
    prof.write_text(LOCAL)
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}  # as on a compute node without internet
    run_isoflop("plan", str(spec), workdir=workdir)
    run_isoflop("submit", "trk", "--profile", str(prof), workdir=workdir, **env)
    run_isoflop("status", "trk", "--watch", "--interval", "0.5", workdir=workdir, timeout=300)  # until none is active
    st = json.loads(run_isoflop("status", "trk", "--json", workdir=workdir).stdout)
    assert st["counts"] == {"completed": 2}, st
    return workdir, {r["run_id"]: r for r in st["runs"]}


@pytest.mark.slow  # the module's sweep trains two runs through the local pool (~35 s)
def test_wandb_offline_run_has_ledger_tags_history_and_summary(tracked_sweep):
    workdir, runs = tracked_sweep
    budgets = set()
    for run_id, row in runs.items():
        rdir = workdir / "runs" / "trk" / run_id
        result = json.loads((rdir / "result.json").read_text())
        rj = json.loads((rdir / "run.json").read_text())
        assert rj["trackers"]["wandb"]["project"] == "isoflop-ci"
        [f] = glob.glob(str(rdir / "wandb" / "offline-run-*" / "*.wandb"))
        recs = list(wandb_records(Path(f)))
        [run] = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        assert run.run_id == f"trk-{run_id}" and run.project == "isoflop-ci" and run.run_group == "trk"
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        assert config["run_id"] == run_id and config["budget"] == row["budget"]
        assert config["N"] == rj["planned"]["params_all"] and config["D"] == rj["tokens"]
        assert config["B_tokens"] == rj["batch_tokens"] and config["lr"] == rj["lr"]
        assert f"budget={row['budget']:.3g}" in run.tags and "ci" in run.tags
        budgets.add(run.job_type)
        history = [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
                   for r in recs if r.WhichOneof("record_type") == "history"]
        metrics = [json.loads(line) for line in (rdir / "metrics.jsonl").read_text().splitlines()]
        assert [h["step"] for h in history] == [m["step"] for m in metrics]
        assert [h["train_loss"] for h in history] == pytest.approx([m["train_loss"] for m in metrics])
        summary = {}
        for r in recs:
            if r.WhichOneof("record_type") == "summary":
                summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update})
        assert summary["final/val_loss"] == pytest.approx(result["val_loss"]) and summary["final/diverged"] is False
        assert any(r.WhichOneof("record_type") == "exit" for r in recs)  # finished, not crashed
    assert budgets == {"budget=1e+10", "budget=2e+10"}  # one group per budget


@pytest.mark.slow
def test_tensorboard_events_readable_with_hparams(tracked_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    workdir, runs = tracked_sweep
    for run_id, row in runs.items():
        rdir = workdir / "runs" / "trk" / run_id
        [logdir] = (rdir / "tensorboard").iterdir()
        assert logdir.name.startswith(f"C={row['budget']:.3g},N=")  # listed and filtered by budget
        ea = EventAccumulator(str(logdir))
        ea.Reload()
        metrics = [json.loads(line) for line in (rdir / "metrics.jsonl").read_text().splitlines()]
        train = ea.Scalars("train_loss")
        assert [e.step for e in train] == [m["step"] for m in metrics]
        assert [e.value for e in train] == pytest.approx([m["train_loss"] for m in metrics], rel=1e-6)
        [val] = ea.Scalars("val_loss")
        assert val.value == pytest.approx(row["val_loss"], rel=1e-6) and val.step == metrics[-1]["step"]
        content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hp["budget"].number_value == row["budget"] and hp["run_id"].string_value == run_id
        assert hp["N"].number_value > 0 and hp["D"].number_value > 0 and hp["lr"].number_value > 0


@pytest.mark.slow
def test_node_without_the_packages_trains_and_warns(tracked_sweep, tmp_path):
    workdir, runs = tracked_sweep
    src = workdir / "runs" / "trk" / next(iter(runs))
    rdir = tmp_path / "node-run"
    rdir.mkdir()
    rj = json.loads((src / "run.json").read_text())
    rj["steps"] = 12  # only the start matters here
    (rdir / "run.json").write_text(json.dumps(rj))
    code = ("import sys; sys.modules['wandb'] = None; sys.modules['tensorboard'] = None; "
            "from isoflop.train.job import train; print(train(sys.argv[1])['status'])")
    p = subprocess.run([sys.executable, "-c", code, str(rdir)], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    warnings = [line for line in p.stderr.splitlines() if "trackers." in line]
    assert len(warnings) == 2 and all("training goes on without it" in w for w in warnings), p.stderr
    assert json.loads((rdir / "result.json").read_text())["val_loss"] > 0
    assert not (rdir / "wandb").exists() and not (rdir / "tensorboard").exists()


def test_only_rank_zero_logs(tmp_path, monkeypatch):
    from isoflop.train.config import RunConfig
    from isoflop.train.trackers import open_trackers

    rj = {"run_id": "r1", "shape": {"n_layer": 1, "d_model": 16, "n_head": 1, "seq_len": 8}, "steps": 1,
          "batch_seqs": 1, "lr": 1e-3, "trackers": {"tensorboard": True}}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    t = open_trackers(RunConfig.from_json(rj), tmp_path)
    t.log({"step": 1, "train_loss": 1.0})
    t.close()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    t = open_trackers(RunConfig.from_json(rj), tmp_path)
    t.log({"step": 1, "train_loss": 1.0})
    t.close()
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1
    shutil.rmtree(tmp_path / "tensorboard")
