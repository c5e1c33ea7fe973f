"""Screenshots of the page for the docs: a result (with the heatmap's legend), an out-of-scope film, the history
and the model page, in English and French, at 1280x800 and on the 800x480 touchscreen.

    python tests/screens.py docs/screens      # needs Debian's chromium and the playwright package

The model is the web tests' fake classifier (synthetic: the page's banner says so) and the films are drawn
phantoms, so the pictures show the page, not a diagnosis. ``tests/test_web_browser.py`` runs the same code
into a temporary folder and checks every picture is made and small.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web_fakes import FakeClassifier  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORTS = {"1280x800": (1280, 800), "800x480": (800, 480)}
LANGS = ("en", "fr")
PAGES = ("result", "out_of_scope", "history", "model")


def phantom(brightness: float = 0.62, size: int = 384, seed: int = 0) -> bytes:
    """A drawn frontal chest film (PNG): body, two lungs, spine, ribs; smooth so the screenshots stay small."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((size, size), 20, np.float32)
    c = size // 2
    cv2.ellipse(img, (c, int(size * 0.55)), (int(size * 0.44), int(size * 0.47)), 0, 0, 360, 200 * brightness, -1)
    for dx in (-1, 1):
        cv2.ellipse(img, (c + dx * int(size * 0.19), int(size * 0.5)), (int(size * 0.14), int(size * 0.3)), 0, 0, 360,
                    70 * brightness + 40, -1)
        for k in range(6):
            y = int(size * (0.3 + 0.08 * k))
            cv2.ellipse(img, (c + dx * int(size * 0.19), y), (int(size * 0.16), int(size * 0.03)), 0, 180, 360,
                        150 * brightness + 30, 2)
    cv2.rectangle(img, (c - size // 28, int(size * 0.12)), (c + size // 28, size), 235 * brightness + 20, -1)
    img = cv2.GaussianBlur(img, (0, 0), size / 110) + rng.normal(0, 0.8, img.shape)
    ok, buf = cv2.imencode(".png", np.clip(img, 0, 255).astype(np.uint8))
    assert ok
    return buf.tobytes()


def serve(data_dir: Path):
    """The page on the fake classifier, served by waitress on loopback: (base URL, server)."""
    from waitress.server import create_server

    from edge_runtime.web import create_app

    app = create_app(FakeClassifier(), data_dir)
    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    return f"http://127.0.0.1:{server.effective_port}", server


def upload(page, base: str, name: str, data: bytes, reference: str) -> str:
    """Screen one film through the form; returns the result page's URL."""
    page.goto(base + "/")
    page.set_input_files("#files", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
    page.fill("#reference", reference)
    page.click("#submit")
    page.wait_for_selector("#saved", timeout=30_000)
    return page.url.split("?")[0]


def shrink(path: Path, colours: int = 256) -> None:
    """Re-save a screenshot with an adaptive palette (keeps each picture well under 300 KB)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def make_screens(out: Path, browser, base: str) -> list[Path]:
    """Screen a few films, then photograph each page in each language and size. Returns the PNG paths."""
    out.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    upload(page, base, "clinic-0412.png", phantom(0.35, seed=1), "CLINIC-0412")
    upload(page, base, "clinic-0413.png", phantom(0.5, seed=2), "CLINIC-0413")
    oos = upload(page, base, "unlike-0414.png", phantom(0.45, seed=3), "CLINIC-0414")
    result = upload(page, base, "clinic-0415.png", phantom(1.3, seed=4), "CLINIC-0415")
    page.close()
    urls = {"result": result, "out_of_scope": oos, "history": base + "/history", "model": base + "/model"}
    made = []
    for size, (w, h) in VIEWPORTS.items():
        page = browser.new_page(viewport={"width": w, "height": h})
        for lang in LANGS:
            for name in PAGES:
                page.goto(f"{urls[name]}?lang={lang}")
                page.wait_for_load_state("load")
                path = out / f"{name}-{lang}-{size}.png"
                page.screenshot(path=str(path))
                shrink(path)
                made.append(path)
        page.close()
    return made


def main(argv=None) -> int:
    import tempfile

    from playwright.sync_api import sync_playwright

    out = Path((argv or sys.argv[1:] or ["docs/screens"])[0])
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        base, server = serve(Path(tmp) / "data")
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            for p in make_screens(out, browser, base):
                print(f"{p} {p.stat().st_size // 1024} KB")
        finally:
            browser.close()
            server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
