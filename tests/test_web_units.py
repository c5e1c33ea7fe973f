"""Unit tests of the web package's parts: upload checks, store, monitoring figures, Markdown, catalogue."""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from test_web_fakes import ROOT, dicom_bytes, jpeg_bytes, png_bytes

WEB = ROOT / "edge_runtime" / "web"


# ---- upload checks ---------------------------------------------------------------------------------------
def test_sniff_and_dimensions_from_headers():
    from edge_runtime.web.imaging import check_upload

    big = 10**9
    assert check_upload(png_bytes(size=(40, 50)), "a", big, big) == ("png", 50, 40)
    assert check_upload(jpeg_bytes(size=(64, 80)), "a", big, big) == ("jpeg", 80, 64)
    assert check_upload(dicom_bytes(30, 20), "a", big, big) == ("dicom", 20, 30)


def test_decompression_bomb_refused_before_decoding():
    from edge_runtime.web.imaging import UploadError, check_upload

    # a PNG header claiming 100000 x 100000 pixels, and nothing else: refused from the header alone
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 100_000, 100_000) + b"\x08\0\0\0\0"
    with pytest.raises(UploadError) as e:
        check_upload(bomb, "bomb.png", 10**9, 50_000_000)
    assert e.value.status == 413 and e.value.code == "too_many_pixels" and "bomb.png" in e.value.message


@pytest.mark.parametrize("data, code", [
    (b"", "empty_file"), (b"BM" + b"\0" * 100, "unsupported_type"), (b"\x89PNG\r\n\x1a\n\0\0", "bad_image"),
    (b"\xff\xd8\xff\xd9", "bad_image"), (b"\0" * 128 + b"DICM" + b"\0" * 10, "bad_image"),
])
def test_bad_headers(data, code):
    from edge_runtime.web.imaging import UploadError, check_upload

    with pytest.raises(UploadError) as e:
        check_upload(data, "f", 10**9, 10**9)
    assert e.value.code == code


def test_display_image_only_shrinks():
    from edge_runtime.web.imaging import DISPLAY_MAX_SIDE, display_image

    assert display_image(np.zeros((100, 80), np.uint8)).shape == (100, 80)
    assert max(display_image(np.zeros((3000, 1500), np.uint8)).shape) == DISPLAY_MAX_SIDE


def test_reference_and_name_cleaning():
    from edge_runtime.web.imaging import UploadError
    from edge_runtime.web.screening import clean_reference, safe_name

    assert clean_reference("  P-1\x00\n ") == "P-1"
    with pytest.raises(UploadError):
        clean_reference("x" * 65)
    assert safe_name("../../etc/passwd") == "passwd" and safe_name("C:\\x\\y.png") == "y.png" and safe_name("") == "upload"


# ---- store -----------------------------------------------------------------------------------------------
def record(**kw):
    r = {"reference": "r", "original_name": "a.png", "image_kind": "png", "width": 2, "height": 2, "sha256": "0",
         "labels": ["normal", "tb"], "probs": {"normal": 0.9, "tb": 0.1}, "label": "normal", "decision": "normal",
         "reason": "", "in_scope": True, "has_heatmap": False, "model_name": "m", "model_version": "1",
         "backend": "x", "synthetic": False, "timings": {"total": 1.0}, "total_ms": 1.0}
    r.update(kw)
    return r


def test_store_wal_full_and_roundtrip(tmp_path):
    from edge_runtime.web.store import Store

    s = Store(tmp_path)
    with s.connect() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    rec = s.add(record(reference="100%_sure"), {"original": b"o", "display": b"d"})
    assert rec["probs"] == {"normal": 0.9, "tb": 0.1} and rec["in_scope"] is True and rec["outcome"] is None
    assert s.path(rec["id"], "original", "png").read_bytes() == b"o"
    assert s.search(reference="1%0")[1] == 0 and s.search(reference="100%_")[1] == 1 and s.search(reference="_s")[1] == 1
    assert s.set_outcome(rec["id"], "tb", "GX") and s.get(rec["id"])["outcome_note"] == "GX"
    assert s.audit() == []  # a first outcome is its own record
    assert s.set_outcome(rec["id"], "tb", "GX") and s.audit() == []  # saved again unchanged: nothing to trace
    assert not s.set_outcome("nope", "tb")
    # changing or clearing a recorded outcome leaves an audit line with what it was (it feeds the site profile)
    assert s.set_outcome(rec["id"], "normal") and s.get(rec["id"])["outcome"] == "normal"
    assert s.set_outcome(rec["id"], None) and s.get(rec["id"])["outcome"] is None
    assert s.set_outcome(rec["id"], None) and len(s.audit()) == 2  # clearing nothing: no line
    cleared, changed = s.audit()
    assert changed["action"] == "outcome_changed" and cleared["action"] == "outcome_cleared"
    assert changed["detail"] == f"screening {rec['id']} (100%_sure): tb [GX] -> normal"
    assert cleared["detail"] == f"screening {rec['id']} (100%_sure): normal -> -"
    assert changed["args"] == {"sid": rec["id"], "reference": "100%_sure", "before": "tb", "before_note": "GX",
                               "after": "normal", "after_note": ""}


