"""The files that ship inside the package: spec templates, command templates, cluster profiles.

The repository keeps them in its top-level folders (templates/, cluster_profiles/), where
people edit them; isoflop/_data/ links to those folders, so the wheel carries copies (setuptools
follows the links when it builds) and an editable install reads the folders themselves. Both are
found the same way, with importlib.resources, wherever isoflop is installed — never relative to
a source checkout or the current folder. pip always installs unzipped, so these are real paths
(a profile records the file it came from; a command template's path goes into run.json).
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _shipped(*parts: str) -> Path:
    where = files(__package__).joinpath("_data", *parts)
    if not isinstance(where, Path):  # a zipped install: nothing here could read these as files
        raise RuntimeError(f"isoflop's data files are not on the file system ({where}); install it with pip")
    return where


SPEC_TEMPLATES = _shipped("templates")                    # starter.yaml, cpu-demo*.yaml (`isoflop init -t`)
COMMAND_TEMPLATES = _shipped("templates", "commands")     # builtin, nanogpt, torchrun (`trainer.template`)
CLUSTER_PROFILES = _shipped("cluster_profiles")           # local, local-slurm, slurm-gpu, ... (`--profile`)


def spec_templates() -> list[str]:
    """The names `isoflop init --template` accepts."""
    return sorted(p.stem for p in SPEC_TEMPLATES.glob("*.yaml"))
