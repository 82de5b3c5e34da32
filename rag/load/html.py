"""HTML: the visible text of a page, block by block; tables as pipe rows between blank lines.

The page is read as a stream of tags (``html.parser``), fed a block of characters at a time, and
never built into a tree: what is held while reading is the stack of open elements (at most
``MAX_DEPTH``), the cells of the table rows being read and the lines written so far. Memory is a
small multiple of the file's size whatever its shape; a tree took about 30 times the file's size
(1.7 GB for 10 MB of nested ``<div>``).

Implied end tags follow the HTML 4 rules that libxml2's HTML parser applies (a ``<p>`` ends at the
next block, a ``<td>`` at the next cell or row, ``<li>`` at the next item; an end tag never closes
an element of higher rank, such as a ``</span>`` crossing a ``<td>``), so malformed pages read as
they did when this module used lxml.

Out of scope: CSS beyond inline ``display: none`` / ``visibility: hidden`` and the ``hidden`` and
``aria-hidden`` attributes; scripts; HTML5's full tree-construction rules (foster parenting,
adoption agency): text misplaced in a table outside its cells is dropped.
"""

from __future__ import annotations

import codecs
import re
from html import unescape
from html.parser import HTMLParser

from ..config import Settings
from ..errors import LoadError
from ..types import Page
from .common import table_cell

MAX_DEPTH = 1000  # open elements; deeper pages are refused (a tree reader ran out of stack there too)
_BLOCK_BYTES = 1 << 18  # bytes decoded and fed to the parser at a time
# characters held by a tag or comment not closed, past which they are dropped (``_Reader.drop_unclosed``): at the
# end of the page, and while reading (a comment of a megabyte is not one a page meant)
MAX_UNCLOSED = 8192
MAX_PENDING = 1 << 20
_FOLD_CHARS = 1 << 16

_DROP = {"script", "style", "noscript", "template", "head", "iframe", "object", "svg", "canvas", "button", "title"}
_BLOCKS = {
    "address", "article", "aside", "blockquote", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "ul", "caption", "tr",
}
_VOID = {"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img", "input", "keygen",
         "link", "meta", "param", "source", "track", "wbr"}
_IN_HEAD = {"base", "basefont", "bgsound", "link", "meta", "title", "noscript", "noframes", "style", "script",
            "template", "head", "html"}
# Their content is text, never tags (html.parser already knows script and style); title and textarea's
# entities are decoded.
_RAW_TEXT = {"iframe", "noembed", "noframes", "xmp", "title", "textarea"}
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_SECTIONS = {"thead", "tbody", "tfoot"}
_GAP = "\ue000"  # private-use marker for a blank line that must survive whitespace folding
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_WS = re.compile(r"\s+")


def _closed_by() -> dict[str, frozenset[str]]:
    """Open element → the start tags that end it when it is the current element (HTML 4 / libxml2)."""
    p_enders = {"address", "blockquote", "body", "caption", "center", "col", "colgroup", "dd", "dir", "div", "dl",
                "dt", "fieldset", "form", "frameset", "head", "hr", "li", "listing", "menu", "ol", "p", "pre",
                "table", "tbody", "td", "tfoot", "th", "title", "tr", "ul", "xmp", *_HEADINGS}
    lists = {"dd", "dl", "dt", "form", "ul"}
    rules: dict[str, set[str]] = {
        "p": p_enders,
        "a": {"a", "fieldset", "table", "td", "th"},
        "b": {"center", "p", "td", "th"}, "i": {"center", "p", "td", "th"}, "u": {"p", "td", "th"},
        "font": {"center", "td", "th"}, "span": {"td", "th"},
        "big": {"p"}, "s": {"p"}, "small": {"p"}, "strike": {"p"}, "tt": {"p"},
        "address": lists | {"li"}, "dir": lists, "menu": lists,
        "pre": lists | {"fieldset", "li", "table"}, "listing": lists | {"fieldset", "li", "table"},
        "xmp": lists | {"fieldset", "li", "table"},
        "ul": {"address", "form", "menu", "pre"}, "ol": {"form"}, "dl": {"form", "li"},
        "dd": {"dt"}, "dt": {"dd", "dl"}, "li": {"li"}, "form": {"form"}, "legend": {"fieldset"},
        "option": {"optgroup", "option"},
        "caption": {"col", "colgroup", "tbody", "tfoot", "thead", "tr"},
        "colgroup": {"colgroup", "tbody", "tfoot", "thead", "tr"},
        "td": {"tbody", "td", "tfoot", "th", "tr"}, "th": {"tbody", "td", "tfoot", "th", "tr"},
        "tr": {"tbody", "tfoot", "tr"}, "tbody": {"tbody", "tfoot"}, "tfoot": {"tbody"}, "thead": {"tbody", "tfoot"},
        "title": {"body", "frameset"}, "style": {"body", "frameset"}, "script": {"noscript"},
    }
    for h in _HEADINGS:
        rules[h] = {"fieldset", "form", "li", "p", "table"}
    return {tag: frozenset(new) for tag, new in rules.items()}


