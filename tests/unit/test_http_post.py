"""gateway.http_post: the forwarder's and the webhook's POST, against a real aiohttp server."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from gateway.errors import TransportError
from gateway.http_post import HttpConnection
from tests.fixtures.certs import make_server_certs
from tests.fixtures.ports import free_port


@dataclass
class Receiver:
    port: int
    seen: list[tuple[str, dict[str, str], bytes, dict[str, str]]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends the /slow answers

    def url(self, path: str = "/write") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def _serve(keepalive_timeout: float) -> AsyncIterator[Receiver]:
    receiver = Receiver(free_port())

    async def write(request: web.Request) -> web.Response:
        receiver.seen.append(
            (request.path, dict(request.query), await request.read(), dict(request.headers))
        )
        receiver.peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return web.Response(status=204)

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=429, text="slow down", headers={"Retry-After": "7"})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/write")

    async def slow(request: web.Request) -> web.Response:
        await receiver.release.wait()  # no answer until the test is over
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/write", write)
    app.router.add_post("/refuse", refuse)
    app.router.add_post("/moved", moved)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for r in _serve(keepalive_timeout=75):
        yield r


@pytest.fixture
async def impatient_receiver() -> AsyncIterator[Receiver]:
    """Closes an idle kept-alive connection after 0.1 s, as servers and proxies do."""
    async for r in _serve(keepalive_timeout=0.1):
        yield r


async def test_a_post_arrives_whole_with_its_headers_and_query(receiver: Receiver) -> None:
    async with HttpConnection(timeout_s=5) as http:
        answer = await http.post(
            receiver.url(),
            b"m,site=a v=1 1\n" * 1000,
            {"Content-Type": "text/plain", "Authorization": "Token t"},
            params={"org": "o", "bucket": "b c"},
        )
    assert answer.status == 204
    path, query, body, headers = receiver.seen[0]
    assert (path, query) == ("/write", {"org": "o", "bucket": "b c"})
    assert body == b"m,site=a v=1 1\n" * 1000
    assert headers["Authorization"] == "Token t"
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"


async def test_an_error_status_is_an_answer_with_its_headers_not_an_exception(
    receiver: Receiver,
) -> None:
    async with HttpConnection(timeout_s=5) as http:
        answer = await http.post(receiver.url("/refuse"), b"x", {})
    assert (answer.status, answer.text(), answer.headers["Retry-After"]) == (429, "slow down", "7")


async def test_a_redirect_is_returned_not_followed(receiver: Receiver) -> None:
    async with HttpConnection(timeout_s=5) as http:
        answer = await http.post(receiver.url("/moved"), b"x", {})
    assert answer.status == 302
    assert answer.headers["Location"] == "/write"
    assert receiver.seen == []


async def test_posts_share_one_kept_alive_connection(receiver: Receiver) -> None:
    async with HttpConnection(timeout_s=5) as http:
        for i in range(3):
            assert (await http.post(receiver.url(), b"%d" % i, {})).status == 204
    assert [body for _, _, body, _ in receiver.seen] == [b"0", b"1", b"2"]
    assert len(set(receiver.peers)) == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    impatient_receiver: Receiver,
) -> None:
    async with HttpConnection(timeout_s=5) as http:
        assert (await http.post(impatient_receiver.url(), b"first", {})).status == 204
        await asyncio.sleep(0.5)  # the server has closed the idle connection by now
        assert (await http.post(impatient_receiver.url(), b"second", {})).status == 204
    assert [body for _, _, body, _ in impatient_receiver.seen] == [b"first", b"second"]
    assert len(set(impatient_receiver.peers)) == 2


async def test_without_keep_alive_every_post_has_its_own_connection(receiver: Receiver) -> None:
    async with HttpConnection(timeout_s=5, keep_alive=False) as http:
        for _ in range(2):
            assert (await http.post(receiver.url(), b"x", {})).status == 204
    assert len(set(receiver.peers)) == 2
    assert receiver.seen[0][3]["Connection"] == "close"


async def test_nobody_listening_is_a_transport_error() -> None:
    async with HttpConnection(timeout_s=5) as http:
        with pytest.raises(TransportError, match="ConnectionRefused"):
            await http.post(f"http://127.0.0.1:{free_port()}/write", b"x", {})


async def test_a_server_that_does_not_answer_in_time_is_a_timeout(receiver: Receiver) -> None:
    async with HttpConnection(timeout_s=0.3) as http:
        with pytest.raises(TimeoutError):
            await http.post(receiver.url("/slow"), b"x", {})
        # the connection is usable again afterwards
        assert (await http.post(receiver.url(), b"after", {})).status == 204
    receiver.release.set()  # the server's handler of the timed-out request may now end


async def test_a_url_that_is_not_http_is_refused() -> None:
    async with HttpConnection(timeout_s=1) as http:
        with pytest.raises(TransportError, match="not an http"):
            await http.post("ftp://127.0.0.1/x", b"x", {})


async def test_https_is_verified_against_the_system_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cloud store behind a certificate the system trusts is reached; any other is refused."""
    certs = make_server_certs(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs.cert, certs.key)
    port = free_port()

    async def write(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/write", write)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
    url = f"https://localhost:{port}/write"
    try:
        async with HttpConnection(timeout_s=5) as http:
            with pytest.raises(TransportError, match=r"(?i)certificate"):
                await http.post(url, b"x", {})
        # OpenSSL's default trust store honours SSL_CERT_FILE: "the system trusts this CA".
        monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
        async with HttpConnection(timeout_s=5) as http:
            answer = await http.post(url, b"x", {})
        assert answer.status == 204
    finally:
        await runner.cleanup()
