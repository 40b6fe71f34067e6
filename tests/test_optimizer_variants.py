"""Several optimizer settings in one spec (`optimizer:` as a list): one sweep per setting, sharing
budgets and shapes so that `compare` pairs them; command templates see the optimizer's name."""
from __future__ import annotations

import json
import pickle
import shlex

import pytest

from isoflop.dispatch.command import load_template, render_command, template_context
from isoflop.errors import UserError
from isoflop.plan.grid import plan
from isoflop.spec import SpecError, load_spec, load_specs, parse_spec, parse_specs

from .test_cli_plan import isoflop

BASE = {
    "name": "opt", "budgets": [3e11, 1e12], "grid": {"points": 3, "span": 4, "centre": {"k": 0.045}},
    "model": {"vocab_size": 256, "seq_len": 128, "head_dim": 8, "aspect_ratio": 32, "max_layers": 1},
    "batch": {"rule": 8, "unit": "sequences"}, "lr": 0.01, "flops": "exact", "params": "all",
}
VARIANTS = [{"name": "adamw"}, {"name": "muon", "lr": 0.02, "muon_lr_mult": 2.0}]


def _key(r):
    return r.budget, r.definition["shape"], r.definition["steps"], r.definition["tokens"], r.seed


def test_an_optimizer_list_plans_one_sweep_per_setting_on_the_same_grid():
    adamw, muon = parse_specs({**BASE, "optimizer": VARIANTS})
    assert (adamw.name, muon.name) == ("opt-adamw", "opt-muon")
    assert (adamw.optimizer.name, muon.optimizer.name, muon.optimizer.muon_lr_mult) == ("adamw", "muon", 2.0)
    assert (adamw.lr, muon.lr) == (0.01, 0.02)   # a setting's own lr rule, else the spec's
    a, m = plan(adamw), plan(muon)
    assert len(a) == len(m) == 6 and [_key(r) for r in a] == [_key(r) for r in m]
    assert {r.lr for r in a} == {0.01} and {r.lr for r in m} == {0.02}
    # the AdamW setting is the spec it would be on its own: the same run ids and digest
    alone = parse_spec({**BASE, "name": "opt-adamw", "optimizer": {"name": "adamw"}})
    assert [r.run_id for r in a] == [r.run_id for r in plan(alone)] and adamw.digest() == alone.digest()
    assert not {r.run_id for r in a} & {r.run_id for r in m}


def test_a_spec_without_a_list_is_one_sweep_as_before():
    for opt in ({}, {"optimizer": {"name": "muon"}}):
        (s,) = parse_specs({**BASE, **opt})
        assert s.name == "opt" and s.digest() == parse_spec({**BASE, **opt}).digest()


def test_labels_name_two_settings_of_one_optimizer():
    specs = parse_specs({**BASE, "optimizer": [{"name": "muon", "label": "muon-lr1"},
                                               {"name": "muon", "label": "muon-lr2", "muon_lr_mult": 2.0}]})
    assert [s.name for s in specs] == ["opt-muon-lr1", "opt-muon-lr2"]


@pytest.mark.parametrize("opt, msg", [
    ([], "optimizer lists 0 settings"),
    (["adamw"], "optimizer[0] must be a mapping"),
    ([{"name": "muon"}, {"name": "muon"}], "both be the sweep 'opt-muon'; give each a distinct label"),
    ([{"name": "adamw"}, {"name": "muon", "label": "a b"}], "optimizer[1].label must be"),
    ([{"name": "adamw", "muon_lr_mult": 2.0}], "optimizer[0] (adamw): |optimizer.muon_lr_mult applies to"),
    ([{"name": "adamw"}, {"name": "lion"}], "optimizer[1] (lion): |optimizer.name"),
    ([{"name": "adamw"}, {"name": "muon", "lr": -1}], "optimizer[1] (muon): |lr"),
    ([{"name": "adamw", "label": "x" * 60}], "optimizer[0]"),   # the sweep's name grows past 64 characters
])
def test_bad_optimizer_lists_are_one_line(opt, msg):
    with pytest.raises(SpecError) as e:
        parse_specs({**BASE, "optimizer": opt})
    assert all(m in str(e.value) for m in msg.split("|")) and "\n" not in str(e.value)


