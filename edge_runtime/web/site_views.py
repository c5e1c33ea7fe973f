"""The site profile on the device: offered on the monitoring page once enough confirmed outcomes exist, applied
after an explicit confirmation, undone with one button; every change is a line in the audit trail.

The proposal is ``edge_runtime.site_eval.propose`` (the same code as ``python -m benchmarks.validate``) on the
probabilities this device recorded for screenings with a confirmed outcome, under the model now served only
(``monitoring.of_model``: another model's probabilities say nothing about this one's thresholds). It changes thresholds only: the
recorded probabilities already carry the bundle's temperature, so the thresholds chosen on them apply as they
are. The profile is written as ``site.json`` beside the bundle, or where ``serve --site-profile`` says (the kit:
in the data folder, its bundle being read-only); the model files are never touched; removing it returns to the
bundle's own values. Login and CSRF are checked for every POST by the app's hooks.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from flask import Blueprint, abort, current_app, g, redirect, request, url_for

from edge_runtime import site
from edge_runtime.operating_point import TB_SENSITIVITY, OperatingPoint
from edge_runtime.site_eval import ProfileRefused, propose
from edge_runtime.web import i18n
from edge_runtime.web.monitoring import of_model

bp = Blueprint("site", __name__)


def web():
    return current_app.extensions["cxr"]


def _t(key, **kw):
    from flask import g

    return i18n.translate(getattr(g, "lang", "en"), key, **kw)


def device_films(rows: list[dict], labels) -> dict:
    """Screenings with a confirmed outcome among the model's classes, in scope, scored by this class order; under
    ``share_raw`` every in-scope screening's probabilities, confirmed or not (a refer share is of the films the
    device reads: the clinicians may confirm more of the films it referred)."""
    labels = list(labels)
    scored = [r for r in rows if r["in_scope"] and list(r["labels"]) == labels and all(k in r["probs"] for k in labels)]
    use = [r for r in scored if r.get("outcome") in labels]

    def probs(rs):
        return np.array([[r["probs"][k] for k in labels] for r in rs], np.float64).reshape(-1, len(labels))
    return {"y": np.array([labels.index(r["outcome"]) for r in use], int), "raw": probs(use),
            "in_scope": np.ones(len(use), bool), "share_raw": probs(scored)}


def offer(w) -> dict:
    """{"proposal": ..., "kept": thresholds it leaves as they are, "refused": reason, "active": summary} for the
    monitoring page."""
    clf = w.classifier
    active = getattr(clf, "site_profile", None)
    out = {"active": active.summary() if active else "", "proposal": None, "refused": "", "can_change": True,
           "kept": []}
    if not hasattr(clf, "use_site_profile") or getattr(clf, "model_path", None) is None:
        out.update(can_change=False, refused=_t("site.not_a_bundle"))
        return out
    if active and active.temperature is not None:
        out["refused"] = _t("site.temperature_active")
        return out
    if active:  # a proposal is made against the model's own thresholds: offering it again beside the active
        out["refused"] = _t("site.profile_active_no_offer")  # profile read as if the change had not taken (review28)
        return out
    own = clf.metadata.operating_point
    films = device_films(of_model(w.store.rows_for_monitoring(), clf.metadata)[0], clf.metadata.labels)
    try:
        out["proposal"] = propose(films, OperatingPoint(own.labels, 1.0, dict(own.thresholds)), TB_SENSITIVITY,
                                  refer_share=clf.metadata.refer_share)
    except ProfileRefused as exc:
        out["refused"] = refusal_text(exc)
    else:
        out["kept"] = kept_text(out["proposal"], dict(own.thresholds))
    return out


def _said(key: str, fields: dict) -> str | None:
    """A coded sentence of site_eval in the page's language, None where the catalogue has none for it. Its fields
    are worded for the page: film counts with the reader's class names, a coded 'why' in its words."""
    out = dict(fields)
    if "counts" in out:
        out["films"] = i18n.films_text(g.lang, out["counts"])
    if out.get("why_code"):
        why = _t(f"site.why_{out['why_code']}", **out.get("why_fields", {}))
        out["why"] = why if not why.startswith("site.why_") else out.get("why", "")
    text = _t(key, **out)
    return None if text == key or "{" in text else text


