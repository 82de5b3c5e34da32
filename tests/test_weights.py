"""Downloads of adapters and indexes: secrets stay with the host they belong to."""

from __future__ import annotations

import http.server
import threading

from rag.errors import ModelError
from rag.weights.download import _download, _is_hf_host


def test_hf_token_is_sent_only_to_hugging_face(tmp_path):
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers))
            body = b"payload"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/adapter.tar.gz"
        _download(url, tmp_path / "a.part", 10_000, "lora_weights", ModelError, "hf_secret_token", allow_private=True)
    finally:
        server.shutdown()
    assert (tmp_path / "a.part").read_bytes() == b"payload"
    assert seen and not any("hf_secret_token" in v for h in seen for v in h.values())
    assert _is_hf_host("https://huggingface.co/org/repo/resolve/main/x.tar.gz")
    assert _is_hf_host("https://cdn-lfs.huggingface.co/x")
    assert not _is_hf_host("https://huggingface.co.evil.example/x")
    assert not _is_hf_host("https://example.com/huggingface.co/x")


def test_urls_in_messages_lose_credentials_and_signatures():
    from rag.config import Settings
    from rag.openai_compat import served_model_name
    from rag.errors import redact

    assert redact("https://user:ghp_SECRET@host.example:8443/a/x.tar.gz?X-Amz-Signature=S", client=False) == \
        "https://host.example:8443/a/x.tar.gz"
    s = Settings().with_(llm="org/base", adapter="https://b.example/ad.tar.gz?X-Amz-Signature=SECRET")
    assert served_model_name(s) == "ad.tar.gz"


def test_auth_header_is_not_carried_across_a_redirect():
    """Redirects are followed by rag.weights itself: tests/test_weights_policy.py sends a token through a real
    redirect (test_the_hf_token_goes_to_the_first_hop_only)."""
    import inspect

    from rag.weights import cache, download

    for module in (download, cache):
        assert "urlopen" not in inspect.getsource(module)  # no library follows a redirect behind our back


def test_tarball_that_unpacks_past_the_limit_is_refused(tmp_path):
    import io
    import tarfile

    import pytest

    from rag.errors import ModelError
    from rag.weights import ADAPTER_MARKER, unpack_tarball

    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in ((ADAPTER_MARKER, b"{}"), ("zeros.bin", b"\0" * 200_000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert archive.stat().st_size < 5_000
    with pytest.raises(ModelError, match="would unpack to"):
        unpack_tarball(archive, tmp_path / "out", marker=ADAPTER_MARKER, what="lora_weights", max_bytes=100_000)
    assert unpack_tarball(archive, tmp_path / "ok", marker=ADAPTER_MARKER, what="lora_weights", max_bytes=10**6)
