"""isoflop: plan, dispatch, track and fit IsoFLOP scaling-law sweeps."""
from pathlib import Path

__version__ = "0.1.0"

# templates/ and cluster_profiles/ live beside the package in the source tree
ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
CLUSTER_PROFILES = ROOT / "cluster_profiles"

# the notebook API (api.py), imported on first use so that `isoflop --help` and `status` never
# load pandas: `isoflop.runs("my-sweep")`
_API = ("sweeps", "runs", "curves", "fit_result", "FitResult")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'isoflop' has no attribute {name!r}")