def test_plan_stores_each_sweep_and_commands_that_take_one_sweep_refuse_the_list(tmp_path):
    import yaml

    (tmp_path / "v.yaml").write_text(yaml.safe_dump({**BASE, "optimizer": VARIANTS}))
    p = isoflop("plan", "v.yaml", cwd=tmp_path)
    assert "planned" in p.stdout and "opt-adamw" in p.stdout and "opt-muon" in p.stdout
    assert "isoflop compare opt-adamw opt-muon" in p.stdout.replace("\n", " ")
    st = isoflop("status", "opt-muon", cwd=tmp_path)
    assert "6 runs" in st.stdout
    # --show-command finds a run in whichever setting's sweep holds it
    muon_run = plan(load_specs(tmp_path / "v.yaml")[1])[0].run_id
    p = isoflop("plan", "v.yaml", "--show-command", muon_run[:8], cwd=tmp_path)
    assert "isoflop.train" in p.stdout and muon_run in p.stdout
    p = isoflop("plan", "v.yaml", "--show-command", "zzzz", cwd=tmp_path, check=False)
    assert p.returncode != 0 and "matches no run of opt-adamw, opt-muon" in p.stderr
    with pytest.raises(UserError, match="`isoflop plan` plans one sweep for each"):
        load_spec(tmp_path / "v.yaml")
    # a setting that cannot be planned stops every setting before any is stored
    # (Muon's lr rule 1e-5·D is a valid rule, but gives lr > 10 at these budgets: refused by the planner)
    bad = {**BASE, "name": "bad", "optimizer": [{"name": "adamw"},
                                                {"name": "muon", "lr": {"coef": 1e-5, "of": "D", "power": 1.0}}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    p = isoflop("plan", "bad.yaml", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "lr: gives" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = isoflop("status", "bad-adamw", cwd=tmp_path, check=False)
    assert p.returncode != 0 and "bad-adamw" in p.stderr


# ------------------------------------------------------------------ command templates


def _definition(opt: dict, template: str, **shape) -> dict:
    (s,) = parse_specs({**BASE, "optimizer": opt, "trainer": {"template": template}})
    r = plan(s)[0]
    d = json.loads(json.dumps(r.definition)) | {"run_id": r.run_id, "sweep": s.name, "attempt": 1, "lr_scale": 1.0}
    d["shape"].update(shape)
    return d


def _flags(cmd: str) -> dict:
    return dict(w[2:].split("=", 1) for w in shlex.split(cmd) if w.startswith("--") and "=" in w)


def test_templates_see_the_optimizer_name(tmp_path):
    adamw, muon = _definition({}, "builtin"), _definition({"name": "muon", "muon_lr_mult": 2.0}, "builtin")
    assert "name" not in adamw["optimizer"]   # an AdamW definition predates the name ...
    assert template_context(adamw, tmp_path)["optimizer"]["name"] == "adamw"   # ... templates still see it
    ctx = template_context(muon, tmp_path)
    assert ctx["optimizer"]["name"] == "muon" and ctx["optimizer"]["muon_lr_mult"] == 2.0
    # the built-in trainer reads its run.json: the definition it gets names Muon
    assert render_command(muon, tmp_path, template=load_template("builtin")).endswith(f"isoflop.train {tmp_path}")


def test_torchrun_passes_a_non_adamw_optimizer_and_nothing_new_for_adamw(tmp_path):
    tpl = load_template("torchrun")
    over = {"vars": {"script": "train.py"}}
    a = _flags(render_command(_definition({}, "torchrun") | over, tmp_path, template=tpl))
    assert "optimizer" not in a and "muon_lr_mult" not in a and a["beta1"] == "0.9"   # existing scripts keep working
    m = _flags(render_command(_definition({"name": "muon", "muon_lr_mult": 2.0}, "torchrun") | over, tmp_path,
                              template=tpl))
    assert (m["optimizer"], m["muon_lr_mult"], m["muon_momentum"], m["muon_adjust_lr"]) == (
        "muon", "2.0", "0.95", "match_rms_adamw")


def test_nanogpt_refuses_an_optimizer_it_does_not_have(tmp_path):
    ng = tmp_path / "nanoGPT" / "data" / "toy"
    ng.mkdir(parents=True)
    (ng / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 256}))
    over = {"vars": {"nanogpt_dir": str(tmp_path / "nanoGPT"), "dataset": "toy"}, "data": {"kind": "stdlib", "path": None}}
    nano = dict(mlp="gelu", tied=True, qk_norm=False, position_embedding="learned")
    tpl = load_template("nanogpt")
    assert "--n_layer=" in render_command(_definition({}, "nanogpt", **nano) | over, tmp_path, template=tpl)
    with pytest.raises(UserError) as e:
        render_command(_definition({"name": "muon"}, "nanogpt", **nano) | over, tmp_path, template=tpl)
    assert "trains AdamW only: optimizer.name muon would be ignored" in str(e.value) and "\n" not in str(e.value)
