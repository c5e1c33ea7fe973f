"""The message catalogue: every UI string lives in ``messages/<lang>.json`` (flat key -> text with {fields}).

Language: ``?lang=xx`` (remembered in a cookie), then the cookie, then the browser's Accept-Language, then the
server default. A key missing from a catalogue falls back to English; a key missing from English shows the key
itself (the tests check that every key used is in every catalogue). A number given as a field ({share:.0%},
{now:.2f}) is written as the reader's language writes it (``local_number``: in French "44\u202f%", "1,38").
"""
from __future__ import annotations

import json
import string
from functools import lru_cache
from numbers import Real
from pathlib import Path

MESSAGES = Path(__file__).with_name("messages")
LANGUAGES = ("en", "fr")
COOKIE = "lang"


@lru_cache(maxsize=None)
def catalogue(lang: str) -> dict[str, str]:
    return json.loads((MESSAGES / f"{lang}.json").read_text(encoding="utf-8"))


class _Numbers(string.Formatter):
    """``str.format`` that writes each number field ({share:.0%}, {now:.2f}) as the reader's language does
    (``local_number``); text fields are left as they are."""

    def __init__(self, lang: str):
        self.lang = lang

    def format_field(self, value, format_spec: str) -> str:
        text = format(value, format_spec)
        return local_number(self.lang, text) if isinstance(value, Real) and not isinstance(value, bool) else text


def translate(lang: str, key: str, **fields) -> str:
    text = catalogue(lang).get(key)
    if text is None:
        text = catalogue("en").get(key, key)
    try:
        return _Numbers(lang).vformat(text, (), fields) if fields else text
    except (KeyError, IndexError, ValueError):
        return text


def choose(request, default: str = "en") -> str:
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        return asked
    cookie = request.cookies.get(COOKIE, "")
    if cookie in LANGUAGES:
        return cookie
    return request.accept_languages.best_match(LANGUAGES) or default


def label_text(lang: str, label: str) -> str:
    """A class name or decision ('refer', 'out_of_scope') in the reader's language; unknown names as they are."""
    key = f"label.{label.lower()}"
    text = translate(lang, key)
    return label.replace("_", " ") if text == key else text


OOS_ADVICE = {"oos_low_resolution": "oos.advice_resolution", "oos_shape": "oos.advice_image",
              "oos_blank": "oos.advice_image", "oos_few_levels": "oos.advice_image",
              "oos_saturated": "oos.advice_image", "oos_orientation": "oos.advice_orientation",
              "oos_unlike_training": "oos.advice_unlike"}


def local_number(lang: str, text: str) -> str:
    """A formatted number as the reader's language writes it (French: decimal comma, a thin space before %)."""
    return text.replace(".", ",").replace("%", "\u202f%") if lang == "fr" else text


def films_text(lang: str, counts: dict) -> str:
    """Film counts per class ("30 Normal, 12 Tuberculose") with the reader's class names."""
    return ", ".join(f"{n} {label_text(lang, c)}" for c, n in counts.items())


def _number(lang: str, key: str, v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return local_number(lang, f"{v:.0%}" if key == "fraction" else f"{v:.2f}")


def _threshold(lang: str, v) -> str:
    return local_number(lang, f"{float(v):.3f}")


def threshold_values(lang: str, thresholds: dict) -> str:
    """Thresholds as words ("TB threshold 0.375, refer below 0.550"), never as raw keys."""
    out = []
    for k, v in thresholds.items():
        key = f"site.value_{k}"
        out.append(translate(lang, key, v=_threshold(lang, v)) if key in catalogue("en")
                   else f"{label_text(lang, k)} {_threshold(lang, v)}")
    return ", ".join(out)


def profile_text(lang: str, fields: dict) -> str:
    """A site profile's summary (``SiteProfile.summary_fields``) in the reader's language."""
    if not fields:
        return ""
    films = films_text(lang, fields.get("films") or {})
    values = [threshold_values(lang, fields.get("thresholds") or {})] if fields.get("thresholds") else []
    if fields.get("temperature") is not None:
        values.append(translate(lang, "site.value_temperature", v=_threshold(lang, fields["temperature"])))
    return translate(lang, "site.summary", made_by=fields.get("made_by", ""), date=fields.get("date", ""),
                     films=films, values=", ".join(values))


def _outcome(lang: str, outcome, note: str) -> str:
    text = label_text(lang, outcome) if outcome else "-"
    return f"{text} [{note}]" if note else text


def audit_text(lang: str, line: dict) -> str:
    """One audit line's detail in the reader's language, from its fields; a line written before fields were
    kept (or of an action the catalogue lacks) shows its stored English text."""
    args, key = line.get("args") or {}, f"audit.{line.get('action', '')}"
    if not args or key not in catalogue("en"):
        return line.get("detail") or ""
    if "profile" in args:
        return translate(lang, key, profile=profile_text(lang, args["profile"]), path=args.get("path", ""))
    ref = f" ({args['reference']})" if args.get("reference") else ""
    return translate(lang, key, sid=args.get("sid", ""), ref=ref,
                     before=_outcome(lang, args.get("before"), args.get("before_note", "")),
                     after=_outcome(lang, args.get("after"), args.get("after_note", "")))


def reason_text(lang: str, rec: dict) -> str:
    """A screening's reason in the reader's language, from its code and numbers; a row stored before reason
    codes (or with a code the catalogue lacks) shows its stored text."""
    code = rec.get("reason_code") or ""
    key = f"reason.{code}"
    if not code or key not in catalogue("en"):
        return rec.get("reason") or ""
    args = dict(rec.get("reason_args") or {})
    fields = {k: _number(lang, k, v) for k, v in args.items()}
    if "view" in args:
        fields["view"] = translate(lang, f"view.{args['view']}")
    return translate(lang, key, **fields)


def next_step(lang: str, rec: dict) -> str:
    """What to do after an in-scope decision for a class (``result.next_<class>``), or "" when the catalogue has
    no advice for it (a refer or out-of-scope decision has its own; a custom model's class may have none)."""
    if not rec.get("in_scope") or rec.get("decision") in ("refer", "out_of_scope"):
        return ""
    key = f"result.next_{str(rec.get('decision', '')).lower()}"
    return translate(lang, key) if key in catalogue("en") else ""


def oos_advice(lang: str, rec: dict) -> str:
    """What the operator should do with an out-of-scope film, for its cause."""
    code = rec.get("reason_code") or ""
    if code == "oos_orientation" and (rec.get("reason_args") or {}).get("view") == "inverted":
        return translate(lang, "oos.advice_inverted")  # a negative film is the right way up: its grey levels are not
    return translate(lang, OOS_ADVICE.get(code, "oos.advice_unknown"))
