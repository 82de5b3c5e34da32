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
- ``other_cohort``: the question names a cohort ("K70", "khóa 65") that neither the
  documents' text nor their file names or titles name, when they name any
  ("QD_ngoai_ngu_tu_K68.pdf" names K68).

``unstated_fact(query, passages, terms)`` is the cue that needs the retrieved
passages: the question asks for a kind of fact that regulations state in a
recognisable form — an amount of money ("bao nhiêu tiền", "học phí … bao nhiêu"),
a time of day ("mấy giờ", "giờ mở cửa"), a month ("tháng mấy") — and no sentence of
the best passages states one next to one of the question's other words.

Out of scope: cohort ranges ("từ K68" counts as K68 only, so a later cohort is
refused and the refusal names the cohorts the documents do name); institutions
named in lower case; other kinds of fact (a person, a place), which regulations
state in no form this reading can check.
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
# a cohort: "K68", "k70", "khóa 65" (in a file name, "_" is a space)
_COHORT = re.compile(r"(?<![^\W_])(?:K|khóa\s+)(\d{2})(?!\d)", re.I)
_YEAR = re.compile(r"(?<![\d/])((?:19|20)\d\d)(?![\d/])")
_GENERIC = {"đại học", "trường", "học viện", "cao đẳng"}


@dataclass
class Scope:
    institutions: set[str] = field(default_factory=set)  # lower-case names the corpus mentions
    text: str = ""  # the corpus, lower case, one line (names are searched in it)
    years: tuple[int, int] | None = None  # earliest and latest year the corpus mentions
    issuer: str | None = None  # the most frequent issuer, for the refusal message
    cohorts: set[int] = field(default_factory=set)  # the cohorts the documents name (68 for "K68")

    @classmethod
    def from_index(cls, index) -> "Scope":
        texts = [f"{c.header}\n{c.text}" for c in index.chunks]
        corpus = normalise_text("\n".join(texts))
        issuers = [((f.get("meta") or {}).get("issuer") or "") for f in index.manifest.files.values()]
        issuers = [i for i in issuers if i]
        years = sorted({int(y) for y in _YEAR.findall(corpus)} |
                       {int(m) for f in index.manifest.files.values()
                        for m in _YEAR.findall(str((f.get("meta") or {}).get("date") or ""))})
        names = " ".join([normalise_text(f"{name} {(f.get('meta') or {}).get('title') or ''}")
                          for name, f in index.manifest.files.items()]).replace("_", " ")
        return cls(institutions={i.lower() for i in issuers}, text=re.sub(r"\s+", " ", corpus.lower()),
                   years=(years[0], years[-1]) if years else None,
                   issuer=max(set(issuers), key=issuers.count) if issuers else None,
                   cohorts={int(c) for c in _COHORT.findall(f"{corpus}\n{names}")})

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
        if self.cohorts:
            for c in map(int, _COHORT.findall(q)):
                if c not in self.cohorts:
                    return "other_cohort", {"cohort": f"K{c}", "cohorts": ", ".join(f"K{x}" for x in sorted(self.cohorts))}
        return None


# The kinds of fact a question can ask for that regulations state in a form one can recognise: how the question
# asks for it, how a sentence states it, and the words of the question that name the kind rather than the topic.
_FACTS = {
    "money": (re.compile(r"\b(?:bao nhiêu tiền|(?:giá tiền|giá vé|giá)\s+(?:là\s+)?bao nhiêu|"
                         r"(?:học phí|lệ phí|chi phí|phí)\b.*\bbao nhiêu|mấy (?:triệu|nghìn|trăm nghìn))", re.I),
              re.compile(r"\d[\d.,]*\s*(?:đồng|đ\b|vnđ|vnd|usd|triệu|nghìn|ngàn|lần|%)|\b(?:triệu|nghìn|ngàn) đồng|"
                         r"\bmột nửa\b|\bmiễn\b", re.I),
              frozenset(("tiền", "học_phí", "phí", "giá", "mức", "lệ_phí", "chi_phí"))),
    "clock": (re.compile(r"\b(?:mấy giờ|giờ mở cửa|giờ đóng cửa|giờ làm việc)", re.I),
              re.compile(r"\b\d{1,2}\s*(?:giờ|h|g)\s*\d{0,2}\b|\b\d{1,2}:\d{2}\b", re.I),
              frozenset(("giờ", "lúc"))),
    "month": (re.compile(r"\btháng (?:mấy|nào)\b", re.I),
              re.compile(r"\btháng\s+(?:\d{1,2}|một|hai|ba|tư|năm|sáu|bảy|tám|chín|mười)\b", re.I),
              frozenset(("tháng",))),
}


def unstated_fact(query: str, passages: list[str], terms) -> str | None:
    """The kind of fact the question asks for ("money", "clock", "month") when no sentence of ``passages`` states
    one beside another of the question's content words (``terms``, word-segmented); else None."""
    from .normalise import sentences, syllables

    q = normalise_text(query)
    for kind, (asks, states, kind_words) in _FACTS.items():
        if not asks.search(q):
            continue
        anchors = [" " + t.replace("_", " ") + " " for t in terms if t not in kind_words]
        found = False
        for text in passages:
            for sent in sentences(normalise_text(text)):
                if states.search(sent):
                    syl = " " + " ".join(syllables(sent)) + " "
                    if not anchors or any(a in syl for a in anchors):
                        found = True
                        break
            if found:
                break
        if not found:
            return kind
    return None
