"""A real browser drives the chat example: headless Chromium through Playwright.

Two pages join the room, a message typed in one appears in the other, and
closing one shows a "left" notice in the other, over ``ws://`` and over
``wss://``. For ``wss://`` the server gets a certificate from a fresh
``trustme`` CA, and Chromium is told to accept exactly that certificate's
key (``--ignore-certificate-errors-spki-list`` with its SPKI hash), which
is as close as Chromium gets to trusting a CA without an NSS database.

Debian's Chromium is used (``/usr/bin/chromium``, installed by ``.ci/run``);
Playwright's own browser downloads are never needed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from test_examples import example

from conftest import wait_until

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a certificate, as Chromium's flag wants it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


@contextlib.contextmanager
def chromium(flags: List[str] = FLAGS) -> Iterator[Any]:
    """Headless Chromium with a fresh profile and a 15 s default timeout; closed on the way out."""
    with playwright.sync_playwright() as driver, tempfile.TemporaryDirectory() as profile:
        browser = driver.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=flags
        )
        try:
            browser.set_default_timeout(15_000)
            yield browser
        finally:
            browser.close()


def connected_pages(browser: Any, url: str, count: int = 2) -> List[Any]:
    """``count`` pages opened on ``url``, each showing "connected"."""
    pages = [browser.new_page() for _ in range(count)]
    for page in pages:
        page.goto(url)
        playwright.expect(page.locator("#status")).to_have_text("connected")
    return pages


def submit_both_ways(pages: List[Any], field: str, button: str, first: str, second: str) -> None:
    """The first page submits ``first`` with ``button``, the second ``second`` with Enter."""
    pages[0].fill(field, first)
    pages[0].click(button)
    pages[1].fill(field, second)
    pages[1].press(field, "Enter")


def shown_on_every_page(
    browser: Any, pages: List[Any], url: str, items: str, texts: List[str]
) -> Any:
    """Every page lists ``texts`` at ``items``; then so does one opened on ``url``; return it."""
    for page in pages:
        playwright.expect(page.locator(items)).to_have_text(texts)
    late = browser.new_page()
    late.goto(url)
    playwright.expect(late.locator(items)).to_have_text(texts)
    return late


@pytest.fixture(params=["ws", "wss"])
def chat_and_flags(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    """The chat example (plain or TLS) and the Chromium flags to reach it."""
    args: List[str] = []
    flags = list(FLAGS)
    if request.param == "wss":
        trustme = pytest.importorskip("trustme")
        leaf = trustme.CA().issue_cert("localhost", "127.0.0.1")
        certfile = tmp_path / "chat.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(certfile))
        args = ["--certfile", str(certfile)]
        flags.append(
            f"--ignore-certificate-errors-spki-list={spki_hash(leaf.cert_chain_pems[0].bytes())}"
        )
    with example("chat/server.py", *args) as chat:
        yield chat, flags, request.param


def test_two_pages_chat(chat_and_flags: tuple) -> None:  # type: ignore[type-arg]
    """Join from two pages, talk, leave: each page sees the other's doings."""
    chat, flags, scheme = chat_and_flags
    expect = playwright.expect
    with chromium(flags) as browser:
        alice, bob = browser.new_page(), browser.new_page()
        for page, name in ((alice, "alice"), (bob, "bob")):
            page.goto(chat.urls[0])
            # Before joining, the page does not know who is in the room: it says nothing.
            expect(page.locator("#room")).to_be_hidden()
            page.fill("#name", name)
            page.click("#join")
            expect(page.locator("#status")).to_have_text(f"connected as {name}")
        assert alice.evaluate("location.protocol") == ("https:" if scheme == "wss" else "http:")
        expect(alice.locator("#log")).to_contain_text("bob joined")
        expect(alice.locator("#people")).to_have_text("alice, bob")
        expect(alice.locator("#room")).to_have_text("In the room: alice, bob")

        bob.fill("#message", "hello from bob")
        bob.press("#message", "Enter")
        expect(alice.locator("#log li.message")).to_have_text(["bob: hello from bob"])
        expect(bob.locator("#log li.message")).to_have_text(["bob: hello from bob"])
        alice.fill("#message", "hi bob")
        alice.click("#send")
        expect(bob.locator("#log li.message").last).to_have_text("alice: hi bob")

        bob.close()
        expect(alice.locator("#log li.leave")).to_have_text(["bob left"])
        expect(alice.locator("#people")).to_have_text("alice")

        # One Ctrl-C with the page still open (and Chromium's idle
        # preconnect sockets with it): the page learns the server went
        # away, and the server exits without waiting for the browser.
        chat.interrupt()
        expect(alice.locator("#status")).to_have_text("disconnected (code 1001)")
        expect(alice.locator("#room")).to_be_hidden()