_CLOSED_BY = _closed_by()
# An end tag closes the elements opened after its own only when none of them ranks higher.
_RANK = {"div": 150, "td": 160, "th": 160, "tr": 170, "thead": 180, "tbody": 180, "tfoot": 180, "table": 190,
         "head": 200, "body": 200, "html": 220}


def _hidden(attrs: list[tuple[str, str | None]]) -> bool:
    first: dict[str, str | None] = {}
    for key, value in attrs:  # a repeated attribute counts once, with its first value
        first.setdefault(key, value)
    if "hidden" in first:
        return True
    if (first.get("aria-hidden") or "").strip().lower() == "true":
        return True
    return bool(_HIDDEN_STYLE.search(first.get("style") or ""))


def _attr(attrs: list[tuple[str, str | None]], name: str) -> str:
    return next((v or "" for k, v in attrs if k == name), "")


class _Lines:
    """The page's text, line by line: lines stripped, blank ones dropped, a table's blank line kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._current: list[str] = []

    def write(self, s: str) -> None:
        if "\n" not in s:
            self._current.append(s)
            if len(self._current) > 256:  # a long line of many small pieces: hold it as one string
                self._current = ["".join(self._current)]
            return
        first, *rest = s.split("\n")
        self._current.append(first)
        self._end("".join(self._current))
        for line in rest[:-1]:
            self._end(line)
        self._current = [rest[-1]]

    def _end(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        line = line.replace(_GAP, "")
        if line or (self.lines and self.lines[-1]):  # at most one blank line, none first
            self.lines.append(line)

    def text(self) -> str:
        self._end("".join(self._current))
        self._current = []
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        return "\n".join(self.lines)


class _Cell:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def text(self) -> str:
        return table_cell("".join(self.parts).replace(_GAP, ""))


class _Table:
    def __init__(self, out) -> None:
        self.out = out  # where the rows go when the table ends (None: the table is not shown)
        self.rows: list[str] = []
        self.row: list[str] | None = None  # the cells of the row being read
        self.row_shown = False
        self.cell = None  # the open cell's element, if any
        self.hidden_sections = 0  # hidden <thead>/<tbody>/<tfoot> open

    def end_row(self) -> None:
        if self.row is not None and self.row_shown and any(self.row):
            self.rows.append("| " + " | ".join(self.row) + " |")
        self.row = None


class _Open:
    """An open element: its tag, where its parent's text went, and what it started (a table, a row, a cell)."""

    __slots__ = ("tag", "sink", "pre", "block", "hides_rows", "table", "row_of", "cell", "ol_start", "items")

    def __init__(self, tag: str, sink, pre: bool) -> None:
        self.tag, self.sink, self.pre = tag, sink, pre
        self.block = False  # shown and a block: a line break before and after it
        self.hides_rows = False  # a hidden <thead>/<tbody>/<tfoot>
        self.table: _Table | None = None  # the table this <table> started
        self.row_of: _Table | None = None  # the table this <tr> is a row of
        self.cell: tuple[_Table, _Cell | None, int] | None = None  # (table, text or None if hidden, colspan)
        self.ol_start = 1
        self.items = 0  # <li> children so far, for an <ol>