def test_an_older_audit_trail_gains_its_fields_column_and_keeps_its_lines(tmp_path):
    """A history file from before the audit's fields: the column is added in place, old lines keep their English
    text (the page shows it as stored), new lines carry fields the page words in the reader's language."""
    import sqlite3

    from edge_runtime.web import i18n
    from edge_runtime.web.store import Store

    db = sqlite3.connect(tmp_path / "screenings.db")
    db.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, action TEXT NOT NULL,"
               " detail TEXT NOT NULL DEFAULT '')")
    db.execute("INSERT INTO audit (created, action, detail) VALUES ('2026-11-30 10:00', 'site_profile_removed', 'old')")
    db.commit()
    db.close()
    s = Store(tmp_path)
    s.add_audit("site_profile_removed", "new", {"profile": {"made_by": "Dr A", "date": "2026-12-01",
                                                            "films": {"tuberculosis": 30}, "thresholds": {"refer_below": 0.5}}})
    new, old = s.audit()
    assert old["args"] == {} and i18n.audit_text("fr", old) == "old"
    assert i18n.audit_text("fr", new) == ("profil de site de Dr A (2026-12-01\u202f; 30 Tuberculose)\u202f: adresser sous 0,500\u202f; "
                                          "de nouveau les seuils propres au modèle")
    with pytest.raises(ValueError):
        s.path("../x", "display")


def test_store_failed_insert_leaves_no_files(tmp_path):
    from edge_runtime.web.store import Store

    s = Store(tmp_path)
    with pytest.raises(Exception):
        s.add(record(decision=None), {"original": b"o", "display": b"d"})  # NOT NULL violation
    assert list(s.images.iterdir()) == [] and s.search()[1] == 0


def test_sweep_orphans(tmp_path):
    from edge_runtime.web.store import Store

    s = Store(tmp_path)
    rec = s.add(record(), {"original": b"o", "display": b"d"})
    (s.images / "0123.png").write_bytes(b"x")
    (s.images / f"{rec['id']}.png.tmp").write_bytes(b"x")
    assert s.sweep_orphans() == 2
    assert sorted(p.name for p in s.images.iterdir()) == sorted([f"{rec['id']}.png", f"{rec['id']}.original.png"])


