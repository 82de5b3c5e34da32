"""Dataset rows: JSONL files read, validated and deduplicated into ``Example`` objects.

Three row shapes are accepted, mixed freely in one or several JSONL files:

* **Alpaca** ``{"instruction", "input", "output"}``. When ``input`` carries a
  ``CONTEXT:`` block (as ``hust-regulations/sft/sft_dataset.jsonl`` does: ``Văn bản:``,
  ``Chương:``, ``Điều:``, ``Khoản:``, ``Nội dung:`` lines between ``---`` rules), each
  ``Văn bản`` becomes one ``rag.prompt.Passage`` labelled in the house citation style
  ("Điều 2 (…), Khoản 6 — Quy chế đào tạo năm 2025"); the dataset's own system text is
  dropped (serving uses its own system prompt) and a "Thông tin sinh viên" block is
  appended to the question. Other non-empty ``input`` becomes one passage; an empty one
  means "no context" (see QA pairs).
* **Chat** ``{"messages": [{"role", "content"}, ...]}`` ending with an assistant turn:
  the last user turn is the question, earlier turns the history; system messages are
  ignored (counted) because serving uses its own system prompt.
* **QA pairs** ``{"question", "answer"}``.

Any row may give its context explicitly as ``"passages": [{"label", "text"}, ...]`` or
``"context": "..."``. Rows without context get passages retrieved from an index with
rag's own ``Retriever`` (``--index``), so the training prompt is the prompt the model
will see at serving. Refusals ("N/A" rows, "Xin lỗi, hiện tại mình chưa có thông tin…",
a context saying no document matched) become the project's refusal sentence
``rag.texts.REFUSAL``.

Every line is validated before anything is loaded; all problems are reported together
as ``file:line: what is wrong``. Exact duplicates (same normalised question, answer and
context) are removed. Rendering the examples into prompts is ``training.data``.

Out of scope: JSON arrays (convert to JSONL), tokenising (``training.data``).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rag.errors import InputError
from rag.prompt import Passage
from rag.render import citation_label
from rag.texts import REFUSAL as REFUSAL_TEXT
from rag.types import Citation

MAX_REPORTED_ERRORS = 20
ROLES = ("system", "user", "assistant")

# Openers of a refusal in the Vietnamese datasets this project meets ("Xin lỗi, hiện tại mình chưa có
# thông tin về câu hỏi…", "Rất tiếc, tài liệu không có quy định…") and bare "N/A" answers.
REFUSAL_PATTERNS = (
    re.compile(r"^\s*(n/?a|none|null|không có|không tìm thấy|không có thông tin)\s*[.!]?\s*$", re.IGNORECASE),
    re.compile(
        r"^\s*(xin lỗi|rất tiếc)\b[^.!?\n]{0,100}?\b(chưa|không)\s+("
        r"(có|tìm thấy|tìm được|nắm được)\s+(đủ\s+)?(thông tin|quy định|tài liệu|dữ liệu|nội dung|điều khoản)"
        r"|quy định|đề cập|nêu)",
        re.IGNORECASE,
    ),
)
# A CONTEXT block that says nothing matched ("Không có tài liệu quy chế nào trong hệ thống phù hợp…").
NO_DOCUMENT = re.compile(r"^\s*không có (tài liệu|văn bản|đoạn trích)\b", re.IGNORECASE)

_DOC_LINE = re.compile(r"^Văn bản(?:\s+\d+)?\s*:\s*(.*)$")
_META_LINE = re.compile(r"^([A-ZĐÀ-Ỹa-zđà-ỹ][^:\n|]{0,40}?)\s*:\s*(.*)$")
_ARTICLE = re.compile(r"^(?:Điều\s+)?(\d+[a-zđ]?)\s*(?:[.:]\s*(.*))?$", re.IGNORECASE)
_CLAUSE = re.compile(r"^(?:Khoản\s+)?(\d+[a-zđ]?(?:\s*[-,]\s*\d+[a-zđ]?)*)\.?$", re.IGNORECASE)
_NOT_GIVEN = re.compile(r"^(không quy định|không có|n/?a|-|)$", re.IGNORECASE)
_HEADER_KEYS = {"văn bản", "chương", "mục", "điều", "khoản", "điểm"}


class DatasetError(InputError):
    """The dataset files cannot be used as given (fix the file named in the message)."""

    code = "invalid_dataset"


class _RowError(Exception):
    pass


@dataclass
class Example:
    """One question/answer with its context, before rendering."""

    question: str
    answer: str
    passages: list[Passage] | None  # None: retrieve from the index
    source: str  # "file:line"
    kind: str  # alpaca | chat | qa
    history: list[dict[str, str]] = field(default_factory=list)
    refusal: bool = False


@dataclass
class ReadReport:
    files: list[str]
    sha256: str  # of the files' bytes, in the order given
    rows: int = 0
    kinds: Counter = field(default_factory=Counter)
    refusals: int = 0  # rows whose answer is (now) the refusal sentence
    refusals_mapped: int = 0  # of which rewritten from another wording
    duplicates: int = 0
    student_info: int = 0  # "Thông tin sinh viên" blocks appended to the question
    system_ignored: int = 0  # system messages / system text replaced by the serving system prompt
    without_context: int = 0  # rows that need retrieval

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["kinds"] = dict(self.kinds)
        return d


# --------------------------------------------------------------------------- reading and validating


def file_sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_dataset(paths: Sequence[str | Path], *, map_refusals: bool = True) -> tuple[list[Example], ReadReport]:
    """Read and validate every line of every file; dedupe. Raises ``DatasetError`` listing all problems."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = [Path(p).expanduser() for p in paths]
    if not files:
        raise DatasetError("no dataset given: pass one or more JSONL files.")
    for f in files:
        if not f.exists():
            raise DatasetError(f"dataset file {str(f)!r} does not exist: check the path.", code="dataset_missing")
        if f.is_dir():
            raise DatasetError(f"dataset {str(f)!r} is a directory: pass the JSONL file(s) inside it.",
                               code="dataset_missing")
    report = ReadReport(files=[str(f) for f in files], sha256=file_sha256(files))
    errors: list[str] = []
    examples: list[Example] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise DatasetError(f"{f}: not UTF-8 text ({e}); save the file as UTF-8 JSONL.") from e
        lines = text.splitlines()
        if not any(line.strip() for line in lines):
            raise DatasetError(
                f"dataset file {str(f)!r} is empty: it needs one JSON object per line, e.g. "
                '{"instruction": "…", "input": "", "output": "…"}.',
                code="dataset_empty",
            )
        if text.lstrip().startswith("[") and not _one_value(next(line for line in lines if line.strip())):
            # a JSON array spread over lines; a first line that is a whole JSON value is a row (reported as such)
            raise DatasetError(f"{f}: looks like a JSON array; write one JSON object per line (JSONL).")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{f}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: not valid JSON ({e.msg} at column {e.colno}).")
                continue
            try:
                ex = _parse_row(obj, where, report, map_refusals)
            except _RowError as e:
                errors.append(f"{where}: {e}")
                continue
            report.rows += 1
            report.kinds[ex.kind] += 1
            examples.append(ex)
    if errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = f"\n  … and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise DatasetError(f"{len(errors)} problem(s) in the dataset:\n  " + "\n  ".join(shown) + more)
    unique: dict[str, Example] = {}
    for ex in examples:
        unique.setdefault(_dedupe_key(ex), ex)
    report.duplicates = len(examples) - len(unique)
    examples = list(unique.values())
    report.refusals = sum(ex.refusal for ex in examples)
    report.without_context = sum(ex.passages is None for ex in examples)
    return examples, report


