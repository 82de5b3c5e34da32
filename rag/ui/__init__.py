"""The web chat: a Gradio page over a backend (this machine's pipeline, a Replicate model or a RunPod endpoint).

``rag ui`` calls ``serve()``. The page has two tabs:

- **Hỏi đáp**: streamed answers; the sources of the latest answer beside them
  (document, Điều/Khoản, page, the quoted passage, expandable); a clear "không
  tìm thấy" state; follow-up questions (the conversation travels as history);
  top_k, temperature and max tokens with the limits of ``AskRequest``; example
  questions drawn from the loaded corpus.
- **Chỉ mục**: what the index holds (documents, pages, chunks, embedding model,
  when it was built), and an upload box that ingests files into a separate
  working index — never the deployment's — which the chat can then answer from.

Everything shown comes from documents, models or people, so it is rendered as
text: chat messages are HTML-escaped before the Chatbot (Markdown off) sees
them, and the sources and index panels are built here from escaped strings. A
``<script>`` in a regulation shows as those characters. Gradio's analytics are
off and the page loads nothing from outside the server.

``ChatApp`` holds the callbacks as plain methods (tested without a browser);
``build_blocks`` wires them to Gradio components. Gradio is imported inside
functions only.

Modules: ``layout`` (the Gradio page, ``launch``, ``serve``), ``app`` (``ChatApp``: the
callbacks and their state), ``panels`` (the escaped HTML of the sources and index
panels), ``backends`` (where answers come from: ``LocalBackend``, the failures of
remote calls in plain words) and ``remote`` (Replicate and RunPod). Its sentences are
in ``rag.texts``; the answer's text forms and the sources panel's data in ``rag.render``.

Out of scope: authentication (keep the page on 127.0.0.1 or behind your own
proxy; ``--share`` makes it, upload box included, public to anyone with the
link), one working index per visitor, deleting documents from the UI.
"""

from __future__ import annotations

from ..texts import WORK_CHOICE
from .app import ChatApp, example_questions, request_limits, user_message
from .backends import BackendError, LocalBackend, describe_error
from .layout import build_blocks, launch, serve
from .panels import index_html, sources_html, text_html
from .remote import ReplicateBackend, RunPodBackend, make_backend, replicate_input, runpod_input

__all__ = ["ChatApp", "build_blocks", "launch", "serve", "sources_html", "index_html", "example_questions",
           "request_limits", "text_html", "user_message", "WORK_CHOICE", "BackendError", "LocalBackend",
           "ReplicateBackend", "RunPodBackend", "make_backend", "describe_error", "replicate_input", "runpod_input"]
