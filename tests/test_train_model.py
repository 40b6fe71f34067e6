"""The built-in GPT agrees with plan/flops.py: parameters exactly, measured FLOPs within 2%."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from isoflop.plan import flops
from isoflop.plan.flops import Shape
from isoflop.train.config import RunConfig
from isoflop.train.flops_count import measured_flops_per_token
from isoflop.train.loop import lr_multiplier
from isoflop.train.model import GPT, GPTConfig, build

SHAPES = [
    Shape(n_layer=L, d_model=d, n_head=h, vocab_size=v, seq_len=T, mlp=mlp, tied=tied, qk_norm=qk)
    for (L, d, h, v, T), mlp, tied, qk in itertools.product(
        [(1, 32, 2, 256, 64), (2, 64, 4, 256, 128), (3, 96, 3, 300, 32), (2, 128, 8, 512, 16)],
        ["gelu", "swiglu"], [True, False], [False, True])
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_params_match_planner(shape):
    m = GPT(GPTConfig.from_shape(shape))
    assert m.num_params() == sum(p.numel() for p in m.parameters()) == flops.params(shape, "all")
    for conv in flops.PARAM_CONVENTIONS:
        assert m.num_params(conv) == flops.params(shape, conv)
    # the non-embedding count is exactly the blocks + the final norm
    blocks = sum(p.numel() for p in m.blocks.parameters()) + m.norm.weight.numel()
    assert blocks == flops.non_embedding_params(shape)
    assert not any(n.endswith("bias") for n, _ in m.named_parameters())
    if shape.mlp == "swiglu":
        assert m.blocks[0].mlp.proj.in_features == shape.d_ff
    m.check_counts()


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[3], SHAPES[6], SHAPES[9], SHAPES[13], SHAPES[15]], ids=str)
def test_measured_flops_match_exact(shape):
    m = build(shape)
    measured = measured_flops_per_token(m, shape.seq_len, shape.vocab_size)
    planned = flops.exact_flops_per_token(shape)
    assert abs(measured - planned) / planned < 0.02, (measured, planned)
    assert all(p.grad is None for p in m.parameters())  # counting leaves no gradients


def test_forward_shapes_and_zloss():
    s = Shape(2, 64, 4, 256, 32)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 33))
    m0 = build(s)
    m1 = build(s, z_loss=1e-2)
    m1.load_state_dict(m0.state_dict())
    logits, l0 = m0(x[:, :-1], x[:, 1:])
    _, l1 = m1(x[:, :-1], x[:, 1:])
    assert logits.shape == (2, 32, 256)
    lse = torch.logsumexp(logits.float().reshape(-1, 256), -1)
    assert torch.allclose(l1 - l0, 1e-2 * lse.pow(2).mean(), atol=1e-5)
    assert abs(l0.item() - math.log(256)) < 0.2  # near-uniform at init


def test_causal():
    s = Shape(2, 64, 4, 256, 16, qk_norm=True)
    m = build(s).eval()
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 256
    a, _ = m(x)
    b, _ = m(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_mup_groups_and_scales():
    s = Shape(2, 256, 4, 256, 32)
    m = build(s, mup=True, mup_base_width=64)
    assert m.cfg.width_mult == 4.0
    assert m.logit_scale == 0.25
    assert m.blocks[0].attn.scale == 1.0 / 64
    groups = m.param_groups(0.1)
    hidden = {id(p) for p in m.blocks.parameters() if p.dim() == 2}
    for g in groups:
        for p in g["params"]:
            assert g["lr_mult"] == (0.25 if id(p) in hidden else 1.0)
            assert g["weight_decay"] == (0.1 if p.dim() == 2 else 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    # muP at base width is the standard model
    base = build(Shape(2, 64, 4, 256, 32), mup=True, mup_base_width=64)
    assert base.logit_scale == 1.0 and all(g["lr_mult"] == 1.0 for g in base.param_groups(0.1))


def _cfg(**kw):
    d = {"run_id": "x", "shape": {"n_layer": 1, "d_model": 32, "n_head": 2, "seq_len": 16}, "steps": 100,
         "batch_seqs": 2, "lr": 1.0}
    d.update(kw)
    return RunConfig.from_json(d)


def test_schedules():
    c = _cfg()
    lrs = [lr_multiplier(i, c) for i in range(100)]
    assert lrs[0] == pytest.approx(1 / 5) and lrs[4] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[4:], lrs[5:]))  # monotone decay after warmup
    w = _cfg(schedule={"kind": "wsd", "warmup_frac": 0.05, "min_lr_frac": 0.0, "decay_frac": 0.2})
    lrs = [lr_multiplier(i, w) for i in range(100)]
    assert lrs[4:80] == [1.0] * 76
    assert lrs[-1] == pytest.approx(0.0) and 0 < lrs[80] < 1


def test_config_defaults_and_derivation():
    c = RunConfig.from_json({"run_id": "a", "shape": {"n_layer": 1, "d_model": 32, "n_head": 2, "seq_len": 16},
                             "tokens": 3200, "batch_tokens": 64, "lr": 1e-3, "lr_scale": 0.5})
    assert c.batch_seqs == 4 and c.steps == 50 and c.peak_lr == 5e-4
    assert c.shape.vocab_size == 256 and c.schedule.kind == "cosine" and c.eval.batches == 8


def test_rotary_is_relative():
    from isoflop.train.model import apply_rotary, rotary_tables

    cos, sin = rotary_tables(32, 16, 10000.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        return torch.dot(apply_rotary(q, cos[m], sin[m]), apply_rotary(k, cos[n], sin[n])).item()

    assert score(5, 3) == pytest.approx(score(20, 18), abs=1e-4)
    assert score(0, 0) == pytest.approx(torch.dot(q, k).item(), abs=1e-5)
    assert apply_rotary(q, cos[7], sin[7]).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


def test_trainer_defaults_are_the_spec_defaults():
    """A run.json that omits an option trains as the planner would have planned it from a spec
    that omits it (mup_base_width and log_every had drifted: 64 vs 256, 50 vs 10)."""
    from isoflop.plan.grid import plan
    from isoflop.spec import parse_spec

    spec = parse_spec({"name": "d", "budgets": [1e9], "grid": {"points": 1, "span": 1, "centre": {"k": 0.3}},
                       "model": {"vocab_size": 256, "seq_len": 32, "head_dim": 16}, "batch": {"rule": 4, "unit": "sequences"},
                       "lr": 0.003})
    r = plan(spec)[0]
    planned = RunConfig.from_json(r.definition | {"run_id": r.run_id})
    bare = RunConfig.from_json({"run_id": r.run_id, "lr": r.definition["lr"], "steps": planned.steps,
                                "batch_seqs": planned.batch_seqs, "shape": r.definition["shape"]})
    for k in ("model", "optimizer", "schedule", "data", "log_every", "checkpoint_every_s", "device", "compile",
              "dtype", "threads", "flop_convention", "param_convention"):
        assert getattr(bare, k) == getattr(planned, k), k
    assert (bare.eval.batches, bare.eval.every) == (planned.eval.batches, planned.eval.every)
    assert bare.model.mup_base_width == 256 and bare.log_every == 10
