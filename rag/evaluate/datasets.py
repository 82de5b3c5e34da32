"""Evaluation datasets: the JSON Lines format of ``rag eval`` (read and validated) and the ALQAC converter.

The dataset is JSON Lines (UTF-8), one question per line; blank lines and lines
starting with ``#`` are skipped (use them for a header)::

    {"question": "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?",
     "citations": [{"document": "Quy chế đào tạo trình độ đại học", "article": "8", "clause": "2"}],
     "answer": "Theo Điều 8, Khoản 2 …",
     "expected": "answer"}

- ``question`` (required): the question as a student would type it.
- ``citations``: the gold passages. Each has ``document`` (its title, or its file
  name with or without the extension), ``article`` (the Điều number) and
  ``clause`` (the Khoản), all optional, but each needs a document or an article.
- ``answer``: a reference answer, for token-F1.
- ``expected``: ``"answer"`` or ``"refuse"``; a row without it is not counted in
  refusal accuracy. A row expected to be refused has no gold citations.
- ``id`` and ``meta`` (anything) are carried into the report untouched.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

ALLOWED_KEYS = ("question", "citations", "answer", "expected", "id", "meta")
CITATION_KEYS = ("document", "article", "clause")
EXPECTED = ("answer", "refuse")


@dataclass(frozen=True)
class GoldCitation:
    document: str | None = None
    article: str | None = None
    clause: str | None = None


@dataclass
class EvalRow:
    question: str
    citations: list[GoldCitation] = field(default_factory=list)
    answer: str | None = None
    expected: str | None = None  # "answer" | "refuse" | None (not counted in refusal accuracy)
    id: str | None = None
    meta: Any = None
    line: int = 0

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"question": self.question,
                               "citations": [{k: v for k, v in asdict(c).items() if v is not None} for c in self.citations]}
        for k in ("answer", "expected", "id", "meta"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


def load_dataset(path: str | Path) -> list[EvalRow]:
    """Read and validate a dataset; a bad line raises InputError naming the file and the line number."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such dataset file (JSON Lines, one question per line).")
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not UTF-8 text ({e.reason}); save the file as UTF-8.") from e
            if not line or line.startswith("#"):
                continue
            try:
                data = json.loads(line)
            except ValueError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e}); each line must be one JSON object.") from e
            except RecursionError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON (nested too deeply); each line must be one "
                                 "JSON object.") from e
            try:
                rows.append(parse_row(data, lineno))
            except InputError as e:
                raise InputError(f"{path}:{lineno}: {e}") from e
    if not rows:
        raise InputError(f"{path}: no questions in the file (blank lines and '#' lines are skipped).")
    return rows


def parse_row(data: Any, line: int = 0) -> EvalRow:
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(ALLOWED_KEYS))
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(ALLOWED_KEYS)}")
    q = data.get("question")
    if not isinstance(q, str) or not q.strip():
        raise InputError("'question' is missing or empty: give the question as a non-empty string")
    cites = data.get("citations") or []
    if not isinstance(cites, list):
        raise InputError("'citations' must be a list of {\"document\", \"article\", \"clause\"} objects")
    golds = [_parse_citation(c, i) for i, c in enumerate(cites)]
    answer = data.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise InputError("'answer' must be a string (the reference answer)")
    expected = data.get("expected")
    if expected is not None and expected not in EXPECTED:
        raise InputError(f"'expected' is {expected!r}; use \"answer\" or \"refuse\"")
    if expected == "refuse" and golds:
        raise InputError("a row expected to be refused cannot have gold citations; drop them or use \"answer\"")
    rid = data.get("id")
    return EvalRow(question=q.strip(), citations=golds, answer=answer, expected=expected,
                   id=None if rid is None else str(rid), meta=data.get("meta"), line=line)


