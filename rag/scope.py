"""Out-of-scope cues: questions the documents cannot answer whatever the passages' scores say.

``Scope.from_index(index)`` reads, once per index, what the corpus is about:
the institutions it names (its documents' issuers and every "Đại học …",
"Trường …", "Học viện …" name in its text) and the years it mentions. Then
``Scope.check(question)`` returns a refusal reason, or None:

- ``cheating``: a request for help to cheat or break the rules — a how-to
  ("cách", "làm sao", "chỉ em", "mẹo", "ở đâu" …) about an act such as "quay
  cóp", "thi hộ", "sửa điểm", "làm giả", "mua bằng", or any request to do
  something "mà không bị phát hiện". Asking what the rules say about it ("thi hộ
  thì bị xử lý thế nào?") is a question, not a request, and is answered.
- ``other_institution``: the question names a university or school whose name
  the documents never mention ("Học phí của Đại học FPT …" over HUST rules).
- ``other_year``: the question names a year before the documents' earliest or
  more than a year after their latest ("quy chế năm 1990", "học phí năm 2030").

Out of scope: cohorts ("K70"), which regulations name in ranges that this
reading cannot check; institutions named in lower case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .normalise import normalise_text

_HOWTO = re.compile(r"\b(?:cách|làm sao|làm thế nào|làm cách nào|có cách nào|chỉ (?:em|mình|tôi|tớ|cho)|giúp (?:em|mình|tôi|tớ)|"
                    r"mẹo|bí quyết|hướng dẫn|ở đâu|chỗ nào|muốn)\b", re.I)
_ACT = re.compile(r"\b(?:quay cóp|gian lận|thi hộ|học hộ|điểm danh hộ|làm bài hộ|thi thay|nhờ người thi|sửa điểm|"
                  r"nâng điểm trái phép|làm giả|giả mạo|giấy tờ giả|giấy khám bệnh giả|mua bằng|mua điểm|chạy điểm|"
                  r"hack|khai gian|khai man|đạo văn|lách luật|qua mặt)\b", re.I)
_UNSEEN = re.compile(r"\b(?:không bị phát hiện|không ai (?:biết|phát hiện)|(?:giám thị|thầy|cô|giảng viên)\s+"
                     r"không (?:biết|phát hiện)|mà không bị bắt)\b", re.I)
_CONSEQUENCE = re.compile(r"\b(?:bị xử lý|xử lý (?:thế nào|ra sao|như thế nào)|bị kỷ luật|kỷ luật|bị phạt|"
                          r"hình thức|khung xử lý|có bị|thì bị|sẽ bị|mức xử lý)\b", re.I)
_INSTITUTION = re.compile(r"\b(?:Trường\s+)?(?:Đại học|ĐH|Học viện|Cao đẳng|Trường)\s+([A-ZĐ][\w&\-]*(?:\s+[\w&\-]+){0,5})")
# a word that ends an institution's name: "Đại học Kinh tế Quốc dân | nằm ở đâu", "Đại học FPT | là bao nhiêu"
_NAME_END = frozenset("""là có nằm ở năm cho xét được bao thì của mà và tuyển lấy tổ với như không nào gì đâu hiện nay
này tại về đã đang sẽ bị học_phí điểm mở cấp đào hay hoặc thế vậy ạ nhé""".split())
_YEAR = re.compile(r"(?<![\d/])((?:19|20)\d\d)(?![\d/])")
_GENERIC = {"đại học", "trường", "học viện", "cao đẳng"}


@dataclass
class Scope:
    institutions: set[str] = field(default_factory=set)  # lower-case names the corpus mentions
    text: str = ""  # the corpus, lower case, one line (names are searched in it)
    years: tuple[int, int] | None = None  # earliest and latest year the corpus mentions
    issuer: str | None = None  # the most frequent issuer, for the refusal message

    @classmethod
    def from_index(cls, index) -> "Scope":
        texts = [f"{c.header}\n{c.text}" for c in index.chunks]
        corpus = normalise_text("\n".join(texts))
        issuers = [((f.get("meta") or {}).get("issuer") or "") for f in index.manifest.files.values()]
        issuers = [i for i in issuers if i]
        years = sorted({int(y) for y in _YEAR.findall(corpus)} |
                       {int(m) for f in index.manifest.files.values()
                        for m in _YEAR.findall(str((f.get("meta") or {}).get("date") or ""))})
        return cls(institutions={i.lower() for i in issuers}, text=re.sub(r"\s+", " ", corpus.lower()),
                   years=(years[0], years[-1]) if years else None,
                   issuer=max(set(issuers), key=issuers.count) if issuers else None)

    def check(self, question: str) -> tuple[str, dict] | None:
        q = normalise_text(question)
        if (_ACT.search(q) and _HOWTO.search(q) and not _CONSEQUENCE.search(q)) or _UNSEEN.search(q):
            return "cheating", {}
        for m in _INSTITUTION.finditer(q):
            words = []
            for w in m.group(1).split():
                if w.lower().strip(",.?!") in _NAME_END or not w.strip(",.?!"):
                    break
                words.append(w.strip(",.?!"))
            name = " ".join(words)
            full = m.group(0)[: m.start(1) - m.start(0)] + name
            if not name or name.lower() in _GENERIC or len(name) < 2:
                continue
            if name.lower() not in self.text and full.lower() not in self.institutions:
                return "other_institution", {"what": full, "issuer": self.issuer or "trường này"}
        if self.years:
            lo, hi = self.years
            for y in map(int, _YEAR.findall(q)):
                if y < lo or y > hi + 1:
                    return "other_year", {"year": y, "years": f"{lo}–{hi}" if lo != hi else str(lo)}
        return None
