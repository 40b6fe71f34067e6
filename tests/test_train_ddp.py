"""Data-parallel runs of the built-in trainer on CPU (gloo): one run over several ranks trains
the same model as one process, resumes bit for bit, and accumulation is the same sum of
gradients however the batch is cut.

The ranks are started the way dispatch starts them: a local job (`python -m isoflop.dispatch.job
JOBFILE`) whose job file carries the profile's launch settings; the trainer it runs sees
ISOFLOP_TASKS_PER_RUN and starts its ranks (isoflop/train/distributed.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoflop.dispatch.profiles import ProfileError, parse_profile
from isoflop.train import data as data_mod
from isoflop.train import distributed as D
from tests.ranks import dispatch as _dispatch
from tests.ranks import preempt_after_first_log
from tests.ranks import rank_env as _env
from tests.ranks import run_dir

RUN = {"run_id": "ddp", "shape": {"n_layer": 1, "d_model": 32, "n_head": 2, "vocab_size": 256, "seq_len": 32},
       "steps": 16, "batch_seqs": 8, "lr": 0.003, "device": "cpu", "threads": 1, "dtype": "fp32", "log_every": 4,
       "checkpoint_every_s": 0, "eval": {"batches": 3}, "attempt": 1}


def _run_dir(tmp: Path, name: str, **over) -> Path:
    return run_dir(tmp, name, RUN, **over)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    """The 1-process run of the plan, its batch in 4 micro-batches (the 2 x 2 test's reference too)."""
    rdir = _run_dir(tmp_path_factory.mktemp("one"), "r1")
    return _dispatch(rdir, {"ISOFLOP_MICRO_BATCH_SEQS": "2"})


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    rdir = _run_dir(tmp_path_factory.mktemp("two"), "r2")
    return _dispatch(rdir, parse_profile({"tasks_per_run": 2}, name="t").launch_env()), rdir


@pytest.mark.slow
def test_two_ranks_equal_one_rank(one_rank, two_ranks):
    two, rdir = two_ranks
    assert two["world_size"] == 2 and one_rank["world_size"] == 1
    assert abs(two["val_loss"] - one_rank["val_loss"]) < 1e-4
    for k in ("tokens", "steps", "measured_flops", "planned_tokens"):
        assert two[k] == one_rank[k], k
    # rank 0 alone wrote: one metrics line per log step, no duplicates
    steps = [json.loads(ln)["step"] for ln in (rdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12, 16]
    assert two["tokens_per_s"] > 0 and two["mfu"] > 0  # the profile's peak reached the trainer


@pytest.mark.slow
def test_two_ranks_by_two_micro_batches_equal_one_rank_by_four(one_rank, tmp_path):
    a = _dispatch(_run_dir(tmp_path, "a"), {"ISOFLOP_TASKS_PER_RUN": "2", "ISOFLOP_MICRO_BATCH_SEQS": "2"})
    b = one_rank
    assert (a["world_size"], a["accumulation_steps"]) == (2, 2)
    assert (b["world_size"], b["accumulation_steps"]) == (1, 4)
    assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)


@pytest.mark.slow
def test_two_ranks_sigterm_then_resume_is_bit_identical(two_ranks, tmp_path):
    rdir = _run_dir(tmp_path, "pre")
    env = _env(ISOFLOP_TASKS_PER_RUN="2", ISOFLOP_TEST_STEP_SLEEP="0.3")
    preempt_after_first_log(rdir, env)
    p = subprocess.run([sys.executable, "-m", "isoflop.train", str(rdir)], env=_env(ISOFLOP_TASKS_PER_RUN="2"),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    res = json.loads((rdir / "result.json").read_text())
    assert 4 <= res["resumed_from_step"] < RUN["steps"]
    assert res["val_loss"] == two_ranks[0]["val_loss"]  # bit for bit the uninterrupted 2-rank run's


def test_a_batch_that_does_not_split_is_one_line(tmp_path):
    rdir = _run_dir(tmp_path, "odd", batch_seqs=7)
    p = subprocess.run([sys.executable, "-m", "isoflop.train", str(rdir)], env=_env(ISOFLOP_TASKS_PER_RUN="2"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "isoflop.train: batch_seqs 7 does not split evenly over 2 ranks"


# ---- pure parts ------------------------------------------------------------------------------------
@given(st.integers(1, 64), st.integers(1, 8), st.integers(0, 16))
def test_micro_batches_cover_the_batch(batch, world, micro):
    try:
        per_rank, accum = D.micro_batches(batch, world, micro)
    except D.LayoutError:
        assert batch % world or (batch // world) % (micro or batch // world)
        return
    assert per_rank * world == batch and (micro or per_rank) * accum == per_rank


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 50), st.sampled_from([1, 2, 4, 8]))
def test_rank_shards_concatenate_to_the_batch(seed, step, world):
    splits = data_mod.Splits(np.arange(5000, dtype=np.uint16) % 256, np.zeros(100, np.uint8), 256, "t")
    full = data_mod.train_batch(splits, seed, step, 8, 16)
    per = 8 // world
    parts = [data_mod.train_rows(splits, seed, step, 8, 16, r * per, (r + 1) * per) for r in range(world)]
    assert np.array_equal(np.concatenate(parts), full)


def test_rank_env_from_torchrun_slurm_and_nothing():
    assert D.rank_env({}).world == 1
    t = D.rank_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234"})
    assert (t.rank, t.world, t.local_rank, t.master_addr, t.master_port, t.source) == (1, 2, 1, "h", 1234, "torchrun")
    slurm = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77",
             "SLURM_STEP_ID": "2", "SLURM_STEP_NODELIST": "gpu[007-008]"}
    s = D.rank_env(slurm)
    assert (s.rank, s.world, s.local_rank, s.master_addr, s.source) == (5, 8, 1, "gpu007", "slurm")
    assert s.master_port == D.rendezvous_port("77", "2") == D.rank_env({**slurm, "SLURM_PROCID": "0"}).master_port
    # the batch script of a many-task job is one process, not a rank
    assert D.rank_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "77"}).world == 1