KEPT = {"tb": "tuberculosis", "refer": "refer_below", "refer_unreached": "refer_below"}  # site_eval's skip codes


def kept_text(proposal: dict, own: dict) -> list[str]:
    """Each threshold the proposal leaves at the model's own value, with that value and why (the CLI's report:
    "kept the bundle's value: ..."), in the page's language; the English reason where the catalogue has none."""
    out = []
    for (code, fields), english in zip(proposal.get("kept_codes", []), proposal.get("kept_from_bundle", [])):
        name, why = KEPT.get(code), _said(f"site.skip_{code}", fields)
        if name is None or why is None:
            out.append(english)
            continue
        value = (i18n.threshold_values(g.lang, {name: own[name]}) if name in own
                 else _t(f"site.value_{name}", v="-"))  # a threshold the model does not set
        out.append(_t("site.kept", value=value, why=why))
    return out


def refusal_text(exc: ProfileRefused) -> str:
    """Why no profile is offered, in the page's language (``site.refused_<code>``, each threshold that could not
    change ``site.skip_<code>``); the English message where the catalogue has no sentence for it."""
    head = _said(f"site.refused_{exc.code}", exc.fields) if exc.code else None
    parts = [_said(f"site.skip_{code}", fields) for code, fields in exc.reasons]
    if head is None or None in parts:
        return str(exc)
    return _t("app.labelled", label=head, text=_t("app.separator").join(parts)) if parts else head  # French: "trop peu\u202f: ..."


def _profile_path(clf):
    """Where this server reads and writes the profile (``serve --site-profile``; default beside the bundle)."""
    return getattr(clf, "site_path", None) or site.profile_path(clf.model_path)


@bp.post("/site-profile/apply")
def apply():
    w = web()
    by = request.form.get("by", "").strip()[:80]
    if request.form.get("confirm") != "yes" or not by:
        abort(400, description=_t("site.confirm_needed"))
    o = offer(w)
    if not o["proposal"]:
        abort(409, description=o["refused"] or _t("site.not_a_bundle"))
    clf, p = w.classifier, o["proposal"]
    meta = clf.metadata
    profile = site.SiteProfile(
        thresholds=p["thresholds"], made_by=by, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        films=p["films"], data=f"confirmed outcomes recorded on this device ({sum(p['films'].values())} films)",
        made_for={"model_name": meta.model_name, "model_version": meta.model_version, "data_hash": meta.data_hash,
                  "format": clf.format},
        evidence={"target_tb_sensitivity": p["target_tb_sensitivity"], "kept_from_bundle": p["kept_from_bundle"],
                  "warnings": p["warnings"]})
    path = _profile_path(clf)
    try:
        profile.save(path)
    except OSError as exc:
        abort(500, description=_t("site.cannot_write", path=str(path), error=str(exc)))
    clf.use_site_profile(site.find(clf.model_path, meta, clf.format, path))  # read back and verified, as at start
    w.store.add_audit("site_profile_applied", f"{profile.summary()}; written to {path}",
                      {"profile": profile.summary_fields(), "path": str(path)})
    return redirect(url_for("info.monitoring", profile_saved=1, _anchor="site"), code=303)


@bp.post("/site-profile/remove")
def remove():
    w = web()
    clf = w.classifier
    if request.form.get("confirm") != "yes":
        abort(400, description=_t("site.confirm_needed"))
    if getattr(clf, "model_path", None) is None or getattr(clf, "site_profile", None) is None:
        abort(409, description=_t("site.none_active"))
    path = _profile_path(clf)
    was, was_fields = clf.site_profile.summary(), clf.site_profile.summary_fields()
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        abort(500, description=_t("site.cannot_write", path=str(path), error=str(exc)))
    clf.use_site_profile(None)
    w.store.add_audit("site_profile_removed", f"{was}; the bundle's own thresholds again", {"profile": was_fields})
    return redirect(url_for("info.monitoring", profile_removed=1, _anchor="site"), code=303)
