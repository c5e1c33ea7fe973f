"""A real browser (headless Chromium driven by Playwright) against the page served by waitress on loopback:
upload by drag and drop, see the result and the heatmap, toggle it, find it in the history; no request leaves
the machine, no CSP violation, and the page fits an 800x480 touchscreen and a phone.

Needs Debian's ``chromium`` (/usr/bin/chromium or $CHROMIUM) and the ``playwright`` Python package (no browser
download: Playwright drives the system Chromium). Skipped when either is missing.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from test_web_fakes import FakeClassifier, png_bytes

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from waitress.server import create_server

    from edge_runtime.web import create_app

    app = create_app(FakeClassifier(), tmp_path_factory.mktemp("browser") / "data")
    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def watch(page, base):
    """Record requests to anything but the server, and console errors (CSP violations are reported there)."""
    seen = {"off_machine": [], "console": []}
    page.on("request", lambda r: None if r.url.startswith(base) or r.url.startswith("data:")
            else seen["off_machine"].append(r.url))
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    return seen


def test_drop_upload_result_heatmap_history(served, browser, tmp_path):
    page = browser.new_page(viewport={"width": 800, "height": 480})
    seen = watch(page, served)
    page.goto(served + "/")
    assert page.locator("#banner").is_visible()
    box = page.locator("#submit").bounding_box()
    assert box and box["y"] + box["height"] <= 480, "the Screen button is visible on a 800x480 screen"
    # drag and drop a file onto the drop zone
    data = list(png_bytes(215, size=(300, 260), seed=5))
    dt = page.evaluate_handle("""(bytes) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
        return dt; }""", data)
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dt})
    assert "dropped.png" in page.locator("#chosen").inner_text()
    page.fill("#reference", "BROWSER-1")
    page.click("#submit")
    page.wait_for_selector("#saved", timeout=30_000)
    assert page.locator(".decision .value").inner_text() == "Pneumonia"
    heat = page.locator("img.overlay")
    assert heat.is_visible()
    assert heat.evaluate("img => img.complete && img.naturalWidth") == 260
    page.click("label.toggle-label")
    assert not heat.is_visible() and page.locator("img.plain").is_visible()
    assert page.locator("img.plain").evaluate("img => img.naturalWidth") == 260
    page.screenshot(path=str(tmp_path / "result.png"))
    page.click("text=History")
    page.fill("input[name=reference]", "BROWSER")
    page.click("form.filters button[type=submit]")
    row = page.locator("table.list tbody tr", has_text="BROWSER-1")
    assert row.count() == 1
    row.locator("a").first.click()
    page.wait_for_selector("img.overlay")
    assert seen["off_machine"] == [], seen["off_machine"]
    assert seen["console"] == [], seen["console"]


def test_phone_layout_and_french(served, browser, tmp_path):
    page = browser.new_page(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    seen = watch(page, served)
    page.goto(served + "/?lang=fr")
    assert "Dépister" in page.locator("h1").inner_text()
    img = tmp_path / "x.png"
    img.write_bytes(png_bytes(30, size=(200, 200)))
    page.set_input_files("#files", str(img))
    page.click("#submit")
    page.wait_for_selector("#saved")
    assert page.locator(".decision .value").inner_text() == "Normal"
    for path in ("", "/history", "/monitoring", "/model"):
        if path:
            page.goto(served + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360 + 1, f"{path or 'result'}: page is {width}px wide on a 360px phone"
    assert seen["off_machine"] == [] and seen["console"] == []
