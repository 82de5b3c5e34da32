"""TXT and MD: bytes decoded to ``str`` (BOM, UTF-8, UTF-16, Windows-1258); form feeds separate pages.

Out of scope: Vietnamese normalisation (``rag.normalise``): text is only
decoded and its line endings made ``\\n``.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

from ..config import Settings
from ..errors import LoadError
from ..types import Page
from .common import newlines, split_pages

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_TONES = "\u0300\u0301\u0303\u0309\u0323"
_VI_LETTERS = frozenset(
    unicodedata.normalize("NFC", base + tone)
    for base in "aăâeêioôơuưyAĂÂEÊIOÔƠUƯY"
    for tone in ("",) + tuple(_TONES)
) - frozenset("aeiouyAEIOUY") | frozenset("đĐ")
_UTF8_SEQ = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' when NULs fall on one side of most byte pairs, as in UTF-16 text."""
    if len(data) < 4 or len(data) % 2:
        return None
    half = len(data) // 2
    even, odd = data[0::2].count(0), data[1::2].count(0)
    if odd >= 0.25 * half and even <= 0.02 * half:
        return "utf-16-le"
    if even >= 0.25 * half and odd <= 0.02 * half:
        return "utf-16-be"
    return None


def _looks_vietnamese(text: str) -> bool:
    """Vietnamese letters are common and other non-ASCII letters rare (rules out mojibake and other languages)."""
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r\f" for c in text):
        return False
    nfc = unicodedata.normalize("NFC", text)
    vi = sum(1 for c in nfc if c in _VI_LETTERS)
    letters = sum(1 for c in nfc if c.isalpha())
    foreign = sum(1 for c in nfc if (c.isalpha() or unicodedata.combining(c)) and not c.isascii() and c not in _VI_LETTERS)
    return vi > 0 and vi >= 0.03 * letters and foreign * 10 <= vi


def decode_text(data: bytes, name: str = "text") -> str:
    """Bytes of a text file to ``str``: BOM, UTF-8, UTF-16 without BOM, then Windows-1258 if it reads as Vietnamese.

    Windows-1258 text keeps its combining tone marks (NFD-like); NFC is the normaliser's job.
    """
    text = _decode(data, name)
    if _binary(text):
        nul = text.count("\x00")
        raise LoadError(f"{name} looks like a binary file, not text: {'NUL bytes and ' if nul else ''}control "
                        "characters make up over 1% of it. If it is text, save it again as UTF-8 text.")
    return newlines(text)


def _decode(data: bytes, name: str) -> str:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as e:
                raise _undecodable(name, f"it starts with a {codec.upper()} byte-order mark but {e.reason}") from e
    utf16 = _utf16_without_bom(data)
    if utf16:
        try:
            return data.decode(utf16)
        except UnicodeDecodeError:
            pass  # not UTF-16 after all: try the rest
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        utf8_error = e
    high = sum(1 for b in data if b >= 0x80)
    in_utf8 = sum(len(m.group()) for m in _UTF8_SEQ.finditer(data))
    if high and in_utf8 >= 0.5 * high:  # mostly valid UTF-8: a damaged UTF-8 file, not a legacy code page
        raise _undecodable(name, f"it is mostly UTF-8 but has an invalid byte at offset {utf8_error.start}") from utf8_error
    try:
        text = data.decode("cp1258")
    except UnicodeDecodeError as e:
        raise _undecodable(name, f"byte 0x{data[e.start]:02x} at offset {e.start} is not valid in any of them") from e
    if _looks_vietnamese(text):
        return text
    raise _undecodable(name, "it does not read as Vietnamese in Windows-1258 either") from utf8_error


def _binary(text: str) -> bool:
    """Control characters (NUL included) past 1% of the text: a binary file, whatever it decoded as. A few in a text
    file (a stray NUL) are text: ``normalise_text`` removes them."""
    controls = sum(1 for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v")
    return controls > 0.01 * len(text)


def _undecodable(name: str, detail: str) -> LoadError:
    return LoadError(
        f"cannot decode {name} as UTF-8, UTF-16 or Windows-1258 ({detail}): save it as UTF-8. "
        "Text typed with TCVN3 (.VnTime) or VNI fonts must first be converted to Unicode (e.g. with Unikey's converter)."
    )


def _md_title(text: str) -> str | None:
    in_fence = False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and re.match(r"# +\S", line):
            return line[1:].strip().rstrip("#").strip() or None
    return None


def read_plain(data: bytes, name: str, settings: Settings | None = None, ocr=None) -> tuple[str | None, list[Page]]:
    """A .txt file: no title of its own."""
    return None, split_pages(decode_text(data, name))


def read_markdown(data: bytes, name: str, settings: Settings | None = None, ocr=None) -> tuple[str | None, list[Page]]:
    """A .md file: its first ``#`` heading (outside code fences) is its title."""
    text = decode_text(data, name)
    return _md_title(text), split_pages(text)
