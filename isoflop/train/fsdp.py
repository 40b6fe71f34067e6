"""Sharded data parallelism (FSDP2, `torch.distributed.fsdp.fully_shard`) for the built-in trainer.

With `sharding: fsdp` (profile field, or run.json's `sharding`) and more than one rank, every
transformer block and the root are sharded: each rank holds 1/world of the parameters, gradients
and optimizer state, for models whose AdamW state does not fit one device. The default `ddp`
keeps a whole copy on every rank.

Checkpoints stay in the one-process format: the full model and optimizer state are gathered
(to CPU) and rank 0 writes them; every rank loads the full state back and keeps its shard. So a
checkpoint written under fsdp resumes under ddp or one process, and the other way round.

Muon is refused: it orthogonalises whole matrices, and a rank holds only rows of each.

This module imports torch only inside its functions (the launcher checks the setting first).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping

ENV_SHARDING = "ISOFLOP_SHARDING"
SHARDINGS = ("ddp", "fsdp")


def sharding_setting(cfg_extra: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    """The job's (profile's) setting, else run.json's `sharding`, else ddp."""
    env = os.environ if env is None else env
    return str(env.get(ENV_SHARDING) or cfg_extra.get("sharding") or "ddp")


def check(sharding: str, optimizer: str, world: int) -> None:
    """Raise distributed.LayoutError (one line) for a setting the trainer cannot run on `world` ranks
    (one rank never shards, so there muon runs whatever the setting)."""
    from isoflop.train.distributed import LayoutError

    if sharding not in SHARDINGS:
        raise LayoutError(f"sharding must be one of {', '.join(SHARDINGS)}, not {sharding!r}")
    if sharding == "fsdp" and optimizer == "muon" and world > 1:
        raise LayoutError("sharding fsdp does not support optimizer muon (it needs whole matrices on one rank); "
                          "use sharding ddp")


def shard(model, device) -> None:
    """fully_shard every block, then the root (its embeddings, norm and head), in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import torch.distributed as dist

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


@contextlib.contextmanager
def no_sync(model) -> Iterator[None]:
    """Gradients stay local (unreduced) for this micro-batch; the last one reduces them all."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _fqns(model, opt) -> list[str]:
    """The parameter names in the optimizer's order: index i of a plain state_dict is name i."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in opt.param_groups for p in g["params"]]


def full_state(model, opt) -> tuple[dict, dict]:
    """(model, optimizer) state dicts, whole and on CPU, in the one-process layout, on rank 0 (empty on the
    others). A collective."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    o = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=o)
    osd = get_optimizer_state_dict(model, opt, options=o)
    if not osd:  # cpu_offload gathers onto rank 0 alone, the one that writes
        return msd, osd
    index = {n: i for i, n in enumerate(_fqns(model, opt))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]
    return msd, {"state": {index[n]: s for n, s in osd["state"].items()}, "param_groups": groups}


def load_full_state(model, opt, msd: dict, osd: dict) -> None:
    """Load a one-process-layout checkpoint into the sharded model and optimizer (every rank)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    o = StateDictOptions(full_state_dict=True)
    names = _fqns(model, opt)
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in osd["param_groups"]]
    set_model_state_dict(model, msd, options=o)
    set_optimizer_state_dict(model, opt, {"state": {names[i]: s for i, s in osd["state"].items()},
                                          "param_groups": groups}, options=o)