def _text_field(obj: dict, name: str, *, required: bool = True) -> str:
    if name not in obj or obj[name] is None:
        if required:
            raise _RowError(f"field {name!r} is missing.")
        return ""
    v = obj[name]
    if not isinstance(v, str):
        raise _RowError(f"field {name!r} must be a string, got {type(v).__name__}.")
    if required and not v.strip():
        raise _RowError(f"field {name!r} is empty.")
    return v.strip()


def _one_value(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


# the fields that mark a row's shape; a row with two shapes' fields would lose one silently
_SHAPES = {"chat": ("messages",), "Alpaca": ("instruction", "output"), "QA": ("question", "answer")}


def _parse_row(obj: Any, where: str, report: ReadReport, map_refusals: bool) -> Example:
    if not isinstance(obj, dict):
        raise _RowError(f"expected a JSON object, got {type(obj).__name__}.")
    shapes = [f"{name} ({', '.join(k for k in keys if k in obj)})" for name, keys in _SHAPES.items()
              if any(k in obj for k in keys)]
    if len(shapes) > 1:
        raise _RowError(f"the row mixes two shapes: {' and '.join(shapes)}; keep the fields of one.")
    history: list[dict[str, str]] = []
    student: list[str] = []
    no_docs = False
    if "messages" in obj:
        kind = "chat"
        question, answer, history = _parse_messages(obj["messages"], report)
        passages = _explicit_passages(obj)
    elif "instruction" in obj or "output" in obj:
        kind = "alpaca"
        question, answer = _text_field(obj, "instruction"), _text_field(obj, "output")
        passages = _explicit_passages(obj)
        raw_input = _text_field(obj, "input", required=False)
        if passages is None and raw_input:
            if "CONTEXT:" in raw_input:
                system_text, ctx = raw_input.split("CONTEXT:", 1)
                report.system_ignored += bool(system_text.strip())
                passages, no_docs, student = parse_context(ctx)
            else:
                passages = [_passage("Ngữ cảnh", raw_input)]
    elif "question" in obj or "answer" in obj:
        kind = "qa"
        question, answer = _text_field(obj, "question"), _text_field(obj, "answer")
        passages = _explicit_passages(obj)
    else:
        keys = ", ".join(sorted(obj)) or "none"
        raise _RowError(
            f"unknown row shape (fields: {keys}); expected {{instruction, input, output}} (Alpaca), "
            "{messages: [...]} (chat) or {question, answer} (QA pair)."
        )
    if student:
        question = question + "\n" + "\n".join(student)
        report.student_info += 1
    refusal = answer == REFUSAL_TEXT
    if map_refusals and not refusal and (no_docs or is_refusal(answer)):
        answer, refusal = REFUSAL_TEXT, True
        report.refusals_mapped += 1
    if no_docs:
        passages = []
    return Example(question=question, answer=answer, passages=passages, source=where, kind=kind,
                   history=history, refusal=refusal)


def _parse_messages(messages: Any, report: ReadReport) -> tuple[str, str, list[dict[str, str]]]:
    if not isinstance(messages, list) or not messages:
        raise _RowError("'messages' must be a non-empty list of {role, content} objects.")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise _RowError(f"messages[{i}] must be an object with 'role' and 'content'.")
        if m["role"] not in ROLES:
            raise _RowError(f"messages[{i}]: role {m['role']!r} is not one of {', '.join(ROLES)}.")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise _RowError(f"messages[{i}]: 'content' must be a non-empty string.")
        if m["role"] == "system":
            report.system_ignored += 1
            continue
        turns.append({"role": m["role"], "content": m["content"].strip()})
    if not turns or turns[-1]["role"] != "assistant":
        raise _RowError("the last message must be the assistant's answer (the text the model learns).")
    for i, t in enumerate(turns):
        if t["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise _RowError("user and assistant turns must alternate, starting with a user turn.")
    return turns[-2]["content"], turns[-1]["content"], turns[:-2]


def _explicit_passages(obj: dict) -> list[Passage] | None:
    if obj.get("passages") is not None:
        ps = obj["passages"]
        if not isinstance(ps, list):
            raise _RowError("'passages' must be a list of {label, text} objects or strings.")
        out = []
        for i, p in enumerate(ps):
            if isinstance(p, str) and p.strip():
                out.append(_passage(f"Đoạn trích {i + 1}", p))
            elif isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"].strip():
                label = p.get("label") or p.get("citation") or f"Đoạn trích {i + 1}"
                out.append(_passage(str(label), p["text"], p.get("id")))
            else:
                raise _RowError(f"passages[{i}] must be a non-empty string or an object with a 'text' string.")
        return out
    if obj.get("context") is not None:
        ctx = obj["context"]
        if not isinstance(ctx, str):
            raise _RowError("'context' must be a string.")
        if "Văn bản" in ctx:
            return parse_context(ctx)[0]
        return [_passage("Ngữ cảnh", ctx)] if ctx.strip() else []
    return None


def is_refusal(answer: str) -> bool:
    return any(p.search(answer) for p in REFUSAL_PATTERNS)


def _passage(label: str, text: str, pid: str | None = None) -> Passage:
    label, text = label.strip(), text.strip()
    pid = pid or "ctx-" + hashlib.sha256(f"{label}\n{text}".encode()).hexdigest()[:16]
    return Passage(id=str(pid), label=label, text=text)


# --------------------------------------------------------------------------- CONTEXT blocks


def parse_context(ctx: str) -> tuple[list[Passage], bool, list[str]]:
    """A HUST-style CONTEXT block → (passages, "no document matched", student-info lines)."""
    sections = [s.strip() for s in re.split(r"(?m)^\s*---\s*$", ctx) if s.strip()]
    passages: list[Passage] = []
    student: list[str] = []
    no_docs = False
    for sec in sections:
        lines = [ln.rstrip() for ln in sec.splitlines()]
        if lines[0].strip().lower().startswith("thông tin sinh viên"):
            student.extend(ln.strip() for ln in lines[1:] if ln.strip())
            continue
        if NO_DOCUMENT.match(sec) and not any(_DOC_LINE.match(ln) for ln in lines):
            no_docs = True
            continue
        blocks: list[list[str]] = []
        for ln in lines:
            if _DOC_LINE.match(ln) or not blocks:
                blocks.append([])
            blocks[-1].append(ln)
        for block in blocks:
            p = _block_passage(block)
            if p is not None:
                passages.append(p)
    return passages, no_docs, student


def _block_passage(lines: list[str]) -> Passage | None:
    meta: dict[str, str] = {}
    extra: list[str] = []
    content: list[str] = []
    in_content = False
    for ln in lines:
        if in_content:
            content.append(ln)
            continue
        m = _DOC_LINE.match(ln)
        if m:
            meta["văn bản"] = m.group(1).strip()
            continue
        m = _META_LINE.match(ln)
        key = m.group(1).strip().lower() if m else None
        if key == "nội dung":
            in_content = True
            if m.group(2).strip():
                content.append(m.group(2).strip())
        elif key in _HEADER_KEYS and key not in meta:
            meta[key] = m.group(2).strip()
        elif ln.strip():
            extra.append(ln.strip())
    body = "\n".join(extra + ([""] if extra and content else []) + content).strip()
    if not body:
        return None
    if not meta:
        return _passage("Ngữ cảnh", body)
    doc = meta.get("văn bản", "")
    article_raw = meta.get("điều", "")
    clause_raw = meta.get("khoản", "")
    clause_raw = "" if _NOT_GIVEN.match(clause_raw) else clause_raw
    am, cm = _ARTICLE.match(article_raw), _CLAUSE.match(clause_raw)
    chapter = meta.get("chương") or None
    if am and (cm or not clause_raw):
        label = citation_label(Citation(document=doc, source="", chapter=chapter, article=am.group(1),
                                        article_title=(am.group(2) or "").strip() or None,
                                        clause=cm.group(1) if cm else None, point=meta.get("điểm") or None))
    else:  # "Phụ lục 3, Bảng 3.2", "Điều 24, Điều 28": keep as written
        head = ", ".join(x for x in (article_raw, f"Khoản {clause_raw}" if clause_raw else "") if x)
        label = f"{head} — {doc}" if head and doc else head or doc
    # The passage text mirrors a chunk's full_text: the header path, then the body.
    header = " › ".join(x for x in (doc, chapter, meta.get("mục"), article_raw,
                                    f"Khoản {clause_raw}" if clause_raw else "") if x)
    return _passage(label, f"{header}\n{body}" if header else body)


def _norm(s: str) -> str:
    return " ".join(unicodedata.normalize("NFC", s).split()).casefold()


def _dedupe_key(ex: Example) -> str:
    ctx = None if ex.passages is None else [_norm(p.text) for p in ex.passages]
    hist = [[t["role"], _norm(t["content"])] for t in ex.history]
    return json.dumps([_norm(ex.question), _norm(ex.answer), ctx, hist], ensure_ascii=False)
