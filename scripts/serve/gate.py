"""The one gate in front of both servers: read timeouts and a connection cap (HTTP layer), then key, body cap and
a fully read body (ASGI layer).

Two layers, because the first problem happens before there is a request to look at:
- `GatedH11Protocol` (uvicorn's h11 protocol plus three rules): a connection must finish its request headers within
  --header_timeout_s and its body within --body_timeout_s, else it is answered 408 and closed; at most
  --max_connections are open at once, and a new one over the cap closes the oldest connection that has not sent a
  full request yet (or, if every connection is busy with a request, gets a 503 itself). Measured before this gate
  (issue 27): 300 half-sent requests with the open-file limit at 256 held every descriptor forever and the server
  stopped accepting anyone, key or not; uvicorn alone has no header or body timeout (its keep-alive timer only
  runs between requests).
- `Gate` (pure ASGI, so streamed responses pass untouched): for protected paths, `check(scope, headers)` decides
  (key, token, origin, model loaded...), then the body is read whole before the app sees it, refused with 413 at
  --max_body_bytes with or without Content-Length. Reading it here, not in the app, turns an oversized chunked body
  into a clean 413 instead of an exception inside a handler, and a body that stalls ends with the connection.

Each server gives the Gate its own `check` and its own error format (OpenAI's {"error": {...}} for the API server,
{"detail": ...} for the training manager).
"""
import argparse
import hmac
import logging
import resource
from dataclasses import dataclass
from typing import Callable, Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from model.runtime import UserError

log = logging.getLogger("minimind.gate")

# Defaults: a browser or the openai client sends headers and a 2 MB body in well under a second on any real link;
# 10 s / 30 s leave room for a slow phone connection and still free a slot quickly. 128 connections: the API server
# decodes at most --max_batch_size (16) rows at once, so 128 open connections is 8x what can make progress, and
# it stays below the usual open-file limit (1024; containers sometimes 256) with room for the model's own files.
HEADER_TIMEOUT_S, BODY_TIMEOUT_S, MAX_CONNECTIONS = 10.0, 30.0, 128
FD_RESERVE = 64  # descriptors kept for the process itself (weights, logs, the listening socket, child pipes)


@dataclass
class Limits:
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS


def add_gate_args(p: argparse.ArgumentParser) -> None:
    add = p.add_argument_group("connection limits / 连接限制").add_argument
    add("--header_timeout_s", type=float, default=HEADER_TIMEOUT_S,
        help="请求头须在此秒数内收完，否则 408 并断开 / seconds a client has to send its request headers (408 after)")
    add("--body_timeout_s", type=float, default=BODY_TIMEOUT_S,
        help="请求体须在此秒数内收完 / seconds a client has to send the request body after its headers (408 after)")
    add("--max_connections", type=int, default=MAX_CONNECTIONS,
        help="同时打开的连接上限；超出时先关闭最久未发完请求的连接 / most open connections; over it, the oldest "
             "connection that has not sent a whole request is closed (a 503 when all are busy)")


def limits_from_args(args) -> Limits:
    """Limits from the flags, checked; the cap is lowered to fit the process's open-file limit."""
    if not args.header_timeout_s > 0 or not args.body_timeout_s > 0:
        raise UserError("--header_timeout_s and --body_timeout_s must be positive (seconds)")
    if args.max_connections < 1:
        raise UserError(f"--max_connections {args.max_connections}: must be at least 1")
    cap = args.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and cap > soft - FD_RESERVE:
        cap = max(1, soft - FD_RESERVE)
        log.warning("--max_connections %d lowered to %d: the open-file limit is %d (ulimit -n) and %d are kept for "
                    "the process itself", args.max_connections, cap, soft, FD_RESERVE)
    return Limits(args.header_timeout_s, args.body_timeout_s, cap)


def uvicorn_options(limits: Limits) -> dict:
    """uvicorn.Config keywords that put the gated protocol in place (h11; httptools would bypass it)."""
    return {"http": gated_protocol(limits), "ws": "none"}


def gated_protocol(limits: Limits) -> type:
    return type("GatedH11", (GatedH11Protocol,), {"limits": limits})


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}"
            f"\r\nconnection: close\r\n\r\n").encode() + body


class GatedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header/body read deadlines and a connection cap (see the module docstring)."""

    limits = Limits()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.opened = self.loop.time()
        self.deadline_task = None
        self._arm(self.limits.header_timeout_s)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._rearm()

    def handle_events(self) -> None:
        super().handle_events()
        self._rearm()

    def on_response_complete(self) -> None:
        self._disarm()  # between requests uvicorn's keep-alive timer (5 s) takes over
        super().on_response_complete()  # (which may start a pipelined next request: that one re-arms)

    # a request in progress: IDLE with bytes received = headers coming, SEND_BODY = body coming, DONE = all read
    def waiting_for_request(self) -> bool:
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def _rearm(self) -> None:
        state = self.conn.their_state
        if state is h11.IDLE and self.deadline_task is None and self.conn.trailing_data[0]:
            self._arm(self.limits.header_timeout_s)  # a keep-alive connection started its next request
        elif state is h11.SEND_BODY and getattr(self, "deadline_kind", None) != "body":
            self._arm(self.limits.body_timeout_s, "body")
        elif state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()

    def _arm(self, seconds: float, kind: str = "headers") -> None:
        self._disarm()
        self.deadline_kind = kind
        self.deadline_task = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "deadline_task", None) is not None:
            self.deadline_task.cancel()
        self.deadline_task, self.deadline_kind = None, None

    def _too_slow(self) -> None:
        self.deadline_task = None
        if self.transport.is_closing():
            return
        kind = self.deadline_kind
        limit = self.limits.body_timeout_s if kind == "body" else self.limits.header_timeout_s
        started = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
        if not started:  # nothing sent yet on this request: say why before closing
            self.transport.write(_raw_response(408, "Request Timeout", f"the request {kind} did not arrive within "
                                               f"{limit:g} s; send the whole request at once"))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() now returns http.disconnect
            self.cycle.message_event.set()
        self.transport.close()

    def _make_room(self) -> None:
        """Over the cap: close the oldest connection still waiting for its request, else refuse this one."""
        idle = [c for c in self.connections if c is not self and isinstance(c, GatedH11Protocol)
                and c.waiting_for_request() and not c.transport.is_closing()]
        if idle:
            oldest = min(idle, key=lambda c: c.opened)
            oldest.transport.close()
            return
        log.warning("%d connections open (--max_connections %d), all busy: refusing a new one with 503",
                    len(self.connections), self.limits.max_connections)
        self.transport.write(_raw_response(503, "Service Unavailable", "too many open connections; retry shortly"))
        self.transport.close()


# ------------------------------------------------------------------------------------------------ the ASGI gate

def bearer_token(headers: dict) -> str:
    """The token of an `Authorization: Bearer <token>` header ('' without one); headers keyed by lower-case str."""
    given = headers.get("authorization", "")
    return given[7:].strip() if given.lower().startswith("bearer ") else ""


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (a plain == leaks how many leading characters matched)."""
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Refusal:
    status: int
    message: str
    code: Optional[str] = None
    headers: tuple = ()


class Gate:
    """Pure ASGI middleware: `check`, then the body read whole under `max_body_bytes` and replayed to the app.

    protected(path) -> bool picks the paths it guards; check(scope, headers) -> Refusal | None; render(refusal)
    -> JSON bytes in the server's error format. Unprotected paths (the web app's files, /health) pass untouched.
    """

    def __init__(self, app, protected: Callable[[str], bool], check: Callable[[dict, dict], Optional[Refusal]],
                 render: Callable[[Refusal], bytes], max_body_bytes: int):
        self.app, self.protected, self.check, self.render = app, protected, check, render
        self.max_body_bytes = max_body_bytes

    async def refuse(self, send, refusal: Refusal) -> None:
        body = self.render(refusal)
        await send({"type": "http.response.start", "status": refusal.status,
                    "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), *refusal.headers]})
        await send({"type": "http.response.body", "body": body})

    def too_large(self) -> Refusal:
        return Refusal(413, f"the request body is larger than {self.max_body_bytes:,} bytes, the most this server "
                            f"accepts; send a shorter request", "request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.protected(scope["path"]):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.check(scope, headers)
        if refusal is not None:
            return await self.refuse(send, refusal)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await self.refuse(send, self.too_large())
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left, or the protocol's body deadline closed the connection
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await self.refuse(send, self.too_large())
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # then the disconnect notice, which streaming responses wait for

        await self.app(scope, replay, send)

