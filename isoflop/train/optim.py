"""Muon for the hidden matrices, AdamW for everything else, as one optimizer object for the loop.

Muon (Jordan et al. 2024; `torch.optim.Muon`) orthogonalises each matrix's
Nesterov momentum with a few Newton–Schulz steps: it is defined for 2-D
hidden weights only. The embeddings and the output head (their rows are
per-token vectors, not a linear map between hidden spaces), the norms and the
biases stay on AdamW, as the method prescribes (and as Moonlight and
modded-nanoGPT do). Which matrices are hidden: the 2-D parameters inside the
transformer blocks (`GPT.blocks`); a tied embedding/head lives outside them.

Learning rates: the spec's lr rule gives the AdamW groups' lr; the Muon groups
get it times `optimizer.muon_lr_mult`. With `muon_adjust_lr:
match_rms_adamw` (the default) torch scales each matrix's update to the RMS an
AdamW update has (0.2·√max(A, B), Liu et al. 2025), so the same rule and
weight decay carry over; `original` is Keller Jordan's √max(1, A/B), for
Muon's own lr scale (~0.02). muP's per-group lr_mult and the schedule apply
to both (the loop sets every group's lr = lr(step)·lr_mult). Weight decay:
the same decoupled decay on every matrix in both optimizers.

Checkpoints: `state_dict()` holds both optimizers' states (Muon's momentum
buffers, AdamW's moments and steps); `load_state_dict` restores both.
"""
from __future__ import annotations

from typing import Any

import torch

from isoflop.train.config import RunConfig


class MuonAdamW:
    """Two torch optimizers stepped together; `param_groups` lists Muon's groups, then AdamW's."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        # read afresh: load_state_dict replaces the group dicts
        return self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError("checkpoint optimizer state is not a Muon+AdamW state")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def make_muon(model: torch.nn.Module, groups: list[dict[str, Any]], cfg: RunConfig) -> MuonAdamW:
    """Split the model's AdamW groups (with their lr_mult and weight decay) into Muon and AdamW groups."""
    from isoflop.train.loop import adamw

    o = cfg.optimizer
    hidden = {id(p) for p in model.blocks.parameters() if p.dim() == 2}   # type: ignore[attr-defined]
    muon_groups, adam_groups = [], []
    for g in groups:
        mats = [p for p in g["params"] if id(p) in hidden]
        rest = [p for p in g["params"] if id(p) not in hidden]
        if mats:
            muon_groups.append({**g, "params": mats, "lr_mult": g["lr_mult"] * o.muon_lr_mult})
        if rest:
            adam_groups.append({**g, "params": rest})
    if not muon_groups:
        raise ValueError("optimizer.name muon: the model has no hidden matrices")
    muon = torch.optim.Muon(muon_groups, lr=cfg.peak_lr, weight_decay=o.weight_decay, momentum=o.muon_momentum,
                            nesterov=True, adjust_lr_fn=o.muon_adjust_lr)
    return MuonAdamW(muon, adamw(adam_groups, cfg))
