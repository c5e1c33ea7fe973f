"""The monitoring page (running figures against confirmed outcomes) and the model page (card, metrics, limits)."""
from __future__ import annotations

import math

from flask import Blueprint, current_app, g, render_template

from edge_runtime.web import i18n, markdown
from edge_runtime.web.monitoring import drift, of_model, summarize

bp = Blueprint("info", __name__)


def web():
    return current_app.extensions["cxr"]


@bp.get("/monitoring")
def monitoring():
    w = web()
    rows, others = of_model(w.store.rows_for_monitoring(), w.meta)
    from edge_runtime.web.site_views import offer

    # the validation films' decision mix was counted under the artifact's own values, not a site profile's
    reference = None if getattr(w.classifier, "site_profile", None) else w.meta.reference
    d = drift(rows, reference=reference)
    lang = getattr(g, "lang", "en")  # a decision named in an alert ("refer"), in the reader's words
    d["alerts"] = [(key, {**f, "what": i18n.label_text(lang, f["what"])} if "what" in f else f)
                   for key, f in d.get("alerts", [])]
    return render_template("monitoring.html", s=summarize(rows, w.meta.labels), d=d,
                           profile=w.site_profile_fields, offer=offer(w), audit=w.store.audit(), others=others,
                           model=w.meta)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def metric_rows(metrics: dict, labels) -> list[dict]:
    """Flatten ``{"test": {"pooled": rep, "by_source": {src: rep}}, "val": ...}`` into table rows."""
    rows = []
    for split in ("test", "val", *[k for k in metrics if k not in ("test", "val")]):
        block = metrics.get(split)
        if not isinstance(block, dict):
            continue
        parts = [("pooled", block.get("pooled"))] if "pooled" in block else []
        parts += sorted((block.get("by_source") or {}).items())
        if not parts and "accuracy" in block:
            parts = [("pooled", block)]
        for source, rep in parts:
            if not isinstance(rep, dict):
                continue
            per = rep.get("per_class") or {}
            rows.append({
                "split": split, "source": source, "n": rep.get("n"),
                "accuracy": _num(rep.get("accuracy")), "macro_auc": _num(rep.get("macro_auc")),
                "macro_f1": _num(rep.get("macro_f1")), "ece": _num(rep.get("ece")),
                "per_class": {lab: (_num((per.get(lab) or {}).get("sensitivity")),
                                    _num((per.get(lab) or {}).get("specificity"))) for lab in labels},
                "tb": rep.get("tb_operating_point"),
            })
    return rows


@bp.get("/model")
def model():
    w = web()
    meta = w.meta
    card = getattr(w.classifier, "model_card", "") or ""
    return render_template("model.html", card=markdown.render(card) if card else "",
                           rows=metric_rows(dict(meta.metrics or {}), meta.labels),
                           applied=applied_thresholds(w.classifier, meta), heat=heatmap_scale(w.classifier),
                           profile=w.site_profile_fields, status=w.status)


def applied_thresholds(classifier, meta) -> dict:
    """The temperature and thresholds the device applies to every film: the Classifier's own operating point
    (its artifact's, after ``ModelMetadata.for_format``), not the Keras parent's figures."""
    op = getattr(classifier, "operating_point", None) or meta.operating_point
    thr = dict(op.thresholds or {})
    artifact = getattr(classifier, "format", None) or getattr(classifier, "name", "") or getattr(classifier, "backend", "")
    return {"temperature": float(op.temperature), "tb": thr.get("tuberculosis"), "refer_below": thr.get("refer_below"),
            "other": {k: v for k, v in thr.items() if k not in ("tuberculosis", "refer_below")},
            "artifact": str(artifact)}


def heatmap_scale(classifier) -> dict:
    """How the heatmap's colours are scaled for this model: fitted on validation films, or the fixed scale."""
    from edge_runtime import heatmap as H

    head = getattr(classifier, "head", None) or {}
    fitted = head.get("cam_scale") if isinstance(head, dict) else None
    if fitted:
        values = fitted if isinstance(fitted, (list, tuple)) else [fitted]
        return {"fitted": True, "values": ", ".join(f"{float(v):.3g}" for v in values)}
    return {"fitted": False, "value": f"{H.FIXED_CAM_SCALE:g}"}