def _parse_citation(c: Any, i: int) -> GoldCitation:
    if not isinstance(c, dict):
        raise InputError(f"'citations[{i}]' must be an object with document / article / clause")
    unknown = sorted(set(c) - set(CITATION_KEYS))
    if unknown:
        raise InputError(f"'citations[{i}]' has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(CITATION_KEYS)}")
    vals = {}
    for k in CITATION_KEYS:
        v = c.get(k)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise InputError(f"'citations[{i}].{k}' must be a string or a number")
        vals[k] = str(v).strip()
    if "document" not in vals and "article" not in vals:
        raise InputError(f"'citations[{i}]' needs a 'document' or an 'article'")
    return GoldCitation(**vals)


# -- ALQAC ---------------------------------------------------------------------------------------
def alqac_law_text(law: dict) -> str:
    """One ALQAC law as text: each article written 'Điều N. title' then its body (the benchmark's layout too)."""
    parts = []
    for art in law["articles"]:
        title, _, body = art["text"].partition("\n\n")
        parts.append(f"Điều {art['id']}. {title.strip()}\n{body.strip()}")
    return "\n\n".join(parts)


def alqac_rows(train: list[dict]) -> list[EvalRow]:
    rows = []
    for r in train:
        golds = [GoldCitation(document=a["law_id"], article=str(a["article_id"])) for a in r["relevant_articles"]]
        rows.append(EvalRow(question=r["text"].strip(), citations=golds, expected="answer", id=r.get("question_id"),
                            meta={"question_type": r.get("question_type"), "answer": r.get("answer")}))
    return rows


def _safe_name(name: str) -> str:
    return re.sub(r"[\\/:*?\"<>|\x00-\x1f]", "_", name).strip() or "law"


def convert_alqac(src: str | Path, out: str | Path) -> dict:
    """ALQAC 2023 (a folder with train.json and law.json, or train.json itself) → this module's dataset shape.

    Writes ``out`` (JSON Lines; document = law id, article = article id) and, when law.json
    is there, the laws as rag JSON documents in ``<out without .jsonl>-laws/`` (title = law
    id), ready for ``rag ingest``. The ALQAC answer (Đúng/Sai or a choice) is kept in
    ``meta``, not as a reference answer: token-F1 against it would mean nothing.
    """
    src, out = Path(src), Path(out)
    train_path = src / "train.json" if src.is_dir() else src
    try:
        train = json.loads(train_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(f"{train_path}: not found; give the alqac2023 folder or its train.json.") from e
    except ValueError as e:
        raise InputError(f"{train_path}: not valid JSON ({e}).") from e
    try:
        rows = alqac_rows(train)
    except (KeyError, TypeError) as e:
        raise InputError(f"{train_path}: not the ALQAC train.json shape (missing {e}).") from e
    if out.is_dir():
        raise InputError(f"{out} is a folder: give the path of the .jsonl file to write.")
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# ALQAC 2023 questions converted from {train_path.name} by `rag eval --convert-alqac`\n"
    out.write_text(header + "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    result: dict[str, Any] = {"dataset": out, "questions": len(rows), "laws_dir": None, "laws": 0}
    law_path = train_path.parent / "law.json"
    if law_path.is_file():
        try:
            laws = json.loads(law_path.read_text(encoding="utf-8"))
            docs = [(_safe_name(law["id"]), {"title": law["id"], "text": alqac_law_text(law)}) for law in laws]
        except (ValueError, RecursionError) as e:
            raise InputError(f"{law_path}: not valid JSON ({e}).") from e
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{law_path}: not the ALQAC law.json shape (a list of {{\"id\": text, \"articles\": "
                             f"[{{\"id\", \"text\"}}]}}; {type(e).__name__}: {e}).") from e
        laws_dir = out.with_name(out.name.removesuffix(".jsonl") + "-laws")
        laws_dir.mkdir(parents=True, exist_ok=True)
        for name, doc in docs:
            (laws_dir / f"{name}.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        result.update(laws_dir=laws_dir, laws=len(docs))
    return result
