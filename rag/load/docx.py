"""DOCX: paragraphs and tables in document order, Word's list numbering rendered, as one page.

Tables become one block of pipe rows (``| a | b |``) with a blank line before
and after, so the chunker can keep them whole. Out of scope: headers, footers,
footnotes and comments.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Iterator

from ..config import Settings
from ..errors import LoadError
from ..types import Page
from .common import MB, meaningful_title, table_cell

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


def check(source: bytes | str | Path, name: str, settings: Settings) -> None:
    """Refuse what is not a zip, zips that would expand past RAG_MAX_UNZIPPED_MB (zip bombs), and XML past
    RAG_MAX_DOCX_XML_MB (python-docx parses every XML part into a tree: about 16 times its size in memory).
    Reads only the zip's directory (``source``: the file's bytes or its path)."""
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as e:
        raise LoadError(
            f"{name} is not a DOCX file (not a zip archive): if it is an old .doc, "
            "open it in Word or LibreOffice and save it as .docx."
        ) from e
    total = sum(i.file_size for i in infos)
    if total > settings.max_unzipped_mb * MB:
        raise LoadError(
            f"{name} expands to {total / MB:.3g} MB, over the {settings.max_unzipped_mb:g} MB limit "
            "for unzipped DOCX content: remove large embedded media or raise RAG_MAX_UNZIPPED_MB.",
            code="file_too_large")
    xml = sum(i.file_size for i in infos if i.filename.lower().endswith((".xml", ".rels")))
    if xml > settings.max_docx_xml_mb * MB:
        raise LoadError(
            f"{name} holds {xml / MB:.3g} MB of XML (its text and formatting, unzipped), over the "
            f"{settings.max_docx_xml_mb:g} MB limit: split the document or raise RAG_MAX_DOCX_XML_MB.",
            code="file_too_large")
    if not any(i.filename == "word/document.xml" for i in infos):
        raise LoadError(f"{name} is a zip archive but not a Word document (no word/document.xml): save it as .docx.")


def check_inflated(data: bytes, name: str, settings: Settings) -> None:
    """Unzip every part as a stream, counting the bytes it really expands to: a zip can state small sizes in its
    directory (which ``check`` reads) and expand to gigabytes, which python-docx would inflate in one call. The
    stream stops at RAG_MAX_UNZIPPED_MB, or where a part's stated size ends (a part longer than stated then
    fails its CRC check): memory stays at one chunk."""
    budget = settings.max_unzipped_mb * MB
    total = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                with z.open(info) as part:
                    while chunk := part.read(1 << 20):
                        total += len(chunk)
                        if total > budget:
                            raise LoadError(
                                f"{name} expands to over {settings.max_unzipped_mb:g} MB, the limit for unzipped "
                                "DOCX content: remove large embedded media or raise RAG_MAX_UNZIPPED_MB.",
                                code="file_too_large")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError, EOFError) as e:
        raise LoadError(f"{name} is a damaged DOCX ({e}): open it in Word or LibreOffice and save a new copy.") from e


def read(data: bytes, name: str, settings: Settings, ocr=None) -> tuple[str | None, list[Page]]:
    """Title and text of a DOCX (one page): paragraphs and tables in document order, list numbers rendered."""
    import docx
    from docx.opc.exceptions import OpcError
    from lxml.etree import LxmlError

    check(data, name, settings)
    check_inflated(data, name, settings)
    try:
        d = docx.Document(io.BytesIO(data))
        numbering = _Numbering(d)
        blocks: list[str] = []
        title = None
        for el in _body_blocks(d.element.body):
            if el.tag == _W + "tbl":
                rows = _docx_table(el)
                if rows:
                    blocks.append("\n" + rows + "\n")
                continue
            text = _para_text(el)
            label = numbering.label(el)
            if label and text.strip():
                text = f"{label} {text}"
            if title is None and text.strip() and _style_id(el).lower() == "title":
                title = text.strip()
            blocks.append(text)
        core = d.core_properties.title
    except (OpcError, LxmlError, KeyError, ValueError, AttributeError, zipfile.BadZipFile) as e:
        if "Excessive depth" in str(e):  # libxml2's own limit (256 levels): the nesting code every loader uses
            raise LoadError(f"{name} is nested too deeply to read: simplify it or save it as .txt.",
                            code="too_deep") from e
        raise LoadError(
            f"{name} is not a readable DOCX (corrupt or not a Word document): {e}. "
            "Open it in Word or LibreOffice and save a new copy."
        ) from e
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(blocks))
    return (core if core and meaningful_title(core) else title), [Page(number=1, text=text.strip("\n"))]


def _body_blocks(body) -> Iterator:
    """Paragraphs and tables of the body in document order, looking inside content controls."""
    for child in body.iterchildren():
        if child.tag in (_W + "p", _W + "tbl"):
            yield child
        elif child.tag in (_W + "sdt", _W + "customXml"):
            content = child.find(_W + "sdtContent") if child.tag == _W + "sdt" else child
            if content is not None:
                yield from _body_blocks(content)


_TEXT_TAGS = {_W + "t": None, _W + "tab": "\t", _W + "br": "\n", _W + "cr": "\n", _W + "p": "\n",
              _W + "noBreakHyphen": "-", _W + "softHyphen": "\u00ad"}
_NOT_TEXT = {_W + "pPr", _W + "rPr", _W + "del", _W + "moveFrom", _MC_FALLBACK}  # tab stops, deletions, duplicates


def _para_text(p) -> str:
    """Visible text of a paragraph: runs, hyperlinks, fields' results, inserted (tracked) text, text boxes."""
    parts: list[str] = []
    for el in p.iter(*_TEXT_TAGS):
        if el is p:
            continue
        if any(a.tag in _NOT_TEXT for a in _ancestors_within(el, p)):
            continue
        parts.append((el.text or "") if el.tag == _W + "t" else _TEXT_TAGS[el.tag])
    return "".join(parts)


