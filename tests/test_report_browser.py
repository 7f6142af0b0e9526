"""The report and tune pages in a real browser: headless Chromium (Debian's `chromium`, installed by
.ci/run) renders each page from a file with the network closed; the recommendation, the table and
every chart and plot must be on the rendered page, and the browser's console must stay silent.

Skipped where no Chromium is installed, except under EDGECLS_REQUIRE_BROWSER=1 (set by .ci/run),
where a missing browser fails."""
import base64
import io
import json
import os
import re
import shutil
import subprocess

import pytest

from .conftest import FIXTURES, ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if not CHROMIUM and os.environ.get("EDGECLS_REQUIRE_BROWSER") != "1":
    pytest.skip("headless Chromium is not installed (apt-get install chromium)", allow_module_level=True)

REPORTS = FIXTURES / "reports"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--enable-logging=stderr", "--v=0"]


def render(page, tmp_path, *extra) -> subprocess.CompletedProcess:
    assert CHROMIUM, "EDGECLS_REQUIRE_BROWSER=1 but no chromium on PATH: .ci/run installs Debian's chromium"
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)


def console(proc) -> list[str]:
    """What the page wrote to the browser's console (Chromium logs it as CONSOLE lines)."""
    return [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_the_console_check_sees_a_page_error(tmp_path):
    """The check below would catch an error: a page that throws is seen."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><script>console.error('broken chart'); undefinedCall();</script></body></html>")
    proc = render(page, tmp_path, "--dump-dom")
    assert any("broken chart" in line for line in console(proc)), proc.stderr[-2000:]


def _check_page(page, tmp_path, charts: int, pngs: int):
    proc = render(page, tmp_path, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console(proc) == [], console(proc)
    dom = proc.stdout
    assert dom.count("<svg") == charts and dom.count('<g class="pt">') >= charts
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', dom)
    assert len(imgs) == pngs
    from PIL import Image

    for data in imgs:  # every embedded plot decodes as the PNG it claims to be
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    shot = tmp_path / f"{page.stem}.png"
    proc = render(page, tmp_path, "--window-size=1300,1800", f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    # The star of the recommendation or the closest candidate (vermillion) is painted on screen.
    assert any(c == (0xD5, 0x5E, 0x00) for _, c in colours)
    return dom


def test_the_report_page_renders_recommendation_table_and_every_plot(tmp_path):
    from edgecls.report import Report

    report = Report.load([REPORTS / "demo-resnet8-5processes.json"])
    out = tmp_path / "demo"
    report.write(out)
    pngs = len([p for p in (out / "plots").iterdir() if p.suffix == ".png"])
    dom = _check_page(out / "report.html", tmp_path, charts=1, pngs=pngs)
    rec = dom.split('id="recommendation"', 1)[1].split("</div>", 1)[0]
    assert "Ship " in rec and "Runner-up: " in rec
    table = dom.split('id="variants"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr") == 1 + len(report.rows)
    assert dom.index('id="recommendation"') < dom.index('id="notices"') < dom.index('id="variants"')


def test_a_merged_page_and_the_tune_page_render_too(tmp_path):
    from edgecls.report import Report

    merged = Report.load([REPORTS / "pi-resnet8-emulated.json", REPORTS / "workstation-resnet8.json"])
    merged.write(tmp_path / "merged")
    pngs = len([p for p in (tmp_path / "merged" / "plots").iterdir() if p.suffix == ".png"])
    dom = _check_page(tmp_path / "merged" / "report.html", tmp_path, charts=2, pngs=pngs)
    assert dom.count('class="rec"') == 2 and 'id="devices"' in dom
    from edgecls.tune.page import html_page

    record = json.loads((ROOT / "docs" / "benchmarks" / "tune" / "resnet8" / "tune.json").read_text())
    page = tmp_path / "tune.html"
    page.write_text(html_page(record))
    _check_page(page, tmp_path, charts=2, pngs=0)
