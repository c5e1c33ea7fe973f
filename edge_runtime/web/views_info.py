"""The monitoring page (running figures against confirmed outcomes) and the model page (card, metrics, limits)."""
from __future__ import annotations

import math

from flask import Blueprint, current_app, render_template

from edge_runtime.web import markdown
from edge_runtime.web.monitoring import drift, summarize

bp = Blueprint("info", __name__)


def web():
    return current_app.extensions["cxr"]


@bp.get("/monitoring")
def monitoring():
    w = web()
    rows = w.store.rows_for_monitoring()
    from edge_runtime.web.site_views import offer

    return render_template("monitoring.html", s=summarize(rows, w.meta.labels), d=drift(rows),
                           profile=w.site_profile, offer=offer(w), audit=w.store.audit())


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
                           thresholds=w.thresholds, profile=w.site_profile, status=w.status)
