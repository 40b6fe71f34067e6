"""`isoflop report`: one self-contained HTML page, opened in a real headless Chromium (Debian's
package; `./setup.sh test` installs it): it renders, its figures decode, it fetches nothing, and
every number of the fit in it equals `isoflop fit --json` with the same options."""
from __future__ import annotations

import html
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from isoflop.report_html import fmt

from .conftest import run_isoflop
from .filled_store import FIT_ARGS, SWEEP, cli, cli_json, filled

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# what Chromium needs here: no sandbox as root, no GPU, and none of its background connections
# (the machine's network is closed; each refused connection would only slow it down)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


class Page(HTMLParser):
    """What the tests read from the DOM: labelled numbers, run rows, body attributes, resource URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: list[tuple[str, str, str]] = []   # (data-key, data-value, shown text)
        self.runs: dict[str, str] = {}                   # run id -> state
        self.body: dict[str, str] = {}
        self.urls: list[str] = []
        self.images: list[dict[str, str]] = []
        self.fit_json = ""
        self._open: list[list] = []
        self._in_json = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag == "img":
            self.images.append(a)
        for k in ("src", "href"):
            if k in a:
                self.urls.append(a[k])
        if "data-run" in a and "data-state" in a:
            self.runs[a["data-run"]] = a["data-state"]
        if "data-key" in a:
            self._open.append([a["data-key"], a["data-value"], ""])
        self._in_json = tag == "script" and a.get("id") == "fit-json"

    def handle_data(self, data):
        if self._open:
            self._open[-1][2] += data
        if self._in_json:
            self.fit_json += data

    def handle_endtag(self, tag):
        if self._open and tag in ("span", "td"):
            self.numbers.append(tuple(self._open.pop()))
        self._in_json = False


def at(data, key: str):
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def chromium(*args: str, profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def assert_anchors_exist(text: str, page: Page) -> None:
    missing = [u for u in page.urls if u.startswith("#") and f"id='{u[1:]}'" not in text
               and f'id="{u[1:]}"' not in text]
    assert not missing, f"links to sections the page lacks: {missing}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return filled(tmp_path_factory)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (./setup.sh test installs it as root)")
def test_report_in_headless_chromium(store, tmp_path):
    workdir, _, diverged = store
    out = tmp_path / "report.html"
    run_isoflop("report", SWEEP, "-o", str(out), *FIT_ARGS, workdir=workdir)
    fit = cli_json("fit", SWEEP, *FIT_ARGS, workdir=workdir)
    status = cli_json("status", SWEEP, workdir=workdir)

    p = chromium("--virtual-time-budget=30000", "--dump-dom", out.as_uri(), profile=tmp_path / "profile-dom")
    assert p.returncode == 0 and "</html>" in p.stdout, p.stderr[-2000:]
    page = Page()
    page.feed(p.stdout)

    # the figures decoded in the browser (the page's own script counts naturalWidth > 0)
    n = 3 if fit.get("hparams") else 2   # the lr grid's figure where the sweep has one (this one does)
    assert n == 3 and page.body.get("data-images-loaded") == f"{n}/{n}", (page.body, p.stderr[-2000:])
    assert len(page.images) == n and all(i.get("data-loaded") == "1" for i in page.images), page.images
    # nothing is fetched at view time: every resource is inline, every link is an anchor in the page
    assert page.urls and all(u.startswith(("data:", "#")) for u in page.urls), page.urls
    assert_anchors_exist(p.stdout, page)
    # every labelled number is the fit's, at full precision and as shown
    assert len(page.numbers) > 60
    keys = {k for k, _, _ in page.numbers}
    listed = [i for i, e in enumerate(fit["excluded"]) if not e["reason"].startswith("not_best")]
    for must in ("frontier.params.exponent_estimate", "frontier.params.exponent_ci.0", "predictions.1.n_opt_estimate",
                 "predictions.0.loss_opt_ci.1", "budgets.3.n_opt_estimate", f"excluded.{listed[-1]}.budget",
                 "noise.sigma", "parametric.0.alpha", "hparams.cells.0.params", "hparams.cells.27.runs"):
        assert must in keys, must
    for key, value, shown in page.numbers:
        assert json.loads(value) == at(fit, key), key
        assert shown == fmt(at(fit, key)), (key, shown)
    # the fit embedded whole, for anyone who wants more than the tables show
    assert json.loads(page.fit_json) == fit
    # every run with its state, as `status` has it; the excluded ones with their reasons
    want = {r["run_id"]: r["state"] for r in status["runs"]}
    assert page.runs == want, {k: (v, want.get(k)) for k, v in page.runs.items() if v != want.get(k)}
    assert page.runs[diverged] == "diverged" and "diverged at step 123" in p.stdout

    # and it looks like a report: a screenshot is a real picture of some size
    shot = tmp_path / "report.png"
    s = chromium("--window-size=1280,2400", f"--screenshot={shot}", out.as_uri(), profile=tmp_path / "profile-shot")
    assert s.returncode == 0, s.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000, shot.stat().st_size


def test_report_before_any_run_finished(tmp_path):
    from .conftest import tiny_spec

    workdir = tmp_path / "work"
    (tmp_path / "t.yaml").write_text(tiny_spec("fresh"))
    run_isoflop("plan", str(tmp_path / "t.yaml"), workdir=workdir)
    out = tmp_path / "r.html"
    run_isoflop("report", "fresh", "-o", str(out), workdir=workdir)
    page = Page()
    text = out.read_text()
    page.feed(text)
    assert "no fit: sweep 'fresh' has no completed runs yet (3 planned)" in html.unescape(text)
    assert set(page.runs.values()) == {"planned"} and len(page.runs) == 3
    assert "vocab_size: 256" in text and page.images == [] and page.fit_json == ""
    # the nav bar links only what a page without a fit has
    assert_anchors_exist(text, page)
    assert [u for u in page.urls if u.startswith("#")] == ["#figures", "#runs", "#spec"]
    assert "SIMULATED" not in text
    # a sweep of drawn losses says so at the top of the page
    (tmp_path / "sim.yaml").write_text(tiny_spec("sim").replace("template: builtin", "template: simulate"))
    run_isoflop("plan", str(tmp_path / "sim.yaml"), workdir=workdir)
    run_isoflop("report", "sim", "-o", str(out), workdir=workdir)
    assert "<b>SIMULATED</b> sweep" in out.read_text()


@pytest.mark.parametrize("args, expect", [
    (("nosuch", "-o", "r.html"), "no sweep named 'nosuch'"),
    ((SWEEP, "-o", "r.pdf"), "-o must name an .html file"),
    ((SWEEP, "-o", "missing/r.html"), "no such folder"),
    ((SWEEP, "-o", "r.html", "--minimizer", "cubic"), "minimizer must be"),
])
def test_bad_report_is_one_line(store, tmp_path, args, expect):
    workdir, _, _ = store
    args = [str(tmp_path / a) if a.endswith((".html", ".pdf")) else a for a in args]
    p = cli("report", *args, workdir=workdir)
    assert p.exit_code == 2 and len(p.stderr.strip().splitlines()) == 1 and expect in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []


def test_flags_are_explained():
    from isoflop.fit.isoflop import FLAG_ADVICE
    from isoflop.report_html import _exclusions_section

    j = {"budgets": [{"budget": 1e18, "flags": [], "used": True},
                     {"budget": 1e19, "flags": ["vertex_near_edge"], "used": False}],
         "excluded": [{"run_id": "abc", "budget": 1e19, "reason": "failed: exit 1"}]}
    text = html.unescape(_exclusions_section(j))
    meaning, advice = FLAG_ADVICE["vertex_near_edge"]
    assert "vertex_near_edge (not in the frontier)" in text and meaning in text and advice in text
    assert "failed: exit 1" in text and "1 run(s) left out" in text


def test_hparams_laws_are_labelled():
    from isoflop.report_html import _hparams_section

    j = {"hparams": {"cells": [{"lr_flags": []}, {"lr_flags": ["edge"]}], "law_reasons": {"lr_n": "too few sizes"},
                     "laws": {"lr": {"exponent": -0.125, "exponent_ci": [-0.2, -0.05], "coefficient": 0.3,
                                     "coefficient_ci": None, "cells": 1}}}}
    page = Page()
    page.feed(_hparams_section(j))
    assert ("hparams.laws.lr.exponent", "-0.125", "-0.125") in page.numbers
    assert ("hparams.laws.lr.exponent_ci.0", "-0.2", "-0.2") in page.numbers
    text = html.unescape(_hparams_section(j))
    assert "2 (budget, size) cell(s) with a grid, 1 flagged" in text and "no η* = k·N^e: too few sizes" in text
    assert _hparams_section({"hparams": None}) == ""


def test_not_best_runs_are_counted_not_listed():
    """An lr/batch grid leaves most runs out on purpose: one summary line names a few, the runs that
    went wrong keep their rows."""
    from isoflop.report_html import NOT_BEST_SHOWN, _exclusions_section

    lost = [{"run_id": f"nb{i:03d}", "budget": 1e18, "reason": f"not_best: lr {i} lost to lr 0.5"} for i in range(280)]
    j = {"budgets": [{"budget": 1e18, "flags": [], "used": True}],
         "excluded": [*lost[:100], {"run_id": "dead", "budget": 1e18, "reason": "diverged at step 7"}, *lost[100:]]}
    text = html.unescape(_exclusions_section(j))
    page = Page()
    page.feed(_exclusions_section(j))
    assert "280 run(s) are <code>not_best</code>" in text and f"and {280 - NOT_BEST_SHOWN} more" in text
    assert "nb000 (lr 0 lost to lr 0.5)" in text and f"nb{NOT_BEST_SHOWN:03d}" not in text
    # one table row, the diverged run's, labelled with its place in fit --json's excluded
    assert text.count("<tr data-run=") == 1 and ("excluded.100.budget", "1e+18", "1e+18") in page.numbers
    assert "1 other run(s) left out of the fit" in text


def test_hparams_cells_are_tabled():
    """The per-cell optima and flags `fit` prints, each number labelled with its fit --json path."""
    from isoflop.report_html import _hparams_section

    cells = [{"budget": 1e18, "params": 2e7, "runs": 5, "lr_opt": 3e-3, "lr_flags": [], "batch_opt": None,
              "batch_flags": None},
             {"budget": 1e19, "params": 6e7, "runs": 5, "lr_opt": None, "lr_flags": ["at_high_edge"],
              "batch_opt": None, "batch_flags": None}]
    j = {"hparams": {"cells": cells, "laws": {}, "law_reasons": {"lr": "one usable cell"}, "sigma": 0.01,
                     "sigma_source": "seeds", "bootstrap": 200}}
    page = Page()
    page.feed(_hparams_section(j))
    text = html.unescape(_hparams_section(j))
    assert ("hparams.cells.0.lr_opt", "0.003", "0.003") in page.numbers
    assert ("hparams.cells.1.params", "60000000.0", "6e+07") in page.numbers
    assert "lr cells left out: 1 at_high_edge" in text and "B* (tokens)" not in text   # no batch grid, no column
    assert ("hparams.sigma", "0.01", "0.01") in page.numbers