def _ancestors_within(el, top) -> Iterator:
    for a in el.iterancestors():
        if a is top:
            return
        yield a


def _docx_table(tbl) -> str:
    rows = []
    for tr in tbl.iterchildren(_W + "tr"):
        cells: list[str] = []
        for tc in tr.iterchildren(_W + "tc"):
            text = " ".join(_para_text(p).strip() for p in tc.iter(_W + "p"))
            cells.append(table_cell(text))
            span = tc.find(f"{_W}tcPr/{_W}gridSpan")
            # a merged cell spans a few columns; the schema allows 2^31, which would be a row of a billion cells
            extra = _int(span.get(_W + "val"), 1, 1, MAX_SPAN) - 1 if span is not None else 0
            cells.extend([""] * extra)
        if any(cells):
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _style_id(p) -> str:
    el = p.find(f"{_W}pPr/{_W}pStyle")
    return el.get(_W + "val", "") if el is not None else ""


class _Numbering:
    """Renders Word's automatic list numbers ("1.", "a)", "Điều 3.") that are not in the text itself."""

    _MAX_LEVELS = 9

    def __init__(self, d) -> None:
        # numId -> ilvl -> (numFmt, lvlText, start, lvlRestart); lvlRestart None: after any higher level, 0: never
        self.levels: dict[str, dict[int, tuple[str, str, int, int | None]]] = {}
        self.counters: dict[str, list[int | None]] = {}
        self.styles = d.styles.element
        self._style_cache: dict[str, tuple[str | None, int | None]] = {}
        try:
            root = d.part.numbering_part.element
        except (NotImplementedError, KeyError):
            return
        abstract = {}
        for an in root.iterchildren(_W + "abstractNum"):
            abstract[an.get(_W + "abstractNumId")] = self._lvls(an)
        for num in root.iterchildren(_W + "num"):
            ref = num.find(_W + "abstractNumId")
            lvls = dict(abstract.get(ref.get(_W + "val") if ref is not None else None, {}))
            for ov in num.iterchildren(_W + "lvlOverride"):
                ilvl = int(ov.get(_W + "ilvl", "0"))
                lvl = ov.find(_W + "lvl")
                if lvl is not None:
                    lvls.update(self._lvls(ov))
                start = ov.find(_W + "startOverride")
                if start is not None and ilvl in lvls:
                    fmt, text, _, restart = lvls[ilvl]
                    lvls[ilvl] = (fmt, text, _int(start.get(_W + "val"), 1, 0, MAX_NUMBER), restart)
            self.levels[num.get(_W + "numId")] = lvls

    @staticmethod
    def _lvls(parent) -> dict[int, tuple[str, str, int, int | None]]:
        out = {}
        for lvl in parent.iterchildren(_W + "lvl"):
            def val(tag: str, default: str | None) -> str | None:
                el = lvl.find(_W + tag)
                return el.get(_W + "val", default) if el is not None else default

            restart = val("lvlRestart", None)
            out[int(lvl.get(_W + "ilvl", "0"))] = (
                val("numFmt", "decimal"), val("lvlText", ""), _int(val("start", "1"), 1, 0, MAX_NUMBER),
                None if restart is None else _int(restart, 0, 0, 9)
            )
        return out

    def _style_numpr(self, style_id: str) -> tuple[str | None, int | None]:
        if style_id in self._style_cache:
            return self._style_cache[style_id]
        num_id: str | None = None
        ilvl: int | None = None
        seen = set()
        sid: str | None = style_id
        while sid and sid not in seen and num_id is None:
            seen.add(sid)
            style = self.styles.get_by_id(sid)
            if style is None:
                break
            numpr = style.find(f"{_W}pPr/{_W}numPr")
            if numpr is not None:
                n, i = numpr.find(_W + "numId"), numpr.find(_W + "ilvl")
                num_id = n.get(_W + "val") if n is not None else None
                ilvl = int(i.get(_W + "val", "0")) if i is not None else ilvl
            based = style.find(_W + "basedOn")
            sid = based.get(_W + "val") if based is not None else None
        self._style_cache[style_id] = (num_id, ilvl)
        return num_id, ilvl

    def label(self, p) -> str:
        num_id, ilvl = self._style_numpr(_style_id(p)) if _style_id(p) else (None, None)
        numpr = p.find(f"{_W}pPr/{_W}numPr")
        if numpr is not None:
            n, i = numpr.find(_W + "numId"), numpr.find(_W + "ilvl")
            num_id = n.get(_W + "val") if n is not None else num_id
            ilvl = int(i.get(_W + "val", "0")) if i is not None else ilvl
        ilvl = min(max(ilvl or 0, 0), self._MAX_LEVELS - 1)
        lvls = self.levels.get(num_id or "0")
        if not lvls or ilvl not in lvls:
            return ""
        counters = self.counters.setdefault(num_id, [None] * self._MAX_LEVELS)
        fmt, text, start, _ = lvls[ilvl]
        counters[ilvl] = start if counters[ilvl] is None else counters[ilvl] + 1
        for deeper, (_, _, _, restart) in lvls.items():
            if deeper > ilvl and (restart is None or ilvl < restart):
                counters[deeper] = None
        if fmt == "bullet":
            return "-"
        if fmt == "none":
            return re.sub(r"%\d", "", text).strip()

        def number(m: re.Match) -> str:
            k = int(m.group(1)) - 1
            f, _, s, _ = lvls.get(k, ("decimal", "", 1, None))
            return _format_number(s if counters[k] is None else counters[k], f)

        return re.sub(r"%([1-9])", number, text).strip()


# A list number or a column span past these is nonsense or an attack (a Roman numeral of 10^15 is 10^12 "M"s);
# Word's own schema allows any 32-bit value.
MAX_NUMBER = 100_000
MAX_SPAN = 100


def _int(value, default: int, lo: int, hi: int) -> int:
    """A number attribute of the XML, ``default`` when it is not one, kept within [lo, hi]."""
    try:
        n = int(str(value)[:12]) if value is not None else default
    except ValueError:
        n = default
    return min(max(n, lo), hi)


def _format_number(n: int, fmt: str) -> str:
    if fmt in ("lowerRoman", "upperRoman") and n > 3999:
        return str(n)  # past MMMCMXCIX, Roman numerals need marks Word does not write
    if fmt in ("lowerLetter", "upperLetter"):
        s = ""
        while n > 0:
            n, r = divmod(n - 1, 26)
            s = chr(ord("a") + r) + s
        return s.upper() if fmt == "upperLetter" else s
    if fmt in ("lowerRoman", "upperRoman"):
        s = ""
        for v, r in ((1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
                     (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i")):
            while n >= v:
                s, n = s + r, n - v
        return s.upper() if fmt == "upperRoman" else s
    if fmt == "decimalZero":
        return f"{n:02d}"
    return str(n)
