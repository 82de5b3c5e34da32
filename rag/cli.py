"""The `rag` command: ingest, search, ask, chat, info, eval.

Exit codes: 0 success; 1 an ingest that indexed some files but failed others;
2 a usage or input error (the message says what to fix); 3 an index or model
error (missing, mismatched, busy); 4 an unexpected failure (a bug). Errors go to
stderr as ``error [code]: message`` (``rag.errors.redact``: paths kept, URL secrets
cut) and never include a traceback; an unexpected failure is one line naming where it
happened (``rag.errors.trace_line``), and RAG_LOG_LEVEL=DEBUG adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from .config import Settings
from .errors import InputError, RagError
from .texts import CHAT_HELP, CHAT_QUERY_USED, CHAT_RESET, CHAT_UNKNOWN_COMMAND, FULL_TEXT_HEADING

EXIT_PARTIAL = 1
EXIT_INPUT = 2
EXIT_INDEX = 3
EXIT_INTERNAL = 4


def _settings(args) -> Settings:
    settings = Settings.from_env(os.environ)
    changes = {}
    if getattr(args, "index", None):
        changes["index_dir"] = Path(args.index).expanduser()
    if getattr(args, "ocr", None):
        changes["ocr"] = args.ocr
    for name in ("llm", "adapter", "quantization"):
        if getattr(args, name, None):
            changes[name] = getattr(args, name)
    return settings.with_(**changes) if changes else settings


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def cmd_ingest(args) -> int:
    from .ingest import ingest

    settings = _settings(args)
    report = ingest(args.paths, settings, prune=args.prune, rebuild=args.rebuild, progress=not args.quiet)
    if args.json:
        print(_dump(report.to_dict()))
    else:
        print(report.summary())
    return 0 if report.ok else EXIT_PARTIAL


def _pipeline(args, load_llm: bool = True):
    from .pipeline import Pipeline

    return Pipeline.from_settings(_settings(args), load_llm=load_llm, progress=sys.stderr.isatty())


def cmd_search(args) -> int:
    if bool(args.question) == bool(args.queries):
        raise InputError("give either a question or --queries FILE (one question per line), not both or neither.")
    queries = _read_queries(Path(args.queries)) if args.queries else None  # a bad file fails before models load
    if queries is not None:  # and so does a bad question in it, named by its line, before any result is printed
        from .request import validate_question

        limit = _settings(args).max_question_chars
        for n, line in enumerate(queries, 1):
            if line.strip():
                try:
                    validate_question(line, limit)
                except InputError as e:
                    raise InputError(f"{args.queries}:{n}: {e}") from e
    from .render import citation_label, retrieval_dict

    pipe = _pipeline(args, load_llm=False)
    if queries is not None:
        for line in queries:
            if line.strip():
                print(_dump(retrieval_dict(pipe.search(line, args.top_k))), flush=True)
        return 0
    result = pipe.search(args.question, args.top_k)
    if args.json:
        print(_dump(retrieval_dict(result)))
        return 0
    if not result.hits:
        print("(no results)")
    for h in result.hits:
        print(f"{h.rank}. [{h.score:.4f}] {citation_label(h.chunk.citation())}")
        body = h.chunk.text.replace("\n", " ")
        print(f"   {body[:300]}{'…' if len(body) > 300 else ''}")
    return 0


MAX_QUERIES_BYTES = 10_000_000  # thousands of questions of RAG_MAX_QUESTION_CHARS: more is a mistake, not a batch


def _read_queries(path: Path) -> list[str]:
    if path.is_dir():
        raise InputError(f"--queries {path} is a directory: give a text file with one question per line.")
    if not path.exists():
        raise InputError(f"--queries {path}: no such file (a text file with one question per line).")
    if not path.is_file():
        raise InputError(f"--queries {path} is not a regular file (a pipe or device): give a text file with one "
                         "question per line.")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_QUERIES_BYTES + 1)  # never more than the limit, however large the file
    except OSError as e:
        raise InputError(f"--queries {path}: cannot read it ({e.strerror}).") from e
    if len(data) > MAX_QUERIES_BYTES:
        raise InputError(f"--queries {path} is over the {MAX_QUERIES_BYTES // 1_000_000} MB limit: split it into "
                         "several files.")
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"--queries {path} is not UTF-8 text (line {line}): save it as UTF-8.") from e


def _request(args, question: str, history=None) -> dict:
    req = {"question": question, "history": history or []}
    for name in ("top_k", "max_new_tokens", "temperature", "top_p", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            req[name] = value
    if getattr(args, "stop", None):
        req["stop"] = args.stop
    if getattr(args, "system_prompt", None):
        req["system_prompt"] = args.system_prompt
    return req


def _print_answer(pipe, req):
    """Stream the answer to the terminal as it is generated, then its sources (``rag.render.terminal_sources``)."""
    from .pipeline import Delta, Final
    from .render import terminal_sources

    final = None
    for event in pipe.stream(req):
        if isinstance(event, Delta):
            print(event.text, end="", flush=True)
        elif isinstance(event, Final):
            final = event.answer
    print()
    sources = terminal_sources(final)
    if sources:
        print(sources)
    return final


def cmd_ask(args) -> int:
    from .render import answer_dict

    pipe = _pipeline(args)
    req = _request(args, args.question)
    if args.json:
        print(_dump(answer_dict(pipe.answer(req))))
        return 0
    final = _print_answer(pipe, req)
    if args.full:
        _print_full(pipe, final)
    return 0


def _print_full(pipe, answer) -> None:
    """The whole Điều behind each quoted passage (``--full``)."""
    seen = set()
    for q in getattr(answer, "quotes", []) or []:
        path, text = pipe.full_text(q.chunk_id)
        if path not in seen:
            seen.add(path)
            print("\n" + FULL_TEXT_HEADING.format(path) + "\n" + text)


def cmd_chat(args) -> int:
    from .render import answer_dict
    from .texts import CHAT_GREETING

    pipe = _pipeline(args)
    history: list[dict] = []
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # bytes that are not UTF-8 reach validation, which says so
    info = sys.stderr if args.json else sys.stdout  # with --json, stdout carries only the answers
    print(CHAT_GREETING, file=info)
    while True:
        try:
            if args.json:
                print("\n> ", end="", file=info, flush=True)
            question = input("" if args.json else "\n> ").strip()
        except EOFError:
            print(file=info)
            return 0
        if question in ("/exit", "/quit"):
            return 0
        if question == "/reset":
            history = []
            print(CHAT_RESET, file=info)
            continue
        if question == "/help":
            print(CHAT_HELP, file=info)
            continue
        if re.fullmatch(r"/\w+", question):  # a mistyped command is not a question about the regulations
            print(CHAT_UNKNOWN_COMMAND.format(question, CHAT_HELP), file=info)
            continue
        if not question:
            continue
        try:
            if args.json:  # one JSON object per answer, "query" included
                final = pipe.answer(_request(args, question, history[-8:]))
                print(_dump(answer_dict(final)), flush=True)
            else:
                final = _print_answer(pipe, _request(args, question, history[-8:]))
                if final.query and final.query != question:
                    print(CHAT_QUERY_USED.format(final.query))
            if args.full and not args.json:
                _print_full(pipe, final)
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": final.text}]
        except InputError as e:
            from .errors import redact

            print(f"error [{e.code}]: {redact(str(e), client=False)}", file=sys.stderr)


def cmd_info(args) -> int:
    from .embed import EmbedSpec
    from .index import Index

    settings = _settings(args)
    index = Index.open(settings, EmbedSpec.from_settings(settings))
    manifest = index.manifest.to_dict()
    manifest["documents"] = [{"source": src, **(f.get("meta") or {"title": f.get("title")})}
                             for src, f in sorted(manifest["files"].items())]
    if not args.files:
        manifest["files"] = sorted(manifest["files"])
        manifest.pop("checksums", None)  # one line per index file: shown with --files
    manifest["location"] = index.location
    print(json.dumps(manifest, ensure_ascii=False, indent=2))
    return 0


def cmd_eval(args) -> int:
    from .evaluate import convert_alqac, evaluate, load_dataset, load_report, markdown_summary, write_outputs
    from .evaluate.runner import check_rows

    if args.convert_alqac:
        if args.dataset:
            raise InputError("give either DATASET.jsonl or --convert-alqac PATH OUT.jsonl, not both.")
        src, out = args.convert_alqac
        res = convert_alqac(src, out)
        print(f"wrote {res['questions']} questions to {res['dataset']}")
        if res["laws_dir"]:
            idx = Path(str(res["laws_dir"]).removesuffix("-laws") + "-index")
            print(f"wrote {res['laws']} laws to {res['laws_dir']}\nnext:\n"
                  f"  rag ingest '{res['laws_dir']}' --index '{idx}'\n"
                  f"  rag eval '{res['dataset']}' --index '{idx}' --retrieval-only")
        return 0
    if args.corpora:
        return _eval_corpora(args)
    if not args.dataset:
        raise InputError("give a dataset: rag eval DATASET.jsonl (or --corpora, or --convert-alqac PATH OUT.jsonl).")
    rows = load_dataset(args.dataset)  # before loading models: a bad line fails fast
    check_rows(rows, _settings(args), args.top_k, args.dataset)  # so does a question the pipeline would refuse
    compare = [load_report(p) for p in args.compare or []]
    # Beside the index, not in the working directory (often a source checkout).
    default_out = _settings(args).resolved_index_dir().parent / "rag-eval" / Path(args.dataset).stem
    out = _out_dir(Path(args.out) if args.out else default_out)  # before the run: its results are not lost
    pipe = _pipeline(args, load_llm=not args.retrieval_only)
    report = evaluate(pipe, rows, retrieval_only=args.retrieval_only, top_k=args.top_k,
                      dataset=Path(args.dataset).name, progress=sys.stderr.isatty())
    paths = write_outputs(report, out, compare)
    unknown = report["dataset"]["unknown_gold_documents"]
    if unknown:  # a gold that matches nothing scores zero: say so rather than let it lower the figures silently
        print(f"warning: {len(unknown)} gold document(s) name no indexed document (typo, or a file not ingested?): "
              + "; ".join(repr(d) for d in unknown[:5]) + ("; …" if len(unknown) > 5 else ""), file=sys.stderr)
    print(markdown_summary([report, *compare]))
    for kind, path in paths.items():
        print(f"{kind}: {path}" if path else f"{kind}: skipped (pip install matplotlib for the PNG chart)",
              file=sys.stderr)
    return 0


def _out_dir(out: Path) -> Path:
    """The folder `rag eval` writes its reports to, created now so that a bad --out fails before the run."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder for report.json, summary.md and recall.png.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out}: cannot create the folder ({e.strerror or e}): choose a writable one.") from e
    return out


