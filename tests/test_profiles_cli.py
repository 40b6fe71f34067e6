"""`isoflop profiles`: a broken profile is shown under its name, in the table and in --json."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from isoflop.cli import app


def test_invalid_profile_keeps_its_name(tmp_path):
    (tmp_path / "mine.yaml").write_text("executor: slurm\npartition: gpu\ngpus_per_run: -1\n")
    (tmp_path / "fine.yaml").write_text("executor: local\n")
    env = {"ISOFLOP_PROFILES": str(tmp_path), "COLUMNS": "250"}
    lines = [json.loads(x) for x in CliRunner().invoke(app, ["profiles", "--json"], env=env).stdout.splitlines()]
    bad = [x for x in lines if "error" in x]
    mine = next(x for x in bad if x["name"] == "mine")
    assert str(tmp_path / "mine.yaml") in mine["error"] and all(x["name"] for x in bad)
    assert any(x.get("name") == "fine" and "error" not in x for x in lines)
    text = CliRunner().invoke(app, ["profiles"], env=env).stdout
    assert "mine (invalid)" in text and "fine" in text
