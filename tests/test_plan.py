"""Property tests of the planner: budgets, spacing, shapes, determinism."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from isoflop.plan import flops
from isoflop.plan.grid import FLOP_TOLERANCE, PlanError, plan, run_id_of, shape_for_params
from isoflop.spec import parse_spec


def spec_dict(**over):
    d = {
        "name": "t",
        "budgets": [1e18],
        "grid": {"points": 5, "span": 16},
        "batch": {"rule": "deepseek"},
        "lr": "deepseek",
    }
    d.update(over)
    return d


budgets = st.lists(
    st.floats(min_value=13, max_value=25).map(lambda e: float(f"{10**e:.4g}")), min_size=1, max_size=4, unique=True
)
families = st.fixed_dictionaries({
    "vocab_size": st.sampled_from([256, 32000, 50304]),
    "seq_len": st.sampled_from([128, 512, 2048]),
    "head_dim": st.sampled_from([16, 32, 64, 128]),
    "aspect_ratio": st.sampled_from([16.0, 32.0, 64.0, 128.0]),
    "mlp": st.sampled_from(["gelu", "swiglu"]),
    "tied": st.booleans(),
    "qk_norm": st.booleans(),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    budgets=budgets,
    family=families,
    points=st.integers(1, 9),
    span=st.sampled_from([4.0, 16.0, 64.0]),
    flop_conv=st.sampled_from(flops.FLOP_CONVENTIONS),
    param_conv=st.sampled_from(flops.PARAM_CONVENTIONS),
)
def test_every_run_matches_its_budget_and_grid_is_log_even(budgets, family, points, span, flop_conv, param_conv):
    spec = parse_spec(spec_dict(
        budgets=budgets, model=family, grid={"points": points, "span": span}, flops=flop_conv, params=param_conv,
    ))
    try:
        runs = plan(spec)
    except PlanError as e:
        # the only acceptable refusals: shapes the family cannot realise, or too few steps for the batch
        assert "shape" in str(e) or "too small" in str(e), str(e)
        assume(False)
    assert len(runs) == len(budgets) * points
    step = math.log(span) / (points - 1) if points > 1 else 0
    for b in set(r.budget for r in runs):
        rs = sorted((r for r in runs if r.budget == b), key=lambda r: r.point)
        for r in rs:
            shape = flops.Shape(r.n_layer, r.d_model, r.n_head, family["vocab_size"], family["seq_len"],
                                family["mlp"], family["tied"], family["qk_norm"])
            # FLOPs under the spec's convention within 1% of the budget, after whole steps
            assert abs(r.flops / b - 1) <= FLOP_TOLERANCE
            assert r.flops == flops.flops_per_token(shape, flop_conv, param_conv) * r.tokens
            assert r.tokens == r.steps * r.batch_tokens
            # valid shapes: whole heads of head_dim
            assert r.d_model % r.n_head == 0 and r.d_model // r.n_head == family["head_dim"]
            assert r.n_layer >= 1
            # the ledger: every convention recorded and consistent
            assert r.ledger["params_" + param_conv] == r.params
            assert r.ledger["flops_exact"] == flops.exact_flops_per_token(shape) * r.tokens
        ns = [r.params for r in rs]
        assert all(a < b_ for a, b_ in zip(ns, ns[1:])), "N strictly increases"
        assert len({(r.n_layer, r.d_model) for r in rs}) == len(rs), "no two points share a shape"
        if points > 1:
            # evenly spaced in log N within rounding: each point within half a step of its target
            lo = math.log(rs[0].params)
            gaps = [math.log(n2 / n1) for n1, n2 in zip(ns, ns[1:])]
            assert all(g > 0 for g in gaps)
            assert abs(math.log(ns[-1]) - lo - step * (points - 1)) <= step + math.log(1.1) * 2


@settings(max_examples=25, deadline=None)
@given(budgets=budgets, family=families)
def test_planning_is_deterministic(budgets, family):
    spec = parse_spec(spec_dict(budgets=budgets, model=family))
    try:
        a = plan(spec)
    except PlanError:
        assume(False)
    b = plan(parse_spec(spec.model_dump(mode="json")))
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert [r.to_json() for r in a] == [r.to_json() for r in b]
    assert len({r.run_id for r in a}) == len(a)
    assert all(run_id_of(r.definition) == r.run_id for r in a)


def test_run_id_changes_with_definition_only():
    base = plan(parse_spec(spec_dict()))
    renamed = plan(parse_spec(spec_dict(name="other")))
    assert [r.run_id for r in base] == [r.run_id for r in renamed]
    other_lr = plan(parse_spec(spec_dict(lr=1e-3)))
    assert not {r.run_id for r in base} & {r.run_id for r in other_lr}


def test_lr_and_batch_grids_and_seeds_multiply_runs():
    runs = plan(parse_spec(spec_dict(lr_grid=[0.5, 1, 2], batch_grid=[0.5, 1], seeds=[0, 1])))
    assert len(runs) == 5 * 3 * 2 * 2
    cell = [r for r in runs if r.point == 2 and r.seed == 0 and r.batch_mult == 1]
    lrs = sorted(r.lr for r in cell)
    assert lrs[0] * 2 == pytest.approx(lrs[1], rel=1e-5) and lrs[1] * 2 == pytest.approx(lrs[2], rel=1e-5)


def test_presets_follow_published_rules():
    (r, *_) = plan(parse_spec(spec_dict(budgets=[1e20], grid={"points": 1, "span": 1})))
    assert r.lr == pytest.approx(0.3188 * 1e20 ** -0.125, rel=1e-5)
    assert r.batch_tokens == pytest.approx(0.2920 * 1e20 ** 0.3271, rel=0.01)
    (p, *_) = plan(parse_spec(spec_dict(budgets=[1e20], grid={"points": 1, "span": 1}, lr="porian")))
    assert p.lr == pytest.approx(3.7 * p.params ** -0.36, rel=1e-5)


def test_tokens_per_param_bounds():
    runs = plan(parse_spec(spec_dict(budgets=[1e21], grid={"points": 5, "tokens_per_param": [5, 80]})))
    tpp = [r.tokens / r.params for r in runs]
    assert 3 < min(tpp) < 8 and 50 < max(tpp) < 130


def test_budget_too_small_is_refused_with_a_reason():
    with pytest.raises(PlanError, match="smallest shape|no free shape"):
        plan(parse_spec(spec_dict(budgets=[1e9])))
    with pytest.raises(PlanError, match="too small"):
        plan(parse_spec(spec_dict(
            budgets=[1e14], model={"vocab_size": 256, "seq_len": 128, "head_dim": 16, "aspect_ratio": 32},
            batch={"rule": 1e7, "unit": "tokens"},
        )))


def test_shape_for_prediction():
    spec = parse_spec(spec_dict())
    s = shape_for_params(spec, 1e9)
    assert 0.7e9 < s["params"] < 1.4e9 and s["d_model"] % 64 == 0


def test_flop_conventions_order():
    s = flops.Shape(12, 768, 12, 50304, 1024)
    n = flops.params(s, "non_embedding")
    assert flops.params(s, "with_output") == n + 50304 * 768
    assert flops.params(s, "all") == n + 50304 * 768  # tied: one matrix
    assert flops.params(flops.Shape(12, 768, 12, 50304, 1024, tied=False), "all") == n + 2 * 50304 * 768
    assert flops.flops_per_token(s, "6ND+attention", "non_embedding") == 6 * n + 12 * 12 * 1024 * 768
    # GPT-2 small: ~85M non-embedding params
    assert 84e6 < n < 86e6
