"""Real-browser tests: headless Chromium (Playwright) drives the prediction browser.

1. Voila serves tests/browser/browser_demo.ipynb (a PredictionBrowser on fabricated predictions)
   on 127.0.0.1; Chromium reads the question, clicks "Next", checks the question changed, and
   saves a screenshot.
2. The static page from `export_html` opened from a file: same checks, no server.

Needs Debian's chromium, and pip's playwright and voila (tests/browser/install.sh). Without them
the tests are skipped, or fail when TABLEQA_REQUIRE_BROWSER=1 (CI). Screenshots go to
$TABLEQA_RUN_DIR (else pytest's tmp_path); with TABLEQA_UPDATE_IMAGES=1, browser.png is also
copied to images/browser.png.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROWSER_DIR = REPO / "tests" / "browser"
NOTEBOOK = BROWSER_DIR / "browser_demo.ipynb"
REQUIRE = os.environ.get("TABLEQA_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
SERVER_START_S = 60  # Voila listening
PAGE_READY_S = 120  # notebook executed and widgets rendered (first kernel start is the slow part)
STEP_S = 30  # one click's effect

Q = ".tableqa-browser .tableqa-question-text"
PIP_HINT = "install the test extras, or run `bash tests/browser/install.sh --with-pip`"


def _missing(reason: str, hint: str):
    """Skip, or fail under TABLEQA_REQUIRE_BROWSER=1."""
    if REQUIRE:
        pytest.fail(f"{reason} and TABLEQA_REQUIRE_BROWSER=1; {hint}", pytrace=False)
    pytest.skip(f"{reason}; {hint} (TABLEQA_REQUIRE_BROWSER=1 turns this skip into a failure)")


def _chromium_path() -> str | None:
    for candidate in (os.environ.get("TABLEQA_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _demo_module():
    spec = importlib.util.spec_from_file_location("tableqa_browser_demo_data", BROWSER_DIR / "demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = Path(os.environ["TABLEQA_RUN_DIR"]) if os.environ.get("TABLEQA_RUN_DIR") else \
        tmp_path_factory.mktemp("browser_run")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def chromium():
    """A headless Debian Chromium driven by Playwright (no browser download)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None:
        _missing("the Python package playwright is not installed", PIP_HINT)
    path = _chromium_path()
    if path is None:
        _missing("Chromium is not installed (/usr/bin/chromium, Debian package chromium)",
                 "run `bash tests/browser/install.sh`")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory, chromium):
    """Voila serving the demo notebook on 127.0.0.1:<free port>; stopped after the module."""
    if importlib.util.find_spec("voila") is None:
        _missing("the Python package voila is not installed", PIP_HINT)
    work = tmp_path_factory.mktemp("voila")
    log_path = work / "voila.log"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        TABLEQA_BROWSER_DEMO_DIR=str(work / "demo"),  # where the notebook writes its JSONL files
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),  # kernel connection files stay in the test's folder
        IPYTHONDIR=str(work / "ipython"),
        MPLBACKEND="Agg",
    )
    port = _free_port()
    cmd = [sys.executable, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}",
           "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", "--show_tracebacks=True"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=BROWSER_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voila exited with {proc.returncode}:\n{_tail(log_path)}", pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"voila did not listen within {SERVER_START_S}s:\n{_tail(log_path)}", pytrace=False)
            time.sleep(0.25)
        yield {"url": f"http://127.0.0.1:{port}/", "log": log_path}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # our own process group: voila (kernels shut down with it)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _new_page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 960})
    page.set_default_timeout(STEP_S * 1000)
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def _wait_question_change(page, selector: str, previous: str) -> str:
    page.wait_for_function(
        "([sel, prev]) => { const e = document.querySelector(sel); return e && e.innerText.trim() !== prev; }",
        arg=[selector, previous], timeout=STEP_S * 1000)
    return page.locator(selector).inner_text().strip()


def _wait_images(page, selector: str) -> None:
    page.wait_for_function(
        "(sel) => { const i = [...document.querySelectorAll(sel)].find(e => e.offsetParent !== null);"
        " return i && i.complete && i.naturalWidth > 0; }", arg=selector, timeout=STEP_S * 1000)


