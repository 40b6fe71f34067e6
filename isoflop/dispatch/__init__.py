"""Dispatch: cluster profiles, submission (Slurm arrays / packed jobs, or local processes),
scheduler sync, cancel and retry. Names are imported lazily: `isoflop status` stays fast.

    submit_sweep(engine, name, profile, *, dry_run=False, max_runs=None, budget=None) -> SubmitResult
    sync_sweep(engine, name) -> SweepStatus
    cancel_sweep(engine, name, *, budget=None, run_ids=None) -> CancelResult
    retry_sweep(engine, name, *, states=("failed", "lost"), lr_scale=None) -> RetryResult
    load_profile(name_or_path) -> Profile;  list_profiles()
"""
from __future__ import annotations

_NAMES = {
    "submit_sweep": "submit", "SubmitResult": "submit", "DispatchError": "locks",
    "sync_sweep": "sync", "read_status": "sync", "SweepStatus": "sync", "RunStatus": "sync", "BudgetStatus": "sync",
    "cancel_sweep": "control", "retry_sweep": "control", "CancelResult": "control", "RetryResult": "control",
    "load_profile": "profiles", "list_profiles": "profiles", "Profile": "profiles", "ProfileError": "profiles",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(name)
