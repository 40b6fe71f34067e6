"""`pip install` of the built wheel (not editable) into a clean venv, then the CLI from an unrelated
folder, with the source tree gone: templates, command templates and cluster profiles must come
from inside the installed package.

The venv reuses the dependencies already installed (a .pth line naming this venv's
site-packages, which adds them but not the editable isoflop: that needs its own .pth hook run),
so nothing is downloaded. `demo --quick` itself trains 15 runs (~5 min on 2 cores); here its two
parts are checked apart: its spec is package data read through the same constant as
`init --template cpu-demo-quick`, and its pipeline (plan, local runs, fit, plots) runs as
`demo --spec` on a tiny sweep whose runs `submit` trained, so it only refits.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
budgets: [1.0e10, 2.0e10]
grid: {points: 3, span: 4, centre: {k: 0.15}}
model: {vocab_size: 256, seq_len: 64, head_dim: 16, aspect_ratio: 32}
flops: exact
params: all
batch: {rule: 8, unit: sequences}
lr: 0.01
trainer: {device: cpu, threads: 1, eval_batches: 2, log_every: 50}
"""


def _copy_source(dest: Path) -> None:
    """The files a `pip install git+...` would see: tracked and new unignored ones (no .venv,
    no egg-info, no build/), symlinks kept as links."""
    if (REPO / ".git").exists():
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
        with tarfile.open(dest / "src.tar", "w") as tar:
            for n in filter(None, names):
                if os.path.lexists(REPO / n):  # a tracked file deleted in the working tree is not there
                    tar.add(REPO / n, arcname=f"src/{n}", recursive=False)
        with tarfile.open(dest / "src.tar") as tar:
            tar.extractall(dest)
        (dest / "src.tar").unlink()
    else:
        shutil.copytree(REPO, dest / "src", symlinks=True, ignore=shutil.ignore_patterns(
            ".venv", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's `isoflop` script, its python, the wheel) with the source copy deleted."""
    root = tmp_path_factory.mktemp("wheel")
    _copy_source(root)
    src = root / "src"
    assert (src / "isoflop" / "_data" / "templates").is_symlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(src)], check=True, capture_output=True, cwd=root)
    wheel = next((root / "dist").glob("isoflop-*.whl"))
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    py = root / "venv" / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel)], check=True,
                   capture_output=True)
    shutil.rmtree(src)  # nothing may be read from a checkout
    return root / "venv" / "bin" / "isoflop", py, wheel


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISOFLOP_", "PYTHON"))}
    return {**env, "COLUMNS": "200", **extra}


def test_wheel_carries_the_data_files(installed):
    _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for sub in ("templates", "templates/commands", "cluster_profiles"):
        shipped = {p.name for p in (REPO / sub).iterdir() if p.is_file()}
        assert shipped and {f"isoflop/_data/{sub}/{n}" for n in shipped} <= names, sub


@pytest.mark.slow
def test_installed_cli_end_to_end_from_elsewhere(installed, tmp_path):
    exe, py, _ = installed
    where = tmp_path / "elsewhere"
    where.mkdir()

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        t0 = time.time()
        p = subprocess.run([str(exe), *args], cwd=where, env=_env(), capture_output=True, text=True, timeout=timeout)
        print(f"{time.time() - t0:6.1f} s  isoflop {' '.join(args)}")
        assert p.returncode == 0, f"isoflop {' '.join(args)}: {p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p

    site = subprocess.run([str(py), "-c", "import isoflop, sys; print(isoflop.__file__)"], cwd=where, env=_env(),
                          capture_output=True, text=True, check=True).stdout.strip()
    assert site.startswith(str(exe.parents[1])), site  # the installed copy, not the checkout

    t = time.time()
    cli("--help")
    assert time.time() - t < 5
    cli("init")
    assert (where / "sweep.yaml").read_text() == (REPO / "templates" / "starter.yaml").read_text()
    cli("init", "--template", "cpu-demo-quick", "quick.yaml")  # demo --quick's spec, read the same way
    assert (where / "quick.yaml").read_text() == (REPO / "templates" / "cpu-demo-quick.yaml").read_text()

    profs = [json.loads(x) for x in cli("profiles", "--json").stdout.splitlines()]
    by_name = {p["name"]: p for p in profs if "name" in p}
    assert {"local", "local-slurm", "slurm-gpu"} <= set(by_name), profs
    assert by_name["local"]["path"].startswith(str(exe.parents[1])), by_name["local"]

    (where / "tiny.yaml").write_text(TINY)
    cli("plan", "tiny.yaml")
    cli("submit", "tiny", "--profile", "local", "--wait", "--interval", "1", timeout=300)
    st = json.loads(cli("status", "tiny", "--json").stdout)
    assert st["counts"].get("completed") == 6, st["counts"]
    fit = json.loads(cli("fit", "tiny", "--json", "--bootstrap", "20").stdout)
    assert len(fit["budgets"]) == 2, fit.keys()
    demo = cli("demo", "--spec", "tiny.yaml", "--workdir", "isoflop-work", "--bootstrap", "20")
    assert "reusing" in demo.stdout and "Budgets" in demo.stdout, demo.stdout[-2000:]
    assert (where / "isoflop-work" / "tiny-isoflops.png").stat().st_size > 1000
