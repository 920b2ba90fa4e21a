"""Both reports in a real browser: headless Chromium (Debian's `chromium` package), driven over the
DevTools protocol (websocket-client). Each report is opened from a file:// URL and checked for:
zero console errors, warnings and uncaught exceptions; zero network requests besides the document
itself (Network.requestWillBeSent), and no src/href in the page other than in-page anchors (so no
data: URL either, which Chrome does not report as a request: the reports inline SVG markup, not
images); the recommendation (experiment) or the run's
verdict (run), the comparison table with one row per point, every figure drawn; the XSS probe of
the fixture's prompt shown as text and never executed; a click on a column header re-sorts the
table; with scripts disabled the table is still complete. A screenshot of each lands in tmp_path.

No Chromium is a failure naming the install command, never a skip: scripts/setup.sh installs it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.analysis.conftest import XSS

pytestmark = pytest.mark.serial  # the report_lab fixture's outcome depends on the load generator keeping up

INSTALL = "apt-get install -y chromium"
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in (os.environ.get("SERVELAB_CHROMIUM"), *NAMES):
        if name and (path := shutil.which(name)):
            return path
    pytest.fail(f"no Chromium found (looked for {', '.join(NAMES)} on PATH): install it with `{INSTALL}` "
                "(scripts/setup.sh does so when run as root on Debian/Ubuntu)", pytrace=False)  # fmt: skip


class Browser:
    """One headless Chromium with one page, spoken to over its DevTools websocket."""

    def __init__(self, profile: Path) -> None:
        try:
            import websocket  # websocket-client
        except ImportError:
            pytest.fail("the browser test needs websocket-client: pip install -e '.[dev]' (scripts/setup.sh)", pytrace=False)
        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
                self.close()
                pytest.fail(f"Chromium did not start its DevTools endpoint: {err}", pytrace=False)
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.n = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.n += 1
        mid = self.n
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, since: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == event for e in self.events[since:]):
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def open(self, url: str, settle: bool = True) -> list[dict]:
        """Navigate and wait for the load event (and, with `settle`, a frame more for late requests);
        returns the events the page caused."""
        mark = len(self.events)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", mark)
        if settle:
            self.js("new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))")
        return self.events[mark:]

    def screenshot(self, path: Path) -> None:
        h = self.js("Math.min(document.documentElement.scrollHeight, 12000)")
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1280, "height": h, "scale": 1})  # fmt: skip
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a dead socket
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    for domain in ("Page", "Network", "Runtime", "Log", "DOM"):
        b.call(f"{domain}.enable")
    b.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    yield b
    b.close()


def problems(events: list[dict], url: str) -> tuple[list[str], list[str]]:
    """(console errors and exceptions, network requests other than the document itself)."""
    errors, requests = [], []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            errors.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            errors.append(f"exception: {p['exceptionDetails'].get('text')} {p['exceptionDetails'].get('exception', {}).get('description', '')}")
        elif m == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
            errors.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.requestWillBeSent" and p["request"]["url"] != url:
            requests.append(p["request"]["url"][:200])
    return errors, requests


PAGE_FACTS = """(() => {
  const all = s => Array.from(document.querySelectorAll(s));
  const el = document.querySelector('#recommendation') || document.querySelector('#run-verdict');
  return {
    decision: el ? el.innerText : null,
    chosen: (document.querySelector('#chosen-label') || {}).textContent || null,
    rows: all('#comparison tbody tr').length,
    plots: all('figure.plot').map(f => { const s = f.querySelector('svg');
      return [f.id, s ? Math.round(s.getBoundingClientRect().width) : 0, s ? s.querySelectorAll('path, use, text').length : 0]; }),
    xss: typeof window.__xss,
    prompts: all('pre.prompt').map(p => p.textContent),
    injected: all('pre.prompt *').length,
    scripts: document.scripts.length,
    images: document.images.length,
    links: all('[src], [href]').map(e => e.getAttribute('src') || e.getAttribute('href')).filter(v => !v.startsWith('#')),
  };
})()"""

SORT = """(() => {
  const t = document.querySelector('#comparison');
  const th = t.querySelector('th[data-key=usd]');
  const i = Array.prototype.indexOf.call(th.parentNode.children, th);
  const col = () => Array.from(t.tBodies[0].rows).map(r => r.cells[i].getAttribute('data-v'));
  const before = col();
  th.click(); const asc = col(); const ascState = th.getAttribute('aria-sort');
  th.click(); const desc = col();
  return {before, asc, desc, ascState, descState: th.getAttribute('aria-sort')};
})()"""


def check_sorted(values: list[str], reverse: bool) -> None:
    nums = [float(v) for v in values if v not in ("", None)]
    assert nums == sorted(nums, reverse=reverse), values
    empties = [i for i, v in enumerate(values) if v in ("", None)]
    assert empties == list(range(len(nums), len(values))), values  # missing costs sort last


def check_page(browser, html: Path, shot: Path, expect_plots: set[str], rows: int,
               messages: frozenset[str] = frozenset()) -> dict:  # fmt: skip
    """`messages`: plots whose data the decision lacks, drawn as a figure that says why."""
    url = html.resolve().as_uri()
    events = browser.open(url)
    errors, requests = problems(events, url)
    assert errors == [], errors
    assert requests == [], requests
    assert any(e.get("method") == "Network.requestWillBeSent" for e in events)  # the recorder works: it saw the document
    browser.screenshot(shot)
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    f = browser.js(PAGE_FACTS)
    assert f["decision"] and f["rows"] == rows
    drawn = {pid: (w, n) for pid, w, n in f["plots"]}
    assert set(drawn) >= expect_plots, (set(drawn), expect_plots)
    for pid, (w, n) in drawn.items():
        assert w > 300 and (n >= 1 if pid in messages else n > 20), (pid, w, n)  # laid out and has marks
    assert f["xss"] == "undefined" and f["injected"] == 0 and f["scripts"] == 1 and f["images"] == 0 and f["links"] == []
    assert any(p.startswith(XSS) for p in f["prompts"]), f["prompts"]  # the probe is visible, as text
    s = browser.js(SORT)
    assert s["ascState"] == "ascending" and s["descState"] == "descending"
    check_sorted(s["asc"], reverse=False)
    check_sorted(s["desc"], reverse=True)
    # scripts off: the same table, complete, unsorted (the sorter never ran: no header got a tabindex)
    browser.call("Emulation.setScriptExecutionDisabled", value=True)
    try:
        browser.open(url, settle=False)
        root = browser.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        n = len(browser.call("DOM.querySelectorAll", nodeId=root, selector="#comparison tbody tr")["nodeIds"])
        tab = len(browser.call("DOM.querySelectorAll", nodeId=root, selector="th[tabindex]")["nodeIds"])
        svgs = len(browser.call("DOM.querySelectorAll", nodeId=root, selector="figure.plot svg")["nodeIds"])
        assert n == rows and tab == 0 and svgs == len(drawn)
    finally:
        browser.call("Emulation.setScriptExecutionDisabled", value=False)
    return f


def test_experiment_report_in_chromium(report_lab, browser, tmp_path):
    d = report_lab.decision
    timelines = {f"plot-timeline-{i}" for i, r in enumerate(d["runs"]) if not r.get("skipped")}
    ch = d["selection"]["chosen"]
    # on a busy machine the generator's self-check may mark points invalid (conftest): then nothing
    # is chosen and the tornado, or with no valid point the Pareto plot, says why instead of drawing
    messages = frozenset({"plot-tornado"} if ch is None or not d["sensitivity"]["rows"] else set()) | frozenset(
        {"plot-pareto"} if all(p.get("verdict") == "invalid" for p in d["points"]) else set())  # fmt: skip
    f = check_page(browser, report_lab.folder / "report.html", tmp_path / "experiment.png",
                   {"plot-pareto", "plot-latency-load", "plot-distributions", "plot-cost", "plot-tornado", *timelines},
                   len(d["points"]), messages)  # fmt: skip
    if ch is not None:
        first = "Cheapest on the estimate (no winner): " if d["selection"]["tie"] else "Deploy "
        assert f["chosen"] == ch["variant_label"] and f"{first}{ch['variant_label']}" in f["decision"]
        assert d["selection"]["headline"] in f["decision"]
    else:
        assert "No variant meets the SLO" in f["decision"]
    assert "Excluded" in f["decision"] and "How sure" in f["decision"]


def test_run_report_in_chromium(report_lab, browser, tmp_path):
    run = report_lab.runs[0]
    s = json.loads((run / "run.json").read_text())
    check_page(browser, run / "report.html", tmp_path / "run.png",
               {"plot-latency-load", "plot-distributions", "plot-timeline"}, len(s["load_points"]))  # fmt: skip
