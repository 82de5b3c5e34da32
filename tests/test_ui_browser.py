"""The web chat in a real browser: headless Chromium driven by Selenium through the system chromedriver.

1. ``rag ui`` started as a command on 127.0.0.1: a question typed, the streamed
   answer awaited, the sources panel checked for the right Điều, a screenshot
   saved, and every request the page made checked to stay on 127.0.0.1.
2. A document with ``<script>`` and ``<img onerror>`` planted in it: the answer,
   sources and index page show the markup as text and none of it runs.
3. The upload box: a file ingested into the working index (progress shown, the
   main index untouched), then answered from when the chat is switched to it.

Skipped, saying why, only where Chromium, its driver or Selenium is missing
(`.ci/run` installs the Debian packages chromium and chromium-driver).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

QUESTION = "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?"
PLANTED_DOC = """# Quy định <script>window.__pwned=3</script> về nhà xe

Điều 1. Nhà xe <script>window.__pwned=1</script>
1. Sinh viên gửi xe đạp và xe máy tại nhà xe khu B <img src=x onerror="window.__pwned=2"> từ 6 giờ đến 22 giờ.
2. Phí gửi xe máy là 3.000 đồng mỗi lượt.

Điều 2. Mất xe
Nhà xe bồi thường theo giá trị còn lại khi sinh viên mất xe có vé gửi hợp lệ.
"""
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000", "--lang=vi"]


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = _find("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    driver_path = _find("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium is not installed here (Debian packages chromium and chromium-driver; "
                    f"found browser={chromium}, driver={driver_path})")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager is bypassed anyway: both paths are given
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc=None, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"`rag ui` exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def by_id(driver, elem_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id)


def ask(driver, url: str, question: str, expect: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 60, poll_frequency=0.1)
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#rag-question textarea"))
    box.send_keys(question)
    box.send_keys(Keys.ENTER)
    # The streamed answer has arrived when the sources panel (filled by the final event) names the article.
    wait.until(lambda d: expect in by_id(d, "rag-sources").text)
    return wait


def requested_urls(driver) -> set[str]:
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            params = message["params"]
            urls.add(params["request"]["url"] if "request" in params else params["url"])
    return urls


def test_chat_page_answers_with_the_right_article(browser, demo_index_dir, tmp_path):
    """`rag ui` as a user starts it; the page streams an answer and names Điều 8 in its sources."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "GRADIO_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "ui", "--index", str(demo_index_dir), "--port", str(port),
                             "--work-dir", str(tmp_path / "work")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_http(url, proc)
        browser.get_log("performance")  # start the request log from this page
        ask(browser, url, QUESTION, "Điều 8. Đăng ký khối lượng học tập")
        chat, sources = by_id(browser, "rag-chat").text, by_id(browser, "rag-sources").text
        shot = tmp_path / "chat.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        assert QUESTION in chat and "24 tín chỉ" in chat
        assert sources.startswith("Nguồn (") and "[1] Quy chế đào tạo trình độ đại học, Điều 8" in sources
        assert "Quy chế đào tạo trình độ đại học" in sources and "quy-che-dao-tao.md" in sources
        # Nothing outside this server was fetched: no web fonts, CDNs or analytics.
        outside = [u for u in requested_urls(browser)
                   if u.split(":", 1)[0] in ("http", "https", "ws", "wss") and f"//127.0.0.1:{port}/" not in u]
        assert outside == []
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def planted_page(browser, embedder, settings_factory, tmp_path_factory):
    """A page over an index holding one document with markup planted in it (served in this process)."""
    from rag.ui import LocalBackend
    from rag.ingest import ingest
    from rag.pipeline import Pipeline
    from rag.ui import ChatApp, launch

    root = tmp_path_factory.mktemp("planted")
    (root / "docs").mkdir()
    (root / "docs" / "nha-xe.md").write_text(PLANTED_DOC, encoding="utf-8")
    settings = settings_factory(root / "index")
    assert ingest([root / "docs"], settings, embedder=embedder, progress=False).ok
    app = ChatApp.create(settings, LocalBackend(Pipeline.from_settings(settings, embedder=embedder)),
                         work_dir=root / "work")
    port = free_port()
    demo = launch(app, host="127.0.0.1", port=port, block=False)
    yield f"http://127.0.0.1:{port}/", root
    demo.close()


def test_markup_planted_in_a_document_is_shown_as_text_and_never_runs(browser, planted_page):
    from selenium.webdriver.common.by import By

    url, root = planted_page
    wait = ask(browser, url, "Sinh viên gửi xe máy ở đâu?", "Điều 1")
    chat, sources = by_id(browser, "rag-chat").text, by_id(browser, "rag-sources").text
    browser.save_screenshot(str(root / "planted.png"))
    for shown in (chat, sources):
        assert "Nhà xe <script>window.__pwned=1</script>" in shown
        assert '<img src=x onerror="window.__pwned=2">' in shown
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    planted = "#rag-chat script, #rag-sources script, #rag-sources img, img[src='x'], [onerror]"
    assert browser.execute_script(f"return document.querySelectorAll(\"{planted}\").length") == 0

    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Chỉ mục')]").click()
    wait.until(lambda d: "nha-xe.md" in by_id(d, "rag-index").text)
    assert "Quy định <script>window.__pwned=3</script> về nhà xe" in by_id(browser, "rag-index").text
    assert browser.execute_script("return typeof window.__pwned") == "undefined"


def test_upload_box_ingests_into_the_working_index_and_the_chat_uses_it(browser, planted_page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = planted_page
    doc = root / "thu-vien.md"
    doc.write_text('# Quy định về thư viện <img src=x onerror="window.__pwned=4">\n\n'
                   "Điều 1. Giờ mở cửa thư viện\nThư viện trung tâm mở cửa từ 7 giờ 30 đến 21 giờ.\n\n"
                   "Điều 2. Mượn sách\nSinh viên được mượn tối đa 5 cuốn sách trong 14 ngày.\n", encoding="utf-8")
    browser.get(url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.1)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#rag-question textarea"))
    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Chỉ mục')]").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#rag-upload input[type=file]")).send_keys(str(doc))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rag-upload [aria-label='thu-vien.md']"))  # uploaded
    by_id(browser, "rag-ingest").click()

    def status(d) -> str:
        return d.find_element(By.CSS_SELECTOR, "#rag-ingest-status textarea").get_attribute("value")

    wait.until(lambda d: "Xong" in status(d))
    assert "✓ (1/1) thu-vien.md: đã thêm — 1 trang," in status(browser)
    work = by_id(browser, "rag-work-index").text
    assert 'Quy định về thư viện <img src=x onerror="window.__pwned=4">' in work and "thu-vien.md" in work
    assert "nha-xe.md" not in work  # a separate index: the main one is not copied into it

    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Hỏi đáp')]").click()
    browser.find_element(By.XPATH, "//button[contains(., 'Tùy chọn')]").click()
    wait.until(lambda d: d.find_element(By.XPATH, "//label[contains(., 'Chỉ mục làm việc')]")).click()
    box = browser.find_element(By.CSS_SELECTOR, "#rag-question textarea")
    box.send_keys("Thư viện mở cửa lúc mấy giờ?")
    box.send_keys(Keys.ENTER)
    wait.until(lambda d: "Điều 1. Giờ mở cửa thư viện" in by_id(d, "rag-sources").text)
    assert "21 giờ" in by_id(browser, "rag-chat").text
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
