"""report.html opened in a real headless Chromium: the plots and the table render.

A copy of the page gets a probe script that reads the laid-out page (bounding boxes of every
plot, of every point group, of the table rows) into a ``<pre>``; Chromium's ``--dump-dom``
prints the DOM after the script ran. Chromium comes from the system packages (``.ci/chromium.sh``
installs it; ``make test`` runs pytest through it). Without a browser the test skips, except
under ``CI``, where it fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect();
  return {x: r.x, y: r.y, w: r.width, h: r.height}; };
const plots = [...document.querySelectorAll("figure.plot")].map(f => {
  const svg = f.querySelector("svg");
  const groups = {};
  for (const g of svg.querySelectorAll("g[id]")) {
    const kind = g.id.slice(f.id.length + 1);
    if (!g.id.startsWith(f.id + "-")) continue;
    groups[kind] = [...g.querySelectorAll("use")].map(box);
  }
  return {id: f.id, svg: box(svg), groups};
});
const rows = [...document.querySelectorAll("#pareto-table tbody tr")].map(
  r => ({cls: r.className, box: box(r), links: [...r.querySelectorAll("a")].length}));
const out = document.createElement("pre");
out.id = "probe";
out.textContent = JSON.stringify({plots, rows});
document.body.appendChild(out);
</script>"""


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _chromium() -> str:
    found = os.environ.get("ONNXOPT_CHROMIUM") or next(
        (p for n in ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
         if (p := shutil.which(n))), None)  # fmt: skip
    if found is None:
        message = "no Chromium found: run the tests through .ci/chromium.sh (make test does)"
        if _ci():
            pytest.fail(f"CI is set and {message}")
        pytest.skip(message)
    return found


def _render(page: Path, tmp_path: Path) -> dict:
    args = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,2000", "--dump-dom", page.as_uri()]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run: {done.stdout[:500]} {done.stderr[-1000:]}"
    return json.loads(html.unescape(found.group(1)))


def _inside(point: dict, svg: dict) -> bool:
    return (point["w"] > 0 and point["h"] > 0
            and svg["x"] <= point["x"] and point["x"] + point["w"] <= svg["x"] + svg["w"]
            and svg["y"] <= point["y"] and point["y"] + point["h"] <= svg["y"] + svg["h"])


def test_report_renders_plots_and_table_in_chromium(report_run, tmp_path):
    page = (report_run / "report.html").read_text(encoding="utf-8")
    probe = report_run / "report-probe.html"  # beside the report: the same relative links
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        seen = _render(probe, tmp_path)
    finally:
        probe.unlink()
    best = len(json.loads((report_run / "report.json").read_text())["best"])
    assert [p["id"] for p in seen["plots"]] == ["plot0", "plot1", "plot2"]
    for plot in seen["plots"]:
        svg = plot["svg"]
        assert svg["w"] > 300 and svg["h"] > 200, plot["id"]
        groups = plot["groups"]
        assert len(groups["pareto"]) == best, plot["id"]
        assert len(groups["fp32"]) == 1 and len(groups["quantize_static"]) == 1, plot["id"]
        for kind, points in groups.items():
            assert all(_inside(p, svg) for p in points), (plot["id"], kind)
    assert len(seen["plots"][0]["groups"]["infeasible"]) == 2
    rows = seen["rows"]
    assert [r["cls"] for r in rows] == ["pareto"] * best + ["reference"] * 2
    assert all(r["box"]["h"] > 10 and r["box"]["w"] > 500 for r in rows)
    assert all(r["links"] == 5 for r in rows[:best])
