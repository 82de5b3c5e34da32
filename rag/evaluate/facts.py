"""fact-in-answer: does the answer text the user gets carry the reference answer's facts?

The facts of a reference answer are

- its **numbers** ("24", "2,0" → 2, "5.000.000" → 5000000, "70%" → 70), and
- its **key terms**: its content words (pyvi words, lower case) that are not in the
  question, not function or citation words ("theo", "quy định", "mình trả lời …"),
  not part of its citation ("Điều 10, Khoản 2", the document's name), and at least
  two characters long.

When the row carries the regulation text the reference was written from
(``meta.context``, as the HUST SFT rows do), only numbers and terms that occur in
that text count: words the writer of the reference added ("nghĩa là", "bạn nên
kiểm tra kỹ") are not facts of the regulation, and no quote could contain them.

An answer **carries the facts** when it contains every number and at least half of
the key terms (terms matched as whole words on syllables, after the same
normalisation as the index). A reference with neither numbers nor key terms is not
counted. Quoting the gold passage itself scores 100% by construction; a longer answer
finds more terms, so the report gives the answer length (characters, median) beside
this figure.
"""

from __future__ import annotations

import re
from typing import Iterable

from ..normalise import normalise_text, segment, syllables

TERM_SHARE = 0.5
_CITE_LEAD = re.compile(r"^\s*(?:theo|căn cứ)\b[^:]{0,200}?(?:như sau\s*:|mình trả lời[^:]*:)", re.I)
_REF = re.compile(r"\b(?:điều|khoản|điểm|mục|phụ lục|bảng|chương)\s+[\dIVXLC]+(?:[.,]\d+)*[a-zđ]?\b", re.I)
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
STOP = frozenset("""là được có của và các những cho với trong khi thì không một này đó theo từ đến tại về ra vào lên
để mà như hay hoặc nếu cũng đã đang sẽ rằng bị do vì nên phải cần sau trước trên dưới nhiều ít hơn nhất
bạn mình em tôi chúng_tôi thế vậy nào gì sao ạ nhé nhỉ đây kia ấy thể chỉ còn nữa rồi luôn thêm đều
quy_định quy_chế văn_bản trả_lời như_sau căn_cứ nội_dung trường_hợp việc các_bạn sinh_viên người_học""".split())


def numbers(text: str) -> set[str]:
    """The numbers of a text, written one way: Vietnamese thousands dots removed, decimal comma → point."""
    out = set()
    for m in _NUM.finditer(normalise_text(text)):
        s = m.group()
        s = s.replace(".", "") if re.fullmatch(r"\d{1,3}(?:\.\d{3})+", s) else s.replace(",", ".")
        try:
            out.add(f"{float(s):g}")
        except ValueError:
            continue
    return out


def reference_facts(reference: str, question: str, names: Iterable[str] = (),
                    context: str | None = None) -> tuple[set[str], list[str]]:
    """(numbers, key terms) of a reference answer; see the module docstring."""
    body = _CITE_LEAD.sub("", normalise_text(reference), count=1)
    for name in names:
        if name:
            body = re.sub(re.escape(normalise_text(name)), " ", body, flags=re.I)
    body = _REF.sub(" ", body)
    nums = numbers(body) - numbers(question)
    ctx = set(syllables(context)) if context else None
    if context:
        nums &= numbers(context)
    q_words, q_syl = set(segment(question)), set(syllables(question))
    terms: list[str] = []
    for t in segment(body):
        if t in STOP or t in q_words or len(t) < 2 or not any(c.isalpha() for c in t):
            continue
        parts = t.split("_")
        if all(p in q_syl for p in parts) or (ctx is not None and not all(p in ctx for p in parts)):
            continue
        if t not in terms:
            terms.append(t)
    return nums, terms


def fact_score(answer: str, reference: str, question: str, names: Iterable[str] = (),
               context: str | None = None) -> dict | None:
    """{"ok", "numbers_ok", "term_recall", "n_numbers", "n_terms"}, or None when the reference states no fact."""
    nums, terms = reference_facts(reference, question, names, context)
    if not nums and not terms:
        return None
    found_nums = numbers(answer)
    text = " " + " ".join(syllables(answer)) + " "
    nums_ok = nums <= found_nums
    recall = sum(f" {t.replace('_', ' ')} " in text for t in terms) / len(terms) if terms else 1.0
    return {"ok": nums_ok and recall >= TERM_SHARE, "numbers_ok": nums_ok, "term_recall": recall,
            "n_numbers": len(nums), "n_terms": len(terms)}