class _Reader(HTMLParser):
    def __init__(self, name: str) -> None:
        super().__init__(convert_charrefs=True)
        self.name = name
        self.out = _Lines()
        self.stack: list[_Open] = []
        self.where: dict[str, list[int]] = {}  # tag → stack positions of its open elements
        self.sink = self.out  # where text goes now; None inside what is not shown
        self.pre = False
        self.tables: list[_Table] = []
        self.pending: list[str] = []  # the text node being read (the parser may hand it over in pieces)
        self.title: str | None = None
        self.h1: str | None = None
        self._captures: list[list] = []  # [tag, stack position, strings] of the first <title> and <h1>
        self._seen: set[str] = set()
        self.misplaced = 0  # <html>, <head>, <body> start tags ignored, whose end tags are ignored too
        self.body_started = False  # a tag or text that belongs in the body has been read

    # the parser's events

    def handle_data(self, data: str) -> None:
        self.pending.append(data)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs, empty=True)  # <div/>: an empty element, as libxml2 reads it
        self.handle_endtag(tag)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]], empty: bool = False) -> None:
        self._flush()
        if tag not in _IN_HEAD and self.where.get("head"):
            self._pop_to(self.where["head"][-1])
        while self.stack and tag in _CLOSED_BY.get(self.stack[-1].tag, ()):
            self._pop_to(len(self.stack) - 1)
        if self._misplaced(tag):
            self.misplaced += 1
            return
        # a <title> is the head's unless the body has begun (then it is shown, as libxml2 places it there)
        in_head = tag == "title" and (bool(self.where.get("head")) or not self.body_started)
        if tag not in _IN_HEAD:
            self.body_started = True
        sink, pre = self.sink, self.pre
        hidden = (tag in _DROP and (tag != "title" or in_head)) or (bool(attrs) and _hidden(attrs))
        if tag in _VOID:
            if sink is not None and not hidden and tag in ("br", "hr"):
                sink.write("\n\n" if tag == "hr" else "\n")
            return
        if len(self.stack) >= MAX_DEPTH:
            raise LoadError(f"{self.name} is nested too deeply to read as HTML (over {MAX_DEPTH} open elements): "
                            "simplify it or save it as .txt.", code="too_deep")
        e = _Open(tag, sink, pre)
        table = self.tables[-1] if self.tables else None
        if tag in ("title", "h1") and tag not in self._seen:
            self._seen.add(tag)
            self._captures.append([tag, len(self.stack), []])
        marker = self._item_marker() if tag == "li" else ""
        if tag == "table":
            e.table = _Table(None if hidden else sink)
            self.tables.append(e.table)
            self.sink = None  # a table shows only its cells
        elif table is not None and table.cell is None and tag == "tr":
            table.end_row()
            table.row, table.row_shown = [], table.out is not None and not hidden and not table.hidden_sections
            e.row_of = table
        elif table is not None and table.cell is None and tag in ("td", "th"):
            if table.row is None:  # a cell outside any row starts one
                table.row, table.row_shown = [], table.out is not None and not table.hidden_sections
            shown = table.row_shown and not hidden
            span = _attr(attrs, "colspan")
            e.cell = (table, _Cell() if shown else None, int(span) if span.isdigit() and 1 < int(span) < 100 else 1)
            table.cell = e
            self.sink, self.pre = e.cell[1], False
        elif table is not None and table.cell is None and tag in _SECTIONS:
            table.end_row()
            if hidden:
                table.hidden_sections += 1
                e.hides_rows = True
        elif hidden or sink is None:
            self.sink = None
        else:
            e.block = tag in _BLOCKS
            if e.block:
                sink.write("\n")
            if marker:
                sink.write(marker)
            self.pre = pre or tag == "pre"
        if tag == "ol":
            start = _attr(attrs, "start")
            e.ol_start = int(start) if start.isdigit() else 1
        self.where.setdefault(tag, []).append(len(self.stack))
        self.stack.append(e)
        if tag in _RAW_TEXT and not empty:
            self.set_cdata_mode(tag)

    def handle_endtag(self, tag: str) -> None:
        # an end tag that closes nothing is ignored, and does not end the text node around it
        if tag in ("html", "head", "body") and self.misplaced:
            self.misplaced -= 1
            return
        at = self.where.get(tag)
        if not at and tag in ("body", "html"):  # implied: everything open inside it ends
            outer = [p for t in ("html", "body") for p in self.where.get(t, ())[-1:]]
            self._flush()
            self._pop_to(max(outer) + 1 if outer else 0)
            return
        if not at:
            return
        if at[-1] < len(self.stack) - 1:  # it closes others too, unless one ranks higher (a </span> crossing a <td>)
            rank = _RANK.get(tag, 100)
            for other, other_rank in _RANK.items():
                if other_rank > rank and self.where.get(other) and self.where[other][-1] > at[-1]:
                    return
        self._flush()
        self._pop_to(at[-1])

    def handle_comment(self, data: str) -> None:
        self._flush()  # a comment ends a text node

    def handle_decl(self, decl: str) -> None:
        self._flush()

    def handle_pi(self, data: str) -> None:
        self._flush()

    def unknown_decl(self, data: str) -> None:
        self._flush()

    def parse_marked_section(self, i: int, report: int = 1) -> int:
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:  # "<![foo[" is not a section html.parser knows: skip it like a bogus comment
            end = self.rawdata.find(">", i)
            return -1 if end < 0 else end + 1

    def drop_unclosed(self, limit: int) -> None:
        """Drop what a tag or comment opened and not closed holds, past ``limit`` characters: the rest of the page,
        which a browser would not show either. html.parser re-scans it at every feed, and once per "<" at the end
        (quadratic: 180 KB of "<a " took minutes)."""
        if not self.cdata_elem and len(self.rawdata) > limit:
            self.rawdata = ""

    def finish(self) -> tuple[str | None, str]:
        self.drop_unclosed(MAX_UNCLOSED)
        self.close()
        if self.cdata_elem and self.rawdata:  # an unclosed <title>, <textarea>…: its text runs to the end
            self.handle_data(self.rawdata)
            self.rawdata = ""
        self._flush()
        self._pop_to(0)
        title = self.title if self.title else self.h1
        return title, self.out.text()

    # what they do

    def _flush(self) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        top = self.stack[-1].tag if self.stack else None
        if top in ("script", "style"):
            return
        if top in ("title", "textarea"):
            text = unescape(text)
        if top == "head" and text.strip():
            self._pop_to(self.where["head"][-1])
        if not self.body_started and top != "title" and text.strip():
            self.body_started = True
        if self._captures:
            stripped = text.strip()
            if stripped:
                for capture in self._captures:
                    capture[2].append(stripped)
        if self.sink is None:
            return
        if self.pre:
            self.sink.write(text)
            return
        # whitespace folded a slice at a time (a slice never ends inside a run of spaces): folding a whole
        # paragraph of several MB at once holds a small string per word until they are joined
        start = 0
        while start < len(text):
            end = min(start + _FOLD_CHARS, len(text))
            while end < len(text) and text[end - 1].isspace():
                end += 1
            self.sink.write(_WS.sub(" ", text[start:end]))
            start = end

    def _misplaced(self, tag: str) -> bool:
        """A second <html>, <body> or a <head> inside the page: ignored, as libxml2 does."""
        if tag == "html":
            return bool(self.stack)
        if tag == "head":
            return bool(self.stack) and (len(self.stack) > 1 or self.stack[0].tag != "html")
        return tag == "body" and (bool(self.where.get("body")) or self.body_started)

    def _item_marker(self) -> str:
        """An <li>'s marker: its number among the items of the nearest list if that is an <ol> it is directly in."""
        ol, ul = self.where.get("ol"), self.where.get("ul")
        nearest_ol = ol[-1] if ol else -1
        if nearest_ol < 0 or (ul and ul[-1] > nearest_ol):
            return "- "
        owner = self.stack[nearest_ol]
        index = 0
        if nearest_ol == len(self.stack) - 1:  # a direct child: hidden items count too
            index = owner.items
            owner.items += 1
        return f"{owner.ol_start + index}. "

    def _pop_to(self, position: int) -> None:
        while len(self.stack) > position:
            e = self.stack.pop()
            self.where[e.tag].pop()
            self._close(e)
            self.sink, self.pre = e.sink, e.pre

    def _close(self, e: _Open) -> None:
        for capture in [c for c in self._captures if c[1] == len(self.stack)]:
            self._captures.remove(capture)
            setattr(self, capture[0], " ".join(capture[2]))
        if e.table is not None:
            e.table.end_row()
            self.tables.pop()
            if e.table.rows and e.table.out is not None:
                e.table.out.write(f"\n{_GAP}\n" + "\n".join(e.table.rows) + f"\n{_GAP}\n")
        elif e.row_of is not None:
            e.row_of.end_row()
        elif e.cell is not None:
            table, cell, span = e.cell
            table.cell = None
            if cell is not None and table.row is not None:
                table.row.append(cell.text())
                table.row.extend([""] * (span - 1))
        elif e.hides_rows and self.tables:
            self.tables[-1].hidden_sections -= 1
        elif e.block and e.sink is not None:
            e.sink.write("\n")


