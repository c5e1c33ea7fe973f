"""A small, safe Markdown subset for the model card (headings, lists, tables, paragraphs, code, bold, italics).

Everything is HTML-escaped first; only the markup generated here reaches the page. Links are shown as text
(the device is offline and a card must not send the reader elsewhere).
"""
from __future__ import annotations

import re
from html import escape

from markupsafe import Markup

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?!\w)"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)]+)\)"), r"\1 (\2)"),
]


def _inline(text: str) -> str:
    out = escape(text, quote=False)
    for rx, rep in _INLINE:
        out = rx.sub(rep, out)
    return out


def _label(text: str) -> str:
    """A header cell as plain text for a ``data-label`` attribute (no markup, quotes escaped)."""
    return escape(re.sub(r"[*`]", "", text), quote=True)


def _table(rows: list[str]) -> str:
    """A table whose first column names each row; below 900 px wide each row is stacked as a block of figures,
    each under its column's name (app.css ``table.stack``, ``data-label``): a card's 11-column table would need
    a sideways swipe on the 800 px touchscreen."""
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    body = [r for r in cells[1:] if not all(re.fullmatch(r":?-{2,}:?", c or "--") for c in r)]
    head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
    labels = [_label(c) for c in cells[0]]

    def row(r: list[str]) -> str:
        first = f'<th scope="row">{_inline(r[0])}</th>' if r else ""
        rest = "".join(f'<td data-label="{labels[i + 1]}">{_inline(c)}</td>' if i + 1 < len(labels)
                       else f"<td>{_inline(c)}</td>" for i, c in enumerate(r[1:]))
        return f"<tr>{first}{rest}</tr>"
    trs = "".join(row(r) for r in body)
    return f'<div class="scroll"><table class="stack"><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>'


def render(md: str) -> Markup:
    html, para, items, table, code = [], [], [], [], None

    def flush():
        if para:
            html.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            html.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if table:
            html.append(_table(table))
            table.clear()

    for line in md.splitlines():
        if code is not None:
            if line.strip().startswith("```"):
                html.append(f"<pre>{escape(chr(10).join(code))}</pre>")
                code = None
            else:
                code.append(line)
            continue
        s = line.strip()
        if s.startswith("```"):
            flush()
            code = []
        elif not s:
            flush()
        elif m := re.match(r"(#{1,6})\s+(.*)", s):
            flush()
            level = min(len(m.group(1)) + 1, 6)  # the page has its own <h1>
            html.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.match(r"[-*+]\s+(.*)|\d+[.)]\s+(.*)", s):
            if para or table:
                flush()
            items.append(m.group(1) or m.group(2))
        elif s.startswith("|"):
            if para or items:
                flush()
            table.append(s)
        elif items and line.startswith((" ", "\t")):
            items[-1] += " " + s
        else:
            if items or table:
                flush()
            para.append(s)
    if code is not None:
        html.append(f"<pre>{escape(chr(10).join(code))}</pre>")
    flush()
    return Markup("\n".join(html))