@pytest.mark.parametrize("nodes,first", [("vm", "vm"), ("gpu[003-005,9],cpu1", "gpu003"), ("n[1,3]", "n1"),
                                         ("a-b-1,c", "a-b-1")])
def test_first_host(nodes, first):
    assert D.first_host(nodes) == first


def test_rendezvous_ports_differ_between_steps_and_jobs():
    ports = {D.rendezvous_port(j, s) for j in ("100", "101", "4242_3") for s in ("0", "1", "2")}
    assert len(ports) == 9 and all(D.PORT_BASE <= p < D.PORT_BASE + D.PORT_SPAN for p in ports)


def test_srun_line_takes_the_profile_layout():
    env = parse_profile({"gpus_per_run": 8, "nodes_per_run": 2, "cpus_per_task": 6}, name="t").launch_env()
    cmd = D.srun_command(["-m", "isoflop.train", "RUN"], env)
    assert cmd[:1] == ["srun"] and "--overlap" in cmd and "--kill-on-bad-exit=1" in cmd
    assert {"--ntasks=8", "--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=6"} <= set(cmd)


@pytest.mark.parametrize("data,msg", [
    ({"gpus_per_run": 4, "tasks_per_run": 2}, "must equal gpus_per_run"),
    ({"tasks_per_run": 3, "nodes_per_run": 2}, "do not split evenly"),
    ({"gpus_per_node": 4, "gpus_per_run": 8}, "set nodes_per_run to 2"),
])
def test_profile_layout_errors_are_one_line(data, msg):
    with pytest.raises(ProfileError, match=msg) as e:
        parse_profile(data, name="bad")
    assert "\n" not in str(e.value)


def test_profile_hours_and_time_count_every_gpu():
    one = parse_profile({"gpus_per_run": 1, "peak_flops": 1e15, "mfu": 0.5}, name="a")
    eight = parse_profile({"gpus_per_run": 8, "gpus_per_node": 4, "nodes_per_run": 2, "peak_flops": 1e15,
                           "mfu": 0.5}, name="b")
    f = 1e20
    assert eight.gpu_hours(f) == pytest.approx(one.gpu_hours(f))  # same GPU-hours, spread over 8
    assert eight.run_seconds(f) - eight.run_overhead_s == pytest.approx((one.run_seconds(f) - one.run_overhead_s) / 8)
    assert eight.launch_env()["ISOFLOP_TASKS_PER_RUN"] == "8"