def _declared_encoding(data: bytes) -> str | None:
    """The encoding an XML declaration or a <meta> names near the start, if Python knows it."""
    m = re.search(rb"^\s*<\?.*encoding=['\"](.*?)['\"].*\?>", data[:1024], re.I)
    if not m:
        m = re.search(rb"<\s*meta[^>]+charset\s*=\s*[\"']?([^>]*?)[ /;'\">]", data[: max(2048, len(data) // 20)],
                      re.I)
    if not m:
        return None
    try:
        codec = codecs.lookup(m.group(1).decode("ascii", "replace").strip().lower()).name
    except LookupError:
        return None
    # a page that says UTF-16 without a byte-order mark is read as ASCII-compatible text (as browsers do)
    return None if codec.startswith(("utf-16", "utf-32")) else codec


def _decodes(data: bytes, codec: str) -> bool:
    decoder = codecs.getincrementaldecoder(codec)("strict")
    view = memoryview(data)
    try:
        for i in range(0, len(data), _BLOCK_BYTES):
            decoder.decode(view[i:i + _BLOCK_BYTES])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _encoding(data: bytes) -> tuple[str, str]:
    """(codec, error handling): a byte-order mark, else the declared encoding, else UTF-8 if the bytes are
    UTF-8, else charset-normaliser's guess, else Windows-1252 (as the browsers' default)."""
    from .text import _BOMS, _utf16_without_bom

    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, "replace"
    declared = _declared_encoding(data)
    if declared:
        return declared, "replace"
    utf16 = _utf16_without_bom(data)
    if utf16 and _decodes(data, utf16):
        return utf16, "strict"
    if _decodes(data, "utf-8"):
        return "utf-8", "strict"
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    return (best.encoding, "replace") if best is not None else ("cp1252", "replace")


def read(data: bytes, name: str, settings: Settings | None = None, ocr=None) -> tuple[str | None, list[Page]]:
    """Title and visible text of an HTML page (one page); scripts, styles and hidden elements dropped."""
    codec, errors = _encoding(data)
    decoder = codecs.getincrementaldecoder(codec)(errors)
    reader = _Reader(name)
    view = memoryview(data)
    for i in range(0, len(data), _BLOCK_BYTES):
        reader.feed(decoder.decode(view[i:i + _BLOCK_BYTES]))
        reader.drop_unclosed(MAX_PENDING)
    reader.feed(decoder.decode(b"", final=True))
    title, text = reader.finish()
    return title, [Page(number=1, text=text)]
