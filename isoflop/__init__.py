"""isoflop: plan, dispatch, track and fit IsoFLOP scaling-law sweeps."""
__version__ = "0.1.0"

# shipped inside the package (resources.py), wherever it is installed
from .resources import CLUSTER_PROFILES, SPEC_TEMPLATES as TEMPLATES  # noqa: E402

# the notebook API (api.py), imported on first use so that `isoflop --help` and `status` never
# load pandas: `isoflop.runs("my-sweep")`
_API = ("sweeps", "runs", "curves", "fit_result", "FitResult")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'isoflop' has no attribute {name!r}")


def __dir__() -> list[str]:  # tab completion in a notebook lists the lazy API too
    return sorted(set(globals()) | set(_API))
