"""One normaliser for documents and questions, page cleaning, and tokenisation for BM25.

``normalise_text`` is applied to every page at ingest and to every question at
query time, so both sides of the lexical and dense match see the same
characters. Its output is versioned by ``NORMALISER_VERSION`` (recorded in the
index manifest): change the output, bump the version, and old indexes ask to
be rebuilt.

What it does, in order:

1. line breaks: CR LF / CR / form feed / U+2028-9 become LF;
2. look-alikes: Ð (U+00D0) / Ɖ (U+0189) → Đ, ð (U+00F0) → đ; U+FFFE, which
   pdfium emits for some hyphens, → "-";
3. zero-width characters (U+200B/C/D, U+2060, U+FEFF) are removed; soft
   hyphens (U+00AD) are removed, and one at a line end joins the two halves
   of the word;
4. Unicode NFC (cp1258-style text with combining tone marks composes here);
5. every other space character (NBSP, U+2000-200A, U+202F, tab …) becomes a
   plain space; runs of spaces collapse to one; lines are stripped at both
   ends; three or more line breaks collapse to one blank line;
6. one tone-placement style — the traditional one, "hòa, khỏe, thủy" — for the
   syllable-final diphthongs oa, oe, uy: "hoà" → "hòa", "khoẻ" → "khỏe",
   "thuỷ" → "thủy". Only when the diphthong ends the syllable (no final
   consonant: "hoàn", "thuyền", "khuya", "khuỷu" are untouched) and is not
   preceded by another vowel; "uy" after "q" is u-glide + y, never rewritten
   ("quý"). A tone mark written on the onset vowel of "qu"/"gi" is moved to the
   nucleus ("qùy" → "quỳ", "qủa" → "quả", "gìa" → "già"), which both styles
   agree on.

   Why the traditional style: counted on the ALQAC 2023 Vietnamese law corpus
   (2,131 articles, after NFC), traditional placement occurs 4,411 times
   (oa 2,920, uy 1,392, oe 99) against 590 for the new style (oa 427, uy 144,
   oe 19); the HUST regulations mix both ("CỘNG HÒA"/"CỘNG HOÀ", "uỷ viên").

Out of scope: quotes and dashes are left as they are; no spelling correction
beyond the onset-vowel tone move above; no case folding (``segment`` and
``syllables`` lowercase their output).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from dataclasses import replace

from .types import Page

NORMALISER_VERSION = "1"

# --- character-level tables -------------------------------------------------

_TONES = "\u0300\u0301\u0309\u0303\u0323"  # huyền, sắc, hỏi, ngã, nặng
_VOWEL_BASES = "aăâeêioôơuưy"


def _with_tone(ch: str, tone: str) -> str:
    return unicodedata.normalize("NFC", ch + tone)


def _toned(base: str) -> str:
    """The five toned forms of a base vowel, lower and upper case."""
    out = "".join(_with_tone(base, t) for t in _TONES)
    return out + out.upper()


_ALL_VOWELS = "".join(v + v.upper() + _toned(v) for v in _VOWEL_BASES)
_TONED_A, _TONED_E, _TONED_Y = _toned("a"), _toned("e"), _toned("y")
_TONED_O, _TONED_U, _TONED_I = _toned("o"), _toned("u"), _toned("i")
_PLAIN_VOWELS = _VOWEL_BASES + _VOWEL_BASES.upper()

_CHAR_MAP = str.maketrans(
    {
        "\u00d0": "\u0110",  # Ð (Icelandic eth) → Đ
        "\u0189": "\u0110",  # Ɖ (African D) → Đ
        "\u00f0": "\u0111",  # ð → đ
        "\ufffe": "-",  # pdfium's marker for a hyphen it thinks is soft
        "\u200b": None,
        "\u200c": None,
        "\u200d": None,
        "\u2060": None,
        "\ufeff": None,
        "\u000b": "\n",
        "\u000c": "\n",
        "\u2028": "\n",
        "\u2029": "\n",
        "\u0085": "\n",
    }
    # every other control character (C0 but tab and line breaks, DEL, C1): a document's NUL or ESC is never
    # text, and would reach a terminal or a chat's history as it is
    | {c: None for c in [*range(0x00, 0x09), 0x0E, 0x0F, *range(0x10, 0x20), *range(0x7F, 0x85), *range(0x86, 0xA0)]}
)

_SOFT_HYPHEN_EOL = re.compile("\u00ad[ \t]*\n[ \t]*")
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace except LF (tab, NBSP, U+2000-200A, U+202F, ...)
_LINE_EDGES = re.compile(r"^ +| +$", re.M)
_MANY_BREAKS = re.compile(r"\n{3,}")

_LETTER_AHEAD = r"(?![^\W\d_]|[\u0300-\u036f])"  # no letter (or stray combining mark) follows: the syllable ends
_NO_VOWEL_BEHIND = f"(?<![{_ALL_VOWELS}])"

# new style (tone on the second vowel) → traditional (tone on the first)
_RE_OA_OE = re.compile(f"{_NO_VOWEL_BEHIND}([oO])([{_TONED_A}{_TONED_E}]){_LETTER_AHEAD}")
_RE_UY = re.compile(f"{_NO_VOWEL_BEHIND}(?<![qQ])([uU])([{_TONED_Y}]){_LETTER_AHEAD}")
# a tone on the onset vowel of qu-/gi- belongs on the nucleus
_FINAL = r"(?:[cC][hH]|[nN][hH]|[nN][gG]|[cmnptCMNPT])?"
_RE_QU = re.compile(f"([qQ])([{_TONED_U}])([{_PLAIN_VOWELS}]){_FINAL}{_LETTER_AHEAD}")
_RE_GI = re.compile(f"(?<![^\\W\\d_])([gG])([{_TONED_I}])([{_PLAIN_VOWELS}]){_FINAL}{_LETTER_AHEAD}")


def _split_tone(ch: str) -> tuple[str, str]:
    d = unicodedata.normalize("NFD", ch)
    tone = "".join(c for c in d if c in _TONES)
    base = unicodedata.normalize("NFC", "".join(c for c in d if c not in _TONES))
    return base, tone


def _move_tone_back(m: re.Match) -> str:
    first, second = m.group(1), m.group(2)
    base, tone = _split_tone(second)
    return _with_tone(first, tone) + base


def _move_tone_forward(m: re.Match) -> str:
    onset, glide, nucleus = m.group(1), m.group(2), m.group(3)
    plain, tone = _split_tone(glide)
    rest = m.group(0)[3:]
    return onset + plain + _with_tone(nucleus, tone) + rest


def normalise_text(text: str) -> str:
    """Return ``text`` in the one normal form used for indexing and querying (idempotent)."""
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_CHAR_MAP)
    text = _SOFT_HYPHEN_EOL.sub("", text).replace("\u00ad", "")
    # NFC after the deletions above, which can bring a base letter and a combining mark together
    text = unicodedata.normalize("NFC", text)
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGES.sub("", text)
    text = _MANY_BREAKS.sub("\n\n", text)
    text = _RE_QU.sub(_move_tone_forward, text)
    text = _RE_GI.sub(_move_tone_forward, text)
    text = _RE_OA_OE.sub(_move_tone_back, text)
    text = _RE_UY.sub(_move_tone_back, text)
    return text.strip("\n ")


# --- page cleaning ----------------------------------------------------------

_EDGE_LINES = 3  # header/footer candidates: this many non-empty lines at the top and at the bottom
_PAGE_NUMBER = re.compile(
    r"^(?:[-–—]\s*\d{1,4}\s*[-–—]|(?:trang|page)\s+\d{1,4}(?:\s*/\s*\d{1,4})?|\d{1,4}(?:\s*/\s*\d{1,4})?)$",
    re.I,
)
# "Điều 13. Đăng ký học tập ........ 10", "Chương II …… 5", "Mục 1 ____ 7", ". . . . 12"
_TOC_TAIL = re.compile(r"\S.*?([.…_·](?:[.…_· ]*[.…_·])?) ?(\d{1,4})$")
_TOC_TITLE = re.compile(r"^(?:mục lục|danh mục|table of contents)$", re.I)
_HEADING_START = re.compile(r"^(?:Điều\s+\d+|(?:Chương|CHƯƠNG)\s+[IVXLC\d]+|(?:Mục|MỤC)\s+\d+|(?:Phần|PHẦN)\s)")
# A hyphen ending a line right after a letter or digit; the next line decides (see _join_hyphen).
_EOL_HYPHEN = re.compile(r"(?<=[^\W_])-\n(?=([^\W_])(\d{0,2}[.)]\s)?)")


def _edge_indices(lines: list[str], n: int = _EDGE_LINES) -> tuple[list[int], list[int]]:
    non_empty = [i for i, ln in enumerate(lines) if ln.strip()]
    return non_empty[:n], non_empty[::-1][:n]


def _header_key(line: str) -> str:
    return re.sub(r"\d+", "#", line.strip()).lower()


def clean_pages(pages: list[Page]) -> list[Page]:
    """Normalise every page and remove what is layout, not content.

    Removed: running headers/footers (a line among the top or bottom
    ``_EDGE_LINES`` non-empty lines that, with digits replaced by '#', appears
    there on at least half of the pages and on 3 pages or more); bare
    page numbers ("12", "- 12 -", "Trang 12", "12/45") on the first or last
    line of a page; table-of-contents lines with dotted leaders, the "MỤC LỤC"
    title of a page that has them, and a TOC entry's first line when it wrapped
    onto a dotted line.

    Repaired: a hyphen at a line end directly after a letter or digit, with the
    next line starting in lowercase or a digit, joins the two lines and keeps
    the hyphen ("cử nhân-\\nkỹ sư" → "cử nhân-kỹ sư", "Covid-\\n19" → "Covid-19").
    Vietnamese is written with a space between syllables, so typesetters break
    lines at spaces; a hyphen at a line end is a real hyphen in a compound, a
    range or a code, never a syllable split, and must stay.

    Nothing else is joined here: line starts carry the structure ("Điều", "1.",
    "a)") the chunker needs (``reflow`` joins wrapped lines once the chunker has
    read them). Pages keep their numbers; a page left empty is kept with empty
    text so page numbering never shifts. The number printed on a page (a bare
    page number, "Trang 12", "- 12 -", or the digits of a running header/footer
    such as "Quy chế đào tạo - 12") becomes ``Page.label``.
    """
    texts = [normalise_text(p.text) for p in pages]
    line_lists = [t.split("\n") for t in texts]

    repeated: set[str] = set()
    if len(pages) >= 3:
        counts: Counter[str] = Counter()
        for lines in line_lists:
            top, bottom = _edge_indices(lines)
            # bare page numbers are left to _strip_edges, which only takes the outermost line:
            # a lone "9" a few lines down is a table row number, not a header
            counts.update({_header_key(lines[i]) for i in top + bottom if not _PAGE_NUMBER.match(lines[i])})
        threshold = len(pages) / 2
        repeated = {k for k, c in counts.items() if c >= threshold and c >= 3 and k}

    out = []
    for page, lines in zip(pages, line_lists):
        lines, label = _strip_edges(lines, repeated)
        lines = _drop_toc(lines)
        text = "\n".join(lines)
        text = _EOL_HYPHEN.sub(_join_hyphen, text)
        text = _MANY_BREAKS.sub("\n\n", text).strip("\n")
        out.append(replace(page, text=text, label=page.label or label))
    return out


# --- reading: rejoin lines that the page width broke ---------------------------------

# A line starting like this begins a unit of its own: a Khoản "2.", a Điểm "b)", a bullet, a table row,
# a heading, a lettered or Roman-numbered part ("A.", "II.").
_UNIT_START = re.compile(
    r"^(?:\d{1,3}(?:\.\d{1,3})*[.)]\s|[a-zđ][).]\s|[-+•*–—○▪►]\s?|\||(?:Điều|ĐIỀU|Chương|CHƯƠNG|Mục|MỤC|Phần|PHẦN|"
    r"Phụ lục|PHỤ LỤC)\b|[A-ZĐ][.)]\s|[IVXLC]+[.)]\s)"
)
_SENTENCE_FINAL = re.compile(r"[.;:!?…]['\"”’)\]]*$")


def line_width(lines: list[str]) -> int:
    """The text width of a document: the 90th percentile of its non-empty line lengths (at least 40)."""
    lengths = sorted(len(ln.strip()) for ln in lines if ln.strip())
    return max(40, lengths[int(0.9 * (len(lengths) - 1))]) if lengths else 40


def reflow(text: str, width: int) -> str:
    """Join lines that the page width broke, keep every line that starts a unit.

    A line is joined to the one before when that one ran to the right margin (at
    least 60% of ``width`` long, 85% when the line starts with a capital), does not end a sentence (. ; : ! ? …) and is not a
    heading in capitals, and the line itself does not start a Khoản, Điểm, bullet,
    table row or heading. Short lines (table cells flattened by a PDF, signatures,
    list items) are never joined, so lists and tables stay one item per line.
    """
    out: list[str] = []
    for line in text.split("\n"):
        s = line.strip()
        prev = out[-1] if out else ""
        # a capital after a shorter line is more likely a heading followed by its text than a wrap
        reach = 0.6 if s[:1].islower() else 0.85
        if (s and prev and len(prev) >= reach * width and not _SENTENCE_FINAL.search(prev)
                and not prev.startswith("|") and not _UNIT_START.match(s) and not _all_caps(prev)
                and not _all_caps(s)):
            out[-1] = f"{prev} {s}"
        else:
            out.append(s)
    return "\n".join(out)


def _all_caps(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return len(letters) >= 4 and all(c.isupper() for c in letters)


def _is_toc_line(line: str) -> bool:
    m = _TOC_TAIL.match(line)
    if not m:
        return False
    leader = m.group(1)
    dots = sum(leader.count(c) for c in "._·") + 3 * leader.count("…")
    return dots >= 4


def _join_hyphen(m: re.Match) -> str:
    nxt, clause = m.group(1), m.group(2)
    if (nxt.islower() or nxt.isdigit()) and not clause:
        return "-"
    return m.group(0)


def _strip_edges(lines: list[str], repeated: set[str]) -> tuple[list[str], str | None]:
    """Drop repeated headers/footers and page numbers at the top and bottom of one page.

    Returns the kept lines and the printed page number found there (None when there is none).
    """
    drop: set[int] = set()
    label = None
    top, bottom = _edge_indices(lines)
    for i in top + bottom:
        if _header_key(lines[i]) in repeated:
            drop.add(i)
    # a page number is the first or last line once running headers are gone
    rest = [i for i, ln in enumerate(lines) if ln.strip() and i not in drop]
    for i in rest[:1] + rest[-1:]:
        if _PAGE_NUMBER.match(lines[i].strip()):
            drop.add(i)
            label = str(int(re.search(r"\d+", lines[i]).group()))
    return [ln for i, ln in enumerate(lines) if i not in drop], label


def _drop_toc(lines: list[str]) -> list[str]:
    toc = [_is_toc_line(ln) for ln in lines]
    if not any(toc):
        return lines
    drop = {i for i, t in enumerate(toc) if t}
    for i, t in enumerate(toc):
        if not t:
            continue
        # an entry that wrapped: "Điều 17. ... cho" / "sinh viên ....... 9"
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0 and j not in drop and _HEADING_START.match(lines[j]) and not _HEADING_START.match(lines[i]):
            drop.add(j)
    if sum(toc) >= 2:
        drop |= {i for i, ln in enumerate(lines) if _TOC_TITLE.match(ln.strip())}
    return [ln for i, ln in enumerate(lines) if i not in drop]


# --- tokenisation for the lexical index ----------------------------------------

_WORD = re.compile(r"[^\W_]+")


def segment_all(texts: list[str]) -> list[list[str]]:
    """``segment`` of each text (one call: a task for a reader process of ``rag.ingest``)."""
    return [segment(t) for t in texts]


def segment(text: str) -> list[str]:
    """Word-segmented, lowercased tokens for BM25: "Sinh viên" → ["sinh_viên"].

    Uses pyvi (imported here, on first use: its CRF model takes about a second
    to load). Multi-syllable words are joined with '_'; pure punctuation tokens
    are dropped; numbers are kept ("2,5", "24"). Long text is segmented in
    pieces of a few thousand characters cut at line breaks. Measured at about
    0.2 million characters per second on the HUST training regulation (one CPU
    core); ``syllables`` runs at about 2 million.
    """
    ViTokenizer = _pyvi()

    text = normalise_text(text)
    tokens: list[str] = []
    for piece in _pieces(text, _SEGMENT_PIECE):
        tokens += ViTokenizer.tokenize(piece).split()
    return [t.lower() for t in tokens if _WORD.search(t)]


def _pyvi():
    """pyvi's tokenizer, its model opened once per process and its temporary copy deleted.

    Unpickling pyvi's CRF writes the model (0.6 MB) to a ``model*.crfsuite`` file in the temporary folder,
    deleted only if the process ends through the interpreter's normal shutdown — a killed worker, a spawned
    reader or a server stopped by a signal leaves it behind, one per process. The tagger reads the file when
    it opens it, so the file is removed right after.
    """
    global _TOKENIZER
    with _TOKENIZER_LOCK:
        if _TOKENIZER is not None:
            return _TOKENIZER
        from pyvi import ViTokenizer  # lazy: loads a model

        crf = getattr(getattr(ViTokenizer, "ViTokenizer", None), "model", None)
        resource = getattr(crf, "modelfile", None)
        if getattr(crf, "tagger_", None) is not None and getattr(resource, "auto", False):
            resource.cleanup()  # closes and deletes the temporary copy; the open tagger keeps the model
        _TOKENIZER = ViTokenizer
    return _TOKENIZER


_TOKENIZER = None
_TOKENIZER_LOCK = threading.Lock()
_SEGMENT_PIECE = 4000  # pyvi slows down on very long inputs (0.15 M chars/s at 70k chars in one call)


def _pieces(text: str, size: int) -> list[str]:
    """Cut long text at line breaks into pieces of about ``size`` chars (a word is never cut)."""
    if len(text) <= size:
        return [text] if text else []
    out, cur, n = [], [], 0
    for line in text.split("\n"):
        if cur and n + len(line) > size:
            out.append("\n".join(cur))
            cur, n = [], 0
        cur.append(line)
        n += len(line) + 1
    if cur:
        out.append("\n".join(cur))
    return out


def syllables(text: str) -> list[str]:
    """Cheap fallback tokens: lowercased syllables and numbers, split at punctuation."""
    return _WORD.findall(normalise_text(text).lower())


SENTENCE_END = re.compile(r"(?<=[.;!?…])\s+(?=\S)")  # the space after a sentence's (or list item's) end


def sentences(text: str) -> list[str]:
    """Text cut at line breaks and sentence ends: the windows a question's words should fall in together."""
    out = []
    for line in text.split("\n"):
        out += [s for s in SENTENCE_END.split(line) if s.strip()]
    return out
