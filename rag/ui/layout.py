"""The Gradio page: components wired to ``ChatApp``'s callbacks, the server's launch, and ``rag ui``.

Gradio is imported inside these functions only; its analytics are off and the
page loads nothing from outside the server.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import texts as t
from ..config import Settings
from .app import ChatApp, new_state
from .panels import PLACEHOLDER_SOURCES

CSS = """
#rag-chat span.md, .rag-error, .rag-note { white-space: pre-wrap; }
#rag-sources .rag-source, .rag-index-box { border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 8px 10px; margin-bottom: 8px; }
#rag-sources summary { cursor: pointer; font-weight: 600; }
.rag-passage { white-space: pre-wrap; font-size: 0.92em; margin-top: 6px; padding: 6px 8px;
  background: var(--background-fill-secondary); border-radius: 6px; max-height: 320px; overflow: auto; }
.rag-meta, .rag-footer { font-size: 0.85em; color: var(--body-text-color-subdued); }
.rag-query { font-style: italic; margin-bottom: 6px; color: var(--body-text-color-subdued); }
.rag-refusal, .rag-error { border-left: 4px solid #d97706; padding: 8px 12px; border-radius: 6px;
  background: rgba(217,119,6,0.08); }
.rag-error { border-left-color: #dc2626; background: rgba(220,38,38,0.08); }
.rag-warn { color: #b45309; font-size: 0.9em; }
.rag-index table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
.rag-index th, .rag-index td { border-bottom: 1px solid var(--border-color-primary); padding: 4px 6px;
  text-align: left; }
"""


def _quiet_gradio() -> None:
    # No telemetry or version checks: the page may serve a university's internal documents.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def build_blocks(app: ChatApp):
    """The Gradio page for ``app``."""
    _quiet_gradio()
    import gradio as gr

    from ..load import SUPPORTED

    lim = app.limits
    with gr.Blocks(title=t.UI_TITLE, analytics_enabled=False) as demo:
        state = gr.State(new_state())
        gr.Markdown(f"## {t.UI_TITLE}\n{t.UI_INTRO}")
        with gr.Tab(t.UI_TAB_CHAT):
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label=t.UI_CHATBOT, elem_id="rag-chat", height=480, render_markdown=False,
                                         sanitize_html=True, latex_delimiters=[], allow_tags=False,
                                         feedback_options=None, group_consecutive_messages=False,
                                         buttons=["copy", "copy_all"])  # no "share": it posts to Hugging Face
                    question = gr.Textbox(placeholder=t.UI_QUESTION_PLACEHOLDER, show_label=False,
                                          elem_id="rag-question", max_length=app.settings.max_question_chars,
                                          autofocus=True)
                    with gr.Row():
                        send = gr.Button(t.UI_SEND, variant="primary", elem_id="rag-send")
                        stop = gr.Button(t.UI_STOP, elem_id="rag-stop")
                        clear = gr.Button(t.UI_NEW_CHAT, elem_id="rag-clear")
                    gr.Examples(examples=[[q] for q in app.examples], inputs=[question], label=t.UI_EXAMPLES)
                with gr.Column(scale=2):
                    sources = gr.HTML(PLACEHOLDER_SOURCES, elem_id="rag-sources", js_on_load=None, padding=True)
            with gr.Accordion(t.UI_OPTIONS, open=False):
                choice = gr.Radio(app.choices(), value=app.backend.label, label=t.UI_ANSWER_FROM, elem_id="rag-choice")
                top_k = gr.Slider(lim["top_k"][0], lim["top_k"][1], value=lim["top_k"][2], step=1,
                                  label=t.UI_TOP_K, elem_id="rag-top-k")
                temperature = gr.Slider(lim["temperature"][0], lim["temperature"][1], value=lim["temperature"][2],
                                        step=0.05, label=t.UI_TEMPERATURE, elem_id="rag-temperature",
                                        info=t.UI_TEMPERATURE_INFO)
                max_new = gr.Slider(lim["max_new_tokens"][0], lim["max_new_tokens"][1],
                                    value=lim["max_new_tokens"][2], step=1, label=t.UI_MAX_NEW_TOKENS,
                                    elem_id="rag-max-new-tokens", info=t.UI_MAX_NEW_TOKENS_INFO)
        with gr.Tab(t.UI_TAB_INDEX):
            gr.HTML(app.index_page(), elem_id="rag-index", js_on_load=None)
            files = gr.File(label=t.UI_UPLOAD.format(types=", ".join(sorted(SUPPORTED)), max_mb=app.settings.max_file_mb),
                            file_count="multiple", file_types=sorted(SUPPORTED), elem_id="rag-upload")
            ingest_btn = gr.Button(t.UI_INGEST, variant="primary", elem_id="rag-ingest")
            status = gr.Textbox(label=t.UI_PROGRESS, lines=5, interactive=False, elem_id="rag-ingest-status")
            work = gr.HTML(app.work_index_page(), elem_id="rag-work-index", js_on_load=None)

        def upload(files, progress=gr.Progress()):
            yield from app.upload(files, progress=lambda f, desc: progress(f, desc=desc))

        ins = [question, state, top_k, temperature, max_new, choice]
        outs = [chatbot, state, sources, question]
        ask1 = question.submit(app.respond, ins, outs)
        ask2 = send.click(app.respond, ins, outs)
        stop.click(None, None, None, cancels=[ask1, ask2])
        clear.click(app.clear, None, outs, cancels=[ask1, ask2])
        chatbot.clear(app.clear, None, outs, cancels=[ask1, ask2])  # its trash icon must reset the history too
        ingest_btn.click(upload, [files], [status, work], concurrency_limit=1)
    return demo


def concurrency(backend) -> int:
    """Questions answered at once: one with a local LLM (generation is serialised), more otherwise."""
    if backend.kind == "local":
        return 1 if getattr(backend.pipeline, "generator", None) is not None else 4
    return 8


def launch(app: ChatApp, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           block: bool = True):
    """Start the server; with ``block=False`` return at once (tests) — call ``.close()`` on the result."""
    demo = build_blocks(app)
    demo.queue(default_concurrency_limit=concurrency(app.backend))
    import gradio as gr

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block,
                max_file_size=int(app.settings.max_file_mb * 1024 * 1024), ssr_mode=False, mcp_server=False,
                enable_monitoring=False, show_error=False, theme=theme, css=CSS)
    return demo


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          replicate: str | None = None, runpod: str | None = None, work_dir: str | Path | None = None,
          env=None) -> int:
    """``rag ui``: build the backend (failing now, not at the first question), then serve until interrupted."""
    from .remote import make_backend

    backend = make_backend(settings, replicate=replicate, runpod=runpod, env=env)
    if hasattr(backend, "check"):
        backend.check()
    app = ChatApp.create(settings, backend, work_dir=work_dir)
    launch(app, host=host, port=port, share=share, block=True)
    return 0
