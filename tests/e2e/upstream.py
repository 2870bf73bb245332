#!/usr/bin/env python3
"""A real upstream HTTP/WebSocket server for the portcullis end-to-end tests.

It is a tiny raw ASGI application served by uvicorn (HTTP/1.1 via h11, WebSocket via
the `websockets` package), bound to an ephemeral loopback port. Run it as

    python upstream.py            # prints "PORT <n>" on stdout once it is listening

Routes (any path not listed falls back to the echo route):

- ``/echo...`` (any method): JSON ``{"method","path","query","http_version",
  "headers":[[name, value], ...],"body_len"}``; ``headers`` keeps duplicates and order,
  names lower-cased.
- ``/stream``: ``text/event-stream``, 5 events 200 ms apart, chunked (no
  Content-Length).
- ``/sameorigin``: JSON, and the upstream's own ``X-Frame-Options: SAMEORIGIN``.
- ``/ws`` (WebSocket): echoes every text and binary message back until closed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

STREAM_EVENTS = 5
STREAM_INTERVAL_S = 0.2


async def _read_body(receive) -> int:
    """Drain the request body; return its length."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return total
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return total


async def _send_json(send, status: int, payload, extra_headers=()):
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _echo_payload(scope, body_len: int) -> dict:
    return {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope.get("query_string", b"").decode("latin-1"),
        "http_version": scope.get("http_version"),
        "headers": [
            [k.decode("latin-1").lower(), v.decode("latin-1")] for k, v in scope["headers"]
        ],
        "body_len": body_len,
    }


async def _http(scope, receive, send):
    path = scope["path"]
    if path == "/stream":
        await _read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        for i in range(STREAM_EVENTS):
            if i:
                await asyncio.sleep(STREAM_INTERVAL_S)
            chunk = f"id: {i}\ndata: event {i}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body_len = await _read_body(receive)
    if path == "/sameorigin":
        await _send_json(
            send,
            200,
            _echo_payload(scope, body_len),
            extra_headers=[(b"x-frame-options", b"SAMEORIGIN")],
        )
        return
    await _send_json(send, 200, _echo_payload(scope, body_len))


async def _websocket(scope, receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def app(scope, receive, send):
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http="h11",
        ws="websockets-sansio",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # The socket is already listening: connections made before uvicorn's loop starts
    # wait in the backlog, so announcing the port now is safe.
    print(f"PORT {port}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
