"""HTML: the visible text of a page, block by block; tables as pipe rows between blank lines."""

from __future__ import annotations

import re

from ..config import Settings
from ..errors import LoadError
from ..types import Page
from .common import table_cell

_HTML_DROP = {"script", "style", "noscript", "template", "head", "iframe", "object", "svg", "canvas", "button"}
_HTML_BLOCKS = {
    "address", "article", "aside", "blockquote", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "ul", "caption", "tr",
}
_TABLE_GAP = "\ue000"  # private-use marker for a blank line that must survive whitespace folding
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def _hidden(tag) -> bool:
    attrs = tag.attrs or {}
    if "hidden" in attrs:
        return True
    if str(attrs.get("aria-hidden", "")).strip().lower() == "true":
        return True
    return bool(_HIDDEN_STYLE.search(str(attrs.get("style", ""))))


def read(data: bytes, name: str, settings: Settings | None = None, ocr=None) -> tuple[str | None, list[Page]]:
    """Title and visible text of an HTML page (one page); scripts, styles and hidden elements dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")  # bytes: bs4 honours <meta charset> and BOMs
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    if not title:
        h1 = soup.find("h1")
        title = h1.get_text(" ", strip=True) if h1 else None
    out: list[str] = []
    try:
        _html_render(soup, out, pre=False)
    except RecursionError as e:
        raise LoadError(f"{name} is nested too deeply to read as HTML: simplify it or save it as .txt.") from e
    # one newline between blocks; the blank lines around a table are kept (marked with _TABLE_GAP)
    lines = [ln.strip() for ln in "".join(out).split("\n")]
    text = "\n".join(ln for ln in lines if ln).replace(_TABLE_GAP, "")
    return title, [Page(number=1, text=re.sub(r"\n{3,}", "\n\n", text).strip("\n"))]


def _html_render(node, out: list[str], pre: bool) -> None:
    from bs4 import NavigableString, Tag
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    for child in node.children:
        if isinstance(child, (Comment, Doctype, Declaration, ProcessingInstruction)):
            continue
        if isinstance(child, NavigableString):
            s = str(child)
            out.append(s if pre else re.sub(r"\s+", " ", s))
            continue
        if not isinstance(child, Tag) or child.name in _HTML_DROP or _hidden(child):
            continue
        if child.name == "br":
            out.append("\n")
        elif child.name == "table":
            rows = _html_table(child)
            if rows:
                out.append(f"\n{_TABLE_GAP}\n{rows}\n{_TABLE_GAP}\n")
        else:
            block = child.name in _HTML_BLOCKS
            if block:
                out.append("\n")
            if child.name == "li":
                parent = child.find_parent(["ol", "ul"])
                if parent is not None and parent.name == "ol":
                    items = parent.find_all("li", recursive=False)
                    start = str(parent.get("start", "1"))
                    index = next((k for k, li in enumerate(items) if li is child), 0)
                    out.append(f"{(int(start) if start.isdigit() else 1) + index}. ")
                else:
                    out.append("- ")
            _html_render(child, out, pre or child.name == "pre")
            if block:
                out.append("\n")


def _html_table(table) -> str:
    rows = []
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table or _hidden(tr):
            continue
        cells: list[str] = []
        for td in tr.find_all(["td", "th"], recursive=False):
            if _hidden(td):
                continue
            parts: list[str] = []
            _html_render(td, parts, pre=False)
            cells.append(table_cell("".join(parts).replace(_TABLE_GAP, "")))
            span = str(td.get("colspan", "1"))
            cells.extend([""] * (int(span) - 1 if span.isdigit() and 1 < int(span) < 100 else 0))
        if any(cells):
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
