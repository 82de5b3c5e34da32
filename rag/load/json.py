"""JSON: one document per file, in one of two shapes (other keys are ignored)::

    {"title": "Quy chế đào tạo", "pages": ["text of page 1", "text of page 2"]}
    {"title": "Quy chế đào tạo", "text": "the whole text"}

``title`` is optional; a list of documents is not accepted. The file's size is capped by
``RAG_MAX_JSON_MB`` (``json.loads`` builds every value: up to about 40 times the file's size for
many tiny values) and its pages by ``MAX_PAGES``.
"""

from __future__ import annotations

import json

from ..config import Settings
from ..errors import LoadError
from ..types import Page
from .common import newlines

MAX_PAGES = 20_000  # each page becomes an object: a file of millions of tiny pages would cost gigabytes

_JSON_SHAPE = (
    'one object: {"title": "...", "pages": ["page 1 text", ...]} or {"title": "...", "text": "..."} '
    "(title optional)"
)


def read(data: bytes, name: str, settings: Settings | None = None, ocr=None) -> tuple[str | None, list[Page]]:
    """Title and pages of a JSON document (the shapes in the module docstring)."""
    try:
        obj = json.loads(data)  # bytes: UTF-8/16/32 detected by json itself
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{name} is not valid JSON ({e}): fix it; the accepted shape is {_JSON_SHAPE}.") from e
    except ValueError as e:  # a number of over 4300 digits (Python's limit on converting text to int)
        raise LoadError(f"{name} holds a number too long to read ({str(e)[:60]}…): remove it or write it as "
                        "a string.") from e

    def bad(why: str) -> LoadError:
        return LoadError(f"{name}: {why}. The accepted shape is {_JSON_SHAPE}.")

    if not isinstance(obj, dict):
        raise bad(f"the top level is a {type(obj).__name__}, not an object (one document per file)")
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise bad('"title" must be a string')
    if ("pages" in obj) == ("text" in obj):
        raise bad('it must have exactly one of "pages" and "text"')
    if "text" in obj:
        if not isinstance(obj["text"], str):
            raise bad('"text" must be a string')
        return title, [Page(number=1, text=newlines(obj["text"]))]
    pages = obj["pages"]
    if not isinstance(pages, list):
        raise bad('"pages" must be a list of strings')
    if len(pages) > MAX_PAGES:
        raise LoadError(f"{name} has {len(pages)} pages, over the {MAX_PAGES} a JSON document may have: split it.",
                        code="file_too_large")
    for i, t in enumerate(pages):
        if not isinstance(t, str):
            raise bad(f'"pages"[{i}] is a {type(t).__name__}, not a string')
    return title, [Page(number=i, text=newlines(t)) for i, t in enumerate(pages, start=1)]
