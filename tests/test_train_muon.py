"""Muon in the built-in trainer: the parameter split, bit-identical resume, FLOPs, unchanged AdamW ids."""
from __future__ import annotations

import io
import json
import signal

import pytest
import torch

from isoflop.errors import UserError
from isoflop.plan.grid import plan
from isoflop.spec import load_spec, parse_spec
from isoflop.train import EXIT_OK, EXIT_PREEMPTED
from isoflop.train.config import ConfigError, RunConfig
from isoflop.train.job import train
from isoflop.train.loop import fingerprint, make_optimizer
from isoflop.train.model import GPT, GPTConfig
from isoflop.train.optim import MuonAdamW

from .test_train_loop import ROOT, losses, spawn, wait_for, write_run

TINY = {"n_layer": 2, "d_model": 32, "n_head": 2, "seq_len": 32}
MUON = {"name": "muon", "muon_lr_mult": 2.0}


def cfg_of(tmp_path, **kw) -> RunConfig:
    return RunConfig.load(write_run(tmp_path / "cfg", **{"shape": TINY, **kw}))


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(tmp_path):
    cfg = cfg_of(tmp_path, optimizer=MUON, shape={**TINY, "tied": False})
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_shape(cfg.shape))
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(opt, MuonAdamW)
    hidden = {id(p) for p in model.blocks.parameters() if p.dim() == 2}
    on_muon = [p for g in opt.muon.param_groups for p in g["params"]]
    on_adam = [p for g in opt.adamw.param_groups for p in g["params"]]
    assert {id(p) for p in on_muon} == hidden and all(p.dim() == 2 for p in on_muon)
    # every parameter once; embeddings and the untied head (2-D, outside the blocks), norms, biases on AdamW
    assert len(on_muon) + len(on_adam) == len({id(p) for p in model.parameters()})
    assert not hidden & {id(p) for p in on_adam}
    outside_2d = [n for n, p in model.named_parameters() if p.dim() == 2 and id(p) not in hidden]
    assert outside_2d and all(id(dict(model.named_parameters())[n]) in {id(p) for p in on_adam} for n in outside_2d)
    # the per-optimizer lr rule: Muon groups carry muon_lr_mult, AdamW groups the rule's value; decay on both
    assert all(g["lr_mult"] == 2.0 for g in opt.muon.param_groups)
    assert all(g["lr_mult"] == 1.0 for g in opt.adamw.param_groups)
    assert all(g["weight_decay"] == 0.1 for g in opt.muon.param_groups)


def _steps(model, opt, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randint(0, 256, (4, 33), generator=g)
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_state_dict_round_trip_continues_bit_identically(tmp_path):
    cfg = cfg_of(tmp_path, optimizer=MUON)
    dev = torch.device("cpu")
    torch.manual_seed(1)
    a = GPT(GPTConfig.from_shape(cfg.shape))
    opt_a = make_optimizer(a, cfg, dev)
    _steps(a, opt_a, 3, seed=5)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "optimizer": opt_a.state_dict()}, buf)
    st = opt_a.state_dict()
    assert set(st) == {"muon", "adamw"}
    assert all("momentum_buffer" in s for s in st["muon"]["state"].values())
    assert all("exp_avg_sq" in s for s in st["adamw"]["state"].values())
    torch.manual_seed(99)   # another init: everything must come from the checkpoint
    b = GPT(GPTConfig.from_shape(cfg.shape))
    opt_b = make_optimizer(b, cfg, dev)
    saved = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["optimizer"])
    _steps(a, opt_a, 2, seed=6)
    _steps(b, opt_b, 2, seed=6)
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), n


@pytest.fixture(scope="module")
def muon_reference(tmp_path_factory):
    d = write_run(tmp_path_factory.mktemp("muon") / "run", optimizer=MUON, shape=TINY, steps=80)
    return d, train(d)


def test_muon_run_trains_and_its_flops_match_the_plan(muon_reference, tmp_path):
    d, r = muon_reference
    assert not r["diverged"] and r["val_loss"] < 5.0
    assert r["measured_flops_per_token"] == r["planned_flops_per_token"]["exact"]
    assert r["measured_flops"] == r["measured_flops_per_token"] * r["tokens"]
    adam = train(write_run(tmp_path / "adam", shape=TINY, steps=80))
    assert adam["measured_flops_per_token"] == r["measured_flops_per_token"]
    assert adam["val_loss"] != r["val_loss"] and adam["fingerprint"] != r["fingerprint"]


