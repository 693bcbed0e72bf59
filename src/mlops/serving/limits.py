"""What the server accepts: an address to listen on, and what one connection may cost it (time, body size).

uvicorn has no header or body read timeout, so a client that sends slowly holds a connection (and its
buffers) forever; and a body of any size would be read whole before the app could refuse it. Every refusal
here closes the connection (`connection: close`), so the server never reads the rest of a refused body.
"""

from __future__ import annotations

import asyncio
import socket
from asyncio import TimerHandle
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlops.errors import MlopsError

CLOSE = {"connection": "close"}


class AddressError(MlopsError):
    """The server cannot listen where it was asked to."""


def check_address(host: str, port: int) -> None:
    """Refuse an address this machine cannot listen on (cheap: the CLI calls it before importing torch)."""
    if not 1 <= port <= 65535:
        raise AddressError(f"--port {port} is not a TCP port: give a number from 1 to 65535")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise AddressError(
            f"--host {host!r} is not an address of this machine ({error}): give an IP such as 127.0.0.1 or 0.0.0.0"
        ) from None
    with socket.socket(family, kind, protocol) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            listener.bind(address)
        except OSError as error:
            raise AddressError(
                f"cannot listen on {host}:{port} ({error.strerror}): choose another --port or --host"
            ) from None


TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers do not arrive in time.

    The clock starts when the connection opens and when a request's first byte arrives; it stops when the
    headers are complete. (uvicorn's own keep-alive timeout covers idle time between requests.)
    """

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_deadline: TimerHandle | None = None
        self._request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._request_begun = False
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            if self._request_begun:
                self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()


class BodyLimits:
    """ASGI middleware: a request body must arrive whole within ``timeout`` seconds and hold at most ``max_bytes``.

    A declared Content-Length over the limit is refused before any of the body is read; a streamed body
    as soon as it passes the limit. The refusals are HTTP errors raised where the app reads the body, so
    they are answered (413, 408) and counted like any other error.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        received = int(declared) if declared.isdigit() else 0
        deadline: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, deadline
            self._check(received)
            deadline = deadline or asyncio.get_running_loop().time() + self.timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, f"the body did not arrive within {self.timeout:g} s (serving.read_timeout_seconds)", CLOSE
                ) from None
            if message["type"] == "http.request" and not declared:
                received += len(message.get("body", b""))
                self._check(received)
            return message

        await self.app(scope, limited_receive, send)

    def _check(self, size: int) -> None:
        if size > self.max_bytes:
            raise HTTPException(
                413,
                f"the body is over {self.max_bytes} bytes, more than serving.max_items texts of "
                "serving.max_text_chars characters can take: send fewer or shorter texts",
                CLOSE,
            )
