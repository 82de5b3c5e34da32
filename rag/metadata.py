"""Document metadata: a short title, number, date, issuer and audience, read from the text or a sidecar.

``document_metadata(doc, sidecar)`` derives, from a cleaned ``Document``:

- ``title``: the short name a student knows — what the decision issues, without
  the issuer and audience tail, with its year: "QUYẾT ĐỊNH Về việc ban hành Quy
  chế đào tạo của Đại học Bách khoa Hà Nội" dated 2025 → "Quy chế đào tạo 2025";
  a title in capitals is written in sentence case using the document's own
  spelling of each word ("HƯỚNG DẪN HỌC TẬP …" → "Hướng dẫn học tập …", "TC" kept);
- ``number`` ("1234/QĐ-ĐHBK") and ``date`` (ISO "2025-05-28", or "2025" when
  only the year is filled in) from the "Số: …" and "…, ngày … tháng … năm …"
  lines of the first page (an unsigned template's year: from its file name);
- ``issuer``: the organisation line of the letterhead under its parent body
  ("BỘ GIÁO DỤC VÀ ĐÀO TẠO" / "ĐẠI HỌC BÁCH KHOA HÀ NỘI"), in the body's own casing;
- ``audience``: the programme levels (``LEVELS``) the document's title names, or
  failing that its scope article (Điều 1).

A sidecar corrects or adds any of these: ``<file>.meta.yaml`` next to the file,
or an entry under ``documents:`` in a ``corpus.yaml`` in its folder (or a
folder above it, up to the ingest root), keyed by file name or by path relative
to that folder. A sidecar value always wins; an unknown key or a wrong type is
an ``InputError`` naming the file and the key.

``chunk_audience`` gives each chunk its levels: those its chapter, section,
article title or appendix names ("Chương III. ĐÀO TẠO KỸ SƯ" → kỹ sư), else the
document's when the document has exactly one, else none (for every level).
``question_levels`` finds the levels a question states ("học viên cao học",
"NCS", "luận văn" …). Retrieval uses both (``rag.retrieve``).

Out of scope: metadata embedded in PDF/DOCX properties (authoring tools fill
them with template names), dates written in words.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import InputError
from .normalise import normalise_text
from .types import Chunk, Document

SIDECAR_SUFFIX = ".meta.yaml"
CORPUS_FILE = "corpus.yaml"
KEYS = ("title", "number", "date", "issuer", "audience")

# Programme levels, in display form; each with the phrases that name it (lower case, normalised).
LEVELS = ("đại học", "kỹ sư", "thạc sĩ", "tiến sĩ", "liên thông", "vừa làm vừa học")
_DOC_CUES = {
    "đại học": r"đại học (?:hệ )?chính quy|trình độ đại học|đào tạo đại học|chương trình đại học|bậc đại học|"
               r"tốt nghiệp đại học|cử nhân",
    "kỹ sư": r"kỹ sư|kĩ sư",
    "thạc sĩ": r"thạc sĩ|thạc sỹ|cao học",
    "tiến sĩ": r"tiến sĩ|tiến sỹ|nghiên cứu sinh",
    "liên thông": r"liên thông",
    "vừa làm vừa học": r"vừa làm vừa học|\bvlvh\b",
}
# A question names a level in more ways ("NCS", "luận án"); "đại học" alone names the university, not a level.
_QUESTION_CUES = {
    **_DOC_CUES,
    "đại học": _DOC_CUES["đại học"] + r"|hệ đại học|\bđh chính quy",
    "thạc sĩ": _DOC_CUES["thạc sĩ"] + r"|luận văn|học viên cao học",
    "tiến sĩ": _DOC_CUES["tiến sĩ"] + r"|\bncs\b|luận án",
}
_DOC_RX = {k: re.compile(v) for k, v in _DOC_CUES.items()}
_QUESTION_RX = {k: re.compile(v) for k, v in _QUESTION_CUES.items()}


def _levels(text: str, rx: dict[str, re.Pattern]) -> list[str]:
    low = normalise_text(text or "").lower()
    return [lv for lv in LEVELS if rx[lv].search(low)]


def text_levels(text: str) -> list[str]:
    """Levels a heading or title names."""
    return _levels(text, _DOC_RX)


def question_levels(question: str) -> list[str]:
    """Levels a question states (none: the deployment's default audience applies)."""
    return _levels(question, _QUESTION_RX)


@dataclass
class DocMeta:
    title: str | None = None
    number: str | None = None
    date: str | None = None
    issuer: str | None = None
    audience: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- derivation ------------------------------------------------------------------------------------
_ISSUED = re.compile(r"\bban hành(?: kèm theo)?\s+(.+)$", re.I)
_ISSUER_TAIL = re.compile(
    r"\s+(?:của|tại|cho|đối với|áp dụng cho)\s+(?:các\s+)?(?:trường\b|đại học\b|đh\b|học viện\b|sinh viên\b|"
    r"người học\b|học viên\b)", re.I)
_NUMBER = re.compile(r"\bSố\s*:?\s*(\d+[\w.]*/[\wĐđ\-./]+)")
# the signing line "Hà Nội, ngày 28 tháng 5 năm 2025" (a place, a comma), not a "Căn cứ … ngày … năm …" line
_DATE = re.compile(r"[A-ZĐ][^\W\d_]*(?: [A-ZĐ][^\W\d_]*)*\s*,\s*ngày\s*(\d{1,2})?\s*(?:/|tháng)\s*(\d{1,2})?\s*"
                   r"(?:/|năm)\s*((?:19|20)\d\d)")
_MOTTO = re.compile(r"CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM|Độc lập\s*[-–]\s*Tự do\s*[-–]\s*Hạnh phúc", re.I)
_ORG = re.compile(r"^(?:ĐẠI HỌC|TRƯỜNG|HỌC VIỆN|VIỆN|BỘ|SỞ|ỦY BAN|UBND|BAN|KHOA|PHÒNG)\b")
_MAX_TITLE = 80


def derive(doc: Document) -> DocMeta:
    first = normalise_text(doc.pages[0].text if doc.pages else "")
    body = normalise_text(doc.text)
    date = None
    if m := _DATE.search(first):
        day, month, year = m.groups()
        date = f"{year}-{int(month):02d}-{int(day):02d}" if day and month else year
    number = m.group(1) if (m := _NUMBER.search(first)) else None
    # an unsigned template has no date; its file name often carries the year ("QĐ Học bổng KKHT 2023.pdf")
    year = date or (m.group(1) if (m := re.search(r"(?<!\d)((?:19|20)\d\d)(?!\d)", Path(doc.source).stem)) else None)
    return DocMeta(title=short_title(doc.title, body, year), number=number, date=date,
                   issuer=_issuer(first, body), audience=_doc_audience(doc.title, body))


def short_title(title: str, body: str = "", date: str | None = None) -> str:
    """What the document issues, without its issuer or audience tail, in sentence case, with its year."""
    t = normalise_text(title or "").strip()
    if m := _ISSUED.search(t):
        t = m.group(1)
    t = _ISSUER_TAIL.split(t, maxsplit=1)[0].strip(" .,:;")
    if len(t) > _MAX_TITLE and "," in t:
        t = t.split(",", 1)[0]
    if len(t) > _MAX_TITLE:
        t = t[:_MAX_TITLE].rsplit(" ", 1)[0] + "…"
    if _caps(t):
        t = _sentence_case(t, body)
    year = (date or "")[:4]
    if year and not re.search(r"\b(?:19|20)\d\d\b", t):
        t = f"{t} {year}"
    return t or normalise_text(title or "")


def _caps(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return len(letters) >= 4 and sum(c.isupper() for c in letters) >= 0.9 * len(letters)


_MARKED = re.compile("[ÀÁẢÃẠĂẮẰẲẴẶÂẤẦẨẪẬÈÉẺẼẸÊẾỀỂỄỆÌÍỈĨỊÒÓỎÕỌÔỐỒỔỖỘƠỚỜỞỠỢÙÚỦŨỤƯỨỪỬỮỰỲÝỶỸỴ]")


def _sentence_case(s: str, body: str) -> str:
    """Lower-case the words of a title in capitals: a word with a Vietnamese vowel mark is a word, not an
    acronym; a plain one is lowered only when the body writes it in lower case ("TC", "ĐHBK" are kept)."""
    lower_words = {w for w in re.findall(r"[^\W\d_]+", body) if w.islower()}
    words = s.split(" ")
    out = []
    for w in words:
        core = re.sub(r"[^\w]", "", w)
        if core and not any(ch.isdigit() for ch in core) and (_MARKED.search(core) or core.lower() in lower_words):
            w = w.replace(core, core.lower())
        out.append(w)
    s = " ".join(out)
    return s[:1].upper() + s[1:]


def _issuer(first: str, body: str) -> str | None:
    lines = [_MOTTO.sub("", ln).strip(" -–") for ln in first.split("\n")[:8]]
    orgs = [ln for ln in lines if ln and _ORG.match(ln) and _caps(ln)]
    if not orgs:
        return None
    org = orgs[1] if len(orgs) > 1 and orgs[0].startswith("BỘ") else orgs[0]
    # the body's own spelling of the name ("Đại học Bách khoa Hà Nội"), when it has one
    m = re.search(re.escape(org), body.replace("\n", " "), re.I)
    hits = [h for h in re.findall(re.escape(org), body.replace("\n", " "), re.I) if not _caps(h)] if m else []
    if hits:
        return max(set(hits), key=hits.count)
    # a proper name: each word capitalised, acronyms without a vowel ("ĐH") kept
    return " ".join(w if not re.search("[aăâeêioôơuưy]", _base(w.lower())) else w.capitalize() for w in org.split())


def _base(s: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c))


def _doc_audience(title: str, body: str) -> list[str]:
    found = text_levels(title)
    if found:
        return found
    # the scope article: "Điều 1. Phạm vi điều chỉnh và đối tượng áp dụng" (the regulation's, after the decision's)
    scopes = [m.end() for m in re.finditer(r"(?m)^Điều 1\s*[.:]", body)]
    if scopes:
        return text_levels(body[scopes[-1]:scopes[-1] + 1200])
    return []


# -- sidecars --------------------------------------------------------------------------------------
def sidecar_paths(path: Path, root: Path | None = None) -> list[Path]:
    """Files that may hold metadata for ``path``: its own sidecar, then corpus.yaml files from its folder up."""
    out = [path.with_name(path.name + SIDECAR_SUFFIX)]
    folder = path.parent
    root = (root or folder).resolve()
    while True:
        out.append(folder / CORPUS_FILE)
        if folder.resolve() == root or folder.parent == folder:
            break
        folder = folder.parent
    return out


MAX_SIDECAR_BYTES = 1 << 20  # a corpus.yaml of a few thousand documents; larger is not metadata
MAX_VALUE_CHARS = 300  # one title, number, date or issuer


def read_sidecar(path: Path, root: Path | None = None) -> tuple[dict[str, Any], str]:
    """The metadata an administrator wrote for ``path`` (own sidecar over corpus.yaml) and a hash of it.

    The hash covers what applies to this document (its own sidecar, its entry in each corpus.yaml), so a
    corrected sidecar re-indexes its document and an edit to another document's entry does not.
    """
    import json
    import unicodedata

    values: dict[str, Any] = {}
    digest = hashlib.sha256()
    for side in reversed(sidecar_paths(path, root)):  # farthest corpus.yaml first, own sidecar last: it wins
        try:
            if not side.is_file():
                continue
        except OSError:  # "<name>.meta.yaml" past the file system's 255 bytes cannot exist: no sidecar
            continue
        size = side.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise InputError(f"{side}: {size:,} bytes; a metadata file holds at most {MAX_SIDECAR_BYTES:,}.")
        data = _yaml(side.read_bytes(), side)
        if side.name == CORPUS_FILE:
            docs = data.get("documents") if isinstance(data, dict) else None
            if not isinstance(docs, dict):
                raise InputError(f"{side}: expected a mapping 'documents:' of file name → metadata.")
            other = sorted(str(k)[:40] for k in data if k != "documents")
            if other:
                raise InputError(f"{side}: unknown key(s) {', '.join(other)}; the file holds 'documents:' only.")
            nfc = {unicodedata.normalize("NFC", str(k)): v for k, v in docs.items()}  # names typed on macOS are NFD
            # the document's listed name (a link's own, not its target's), in its folder's real place
            rel = unicodedata.normalize("NFC", (path.parent.resolve() / path.name).relative_to(side.parent.resolve())
                                        .as_posix())
            entry = nfc.get(rel, nfc.get(unicodedata.normalize("NFC", path.name)))
            if entry is None:
                continue
            data = entry
        checked = _check(data, side)
        digest.update(side.name.encode() + b"\0" + json.dumps(checked, sort_keys=True, ensure_ascii=False).encode())
        values.update(checked)
    return values, digest.hexdigest() if values else ""


def _loader():
    """YAML's safe loader reading every plain scalar as text except null and dates: "number: 0123" stays
    "0123" (not octal 83), "12:30" stays "12:30" (not base-60 750), "date: no" stays "no" (not False)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:  # a key written twice: YAML keeps the last without a word
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {str(key)[:60]!r} is written twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp")]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return Loader


def _yaml(raw: bytes, where: Path) -> Any:
    import yaml

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8.") from e
    try:
        return yaml.load(text, Loader=_loader()) or {}  # noqa: S506 - a safe loader (no Python tags)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where_in = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{where}: not valid YAML{where_in}: {problem}.") from e


def _check(data: Any, where: Path) -> dict[str, Any]:
    import datetime

    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping of {', '.join(KEYS)}.")
    unknown = sorted(set(map(str, data)) - set(KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}.")
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k == "audience":
            vals = [v] if isinstance(v, str) else v
            if not isinstance(vals, list) or not all(isinstance(x, str) for x in vals):
                raise InputError(f"{where}: 'audience' must be a level or a list of levels ({', '.join(LEVELS)}).")
            bad = [x[:40] for x in vals if normalise_text(x).strip().lower() not in LEVELS]
            if bad:
                raise InputError(f"{where}: unknown audience {', '.join(bad)}; use {', '.join(LEVELS)}.")
            out[k] = [normalise_text(x).strip().lower() for x in vals]
            continue
        if v is None:
            out[k] = None
            continue
        if isinstance(v, (datetime.date, datetime.datetime)):
            v = v.isoformat()[:10]  # YAML reads 2025-05-28 as a date
        if not isinstance(v, str):
            raise InputError(f"{where}: '{k}' must be text" + (" or a date (2025-05-28)" if k == "date" else "")
                             + " — put the value in quotes.")
        bad = next((ch for ch in v if (ord(ch) < 32 and ch not in "\t\n\r") or 0x7F <= ord(ch) < 0xA0), None)
        if bad is not None:
            raise InputError(f"{where}: '{k}' contains a control character (U+{ord(bad):04X}): write plain text.")
        text = " ".join(normalise_text(v).split())  # a value on several lines is one line
        if not text:
            raise InputError(f"{where}: '{k}' is empty: give a value or remove the key.")
        if len(text) > MAX_VALUE_CHARS:
            raise InputError(f"{where}: '{k}' is {len(text):,} characters; at most {MAX_VALUE_CHARS}.")
        out[k] = text
    return out


def document_metadata(doc: Document, sidecar: dict[str, Any] | None = None) -> DocMeta:
    meta = derive(doc)
    for k, v in (sidecar or {}).items():
        setattr(meta, k, v)
    if sidecar and "date" in sidecar and "title" not in sidecar:
        meta.title = short_title(doc.title, normalise_text(doc.text), meta.date)
    return meta


def chunk_audience(chunk: Chunk, meta: DocMeta) -> list[str]:
    for heading in (chunk.article_title, chunk.section, chunk.chapter, chunk.part, chunk.appendix_title):
        found = text_levels(heading or "")
        if found:
            return found
    return list(meta.audience) if len(meta.audience) == 1 else []


def apply(chunks: Iterable[Chunk], meta: DocMeta) -> None:
    """Give each chunk its document's short title and its own audience."""
    for c in chunks:
        c.title = meta.title
        c.audience = ",".join(chunk_audience(c, meta)) or None