def _eval_corpora(args) -> int:
    from .config import cache_home
    from .evaluate import suite, write_json

    data = Path(args.data).expanduser() if args.data else Path("../shared/data")
    work = Path(args.work).expanduser() if args.work else cache_home() / "rag" / "eval"
    walk = Path(__file__).resolve().parent.parent / "benchmarks" / "hust_walk.jsonl"
    result = suite.run(data, work, _settings(args), progress=sys.stderr.isatty(), walk=walk)
    print(suite.table(result))
    # Beside the indexes it evaluated, as `rag eval` does, not in the working directory (often a source checkout).
    out = _out_dir(Path(args.out) if args.out else work.parent / "rag-eval" / "corpora")
    for name, rep in result["columns"].items():
        write_json(rep, out / f"{name.replace(' ', '-')}.json")
    print(f"reports: {out}/", file=sys.stderr)
    return 0


def cmd_ui(args) -> int:
    try:  # before any model loads: without the extra, say how to install it
        import gradio  # noqa: F401
    except ImportError as e:
        raise InputError("the web chat needs gradio: pip install '.[ui]'", code="missing_dependency") from e
    from .ui import serve

    return serve(_settings(args), host=args.host, port=args.port, share=args.share, replicate=args.replicate,
                 runpod=args.runpod, work_dir=args.work_dir)


