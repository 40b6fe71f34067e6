"""isoflop: plan, dispatch, track and fit IsoFLOP scaling-law sweeps."""
from pathlib import Path

__version__ = "0.1.0"

# templates/ and cluster_profiles/ live beside the package in the source tree
ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
CLUSTER_PROFILES = ROOT / "cluster_profiles"