def test_voila_browser_next_changes_question(voila_url, chromium, run_dir):
    demo = _demo_module()
    questions = [s["question"] for s in demo.SAMPLES]
    page = _new_page(chromium)
    started = time.monotonic()
    try:
        page.goto(voila_url["url"], wait_until="domcontentloaded", timeout=PAGE_READY_S * 1000)
        question = page.locator(Q)
        question.wait_for(state="visible", timeout=PAGE_READY_S * 1000)
        loaded_s = time.monotonic() - started
        first = question.inner_text().strip()
        assert first == questions[0]
        counter = page.locator(".tableqa-browser .tableqa-counter")
        assert "1 of 6" in counter.inner_text()

        page.locator(".tableqa-browser .tableqa-next").click()
        second = _wait_question_change(page, Q, first)
        assert second != first
        assert second == questions[1]
        assert "2 of 6" in counter.inner_text()
        # every stage column with its verdict, the diff highlight, and the table image
        stages = page.locator(".tableqa-browser .tableqa-stage")
        assert stages.count() == 3
        assert "✓" in stages.nth(1).inner_text() and "✗" in stages.nth(0).inner_text()
        assert page.locator(".tableqa-browser .tableqa-stage mark").count() > 0
        _wait_images(page, ".tableqa-browser img")
        shot = run_dir / "browser.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # the question with <script> and <|im_end|> is shown as text, not run as markup
        for _ in range(2):
            previous = page.locator(Q).inner_text().strip()
            page.locator(".tableqa-browser .tableqa-next").click()
            _wait_question_change(page, Q, previous)
        assert page.locator(Q).inner_text().strip() == questions[3]
        assert page.dialogs == []

        # "Prev" goes back
        page.locator(".tableqa-browser .tableqa-prev").click()
        assert _wait_question_change(page, Q, questions[3]) == questions[2]
        # a filter round-trips through the kernel: "incorrect" by stage b (the default) keeps sample 2
        page.locator(".tableqa-browser select").first.select_option(label="incorrect")
        page.wait_for_function(
            "(sel) => document.querySelector(sel).innerText.includes('filtered from 6')",
            arg=".tableqa-browser .tableqa-counter", timeout=STEP_S * 1000)
        assert "1 of 1 (filtered from 6)" in counter.inner_text()
        assert page.locator(Q).inner_text().strip() == questions[2]
        total_s = time.monotonic() - started
        print(f"\nvoila page ready in {loaded_s:.1f}s, whole browser test {total_s:.1f}s; screenshot {shot}")
        if os.environ.get("TABLEQA_UPDATE_IMAGES") == "1":
            (REPO / "images").mkdir(exist_ok=True)
            shutil.copyfile(shot, REPO / "images" / "browser.png")
    except BaseException:
        try:
            page.screenshot(path=str(run_dir / "browser_failure.png"), full_page=True)
        except Exception:
            pass
        print(f"voila log:\n{_tail(voila_url['log'])}\npage errors: {page.errors}")
        raise
    finally:
        page.close()


def test_exported_html_in_browser(chromium, run_dir, tmp_path):
    from tableqa_helpers.browse import export_html, load_records

    demo = _demo_module()
    questions = [s["question"] for s in demo.SAMPLES]
    pred_paths, dataset = demo.make_demo(tmp_path / "demo")
    out = export_html(load_records(pred_paths, dataset=dataset), run_dir / "browser_export.html")
    page = _new_page(chromium)
    try:
        page.goto(out.resolve().as_uri(), wait_until="load", timeout=STEP_S * 1000)
        visible = ".tqa-sample:not([hidden]) .tableqa-question-text"
        assert page.locator(visible).count() == 1
        first = page.locator(visible).inner_text().strip()
        assert first == questions[0]
        assert page.locator("#tqa-counter").inner_text().strip() == "1 of 6"
        page.locator("#tqa-next").click()
        assert _wait_question_change(page, visible, first) == questions[1]

        page.select_option("#tqa-filter", "incorrect")  # by stage b (the last) by default
        counter = page.locator("#tqa-counter").inner_text()
        assert "of 1 (filtered from 6)" in counter  # only sample 2 is wrong for stage b
        assert page.locator(visible).inner_text().strip() == questions[2]
        page.select_option("#tqa-filter", "all")
        page.keyboard.press("ArrowRight")
        assert page.locator(visible).inner_text().strip() == questions[3]  # escaped, shown as text
        assert page.dialogs == [] and page.errors == []
        _wait_images(page, ".tqa-sample:not([hidden]) img")
        page.screenshot(path=str(run_dir / "browser_export.png"), full_page=True)
    finally:
        page.close()
