"""The download policy for URLs a request names (``lora_weights``), against real HTTP servers on loopback.

(a) a deployment that cannot use an adapter refuses it before any request is made; (b) the cache limit bounds
the total of concurrent downloads; (c) private, loopback and link-local targets are refused unless
RAG_WEIGHTS_ALLOW_PRIVATE, at every redirect hop; (d) every failure to fetch is the same opaque error; (e) a
whole download ends at its deadline, however slowly the server drips.
"""

from __future__ import annotations

import http.server
import io
import logging
import os
import re
import tarfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from rag import weights
from rag.weights import download
from rag.config import Settings
from rag.errors import ConfigError, InputError
from rag.weights import WeightsCache, request_adapter


def adapter_tarball(payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # uncompressed: its size is what it unpacks to
        for name, data in (("adapter_config.json", b'{"peft_type": "LORA"}'), ("adapter_model.safetensors", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    """A loopback HTTP server: /ok.tar, /big-N.tar (sent in slices, so downloads overlap), /missing (404),
    /redirect?to=URL (302), /loop (302 to itself), /drip (one byte of body every 0.1 s, for
    ever), /drip-headers (the same, before the headers end). Counts every request by path."""

    def __init__(self, host: str = "127.0.0.1", big: bytes = b""):
        self.hits: dict[str, int] = {}
        self.headers: list[dict] = []
        ok, hits, headers = adapter_tarball(b"w" * 1000), self.hits, self.headers

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = urlsplit(self.path).path
                hits[path] = hits.get(path, 0) + 1
                headers.append(dict(self.headers))
                try:
                    if path == "/ok.tar":
                        self._send(ok)
                    elif path.startswith("/big-"):
                        self._send(big, slices=32, pause=0.01)
                    elif path == "/loop":
                        self.send_response(302)
                        self.send_header("Location", "/loop")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif path == "/redirect":
                        self.send_response(302)
                        self.send_header("Location", parse_qs(urlsplit(self.path).query)["to"][0])
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif path == "/drip-headers":  # the status line and headers, one byte at a time
                        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n" + b"X-Pad: " + b"p" * 10_000:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.1)
                    elif path == "/drip":
                        self.send_response(200)
                        self.send_header("Content-Length", "100000")
                        self.end_headers()
                        while True:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.1)
                    else:
                        self.send_error(404)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, body: bytes, slices: int = 1, pause: float = 0.0):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = max(1, len(body) // slices)
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    time.sleep(pause)

            def log_message(self, *a):
                pass

        class Threading(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.httpd = Threading((host, 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    @property
    def requests(self) -> int:
        return sum(self.hits.values())

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def cache(tmp_path, **kw) -> WeightsCache:
    return WeightsCache(tmp_path / "cache", **{"allow_private": True, **kw})


# ------------------------------------------------------------------------------- (a) check first
def test_a_deployment_that_cannot_use_an_adapter_makes_no_request(server, tmp_path):
    url = server.url("/ok.tar")
    with pytest.raises(InputError, match="lora_weights needs an LLM"):
        request_adapter(url, has_llm=False, cache=cache(tmp_path))
    with pytest.raises(InputError, match="RAG_MAX_ADAPTERS=0"):
        request_adapter(url, has_llm=True, cache=cache(tmp_path), max_adapters=0)
    with pytest.raises(InputError, match="must be an http"):
        request_adapter("file:///etc/passwd", has_llm=True, cache=cache(tmp_path))
    assert server.requests == 0
    assert Path(request_adapter(url, has_llm=True, cache=cache(tmp_path))).joinpath("adapter_config.json").exists()
    assert server.hits == {"/ok.tar": 1}


def test_the_runpod_worker_refuses_before_downloading(server, demo_pipeline):
    import asyncio

    from runpod_worker.handler import Worker

    w = Worker(demo_pipeline, max_concurrency=1)  # extractive: no LLM to put an adapter on

    async def go():
        return [o async for o in w.handler({"id": "j", "input": {"prompt": "Học bổng?",
                                                                  "lora_weights": server.url("/ok.tar")}})]

    (out,) = asyncio.run(go())
    assert out["error"].startswith("invalid_input: lora_weights needs an LLM"), out
    assert server.requests == 0


# ---------------------------------------------------------------------- (b) one budget for all
def test_concurrent_downloads_stay_within_the_limit_in_total(tmp_path):
    payload = os.urandom(1_500_000)
    big = adapter_tarball(payload)
    server = Server(big=big)
    limit = 5_000_000  # one download needs ~3 MB at its peak (tarball + unpacked): one at a time fits, not eight
    c = cache(tmp_path, max_bytes=limit)
    peak = {"disk": 0, "reserved": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            disk = 0
            for root, _dirs, files in os.walk(c.directory):
                for f in files:
                    try:
                        disk += os.lstat(os.path.join(root, f)).st_size
                    except OSError:
                        pass
            peak["disk"] = max(peak["disk"], disk)
            peak["reserved"] = max(peak["reserved"], c._reserved)
            time.sleep(0.002)

    results: dict[int, object] = {}

    def fetch(i):
        try:
            results[i] = request_adapter(server.url(f"/big-{i}.tar"), has_llm=True, cache=c)
        except Exception as e:  # noqa: BLE001 - recorded and checked below
            results[i] = e

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        done.set()
        watcher.join()
        server.close()
    assert peak["disk"] <= limit, peak
    assert peak["reserved"] <= limit and c._reserved == 0, (peak, c._reserved)
    ok = [r for r in results.values() if isinstance(r, str)]
    refused = [r for r in results.values() if not isinstance(r, str)]
    assert ok and len(ok) + len(refused) == 8, results
    assert all(getattr(e, "code", None) == "weights_busy" for e in refused), refused
    assert c.size() <= limit
    print(f"\n8 concurrent downloads of {len(big) / 1e6:.1f} MB against {limit / 1e6:.0f} MB: peak on disk "
          f"{peak['disk'] / 1e6:.1f} MB, {len(ok)} fetched, {len(refused)} refused as busy")


def test_a_download_larger_than_the_whole_cache_is_refused_while_it_streams(server, tmp_path):
    c = cache(tmp_path, max_bytes=500)
    with pytest.raises(InputError) as e:
        request_adapter(server.url("/ok.tar"), has_llm=True, cache=c)
    assert e.value.code == "weights_too_large" and c._reserved == 0


# --------------------------------------------------------------------- (c) public addresses only
@pytest.mark.parametrize("address, public", [
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("::1", False), ("fe80::1%eth0", False), ("fc00::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
])
def test_which_addresses_are_public(address, public):
    assert download._is_public(address) is public


def test_loopback_is_refused_by_default_without_a_request(server, tmp_path):
    for url in (server.url("/ok.tar"), server.url("/ok.tar").replace("127.0.0.1", "localhost")):
        with pytest.raises(InputError) as e:
            request_adapter(url, has_llm=True, cache=cache(tmp_path, allow_private=False))
        assert e.value.code == "weights_unreachable"
    assert server.requests == 0
    # the setting lets a campus deployment use its own file server
    s = Settings.from_env({"RAG_WEIGHTS_ALLOW_PRIVATE": "1", "RAG_WEIGHTS_CACHE": str(tmp_path / "c2")})
    assert WeightsCache.from_settings(s).allow_private
    assert not WeightsCache.from_settings(Settings.from_env({})).allow_private
    assert request_adapter(server.url("/ok.tar"), has_llm=True, cache=WeightsCache.from_settings(s))
    assert server.hits == {"/ok.tar": 1}


def test_every_redirect_hop_is_checked(tmp_path, monkeypatch):
    """127.0.0.1 stands for a public host here; a redirect from it to 127.0.0.2 (a private target) is refused
    before the second server is reached, unless the setting allows private targets."""
    public, private = Server("127.0.0.1"), Server("127.0.0.2")
    monkeypatch.setattr(download, "_is_public", lambda address: address == "127.0.0.1")
    url = public.url("/redirect?to=" + private.url("/ok.tar"))
    try:
        with pytest.raises(InputError) as e:
            request_adapter(url, has_llm=True, cache=cache(tmp_path, allow_private=False))
        assert e.value.code == "weights_unreachable"
        assert public.hits == {"/redirect": 1} and private.requests == 0
        assert request_adapter(url, has_llm=True, cache=cache(tmp_path, allow_private=True))
        assert private.hits == {"/ok.tar": 1}
    finally:
        public.close()
        private.close()


def test_a_redirect_loop_ends(server, tmp_path):
    with pytest.raises(InputError) as e:
        request_adapter(server.url("/loop"), has_llm=True, cache=cache(tmp_path))
    assert e.value.code == "weights_unreachable" and server.hits == {"/loop": weights.MAX_REDIRECTS + 1}


def test_the_hf_token_goes_to_the_first_hop_only(tmp_path, monkeypatch):
    first, second = Server(), Server()
    monkeypatch.setattr(download, "_is_hf_host", lambda url: f":{first.httpd.server_address[1]}/" in url)
    try:
        request_adapter(first.url("/redirect?to=" + second.url("/ok.tar")), has_llm=True, cache=cache(tmp_path),
                        token="hf_SECRET")
    finally:
        first.close()
        second.close()
    assert first.headers[0].get("Authorization") == "Bearer hf_SECRET"
    assert not any("hf_SECRET" in v for h in second.headers for v in h.values())


# --------------------------------------------------------------------------- (d) one opaque error
def test_every_failure_to_fetch_reads_the_same(server, tmp_path, caplog):
    from _cog_server import free_port

    cases = {
        "refused": (f"http://127.0.0.1:{free_port()}/x.tar", {}),
        "no such host": ("http://no-such-host.invalid/x.tar", {}),
        "404": (server.url("/missing"), {}),
        "timeout": (server.url("/drip"), {}),
        "private": (server.url("/ok.tar"), {"allow_private": False}),
    }
    messages, details = {}, {}
    for name, (url, kw) in cases.items():
        with pytest.raises(InputError) as e:
            request_adapter(url, has_llm=True, cache=cache(tmp_path, **{"deadline_s": 2.0, **kw}))
        assert e.value.code == "weights_unreachable", (name, e.value)
        messages[name] = str(e.value).replace(url, "<url>")
        details[name] = e.value.detail
    assert len(set(messages.values())) == 1, messages
    assert re.search(r"could not download <url>\. It must be an http\(s\) URL on a public address", messages["404"])
    # the reason is kept for the owner's log (rag.errors.RagError.detail), never in the message
    assert "Connection refused" in details["refused"] and "no-such-host.invalid" in details["no such host"]
    assert "HTTP 404" in details["404"] and "not finished within 2 s" in details["timeout"]
    assert "not a public address" in details["private"]


def test_the_runpod_worker_logs_the_reason_its_client_is_not_told(server, demo_pipeline, caplog, tmp_path,
                                                                 monkeypatch):
    import asyncio

    from runpod_worker.handler import Worker

    w = Worker(demo_pipeline, max_concurrency=1)
    monkeypatch.setattr(demo_pipeline, "generator", object())  # "has an LLM": the download is attempted
    w.adapters.cache = cache(tmp_path)

    async def go():
        return [o async for o in w.handler({"id": "j1", "input": {"prompt": "Học bổng?",
                                                                   "lora_weights": server.url("/missing")}})]

    with caplog.at_level(logging.WARNING, logger="rag.runpod"):
        (out,) = asyncio.run(go())
    assert out["error"].startswith("weights_unreachable: lora_weights: could not download") and "404" not in out["error"]
    assert "job j1: lora_weights: could not download" in caplog.text and "HTTP 404" in caplog.text


def test_the_deployments_own_urls_keep_their_reason(server, tmp_path):
    with pytest.raises(weights.RagError, match=r"HTTP 404") as e:
        WeightsCache(tmp_path / "c").fetch(server.url("/missing"), marker="adapter_config.json", what="RAG_ADAPTER")
    assert e.value.code == "weights_unreachable"


# ------------------------------------------------------------------------------ (e) the deadline
def test_a_slow_drip_is_cut_off_at_the_deadline(server, tmp_path):
    c = cache(tmp_path, deadline_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        request_adapter(server.url("/drip"), has_llm=True, cache=c)
    elapsed = time.monotonic() - t0
    assert e.value.code == "weights_unreachable"
    assert 0.9 <= elapsed < 3.0, elapsed
    assert c._reserved == 0 and not list(c.directory.glob(".*.download"))


def test_slow_headers_are_cut_off_too(server, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        request_adapter(server.url("/drip-headers"), has_llm=True, cache=cache(tmp_path, deadline_s=1.0))
    assert e.value.code == "weights_unreachable" and "not finished within 1 s" in e.value.detail
    assert time.monotonic() - t0 < 3.0


def test_the_deadline_is_a_setting():
    s = Settings.from_env({"RAG_WEIGHTS_DOWNLOAD_TIMEOUT": "30"})
    assert WeightsCache.from_settings(s).deadline_s == 30.0
    with pytest.raises(ConfigError, match="RAG_WEIGHTS_DOWNLOAD_TIMEOUT"):
        Settings.from_env({"RAG_WEIGHTS_DOWNLOAD_TIMEOUT": "0"})