def test_sigterm_then_resume_is_bit_identical(muon_reference, tmp_path):
    ref_dir, ref = muon_reference
    d = write_run(tmp_path / "term", optimizer=MUON, shape=TINY, steps=80)
    p = spawn(d, ISOFLOP_TEST_STEP_SLEEP=0.02)
    wait_for(lambda: (d / "metrics.jsonl").exists() and len((d / "metrics.jsonl").read_text().splitlines()) >= 2, p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_PREEMPTED, err.decode()
    state = torch.load(d / "checkpoint.pt", weights_only=False)
    assert set(state["optimizer"]) == {"muon", "adamw"} and 20 <= state["step"] < 80
    q = spawn(d)
    _, err = q.communicate(timeout=120)
    assert q.returncode == EXIT_OK, err.decode()
    r = json.loads((d / "result.json").read_text())
    assert r["resumed_from_step"] == state["step"]
    # exactly, not approximately: both optimizers' states came back bit for bit
    assert r["val_loss"] == ref["val_loss"] and r["train_loss"] == ref["train_loss"]
    assert losses(d) == losses(ref_dir)


# the quick demo's spec as it was when optimizer.name came (the template has since changed its model family)
QUICK_BEFORE_MUON = {
    "name": "cpu-demo-quick", "budgets": [3.0e11, 5.5e11, 1.0e12],
    "grid": {"points": 5, "span": 16, "centre": {"k": 0.045}},
    "model": {"vocab_size": 256, "seq_len": 128, "head_dim": 16, "aspect_ratio": 32, "mlp": "gelu", "tied": True},
    "flops": "exact", "params": "all", "batch": {"rule": 8, "unit": "sequences"},
    "lr": {"coef": 9.765625e-09, "of": "D", "power": 1.0, "max": 0.01},
    "schedule": {"kind": "cosine", "warmup_frac": 0.05, "min_lr_frac": 0.1},
    "optimizer": {"beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1, "grad_clip": 1.0}, "seeds": [0],
    "data": {"kind": "stdlib"},
    "trainer": {"template": "builtin", "device": "cpu", "threads": 1, "eval_batches": 16, "log_every": 50,
                "checkpoint_every_s": 60},
}


def test_adamw_specs_keep_their_run_ids_and_fingerprints(tmp_path):
    # recorded with the code before optimizer.name existed
    sp = parse_spec(QUICK_BEFORE_MUON)
    assert sp.digest() == "48928cb00df28060"
    assert [r.run_id for r in plan(sp)][:3] == ["2fb8b31a148d", "64ad6da036d4", "15b8159b813c"]
    assert "name" not in plan(sp)[0].definition["optimizer"]
    d = sp.model_dump(mode="json")   # what the store keeps: every default, and it parses back
    assert parse_spec(d).digest() == sp.digest()
    cfg = RunConfig.load(write_run(tmp_path / "fp", run_id="r", steps=120, batch_seqs=4, lr=3e-3))
    assert fingerprint(cfg) == "4e3172e8df2836bc"
    # a Muon spec plans other runs, whose definition says so
    d["optimizer"] = {"name": "muon"}
    muon = plan(parse_spec(d))
    assert muon[0].definition["optimizer"]["name"] == "muon"
    assert not {r.run_id for r in muon} & {r.run_id for r in plan(sp)}


@pytest.mark.parametrize("opt, expect", [
    ({"name": "sgd"}, "optimizer.name"),
    ({"muon_lr_mult": 2.0}, "applies to optimizer.name: muon only"),
    ({"name": "muon", "muon_lr_mult": 0}, "muon_lr_mult"),
    ({"name": "muon", "muon_momentum": 1.0}, "muon_momentum"),
    ({"name": "muon", "muon_adjust_lr": "rms"}, "muon_adjust_lr"),
])
def test_bad_optimizer_spec_is_one_line(opt, expect):
    d = load_spec(ROOT / "templates" / "cpu-demo-quick.yaml").model_dump(mode="json")
    d["optimizer"] = opt
    with pytest.raises(UserError) as e:
        parse_spec(d)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_bad_run_json_optimizer(tmp_path):
    with pytest.raises(ConfigError, match="optimizer.name"):
        RunConfig.load(write_run(tmp_path / "x", optimizer={"name": "lion"}))


def test_demo_compare_twin_shares_budgets_and_shapes():
    from isoflop.cli import _muon_twin

    sp = load_spec(ROOT / "templates" / "cpu-demo-quick.yaml")
    twin = _muon_twin(sp)
    assert twin.name == "cpu-demo-quick-muon" and twin.optimizer.name == "muon"
    a, b = plan(sp), plan(twin)
    key = lambda r: (r.budget, r.definition["shape"], r.definition["lr"], r.definition["steps"])  # noqa: E731
    assert [key(r) for r in a] == [key(r) for r in b]
    assert all(r.definition["optimizer"]["name"] == "muon" for r in b)


def test_demo_compare_refuses_a_muon_spec_in_one_line(tmp_path):
    from .test_cli_plan import isoflop

    d = load_spec(ROOT / "templates" / "cpu-demo-quick.yaml").model_dump(mode="json")
    d["optimizer"] = {"name": "muon"}
    (tmp_path / "m.json").write_text(json.dumps(d))
    p = isoflop("demo", "--compare", "--spec", "m.json", "--workdir", "w", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "already names muon" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w" / "isoflop.db").exists()   # refused before anything was stored
