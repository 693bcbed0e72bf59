"""The sibling processes of one `mlops serve` (serving/processes.py), asked over their private Unix sockets.

The kernel hands each client connection to one of the server processes, and clients must see them as one
server: feedback may reach another process than the one that answered its prediction, an admin call must
change every process, and /metrics must count every process's requests. The process a client reached asks
its siblings; what a process answers on its private socket is its own part only, and it asks no one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
from starlette.types import Scope

# A sibling asked to reload loads the new version before it answers, as the process that was asked does.
SIBLING_TIMEOUT_SECONDS = 300


class Siblings:
    """The private sockets of this process (``own``) and of the other server processes of the same port."""

    def __init__(self, own: str | None = None, others: Sequence[str] = ()) -> None:
        self.own = own
        self.others = list(others)
        self._clients: list[httpx.AsyncClient] = []

    def asking(self, scope: Scope) -> bool:
        """Whether a sibling sent this request (it arrived on this process's private socket)."""
        return self.own is not None and scope.get("server") == (self.own, None)

    def _connected(self) -> list[httpx.AsyncClient]:
        # Made on first use, in the server process: the supervisor sends it this object pickled, clients unmade.
        if len(self._clients) != len(self.others):
            self._clients = [
                httpx.AsyncClient(
                    transport=httpx.AsyncHTTPTransport(uds=path),
                    base_url="http://sibling",
                    timeout=SIBLING_TIMEOUT_SECONDS,
                )
                for path in self.others
            ]
        return self._clients

    async def ask_all(self, method: str, path: str, body: dict[str, Any] | None = None) -> list[httpx.Response]:
        """Every sibling's answer to the same request, in the siblings' order; a sibling that fails raises."""
        return await asyncio.gather(*(client.request(method, path, json=body) for client in self._connected()))

    async def feedback(self, body: dict[str, Any]) -> httpx.Response | None:
        """The answer of the sibling that knows the request the feedback is for (None: no sibling knows it)."""
        answers = await self.ask_all("POST", "/feedback", body)
        return next((answer for answer in answers if answer.status_code != 404), None)

    async def close(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients))
        self._clients = []
