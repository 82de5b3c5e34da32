"""Downloads of adapters and indexes: secrets stay with the host they belong to."""

from __future__ import annotations

import http.server
import threading

from rag.weights import _download, _is_hf_host


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
        _download(url, tmp_path / "a.part", 10_000, "lora_weights", RuntimeError, "hf_secret_token")
    finally:
        server.shutdown()
    assert (tmp_path / "a.part").read_bytes() == b"payload"
    assert seen and not any("hf_secret_token" in v for h in seen for v in h.values())
    assert _is_hf_host("https://huggingface.co/org/repo/resolve/main/x.tar.gz")
    assert _is_hf_host("https://cdn-lfs.huggingface.co/x")
    assert not _is_hf_host("https://huggingface.co.evil.example/x")
    assert not _is_hf_host("https://example.com/huggingface.co/x")