# ---- monitoring ------------------------------------------------------------------------------------------
def test_monitoring_figures_and_wilson():
    from edge_runtime.web.monitoring import summarize, wilson

    lo, hi = wilson(8, 10)
    assert 0.49 < lo < 0.5 and 0.94 < hi < 0.95 and wilson(0, 0) is None
    labels = ["normal", "pneumonia", "tuberculosis"]

    def row(decision, outcome, day="2024-05-06", probs=None):
        p = probs or {"normal": 0.2, "pneumonia": 0.2, "tuberculosis": 0.6}
        return {"created": day + "T10:00:00+00:00", "labels": labels, "probs": p, "decision": decision,
                "in_scope": decision != "out_of_scope", "outcome": outcome, "model_version": "1"}

    rows = [row("tuberculosis", "tuberculosis"), row("refer", "tuberculosis"), row("normal", "tuberculosis"),
            row("normal", "normal", probs={"normal": 0.8, "pneumonia": 0.1, "tuberculosis": 0.1}),
            row("tuberculosis", "normal"), row("out_of_scope", "normal"), row("normal", None, day="2024-04-01")]
    s = summarize(rows, labels, today=date(2024, 5, 7))
    tb = s["screening"]["tuberculosis"]
    assert tb["sensitivity"]["k"] == 2 and tb["sensitivity"]["n"] == 3
    assert tb["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert tb["specificity"]["value"] == pytest.approx(1 / 2)  # out of scope is left out
    assert s["confirmed"] == 5 and s["periods"]["7"]["n"] == 6 and s["periods"]["all"]["n"] == 7
    assert s["periods"]["7"]["out_of_scope"]["k"] == 1 and s["periods"]["7"]["refer"]["k"] == 1
    assert [w["week"] for w in s["weekly"]] == ["2024-W19", "2024-W14"]
    assert s["model"]["n"] == 5 and 0 <= s["model"]["accuracy"] <= 1
    assert summarize([], labels)["model"] is None


# ---- markdown --------------------------------------------------------------------------------------------
def test_markdown_is_escaped_and_structured():
    from edge_runtime.web.markdown import render

    html = str(render("# Title\n\nSome **bold** <b>x</b> and `code`.\n\n- a\n- b\n\n| h1 | h2 |\n|---|---|\n"
                      "| 1 | <i>2</i> |\n\n```\n<raw>\n```\n[link](http://example.org)"))
    assert "<h2>Title</h2>" in html and "<strong>bold</strong>" in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<ul><li>a</li><li>b</li></ul>" in html and "<th>h1</th>" in html and "&lt;i&gt;2&lt;/i&gt;" in html
    assert "<pre>&lt;raw&gt;</pre>" in html and "<a " not in html and "<code>code</code>" in html
    # a table's rows are named by their first cell, each figure by its column (stacked below 900 px: app.css)
    assert '<table class="stack">' in html and '<th scope="row">1</th><td data-label="h2">&lt;i&gt;2' in html
    quoted = str(render('| a | **b** "x" |\n|---|---|\n| 1 | 2 |'))
    assert '<td data-label="b &quot;x&quot;">2</td>' in quoted


# ---- catalogue -------------------------------------------------------------------------------------------
def used_keys() -> set[str]:
    keys = set()
    for p in list((WEB / "templates").glob("*.html")) + list(WEB.glob("*.py")):
        text = p.read_text()
        keys |= set(re.findall(r"""_\(['"]([a-z_]+\.[a-z_0-9.]+)['"]""", text))
        keys |= set(re.findall(r"""(?:_t|translate)\([^()]*?['"]([a-z]+\.[a-z_0-9]+)['"]""", text))
        keys |= set(re.findall(r"""\(["'](banner\.[a-z_]+)["']""", text))
    return keys


def test_every_key_in_both_catalogues():
    en = json.loads((WEB / "messages" / "en.json").read_text())
    fr = json.loads((WEB / "messages" / "fr.json").read_text())
    assert set(en) == set(fr)
    missing = sorted(k for k in used_keys() if k not in en)
    assert missing == [], missing
    assert len(used_keys()) > 100
    for k in en:  # the same {fields} in both languages, a number's format included ({share:.0%})
        fields = re.compile(r"{(\w+(?::[^{}]*)?)}")
        assert set(fields.findall(en[k])) == set(fields.findall(fr[k])), k


def test_label_text_falls_back():
    from edge_runtime.web.i18n import label_text, translate

    assert label_text("fr", "tuberculosis") == "Tuberculose" and label_text("fr", "covid_19") == "covid 19"
    assert translate("fr", "no.such.key") == "no.such.key"


# ---- import hygiene --------------------------------------------------------------------------------------
def test_cli_import_is_light_and_edge_runtime_does_not_import_flask():
    code = ("import sys\n"
            "for m in ('tensorflow', 'keras', 'tf_keras'):\n"
            "    sys.modules[m] = None\n"
            "import edge_runtime, edge_runtime.web.cli, edge_runtime.web.cli_password\n"
            "assert 'flask' not in sys.modules and 'waitress' not in sys.modules, 'flask imported too early'\n"
            "from edge_runtime.web import create_app\n"
            "import edge_runtime.web.app, edge_runtime.web.loadtest\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_files_stay_small():
    for p in list(WEB.rglob("*.py")) + list(WEB.rglob("*.html")) + list(Path(__file__).parent.glob("test_web*.py")):
        assert len(p.read_text().splitlines()) <= 500, p.name
