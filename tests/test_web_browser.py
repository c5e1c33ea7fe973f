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
    # the result arrives before its heatmap image has loaded: an image not yet decoded has no size, so is not visible
    page.wait_for_function("() => { const i = document.querySelector('img.overlay'); return i && i.complete"
                           " && i.naturalWidth > 0; }", timeout=30_000)
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


SMALL_TARGETS_JS = """() => {
    const sel = 'a[href], button, select, input:not([type=hidden]):not(.toggle), label.toggle-label, label.drop';
    return Array.from(document.querySelectorAll(sel))
        .filter(e => e.offsetParent !== null || e.getClientRects().length)
        .map(e => ({what: e.tagName + (e.className ? '.' + e.className : '') + ' ' + (e.innerText || e.name || '').slice(0, 30),
                    h: e.getBoundingClientRect().height}))
        .filter(t => t.h > 0 && t.h < 44);
}"""


def _screen(page, served, name, data, lang="en"):
    page.goto(f"{served}/?lang={lang}")
    page.set_input_files("#files", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
    page.click("#submit")
    page.wait_for_selector("#saved", timeout=30_000)
    return page.url.split("?")[0]


def test_french_reason_legend_and_opacity(served, browser):
    page = browser.new_page(viewport={"width": 800, "height": 480})
    seen = watch(page, served)
    _screen(page, served, "clair.png", png_bytes(215, size=(200, 200), seed=3), lang="fr")
    reason = page.locator(".main-reason").inner_text()
    assert reason.startswith("Classe la plus probable (0,") and "probable class" not in reason
    legend = page.locator("figure.legend")
    assert legend.is_visible() and "Échelle des couleurs" in legend.inner_text()
    box = legend.bounding_box()
    assert box and box["y"] + box["height"] <= 480, "the legend is on screen beside the film at 800x480"
    overlay = page.locator("img.overlay")
    assert overlay.evaluate("e => getComputedStyle(e).opacity") == "0.45"
    page.locator("input.opacity").fill("80")
    assert overlay.evaluate("e => getComputedStyle(e).opacity") == "0.8"
    url = _screen(page, served, "unlike-7.png", png_bytes(100, size=(200, 200), seed=4), lang="fr")
    assert "ne ressemble pas aux films sur lesquels ce modèle a été entraîné" in page.locator(".main-reason").inner_text()
    assert "Adressez le patient à un clinicien" in page.locator(".advice").inner_text()
    page.goto(served + "/history?lang=fr")
    assert "Classe la plus probable" in page.locator("table.list").inner_text()
    assert url and seen["off_machine"] == [] and seen["console"] == []


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_every_touch_target_is_44px_at_800x480(served, browser, lang):
    page = browser.new_page(viewport={"width": 800, "height": 480}, has_touch=True)
    result = _screen(page, served, "t.png", png_bytes(215, size=(120, 120), seed=9), lang=lang)
    for url in (f"{served}/", result, f"{served}/history", f"{served}/model"):
        page.goto(f"{url}?lang={lang}")
        small = page.evaluate(SMALL_TARGETS_JS)
        assert small == [], f"{url}: targets under 44 px: {small}"
    page.goto(f"{served}/?lang={lang}")  # two films at once: the batch page, one result per film
    page.set_input_files("#files", files=[{"name": f"b{i}.png", "mimeType": "image/png",
                                           "buffer": png_bytes(60 + 100 * i, size=(120, 120), seed=i)} for i in (1, 2)])
    page.click("#submit")
    page.wait_for_selector("h2 > a")
    assert page.locator("figure.legend").count() >= 1
    assert page.evaluate(SMALL_TARGETS_JS) == [], "batch page"
    banner = page.locator("#banner").bounding_box()
    assert banner and banner["height"] <= 60, f"the banners take {banner['height']} px at 800x480"


METRICS_FIT_JS = """() => {
    const t = document.querySelector('#metrics'), box = t.parentElement;
    const cells = Array.from(t.querySelectorAll('tbody td, tbody th')).map(e => {
        const r = e.getBoundingClientRect();
        return {text: e.innerText.trim(), left: r.left, right: r.right, shown: r.width > 0 && r.height > 0}; });
    return {overflow: box.scrollWidth - box.clientWidth, cells: cells};
}"""


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("w, h", [(800, 480), (360, 740)])
def test_model_metrics_fit_the_touchscreen_without_a_sideways_swipe(served, browser, lang, w, h):
    """Review: the metrics table (7 columns + one per class) needed a horizontal swipe at 800 px (French) and on a
    phone. Below 900 px each row is stacked as labelled figures: nothing scrolls sideways and every figure is
    on screen, under its column's name."""
    page = browser.new_page(viewport={"width": w, "height": h})
    page.goto(f"{served}/model?lang={lang}")
    fit = page.evaluate(METRICS_FIT_JS)
    assert fit["overflow"] <= 0, f"the metrics table scrolls {fit['overflow']} px sideways at {w}x{h} ({lang})"
    off = [c for c in fit["cells"] if not c["shown"] or c["left"] < 0 or c["right"] > w]
    assert off == [], f"figures off screen at {w}x{h}: {off}"
    texts = [c["text"] for c in fit["cells"]]
    pct = "80,0\u202f%" if lang == "fr" else "80.0%"  # siteA's accuracy and sensitivities, its specificity 90
    assert sum(pct in t for t in texts) == 4 and len(texts) == 3 * (7 + 3)  # 3 rows: pooled, siteA, siteB
    label = page.locator("#metrics td.pair").first.evaluate("e => getComputedStyle(e, '::before').content")
    assert label.startswith('"Normal') and ("sens. / spéc." if lang == "fr" else "sens. / spec.") in label, label


WIDE_FIT_JS = """(sel) => Array.from(document.querySelectorAll(sel)).map(t => {
    const box = t.closest('.scroll') || t.parentElement;
    const cells = Array.from(t.querySelectorAll('tbody td, tbody th')).map(e => {
        const r = e.getBoundingClientRect();
        return {text: e.innerText.trim(), left: r.left, right: r.right, shown: r.width > 0 && r.height > 0,
                label: e.tagName === 'TD' ? getComputedStyle(e, '::before').content : null}; });
    return {overflow: box.scrollWidth - box.clientWidth, cells: cells}; })"""


@pytest.fixture(scope="module")
def served_wide(tmp_path_factory):
    """The page with a site profile on offer (its 7-column figures) and a real model card (convert/card.py: an
    11-column formats table and the per-source metrics table)."""
    from convert.card import model_card
    from test_web_site_numbers import offering_app
    from waitress.server import create_server

    app = offering_app(tmp_path_factory.mktemp("wide") / "data")
    clf = app.extensions["cxr"].classifier
    row = {"file": "model_int8.tflite", "bytes": 2_700_000, "agreement": 0.983, "max_prob_diff": 0.0712,
           "passed": True, "test": {"pooled": {"accuracy": 0.85}}}
    formats = ("tflite_int8", "tflite_int8_ptq", "tflite_fp32", "onnx_fp32", "openvino_fp32", "openvino_int8")
    clf.model_card = model_card(clf.metadata, {"validated": True, "formats": {k: dict(row) for k in formats}})
    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("w, h", [(800, 480), (360, 740)])
def test_site_profile_and_model_card_tables_fit_without_a_sideways_swipe(served_wide, browser, lang, w, h):
    """Review: the site profile's 7-column figures scrolled 25 px sideways at 800 px in French, a real model
    card's formats table (11 columns) 180 px in both languages. Below 900 px they are stacked as the Model page's
    metrics are: nothing scrolls sideways, every figure is on screen under its column's name."""
    page = browser.new_page(viewport={"width": w, "height": h})
    for path, sel, n_tables, n_cells in (("/monitoring", "#profile-figures", 1, 3 * 7 + 3),
                                         ("/model", ".modelcard table", 2, 6 * 11 + 3 * 8)):
        page.goto(f"{served_wide}{path}?lang={lang}")
        tables = page.evaluate(WIDE_FIT_JS, sel)
        assert len(tables) == n_tables and sum(len(t["cells"]) for t in tables) == n_cells, (path, tables)
        for t in tables:
            assert t["overflow"] <= 0, f"{path} {sel} scrolls {t['overflow']} px sideways at {w}x{h} ({lang})"
            off = [c for c in t["cells"] if not c["shown"] or c["left"] < 0 or c["right"] > w]
            assert off == [], f"{path}: figures off screen at {w}x{h}: {off}"
            unnamed = [c for c in t["cells"] if c["label"] is not None and c["label"] in ("none", '""')]
            assert unnamed == [], f"{path}: figures without their column's name: {unnamed}"
    page.goto(f"{served_wide}/monitoring?lang={lang}")
    label = page.locator("#profile-figures tbody td").nth(3).evaluate("e => getComputedStyle(e, '::before').content")
    assert label == ('"Avec le profil\u202f: cette décision"' if lang == "fr" else '"With the profile: given this decision"'), label


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("w, h", [(800, 480), (360, 740)])
def test_monitoring_shares_and_model_figures_fit_without_a_sideways_swipe(served_wide, browser, lang, w, h):
    """Review: on a 360 px phone the monitoring page's model figures (5 columns) scrolled 160 px sideways and its
    shares (a rate with its interval per column) 5 px in French. Below 900 px they are stacked as the site
    profile's figures are: nothing scrolls sideways, every figure is on screen under its column's name."""
    page = browser.new_page(viewport={"width": w, "height": h})
    page.goto(f"{served_wide}/monitoring?lang={lang}")
    tables = page.evaluate(WIDE_FIT_JS, "#shares, #model-figures")
    rows = page.evaluate("(sel) => Array.from(document.querySelectorAll(sel)).map(t => t.tBodies[0].rows.length)",
                         "#shares, #model-figures")
    assert len(tables) == 2 and rows[0] >= 4 and rows[1] == 3, rows  # 7 days, 30 days, all, a week; 3 classes
    for t, n_rows, n_cols in zip(tables, rows, (4, 5)):
        assert len(t["cells"]) == n_rows * n_cols, t
        assert t["overflow"] <= 0, f"a monitoring table scrolls {t['overflow']} px sideways at {w}x{h} ({lang})"
        off = [c for c in t["cells"] if not c["shown"] or c["left"] < 0 or c["right"] > w]
        assert off == [], f"figures off screen at {w}x{h}: {off}"
        unnamed = [c for c in t["cells"] if c["label"] is not None and c["label"] in ("none", '""')]
        assert unnamed == [], f"figures without their column's name: {unnamed}"
    label = page.locator("#model-figures tbody td").nth(1).evaluate("e => getComputedStyle(e, '::before').content")
    assert label == ('"Sensibilité"' if lang == "fr" else '"Sensitivity"'), label


def test_screenshots_for_the_docs_are_made_and_small(served, browser, tmp_path):
    import screens

    made = screens.make_screens(tmp_path, browser, served)
    assert len(made) == len(screens.PAGES) * len(screens.LANGS) * len(screens.VIEWPORTS)
    for p in made:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < 300_000, (p.name, len(data))


def test_a_choice_over_the_upload_limits_is_stopped_and_said_before_sending(browser, tmp_path):
    """The page's script checks the files chosen against the server's limits: a choice over one is not sent
    (waitress would cut it with a bare text 413) and the reason is said in French; a fitting choice is sent.
    Small limits (1 MB a request, 0.5 MB a file) stand in for the defaults (200 MB, 40 MB)."""
    from edge_runtime.web import create_app
    from edge_runtime.web.cli import listen

    app = create_app(FakeClassifier(), tmp_path / "data", {"MAX_REQUEST_MB": 1, "MAX_FILE_MB": 0.5, "MAX_FILES": 3})
    server = listen(app, "127.0.0.1", 0, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{server.effective_port}"
    try:
        page = browser.new_page(viewport={"width": 800, "height": 480})
        seen = watch(page, base)
        posts = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.goto(base + "/?lang=fr")
        assert "1 Mo en tout" in page.locator("p#upload-formats").inner_text()

        def choose(sizes):
            page.set_input_files("#files", files=[{"name": f"f{i}.png", "mimeType": "image/png", "buffer": b"\0" * n}
                                                  for i, n in enumerate(sizes)])

        for sizes, said in (([400_000] * 3, "Les fichiers choisis font 1,2 Mo\u202f; la limite est de 1 Mo"),
                            ([600_000], "f0.png fait 0,6 Mo\u202f; la limite est de 0,5 Mo par fichier"),
                            ([1000] * 4, "4 fichiers sont choisis\u202f; la limite est de 3")):
            choose(sizes)
            error = page.locator("#choice-error")
            assert error.is_visible() and error.inner_text().startswith(said), error.inner_text()
            page.click("#submit")
            assert posts == [] and page.url.startswith(base + "/?lang=fr")  # nothing sent, the page stays
            assert page.locator("#submit").is_enabled()
        page.set_input_files("#files", files=[{"name": "ok.png", "mimeType": "image/png",
                                               "buffer": png_bytes(30, size=(200, 200))}])
        assert not page.locator("#choice-error").is_visible()
        page.click("#submit")
        page.wait_for_selector("#saved", timeout=30_000)
        assert len(posts) == 1 and seen["off_machine"] == [] and seen["console"] == []
    finally:
        server.close()
