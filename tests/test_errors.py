"""rag.errors: the one policy for what a client or a log may see, and the message every wrapper returns."""

from __future__ import annotations

import socket

import pytest

from rag.errors import (MAX_MESSAGE, IndexError_, InputError, ModelError, client_message, error_code,
                        is_fatal_device_error, is_out_of_memory, public_message, redact)

CLEAN = "'top_k' must be between 1 and 20 (got 50): lower it. Xem Điều 8, Khoản 2 — /v1/chat/completions, 1/0, true/false."


@pytest.mark.parametrize("client", [True, False])
def test_a_clean_message_survives_intact(client):
    assert redact(CLEAN, client=client) == CLEAN


def test_a_traceback_is_cut_off():
    text = 'model failed: boom\nTraceback (most recent call last):\n  File "/srv/app/x.py", line 3\nValueError: x'
    assert redact(text) == "model failed: boom"
    assert redact("Traceback (most recent call last):\n  File \"x.py\"") == "(details in the worker log)"


@pytest.mark.parametrize("client", [True, False])
def test_urls_lose_credentials_query_and_fragment(client):
    text = ("could not fetch https://user:ghp_SECRET@host.example:8443/a/x.tar.gz?X-Amz-Signature=S&token=T#f "
            "or http://h.example/b?sig=abc")
    out = redact(text, client=client)
    assert out == "could not fetch https://host.example:8443/a/x.tar.gz or http://h.example/b"
    assert "SECRET" not in out and "token" not in out and "sig=" not in out


def test_a_malformed_url_still_loses_its_secrets():
    out = redact("bad http://u:p@[::1/x?token=T", client=False)
    assert "u:p" not in out and "token" not in out and out.startswith("bad http://")


def test_server_paths_are_hidden_from_clients_only():
    text = "cannot open /home/ai/.cache/rag/index/manifest.json or file:///srv/models/x (see /tmp/a.log)"
    assert redact(text) == "cannot open <path> or <path> (see <path>)"
    assert redact(text, client=False) == text


def test_paths_under_any_directory_at_this_machines_root_are_hidden(monkeypatch):
    # A checkout in /check or /build is as much a server path as one in /home; routes are no paths.
    import rag.errors as errors

    monkeypatch.setattr(errors.os, "listdir", lambda path: ["check", "build", "v2x"])
    errors._abs_path.cache_clear()
    try:
        text = "missing '/check/work/main/index/bm25/scores.npy' in /build/x, route /v1/chat/completions"
        assert redact(text) == "missing '<path>' in <path>, route /v1/chat/completions"
        assert redact(text, client=False) == text
    finally:
        errors._abs_path.cache_clear()


def test_the_host_name_is_hidden_from_clients_only(monkeypatch):
    host = "gpu-worker-7f3a"
    monkeypatch.setattr(socket, "gethostname", lambda: host)  # what the machine is called: read at call time
    assert redact(f"worker {host} failed") == "worker <host> failed"
    assert redact(f"worker {host} failed", client=False) == f"worker {host} failed"


def test_whitespace_is_one_line_and_length_is_capped():
    assert redact("a\n\n  b\tc ") == "a b c"
    long = "x" * (MAX_MESSAGE + 50)
    assert redact(long) == "x" * MAX_MESSAGE + "…"
    assert redact("abcdef", limit=3) == "abc…"


def test_public_message_is_code_and_redacted_message():
    err = IndexError_("the index at /data/idx was built with another model: run `rag ingest` again.")
    assert error_code(err) == "index_error"
    assert public_message(err) == "index_error: the index at <path> was built with another model: run `rag ingest` again."
    assert client_message(InputError("bad top_k")) == "bad top_k"


def test_an_unexpected_error_shows_only_its_type():
    err = KeyError("/home/ai/secret.json at host xyz")
    assert public_message(err) == ("internal_error: the worker failed to answer (KeyError); "
                                   "the worker log has the details.")


def test_gpu_faults_are_told_apart():
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    fatal = RuntimeError("CUDA error: an illegal memory access was encountered")
    assert is_out_of_memory(oom) and not is_fatal_device_error(oom)
    assert is_fatal_device_error(fatal) and not is_out_of_memory(fatal)
    try:  # wrapped by rag.generate in a ModelError: the cause decides
        try:
            raise fatal
        except RuntimeError as e:
            raise ModelError("generation failed") from e
    except ModelError as wrapped:
        assert error_code(wrapped) == "device_error"
        assert public_message(wrapped).startswith("device_error: the GPU failed")
    assert error_code(ModelError("x", code="model_load_failed")) == "model_load_failed"
    assert public_message(oom).startswith("out_of_memory: ")
