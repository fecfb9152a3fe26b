"""The node's operations endpoint on ``[metrics] listen``: /metrics, /status, /events.

Prometheus text is rendered in a worker thread so a scrape never stalls request relaying.
With a token (``[metrics].token_file``) every path but ``/health`` needs
``authorization: Bearer <token>`` (Prometheus: ``authorization.credentials_file``); it shows
replica URLs, events and node addresses.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hanode.http.errors import send_error
from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.metrics.registry import NodeMetrics


class OpsEndpoint:
    def __init__(
        self,
        metrics: NodeMetrics,
        status: Callable[[], dict[str, Any]],
        events: Callable[[int, int], list[dict[str, Any]]],
        token: str | None = None,
    ) -> None:
        self._metrics = metrics
        self._status = status
        self._events = events
        self._loop = asyncio.get_running_loop()
        self._token = token.encode() if token else None

    def _authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get(b"authorization", b"").strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)

    def handle(self, request: Request, responder: Responder) -> None:
        path, _, query = request.path.partition(b"?")
        if path != b"/health" and not self._authorized(request):
            send_error(responder, 401, "missing or invalid token", code="invalid_api_key")
        elif request.method != b"GET":
            send_error(responder, 405, "the operations endpoint is read-only: use GET")
        elif path == b"/metrics":
            self._loop.create_task(self._render_metrics(responder))
        elif path == b"/status":
            responder.send(200, orjson.dumps(self._status()))
        elif path == b"/events":
            after = 0
            for part in query.split(b"&"):
                if part.startswith(b"after="):
                    value = part[6:]
                    after = int(value) if value.isdigit() else 0
            responder.send(200, orjson.dumps({"events": self._events(after, 500)}))
        elif path == b"/health":
            responder.send(200, b'{"status":"ok"}')
        else:
            send_error(responder, 404, f"no route {path.decode(errors='replace')[:100]}")

    async def _render_metrics(self, responder: Responder) -> None:
        body = await self._loop.run_in_executor(None, generate_latest, self._metrics.exposed)
        responder.send(200, body, content_type=CONTENT_TYPE_LATEST.encode())
