"""`isoflop report`: one self-contained HTML page of a sweep, to mail or put on a wiki.

Everything is inside the file: the figures are PNGs in data: URLs, the style is inline, and
nothing is fetched when it is opened (no fonts, scripts or images from elsewhere). It holds
the spec, the run table with states, the IsoFLOP profiles, the frontier with its 5–95% bands,
the predictions, the per-budget flags and every excluded run with its reason.

Every number of the fit in the page carries `data-key` (its path in `isoflop fit --json`, e.g.
`frontier.params.exponent`) and `data-value` (the value, full precision), and the whole JSON is
embedded as `<script type="application/json" id="fit-json">`: a reader can check the page
against the fit, and the tests do, in a real browser. A small inline script marks a figure that
did not decode and records `data-images-loaded="k/n"` on <body>.
"""
from __future__ import annotations

import base64
import html
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import UserError

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#1b1f24}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px} th,td{border:1px solid #d0d7de;padding:3px 7px}
th{background:#f6f8fa;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#57606a} .warn{color:#9a6700} .bad{color:#cf222e} .ok{color:#1a7f37}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #d0d7de}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:12px}
details summary{cursor:pointer;font-weight:600}
.state-completed{color:#1a7f37} .state-failed,.state-diverged,.state-lost{color:#cf222e}
.state-not_best,.state-cancelled,.state-superseded{color:#57606a}
"""

SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; imgs[i].setAttribute("data-loaded", "1"); }
    else { imgs[i].insertAdjacentHTML("afterend", "<p class='bad'>this figure failed to load</p>"); }
  }
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
});
"""


def fmt(v: Any) -> str:
    """How a number is shown: 4 significant digits; None (no value) as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(data: Any, key: str, tag: str = "span") -> str:
    """One number of the fit JSON at path `key` (dots; list indices as numbers), labelled with it."""
    v = data
    for part in key.split("."):
        v = v[int(part)] if isinstance(v, list) else v.get(part) if isinstance(v, dict) else None
        if v is None:
            break
    cls = ' class="n"' if tag == "td" else ""
    return (f'<{tag}{cls} data-key="{_e(key)}" data-value="{_e(json.dumps(v))}">{_e(fmt(v))}</{tag}>')


def _ci(data: Any, key: str, tag: str = "td") -> str:
    """A 5–95% interval at `key` as two labelled numbers, or a dash."""
    v = data
    for part in key.split("."):
        v = v[int(part)] if isinstance(v, list) else v.get(part) if isinstance(v, dict) else None
        if v is None:
            return f'<{tag} class="n muted">—</{tag}>'
    return f'<{tag} class="n">[{_num(data, key + ".0")}, {_num(data, key + ".1")}]</{tag}>'


def _table(head: Sequence[str], rows: Sequence[str], **attrs: str) -> str:
    a = "".join(f' {k}="{_e(v)}"' for k, v in attrs.items())
    return (f"<table{a}><thead><tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _figures(report: Any) -> list[tuple[str, str]]:
    """(caption, data: URL) of the IsoFLOP profiles and the frontier, drawn by fit.plots."""
    from .fit.plots import save_plots

    with tempfile.TemporaryDirectory(prefix="isoflop-report-") as d:
        paths = save_plots(report, Path(d) / "fit.png")
        if getattr(report, "hparams", None) is not None:
            from .fit.hparams_render import save_hparams_plot

            paths.append(save_hparams_plot(report.hparams, Path(d) / "fit.png"))
        urls = ["data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for p in paths]
    captions = ["IsoFLOP profiles: loss against N per budget; ★ the minimum; hollow grey budgets are flagged and "
                "left out of the frontier",
                "Frontier: N_opt and D_opt against C with the fitted power laws and their 5–95% bootstrap bands; "
                "diamonds are predictions with their intervals",
                "Learning rate / batch: loss against the grid's values per (budget, size) cell, and the optimum "
                "against C with its fitted law and band"]
    return list(zip(captions, urls))


def _budgets_section(j: dict[str, Any]) -> str:
    rows = []
    for i, b in enumerate(j["budgets"]):
        k = f"budgets.{i}"
        flags = ", ".join(b["flags"]) or "—"
        rows.append(f'<tr data-budget="{b["budget"]!r}">{_num(j, k + ".budget", "td")}'
                    f'{_num(j, k + ".n_opt_estimate", "td")}{_ci(j, k + ".n_opt_ci")}'
                    f'{_num(j, k + ".d_opt", "td")}{_ci(j, k + ".d_opt_ci")}'
                    f'{_num(j, k + ".loss_opt", "td")}{_ci(j, k + ".loss_opt_ci")}'
                    f'{_num(j, k + ".points", "td")}{_num(j, k + ".sizes", "td")}'
                    f'<td class="{"ok" if b["used"] else "warn"}">{"yes" if b["used"] else "no"}</td>'
                    f'<td class="{"warn" if b["flags"] else "muted"}">{_e(flags)}</td></tr>')
    return ("<h2 id='budgets'>Per-budget optima</h2>"
            "<p class='muted'>N_opt is the bootstrap median (the estimate to act on), D_opt and L_opt the fit; "
            "intervals are 5–95% over seed-noise resamples. Flagged budgets do not enter the frontier.</p>"
            + _table(["C (FLOPs)", "N_opt", "N_opt 5–95%", "D_opt", "D_opt 5–95%", "L_opt", "L_opt 5–95%", "runs",
                      "sizes", "in frontier", "flags"], rows, id="budgets-table"))


def _frontier_section(j: dict[str, Any]) -> str:
    fr = j.get("frontier")
    if fr is None:
        return f"<h2 id='frontier'>Frontier</h2><p class='bad'>no frontier: {_e(j.get('frontier_reason'))}</p>"
    rows = []
    for law, name in (("params", "N_opt = k·C^a"), ("tokens", "D_opt = k·C^b"), ("loss", "L_opt = k·C^g")):
        k = f"frontier.{law}"
        rows.append(f"<tr><td>{_e(name)}</td>{_num(j, k + '.exponent_estimate', 'td')}{_ci(j, k + '.exponent_ci')}"
                    f"{_num(j, k + '.exponent', 'td')}{_num(j, k + '.coefficient', 'td')}"
                    f"{_ci(j, k + '.coefficient_ci')}</tr>")
    out = ("<h2 id='frontier'>Frontier</h2>"
           + _table(["law", "exponent (estimate)", "exponent 5–95%", "exponent (fit)", "k", "k 5–95%"], rows,
                    id="frontier-table"))
    if fr.get("loss_law"):
        out += (f"<p>Loss law L_opt = E + k·(C/c0)^−γ: E = {_num(j, 'frontier.loss_law.E')} "
                f"{_ci(j, 'frontier.loss_law.E_ci', 'span')}, γ = {_num(j, 'frontier.loss_law.gamma')} "
                f"{_ci(j, 'frontier.loss_law.gamma_ci', 'span')}</p>")
    if j.get("parametric"):
        p = "parametric.0"
        out += (f"<p>Parametric fit L(N, D) = E + A/N^α + B/D^β ({_e(j['parametric'][0]['method'])}): "
                f"E = {_num(j, p + '.E')}, A = {_num(j, p + '.A')}, B = {_num(j, p + '.B')}, "
                f"α = {_num(j, p + '.alpha')}, β = {_num(j, p + '.beta')}; "
                f"{_e((j.get('parametric_check') or {}).get('reason') or '')}</p>")
    elif j.get("parametric_reason"):
        out += f"<p class='muted'>No parametric fit: {_e(j['parametric_reason'])}</p>"
    if j.get("noise"):
        out += (f"<p class='muted'>Seed noise σ = {_num(j, 'noise.sigma')} ({_e(j['noise']['source'])}, "
                f"{_num(j, 'noise.dof')} degrees of freedom). Estimator: {_e(j.get('estimator'))}.</p>")
    return out


NOT_BEST_SHOWN = 5   # not_best runs named in the exclusions summary

HLAW_NAMES = {"lr": "η* = k·C^e", "lr_n": "η* = k·N^e", "batch": "B* = k·C^e", "batch_n": "B* = k·N^e"}


def _hparams_section(j: dict[str, Any]) -> str:
    """The fitted η*/B* laws of a sweep with an lr or batch grid (`fit --json`'s `hparams`)."""
    h = j.get("hparams")
    if not h:
        return ""
    cells = h.get("cells") or []
    flagged = sum(1 for c in cells if c.get("lr_flags") or c.get("batch_flags"))
    out = (f"<h2 id='hparams'>Learning rate and batch</h2><p>{len(cells)} (budget, size) cell(s) with a grid, "
           f"{flagged} flagged (no usable optimum: too few values, or the best one at an end of the grid).</p>")
    rows = []
    for key in h.get("laws") or {}:
        k = f"hparams.laws.{key}"
        rows.append(f"<tr><td>{_e(HLAW_NAMES.get(key, key))}</td>{_num(j, k + '.exponent', 'td')}"
                    f"{_ci(j, k + '.exponent_ci')}{_num(j, k + '.coefficient', 'td')}{_ci(j, k + '.coefficient_ci')}"
                    f"{_num(j, k + '.cells', 'td')}</tr>")
    if rows:
        out += _table(["law", "exponent e", "e 5–95%", "k", "k 5–95%", "cells"], rows, id="hparams-table")
    reasons = h.get("law_reasons") or {}
    if reasons:
        out += "<ul>" + "".join(f"<li>no {_e(HLAW_NAMES.get(k, k))}: {_e(v)}</li>" for k, v in reasons.items()) + "</ul>"
    if h.get("sigma") is not None:
        out += (f"<p class='muted'>Intervals: 5–95% over {_num(j, 'hparams.bootstrap')} resamples of the per-cell "
                f"optima, σ = {_num(j, 'hparams.sigma')} ({_e(h.get('sigma_source'))}).</p>")
    return out + _hparams_cells(j, cells)


def _hparams_cells(j: dict[str, Any], cells: Sequence[dict[str, Any]]) -> str:
    """Each (budget, size) cell's optimum per axis and why a cell is left out of the laws
    (what `isoflop fit` prints as its cells table)."""
    axes = [k for k in ("lr", "batch") if any(c.get(f"{k}_flags") is not None for c in cells)]
    if not cells or not axes:
        return ""
    counts = []
    for k in axes:
        n: dict[str, int] = {}
        for c in cells:
            for f in c.get(f"{k}_flags") or ():
                n[f] = n.get(f, 0) + 1
        if n:
            counts.append(f"{k} cells left out: " + ", ".join(f"{v} {f}" for f, v in sorted(n.items())))
    rows = []
    for i, c in enumerate(cells):
        k = f"hparams.cells.{i}"
        row = f"<tr>{_num(j, k + '.budget', 'td')}{_num(j, k + '.params', 'td')}{_num(j, k + '.runs', 'td')}"
        for a in axes:
            flags = c.get(f"{a}_flags")
            row += (_num(j, f"{k}.{a}_opt", "td") if flags is not None else "<td class='n muted'>—</td>")
            row += f"<td class='{'warn' if flags else 'muted'}'>{_e(', '.join(flags or ()))}</td>"
        rows.append(row + "</tr>")
    head = ["C (FLOPs)", "N", "runs"]
    for a in axes:
        head += ["η*" if a == "lr" else "B* (tokens)", f"{a} flags"]
    return ("".join(f"<p class='warn'>{_e(t)}</p>" for t in counts)
            + f"<details><summary>cells (budget, size): the optimum per axis ({len(cells)})</summary>"
            + _table(head, rows, id="hparams-cells") + "</details>")


def _predictions_section(j: dict[str, Any]) -> str:
    preds = j.get("predictions") or []
    if not preds:
        return ("<h2 id='predictions'>Predictions</h2><p class='muted'>none asked for "
                "(<code>isoflop report SWEEP --predict 1e21</code>)</p>")
    rows = []
    for i, p in enumerate(preds):
        k = f"predictions.{i}"
        sh = p.get("shape")
        shape = f"{sh['n_layer']}×{sh['d_model']}×{sh['n_head']}" if sh else "—"
        flag = p.get("loss_opt_flag")
        rows.append(f"<tr>{_num(j, k + '.budget', 'td')}{_num(j, k + '.n_opt_estimate', 'td')}{_ci(j, k + '.n_opt_ci')}"
                    f"{_num(j, k + '.d_opt_estimate', 'td')}{_ci(j, k + '.d_opt_ci')}"
                    f"{_num(j, k + '.loss_opt', 'td')}{_ci(j, k + '.loss_opt_ci')}<td>{_e(shape)}</td>"
                    f"<td class='muted'>{_e(p['loss_opt_model'])}"
                    + (f"<br><span class='warn'>{_e(flag)}</span>" if flag else "") + "</td></tr>")
    return ("<h2 id='predictions'>Predictions</h2>"
            + _table(["C (FLOPs)", "N_opt", "N_opt 5–95%", "D_opt", "D_opt 5–95%", "L_opt", "L_opt 5–95%",
                      "shape L×d×h", "L_opt from"], rows, id="predictions-table"))


def _exclusions_section(j: dict[str, Any]) -> str:
    flagged = [(i, b) for i, b in enumerate(j["budgets"]) if b["flags"]]
    out = "<h2 id='exclusions'>Flags and exclusions</h2>"
    if flagged:
        from .fit.isoflop import FLAG_ADVICE

        out += "<ul>" + "".join(f"<li>C = {_num(j, f'budgets.{i}.budget')}: {_e(', '.join(b['flags']))}"
                                 f"{'' if b['used'] else ' (not in the frontier)'}</li>" for i, b in flagged) + "</ul>"
        seen = sorted({f for _, b in flagged for f in b["flags"]})
        out += _table(["flag", "means", "what to do"],
                      [f"<tr><td><code>{_e(f)}</code></td><td>{_e(FLAG_ADVICE.get(f, ('', ''))[0])}</td>"
                       f"<td>{_e(FLAG_ADVICE.get(f, ('', ''))[1])}</td></tr>" for f in seen], id="flags-table")
    else:
        out += "<p class='ok'>no budget is flagged</p>"
    # an lr/batch grid leaves most of its runs out on purpose: those are counted, not listed
    # (each is in the run table, state not_best), so the runs that went wrong stay visible
    lost = [e for e in j["excluded"] if e["reason"].startswith("not_best")]
    rows = [f"<tr data-run='{_e(e['run_id'])}'><td><code>{_e(e['run_id'])}</code></td>"
            f"{_num(j, f'excluded.{i}.budget', 'td')}<td>{_e(e['reason'])}</td></tr>"
            for i, e in enumerate(j["excluded"]) if not e["reason"].startswith("not_best")]
    if lost:
        first = ", ".join(f"{e['run_id']} ({e['reason'].removeprefix('not_best: ')})" for e in lost[:NOT_BEST_SHOWN])
        more = f" and {len(lost) - NOT_BEST_SHOWN} more" if len(lost) > NOT_BEST_SHOWN else ""
        out += (f"<p id='not-best'>{len(lost)} run(s) are <code>not_best</code>: each lost its (budget, size, seed) "
                f"cell of the lr/batch grid to a sibling, and the IsoFLOP fit takes the cell's best run "
                f"(they are in the run table). <span class='muted'>E.g. {_e(first)}{_e(more)}.</span></p>")
    out += (f"<p>{len(rows)} {'other ' if lost else ''}run(s) left out of the fit, with their reasons:</p>"
            + _table(["run", "C", "reason"], rows, id="excluded-table") if rows
            else f"<p class='ok'>no {'other ' if lost else ''}run was left out of the fit</p>")
    return out


def _runs_section(runs: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["run_state"]] = counts.get(r["run_state"], 0) + 1
    rows = []
    for r in runs:
        shape = f"{r['n_layer']}×{r['d_model']}×{r['n_head']}"
        rows.append(f"<tr data-run='{_e(r['run_id'])}' data-state='{_e(r['run_state'])}'>"
                    f"<td><code>{_e(r['run_id'])}</code></td><td class='n'>{_e(fmt(r['budget']))}</td>"
                    f"<td class='n'>{_e(fmt(r['params']))}</td><td class='n'>{_e(fmt(r['tokens']))}</td>"
                    f"<td>{_e(shape)}</td><td class='n'>{_e(fmt(r['lr']))}</td><td class='n'>{r['seed']}</td>"
                    f"<td class='state-{_e(r['state'])}'>{_e(r['state'])}</td>"
                    f"<td class='n' data-loss='{_e(json.dumps(r['loss']))}'>{_e(fmt(r['loss']))}</td>"
                    f"<td class='muted'>{_e(r['reason'] or '')}</td></tr>")
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return (f"<h2 id='runs'>Runs</h2><p>{len(runs)} runs: {_e(summary)}. <span class='muted'>State as "
            "<code>isoflop fit</code> sees it: <code>not_best</code> lost its (budget, size, seed) cell of an "
            "lr/batch grid.</span></p><details open><summary>run table</summary>"
            + _table(["run", "C", "N", "D", "shape L×d×h", "lr", "seed", "state", "loss", "reason"], rows,
                     id="runs-table") + "</details>")


def _nav(fit_json: Optional[dict[str, Any]]) -> str:
    """Links to the sections the page has: a page without a fit has no optima, frontier, ..."""
    links = [("figures", "figures" if fit_json is not None else "fit")]
    if fit_json is not None:
        links += [("budgets", "optima"), ("frontier", "frontier"), ("predictions", "predictions")]
        if fit_json.get("hparams"):
            links.append(("hparams", "lr and batch"))
        links.append(("exclusions", "flags and exclusions"))
    links += [("runs", "runs"), ("spec", "spec")]
    return "<p id='nav'>" + " · ".join(f"<a href='#{a}'>{_e(t)}</a>" for a, t in links) + "</p>"


def render_html(sweep: str, spec: dict[str, Any], runs: Sequence[dict[str, Any]], report: Any,
                fit_json: Optional[dict[str, Any]], no_fit: Optional[str] = None) -> str:
    """The page (a str). `report`/`fit_json` are None when there is no fit yet (`no_fit` says why)."""
    import yaml

    from . import __version__

    parts = [f"<h1>IsoFLOP sweep <code>{_e(sweep)}</code></h1>",
             f"<p class='muted'>isoflop {_e(__version__)} · written {_e(time.strftime('%Y-%m-%d %H:%M %Z'))} · "
             "a self-contained page: nothing is fetched when it is opened</p>",
             _nav(fit_json)]
    if (spec.get("trainer") or {}).get("template") == "simulate":
        # a page mailed around must not pass drawn losses off as trained ones
        parts.append("<p class='bad' id='simulated'><b>SIMULATED</b> sweep (trainer template 'simulate'): "
                     "losses drawn from a stated law, nothing was trained</p>")
    if report is None:
        parts.append(f"<h2 id='figures'>Fit</h2><p class='bad'>no fit: {_e(no_fit)}</p>")
    else:
        figs = "".join(f"<figure><img alt='{_e(cap.split(':')[0])}' src='{url}'><figcaption class='muted'>"
                       f"{_e(cap)}</figcaption></figure>" for cap, url in _figures(report))
        s = fit_json["settings"]
        parts += [f"<h2 id='figures'>Figures</h2>{figs}",
                  f"<p class='muted'>fit settings: minimizer {_e(s['minimizer'])}, bootstrap {_e(s['bootstrap'])} "
                  f"resamples (seed {_e(s['seed'])}), parametric {_e(s['parametric'])}, keep flagged "
                  f"{_e(s['keep_flagged'])}</p>",
                  _budgets_section(fit_json), _frontier_section(fit_json), _predictions_section(fit_json),
                  _hparams_section(fit_json),
                  _exclusions_section(fit_json)]
    parts.append(_runs_section(runs))
    parts.append(f"<h2 id='spec'>Spec</h2><pre id='spec-yaml'>{_e(yaml.safe_dump(spec, sort_keys=False))}</pre>")
    if fit_json is not None:
        # `</` cannot end the script element early: JSON allows escaping '/' as '\/'
        blob = json.dumps(fit_json).replace("</", "<\\/")
        parts.append(f'<script type="application/json" id="fit-json">{blob}</script>')
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>isoflop report: {_e(sweep)}</title><style>{STYLE}</style></head><body>"
            + "".join(parts) + f"<script>{SCRIPT}</script></body></html>")


def write_report(engine: Any, sweep: str, out: Path, **fit_options: Any) -> Path:
    """Fit `sweep` as `isoflop fit` does (fit_options: its options, see api.fit_report) and write the
    page to `out`. A sweep without completed runs still gets its spec and run table."""
    from sqlalchemy.orm import Session

    from .api import fit_report
    from .export import _write
    from .records import run_rows
    from .store.sweeps import get_sweep

    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"-o must name an .html file, got {str(out)!r}")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such folder")
    with Session(engine) as s:
        spec = get_sweep(s, sweep).spec
    runs = run_rows(engine, sweep, provenance=False)
    report = fit_json = no_fit = None
    if any(r["state"] == "completed" for r in runs):
        res = fit_report(sweep, engine=engine, **fit_options)
        report, fit_json = res.report, res.json
    else:
        no_fit = f"sweep {sweep!r} has no completed runs yet ({len(runs)} planned)"
    _write(out, render_html(sweep, spec, runs, report, fit_json, no_fit).encode())
    return out
