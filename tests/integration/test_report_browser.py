"""The HTML report in a real headless browser (Debian chromium): every embedded plot decodes
(naturalWidth > 0), the tables render, and the page needs no network.

A small inline script, added to a copy of the page here (the report itself carries no script), writes the
image check into the DOM after `load`; chromium's --dump-dom returns that DOM.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium not installed (apt-get install -y chromium); CI installs it"
)

CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = document.createElement('pre');
  out.id = 'img-check';
  out.textContent = JSON.stringify({
    total: imgs.length,
    decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    widths: imgs.map(function (i) { return i.naturalWidth; }),
    plots: imgs.map(function (i) { return i.getAttribute('data-plot'); }),
    tables: document.querySelectorAll('table').length,
    h1: document.querySelector('h1').textContent
  });
  document.body.appendChild(out);
});
</script>
"""


def _make_run():
    path = Path(__file__).resolve().parents[1] / "unit" / "test_eval_report.py"
    spec = importlib.util.spec_from_file_location("_eval_report_fixture", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_run


def _dump_dom(page: Path, profile: Path) -> str:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_images_decode_in_chromium(tmp_path):
    from evarl.eval.report import build_report

    make_run = _make_run()
    runs = [
        make_run(tmp_path, "eva", metric="a_min"),
        make_run(tmp_path, "uniform", metric="uniform", gain=0.05),
    ]
    res = build_report(runs, tmp_path / "report")
    html = res["html"].read_text()
    check = tmp_path / "report" / "check.html"
    # a broken image as a control: the check must tell a decoded PNG from one that is not
    control = '<img data-plot="control" src="data:image/png;base64,iVBORw0KGgoAAAA">'
    check.write_text(html.replace("</body>", control + CHECK_SCRIPT + "</body>"))
    dom = _dump_dom(check, tmp_path / "profile")
    m = re.search(r'<pre id="img-check">(.*?)</pre>', dom, re.S)
    assert m, "the check script did not run: " + dom[:500]
    info = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    n_plots = len(res["plots"])
    assert info["total"] == n_plots + 1 == 18  # 8 per run + the comparison plot + the control
    assert info["decoded"] == n_plots, info["widths"]
    assert info["widths"][-1] == 0 and all(w > 100 for w in info["widths"][:-1])
    assert set(info["plots"][:-1]) == {p.stem for p in res["plots"]}
    assert info["tables"] >= 5  # comparison + held-out and rounds per run
    assert info["h1"] == "evarl report"