def test_legacy_app_pages_get_orders_pushed() -> None:
    """An order posted from one page of the http.server app appears on every open page."""
    expect = playwright.expect
    with example("legacy_app.py", "--ws-port", "0", "--port", "0") as app:
        with chromium() as browser:
            pages = connected_pages(browser, app.urls[0])
            submit_both_ways(pages, "#item", "#order", "coffee", "tea")
            # A page opened later shows the orders that exist, then new ones.
            late = shown_on_every_page(
                browser, pages, app.urls[0], "#orders li", ["#1 coffee", "#2 tea"]
            )
            expect(late.locator("#status")).to_have_text("connected")
            pages[0].fill("#item", "cake")
            pages[0].click("#order")
            for page in [*pages, late]:
                expect(page.locator("#orders li")).to_have_text(["#1 coffee", "#2 tea", "#3 cake"])
            # Without JavaScript: the form posts, redirects, and the page lists the orders.
            bare = browser.browser.new_context(java_script_enabled=False).new_page()
            bare.goto(app.urls[0])
            bare.fill("#item", "soup")
            bare.click("#order")
            expect(bare.locator("#orders li")).to_have_text(
                ["#1 coffee", "#2 tea", "#3 cake", "#4 soup"]
            )
        app.interrupt()


def test_flask_example_page_and_websocket_on_one_port() -> None:
    """examples/flask_app: the page's WebSocket uses the page's own port; posts reach every page."""
    expect = playwright.expect
    with example("flask_app/app.py") as app, chromium() as browser:
        pages = connected_pages(browser, app.urls[0])
        # One port for both: the WebSocket went to the page's host:port.
        assert pages[0].evaluate("ws.url") == app.urls[0].replace("http", "ws") + "ws"
        assert pages[0].evaluate("location.port") == str(app.port)
        submit_both_ways(pages, "#text", "#post", "first post", "second post")
        # A page opened later gets the recent posts first.
        shown_on_every_page(browser, pages, app.urls[0], "#feed li", ["second post", "first post"])
        app.interrupt()
        expect(pages[0].locator("#status")).to_have_text("disconnected (code 1001)")


JSON_PAGE = b"""<!doctype html><title>json</title><script>
const ws = new WebSocket(`ws://${location.host}/ws`);
window.got = new Promise((resolve) => {
  ws.onmessage = (event) => {
    const value = JSON.parse(event.data);
    ws.send(JSON.stringify({ seen: value, type: typeof event.data }));
    resolve(value);
  };
});
</script>"""


def test_send_json_and_recv_json_round_trip_through_json_parse(make_server: Any) -> None:
    """Chromium's JSON.parse reads send_json's text, recv_json JSON.stringify's; orjson too."""
    import orjson

    from wsthread import http_response

    document = {"id": 7, "text": "caf\u00e9 \u2615 \U0001f600", "list": [1, 2.5, None, True]}
    answers: List[Any] = []

    def handler(ws: Any) -> None:
        ws.send_json(document)
        answers.append(ws.recv_json(timeout=10))

    def page(ws: Any, request: Any) -> Any:
        if request.path == "/":
            return http_response(200, JSON_PAGE, content_type="text/html; charset=utf-8")
        return None

    for dumps, loads in ((None, None), (orjson.dumps, orjson.loads)):
        server = make_server(handler, process_request=page, json_dumps=dumps, json_loads=loads)
        with chromium() as browser:
            tab = browser.new_page()
            tab.goto(f"http://127.0.0.1:{server.port}/")
            assert tab.evaluate("window.got") == document
        assert wait_until(lambda: len(answers) == 1)
        assert answers.pop() == {"seen": document, "type": "string"}
        server.shutdown()
