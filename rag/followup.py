"""Follow-up questions: a question that leans on the conversation becomes a standalone retrieval query.

"Học kỳ chính em được đăng ký tối đa bao nhiêu tín chỉ?" then "Còn học kỳ hè thì
sao?" is searched as "Học kỳ hè em được đăng ký tối đa bao nhiêu tín chỉ?".

The rule (no LLM needed; with an LLM configured the pipeline asks it instead and
falls back to this rule when its rewrite is unusable):

1. A question is a follow-up when there is an earlier user turn and it is
   marked as one — it starts with "còn", "thế còn", "vậy còn", "vậy", "thế",
   "nếu", "trường hợp", "đối với", "riêng", "với"…, ends with "thì sao", "thì
   thế nào", "thì như thế nào", "thì được không"…, or points back ("nó", "điều
   đó", "trường hợp đó", "như vậy") — and what is left after those markers is
   short (at most ``MAX_REST_WORDS`` words). A long question is standalone
   whatever it starts with.
2. The previous question (itself made standalone first, so chains of
   follow-ups work) is the frame. What is left of the follow-up replaces the
   phrase of the frame that starts with the same word(s) ("học kỳ chính" →
   "học kỳ hè", "loại A" → "loại B"); with no shared word it is added to the
   frame; with nothing left the frame is searched again.

Out of scope: resolving references to the assistant's answers ("cái thứ hai"),
and follow-ups across more than the user's own earlier questions.
"""

from __future__ import annotations

import re

from .normalise import normalise_text

MAX_REST_WORDS = 8
MAX_HISTORY_TURNS = 12  # only the latest user turns are read

_LEAD = re.compile(
    r"^(?:(?:thế|vậy|vậy thì|thế thì|còn|thế còn|vậy còn|còn về|nếu|nếu là|trường hợp|đối với|với|riêng|"
    r"ngoài ra|thế nếu|vậy nếu|thế với|vậy với|còn với|còn đối với)\b[\s,]*)+", re.I)
_TAIL = re.compile(
    r"[\s,]*(?:thì|thế|vậy)?\s*(?:sao|thế nào|như thế nào|ra sao|thì sao|được không|có được không|có không|"
    r"có giống không|cũng vậy không|cũng thế không)?\s*(?:ạ|à|nhỉ|nhé|vậy|thế)?\s*[?.!…]*$", re.I)
_POINTER = re.compile(r"\b(?:nó|điều đó|việc đó|trường hợp đó|trường hợp này|cái đó|khi đó|như vậy|như thế|"
                      r"quy định đó|quy định này)\b", re.I)
_MARKED_TAIL = re.compile(r"(?:thì sao|thế nào|ra sao|được không|có không|cũng vậy không|cũng thế không)"
                          r"\s*(?:ạ|à|nhỉ|nhé|vậy|thế)?\s*[?.!…]*$", re.I)
_WORD = re.compile(r"[^\W_]+", re.U)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _rest(question: str) -> tuple[str, bool]:
    """The follow-up without its markers, and whether it carried any marker at all."""
    q = normalise_text(question).strip()
    marked = bool(_LEAD.match(q) or _MARKED_TAIL.search(q) or _POINTER.search(q))
    rest = _LEAD.sub("", q)
    rest = _TAIL.sub("", rest)
    rest = _POINTER.sub("", rest)
    return re.sub(r"\s+", " ", rest).strip(" ,.?!"), marked


def is_followup(question: str, history: list[dict] | None) -> bool:
    if not _user_turns(history):
        return False
    rest, marked = _rest(question)
    return marked and len(_words(rest)) <= MAX_REST_WORDS


def _user_turns(history: list[dict] | None) -> list[str]:
    turns = [t.get("content") for t in (history or []) if isinstance(t, dict) and t.get("role") == "user"]
    return [t for t in turns if isinstance(t, str) and t.strip()][-MAX_HISTORY_TURNS:]


def standalone_query(question: str, history: list[dict] | None) -> str:
    """``question`` itself when it stands alone; otherwise the earlier question rewritten with it (see above)."""
    turns = _user_turns(history)
    if not turns or not is_followup(question, history):
        return question
    frame = turns[0]
    for k in range(1, len(turns)):  # earlier follow-ups are resolved in order
        frame = _merge(frame, turns[k]) if is_followup(turns[k], [{"role": "user", "content": frame}]) \
            else turns[k]
    return _merge(frame, question)


def _merge(frame: str, followup: str) -> str:
    rest, _ = _rest(followup)
    if not rest:
        return frame
    f_words = frame.strip().rstrip("?.!… ").split()
    r_words = rest.split()
    low = [re.sub(r"\W", "", w).lower() for w in f_words]
    r_low = [re.sub(r"\W", "", w).lower() for w in r_words]
    # the longest head of the follow-up found in the frame: that phrase is what the follow-up replaces
    for size in range(len(r_low), 0, -1):
        head = r_low[:size]
        for i in range(len(low) - size + 1):
            if low[i:i + size] == head and (size > 1 or len(head[0]) > 2):
                span = max(len(r_words), size)
                out = f_words[:i] + r_words + f_words[i + span:]
                return _sentence(" ".join(out))
    return _sentence(" ".join(f_words) + ", " + rest)


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(",") + "?"
