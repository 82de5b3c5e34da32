"""Held-out evaluation: the HUST SFT rows as a labelled set, dev/test halves, k folds.

``hust_rows(sft_path)`` turns ``hust-regulations/sft/sft_dataset.jsonl`` (read from
../shared at evaluation time, never shipped) into dataset rows:

- an answerable row: the question; its gold ``document`` (the PDF the CONTEXT
  block's "Văn bản" names, ``HUST_DOCUMENTS``), ``article`` (each "Điều: …", or
  "Phụ lục N" for "Phụ lục: N" / "Điều: Phụ lục N, Bảng …") and ``clause`` (the
  "Khoản: N" after it); the SFT answer as the reference; the CONTEXT text in
  ``meta.context`` (fact-in-answer counts only facts found there, see ``facts``);
- a refusal row: a question whose SFT answer is the generic "Xin lỗi, hiện tại
  mình chưa có thông tin …".

Left out, and counted in ``skipped``: rows about documents that are not among the
9 PDFs (the K65 and K70 language rules), comparisons across those cohorts, and
the refusal rows that these PDFs do answer (``ANSWERED_BY_THE_PDFS``, each checked
by reading the PDFs). Điều 31 of the student affairs regulation hands violations
to the table in its appendix, and the SFT rows cite Điều 31 for facts printed in
that table, so that appendix counts as the same unit (``ALIASES``).

``halves(rows)`` splits any dataset into dev and test deterministically, by
groups — all questions on one (document, Điều) go to the same half, so
near-duplicate questions never straddle the halves; refusal rows are grouped by
their text — assigning groups in the order of a hash of their key to the half
with fewer rows. ``folds(rows, k)`` does the same into k folds (ALQAC
cross-validation, grouped by gold article).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .datasets import EvalRow, GoldCitation

HUST_DOCUMENTS = {
    "Quy chế đào tạo năm 2025": "Quy_che_25.pdf",
    "Quy chế công tác sinh viên": "Quy chế CTSV ĐHBK Hà Nội 2025.3.10_final.pdf",
    "Quy định dạy-học trực tuyến": "QD ban hanh QD to chuc day hoc tren nen tang CN ket noi - truc tuyen.pdf",
    "Quyết định ngoại ngữ từ K68": "QD_ngoai_ngu_tu_K68_CQ_final.pdf",
    "Quy định chuyển đổi kết quả học tập tương đương và công nhận tín chỉ":
        "QD ban hanh QD chuyen doi hoc phan tuong duong.pdf",
    "Quy định Học bổng KKHT 2023": "QĐ Học bổng KKHT 2023.pdf",
    "Hoc_bong_TDN_2023.json": "QĐ Học bổng Trần Đại Nghĩa 2023.pdf",
}
ANSWERED_BY_THE_PDFS = {  # SFT refusals that the 9 PDFs answer (where, in brackets)
    "Cho hỏi về quy chế xét học bổng của K68.",  # [KKHT, Trần Đại Nghĩa]
    "Cho tôi hỏi cách tính điểm rèn luyện K68.",  # [CTSV Chương IV]
    "Cho tôi hỏi về quy định đăng ký tín chỉ tối đa.",  # [Quy chế đào tạo Điều 10]
    "Học bổng KKHT được tính như thế nào?",  # [KKHT Điều 2-4]
    "Trường có hỗ trợ vay vốn sinh viên ngân hàng nào?",  # [CTSV Điều 21]
    "Cho tôi hỏi về quy chế rèn luyện sinh viên.",  # [CTSV Chương IV]
    "Tôi muốn biết về quy định bảo lưu kết quả học tập.",  # [Quy chế đào tạo Điều 16, 35]
    "Quy định học tiếng Anh online của trường có bắt buộc bật camera không?",  # [thi trực tuyến Điều 4]
    "Học bổng khuyến khích học tập bao nhiêu tiền một suất?",  # [KKHT Điều 2 Khoản 4]
    "Có hỗ trợ vay vốn sinh viên không?",  # [CTSV Điều 21]
    "Quy định về điểm rèn luyện?",  # [CTSV Chương IV]
    "Đăng ký bảo hiểm y tế ở đâu?",  # [CTSV Điều 43 Khoản 6]
    "Tôi bị mất thẻ sinh viên thì làm lại ở đâu?",  # [CTSV Điều 41 Khoản 2]
}
ALIASES = {("Quy chế CTSV ĐHBK Hà Nội 2025.3.10_final.pdf", "31"): "Phụ lục"}
_ROMAN = {"I": "1", "II": "2", "III": "3", "IV": "4", "V": "5", "VI": "6", "VII": "7", "VIII": "8", "IX": "9"}
REFUSAL_PREFIX = "Xin lỗi, hiện tại"


def _golds(context: str, doc: str) -> list[GoldCitation]:
    out: list[dict] = []
    for line in context.split("\n"):
        line = line.strip()
        if m := re.match(r"^(?:Điều|Phụ lục):\s*(.+)$", line):
            val = m.group(1)
            if line.startswith("Phụ lục") or val.startswith("Phụ lục"):
                n = re.match(r"(?:Phụ lục\s*)?(\w+)", val).group(1)
                out.append({"article": f"Phụ lục {_ROMAN.get(n, n)}"})
            else:
                for a in re.findall(r"(?:Điều\s*)?(\d+)", val.split(".")[0])[:3]:
                    out.append({"article": a})
        elif (m := re.match(r"^Khoản:\s*(\d+)", line)) and out and "clause" not in out[-1]:
            out[-1]["clause"] = m.group(1)
    golds = [GoldCitation(document=doc, article=g["article"], clause=g.get("clause")) for g in out]
    golds += [GoldCitation(document=doc, article=ALIASES[(doc, g.article)]) for g in golds
              if (doc, g.article) in ALIASES]
    return golds or [GoldCitation(document=doc)]


def hust_rows(sft_path: str | Path) -> tuple[list[EvalRow], Counter]:
    """The labelled HUST set from the SFT file, and what was left out (and why)."""
    path = Path(sft_path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (the HUST SFT rows, hust-regulations/sft/sft_dataset.jsonl).")
    rows, skipped = [], Counter()
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        r = json.loads(line)
        q, context = r["instruction"].strip(), r["input"].split("CONTEXT:", 1)[-1]
        named = re.search(r"Văn bản:\s*(.+)", context)
        if r.get("doc_type") == "N/A" or not named:
            if not r["output"].startswith(REFUSAL_PREFIX):
                skipped["comparison across cohorts not in the PDFs"] += 1
            elif q in ANSWERED_BY_THE_PDFS:
                skipped["refusal that the PDFs answer"] += 1
            else:
                rows.append(EvalRow(question=q, expected="refuse", id=f"sft-{i}"))
            continue
        name = named.group(1).strip()
        if name not in HUST_DOCUMENTS:
            skipped[f"document not among the PDFs: {name}"] += 1
            continue
        rows.append(EvalRow(question=q, citations=_golds(context, HUST_DOCUMENTS[name]), answer=r["output"],
                            expected="answer", id=f"sft-{i}", meta={"context": context, "source_document": name}))
    return rows, skipped


def _key(row: EvalRow) -> str:
    if row.expected == "refuse" or not row.citations:
        return "q:" + re.sub(r"\W+", " ", row.question.lower()).strip()
    g = row.citations[0]
    return f"{g.document}#{g.article or ''}"


def _assign(rows: Sequence[EvalRow], n: int) -> list[list[EvalRow]]:
    groups: dict[str, list[EvalRow]] = defaultdict(list)
    for r in rows:
        groups[_key(r)].append(r)
    order = sorted(groups, key=lambda k: hashlib.sha1(k.encode("utf-8")).hexdigest())
    out: list[list[EvalRow]] = [[] for _ in range(n)]
    for kind in ("answer", "refuse", None):
        sizes = [0] * n
        for k in order:
            if groups[k][0].expected != kind:
                continue
            j = min(range(n), key=lambda x: (sizes[x], x))
            out[j] += groups[k]
            sizes[j] += len(groups[k])
    return out


def halves(rows: Sequence[EvalRow]) -> dict[str, list[EvalRow]]:
    """{"dev": …, "test": …}: tune on dev, report test."""
    dev, test = _assign(rows, 2)
    return {"dev": dev, "test": test}


def folds(rows: Sequence[EvalRow], k: int = 5) -> list[list[EvalRow]]:
    return _assign(rows, k)
