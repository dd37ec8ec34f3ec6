"""Request body limit enforced while the body streams in - chunked uploads included.

A Content-Length check alone misses chunked bodies, and the multipart parser would spool the
whole body to disk before any handler runs. This pure ASGI middleware counts the bytes as
`receive()` hands them over; past the limit it stops reading and answers 413 itself, whatever
the application was about to answer (frameworks turn a failed body read into a 400).
"""
from __future__ import annotations

import json


class BodyTooLarge(Exception):
    pass


def _error_body(limit: int) -> bytes:
    return json.dumps({"error": {"code": "too_large",
                                 "message": f"the request body is over the server's limit of {limit / 2**20:g} MiB",
                                 "hint": "send fewer or smaller photos"}}).encode()


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen = 0
        tripped = False
        response_started = False

        async def counting_receive():
            nonlocal seen, tripped
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    tripped = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal response_started
            if tripped:  # whatever the app answers to the failed read, the client gets 413
                if message["type"] == "http.response.start" and not response_started:
                    response_started = True
                    await self._reject(send)
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not tripped:
                raise
            if not response_started:  # the app let the failed read escape (as BodyTooLarge or wrapped)
                await self._reject(send)

    async def _reject(self, send):
        body = _error_body(self.max_bytes)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
