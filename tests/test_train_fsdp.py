"""Sharded (FSDP2) runs of the built-in trainer on CPU (gloo): `sharding: fsdp` trains the same
model as one process, resumes bit for bit, and writes checkpoints a one-process run can resume.

Started as dispatch starts them: a local job whose job file carries the profile's launch settings.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from isoflop.dispatch.profiles import ProfileError, parse_profile
from isoflop.train.config import RunConfig
from isoflop.train.loop import make_optimizer
from isoflop.train.model import GPT, GPTConfig
from tests.ranks import dispatch as _dispatch
from tests.ranks import preempt_after_first_log
from tests.ranks import rank_env as _env
from tests.ranks import run_dir

# two blocks: each is sharded on its own, then the root (embedding, norm, head)
RUN = {"run_id": "fsdp", "shape": {"n_layer": 2, "d_model": 32, "n_head": 2, "vocab_size": 256, "seq_len": 32},
       "steps": 12, "batch_seqs": 8, "lr": 0.003, "device": "cpu", "threads": 1, "dtype": "fp32", "log_every": 4,
       "checkpoint_every_s": 0, "eval": {"batches": 3}, "attempt": 1}
# 2 micro-batches per rank: gradients stay unreduced on the first (set_requires_gradient_sync)
FSDP = parse_profile({"tasks_per_run": 2, "sharding": "fsdp", "micro_batch_seqs": 2}, name="t").launch_env()


def _run_dir(tmp: Path, name: str, **over) -> Path:
    return run_dir(tmp, name, RUN, **over)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    return _dispatch(_run_dir(tmp_path_factory.mktemp("one"), "r1"), {})


@pytest.fixture(scope="module")
def two_sharded(tmp_path_factory):
    return _dispatch(_run_dir(tmp_path_factory.mktemp("fsdp"), "r2"), FSDP)


@pytest.mark.slow
def test_two_sharded_ranks_equal_one_rank(one_rank, two_sharded):
    assert (two_sharded["world_size"], two_sharded["sharding"], two_sharded["accumulation_steps"]) == (2, "fsdp", 2)
    assert abs(two_sharded["val_loss"] - one_rank["val_loss"]) < 1e-4
    assert two_sharded["params"] == one_rank["params"]  # counted on the whole model, not a shard
    assert two_sharded["measured_flops"] == one_rank["measured_flops"]


@pytest.mark.slow
def test_sigterm_then_resume_is_bit_identical_and_the_checkpoint_is_one_process_format(two_sharded, one_rank,
                                                                                        tmp_path):
    rdir = _run_dir(tmp_path, "pre")
    env = _env(**FSDP, ISOFLOP_TEST_STEP_SLEEP="0.3")
    preempt_after_first_log(rdir, env)
    ck = torch.load(rdir / "checkpoint.pt", weights_only=False)
    # gathered whole, in the layout model.state_dict() / optimizer.state_dict() have in one process
    cfg = RunConfig.load(rdir)
    model = GPT(GPTConfig.from_shape(cfg.shape))
    whole = model.state_dict()
    assert {k: v.shape for k, v in ck["model"].items()} == {k: v.shape for k, v in whole.items()}
    assert all(type(v) is torch.Tensor for v in ck["model"].values())  # no DTensor shards
    ref = make_optimizer(model, cfg, torch.device("cpu")).state_dict()["param_groups"]
    assert [g["params"] for g in ck["optimizer"]["param_groups"]] == [g["params"] for g in ref]
    assert sorted(ck["optimizer"]["state"]) == sorted(i for g in ref for i in g["params"])

    # the same checkpoint resumed by one process
    solo = tmp_path / "solo"
    shutil.copytree(rdir, solo)
    p = subprocess.run([sys.executable, "-m", "isoflop.train", str(solo)], env=_env(), capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    one = json.loads((solo / "result.json").read_text())
    assert one["resumed_from_step"] == ck["step"] and one["world_size"] == 1
    assert abs(one["val_loss"] - one_rank["val_loss"]) < 1e-4

    p = subprocess.run([sys.executable, "-m", "isoflop.train", str(rdir)],
                       env=_env(**FSDP),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    res = json.loads((rdir / "result.json").read_text())
    assert 4 <= res["resumed_from_step"] < RUN["steps"] and res["sharding"] == "fsdp"
    assert res["val_loss"] == two_sharded["val_loss"]  # bit for bit the uninterrupted sharded run's


@pytest.mark.parametrize("extra,msg", [
    ({"ISOFLOP_SHARDING": "fsdp"}, "isoflop.train: sharding fsdp does not support optimizer muon (it needs whole "
                                   "matrices on one rank); use sharding ddp"),
    ({"ISOFLOP_SHARDING": "zero3"}, "isoflop.train: sharding must be one of ddp, fsdp, not 'zero3'"),
])
def test_unsupported_settings_are_one_line_before_any_rank_starts(tmp_path, extra, msg):
    rdir = _run_dir(tmp_path, "bad", optimizer={"name": "muon"})
    p = subprocess.run([sys.executable, "-m", "isoflop.train", str(rdir)],
                       env=_env(ISOFLOP_TASKS_PER_RUN="2", **extra), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == msg
    assert sorted(f.name for f in rdir.iterdir()) == ["run.json"]  # nothing trained, nothing written


def test_profile_sharding_reaches_the_trainer_only_when_asked():
    assert FSDP["ISOFLOP_SHARDING"] == "fsdp"
    assert "ISOFLOP_SHARDING" not in parse_profile({"tasks_per_run": 2}, name="t").launch_env()
    with pytest.raises(ProfileError, match="sharding"):
        parse_profile({"sharding": "zero3"}, name="t")