def cmd_serve(args) -> int:
    from .server import serve

    pipe = _pipeline(args)
    pipe.warmup()
    serve(pipe, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rag", description="Cited answers from Vietnamese university regulations.")
    sub = p.add_subparsers(dest="command", required=True)

    def index_arg(sp):
        sp.add_argument("--index", metavar="DIR", help="index directory (default: $RAG_INDEX_DIR or the demo index)")

    def gen_args(sp):
        sp.add_argument("--top-k", type=int, dest="top_k", help="passages to retrieve (1-20, default 5)")
        sp.add_argument("--max-new-tokens", type=int, dest="max_new_tokens")
        sp.add_argument("--temperature", type=float)
        sp.add_argument("--top-p", type=float, dest="top_p")
        sp.add_argument("--seed", type=int)
        sp.add_argument("--stop", action="append", help="stop sequence (repeatable, at most 4)")
        sp.add_argument("--system-prompt", dest="system_prompt")
        sp.add_argument("--llm", help="base model path or Hugging Face id (default: $RAG_LLM; none = extractive)")
        sp.add_argument("--adapter", help="LoRA adapter path or id (default: $RAG_ADAPTER)")
        sp.add_argument("--quantization", choices=["none", "8bit", "4bit"])

    sp = sub.add_parser("ingest", help="index files and folders")
    sp.add_argument("paths", nargs="+", metavar="PATH")
    index_arg(sp)
    sp.add_argument("--prune", action="store_true", help="drop indexed files that are no longer under PATH")
    sp.add_argument("--rebuild", action="store_true", help="discard the existing index and build from PATH only")
    sp.add_argument("--ocr", choices=["auto", "always", "never"], help="OCR for pages without a text layer")
    sp.add_argument("--json", action="store_true", help="print the report as JSON")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    sp.set_defaults(func=cmd_ingest)

    sp = sub.add_parser("search", help="retrieve passages (no answer)")
    sp.add_argument("question", nargs="?")
    sp.add_argument("--queries", metavar="FILE", help="one question per line; prints one JSON object per line")
    sp.add_argument("--top-k", type=int, dest="top_k")
    sp.add_argument("--json", action="store_true")
    index_arg(sp)
    sp.set_defaults(func=cmd_search)

    sp = sub.add_parser("ask", help="answer a question with citations")
    sp.add_argument("question")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--full", action="store_true", help="also print the whole Điều behind each quoted passage")
    index_arg(sp)
    gen_args(sp)
    sp.set_defaults(func=cmd_ask)

    sp = sub.add_parser("chat", help="interactive multi-turn session in the terminal")
    sp.add_argument("--json", action="store_true", help="print each answer as one JSON object (with the query "
                                                        "searched) on stdout; other lines go to stderr")
    sp.add_argument("--full", action="store_true", help="also print the whole Điều behind each quoted passage")
    index_arg(sp)
    gen_args(sp)
    sp.set_defaults(func=cmd_chat)

    sp = sub.add_parser("info", help="print the index manifest")
    index_arg(sp)
    sp.add_argument("--files", action="store_true", help="include per-file details")
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("eval", help="evaluate retrieval and answers on a dataset with gold citations")
    sp.add_argument("dataset", nargs="?", metavar="DATASET.jsonl",
                    help='one JSON object a line: {"question", "citations": [{"document", "article", "clause"}], '
                         '"answer", "expected": "answer"|"refuse"} (see docs/evaluation.md)')
    index_arg(sp)
    sp.add_argument("--retrieval-only", action="store_true", dest="retrieval_only",
                    help="rank metrics, refusal by the relevance gate and latency only; no answers, no LLM")
    sp.add_argument("--out", metavar="DIR", help="where report.json, summary.md and recall.png go "
                                                "(default: rag-eval/<dataset name> beside the index; with "
                                                "--corpora, rag-eval/corpora beside --work)")
    sp.add_argument("--top-k", type=int, dest="top_k", help="passages given to the answer (default: RAG_TOP_K)")
    sp.add_argument("--compare", action="append", metavar="REPORT.json",
                    help="an earlier report.json to show next to this run in the table and chart (repeatable)")
    sp.add_argument("--corpora", action="store_true",
                    help="evaluate the demo corpus, the HUST regulations and ALQAC on held-out questions and print "
                         "one table (docs/evaluation.md); indexes are built once into --work")
    sp.add_argument("--data", metavar="DIR", help="with --corpora: the data folder (default ../shared/data)")
    sp.add_argument("--work", metavar="DIR", help="with --corpora: where the indexes go (default "
                                                 "$XDG_CACHE_HOME/rag/eval, else ~/.cache/rag/eval)")
    sp.add_argument("--convert-alqac", nargs=2, metavar=("PATH", "OUT.jsonl"), dest="convert_alqac",
                    help="convert ALQAC 2023 (its folder or train.json) to a dataset, and its laws to documents "
                         "in OUT-laws/, then exit")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("ui", help="web chat (Gradio) over this index, a Replicate model or a RunPod endpoint")
    index_arg(sp)
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 = all)")
    sp.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    sp.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    remote = sp.add_mutually_exclusive_group()
    remote.add_argument("--replicate", metavar="OWNER/MODEL", help="answer with this Replicate model "
                                                                   "($REPLICATE_API_TOKEN)")
    remote.add_argument("--runpod", metavar="ENDPOINT_ID", help="answer with this RunPod endpoint ($RUNPOD_API_KEY)")
    sp.add_argument("--work-dir", dest="work_dir", metavar="DIR",
                    help="where uploaded files and their working index go (default: ~/.cache/rag/ui-work)")
    sp.set_defaults(func=cmd_ui)

    sp = sub.add_parser("serve", help="OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models, /health)")
    index_arg(sp)
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 = all)")
    sp.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sp.add_argument("--llm", help="base model path or Hugging Face id (default: $RAG_LLM; none = extractive)")
    sp.add_argument("--adapter", help="LoRA adapter path or id (default: $RAG_ADAPTER)")
    sp.add_argument("--quantization", choices=["none", "8bit", "4bit"])
    sp.set_defaults(func=cmd_serve)
    return p


def quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, optional-kernel notices) out of the command's output."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars follow this too


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rag info | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except RagError as e:
        from .errors import redact

        print(f"error [{e.code}]: {redact(str(e), client=False)}", file=sys.stderr)
        return EXIT_INPUT if e.code in ("invalid_input", "bad_config", "load_failed", "needs_ocr",
                                        "missing_dependency") else EXIT_INDEX
    except Exception as e:  # noqa: BLE001 - a bug: one line saying where, the traceback on request
        from .config import log_level
        from .errors import trace_line

        if log_level(os.environ) == "DEBUG":
            import traceback

            traceback.print_exc()
        code, _, line = trace_line(e).partition(": ")
        print(f"error [{code}]: {line} — please report it; RAG_LOG_LEVEL=DEBUG prints the traceback.",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
