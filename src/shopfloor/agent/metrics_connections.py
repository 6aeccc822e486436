"""The I/O thread's side of each connection to the ``/metrics`` server, from the TLS handshake to
the close.

``_Connections`` is a base class of :class:`shopfloor.agent.metrics_server.MetricsServer`, never
used alone: it steps each connection (:class:`_Conn`) through its phases - handshake, reading
the request head, a password check or a render in a worker, writing the answer, lingering - and
holds each to its deadline, routes a request, counts and logs a refusal, and closes. The
attributes it declares are set by ``MetricsServer.__init__``; :class:`ServerSettings`, the
bounds it holds the connections to, is defined here so that it can name them without importing
the server, which re-exports it. Split from :mod:`shopfloor.agent.metrics_server` to keep each
module small; the log lines go to the server's logger, ``shopfloor.agent.metrics``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from shopfloor.agent.metrics_auth import BasicAuth, _credentials
from shopfloor.agent.metrics_http import (
    _BAD_REQUEST,
    _BUSY,
    _LANDING,
    _NOT_ALLOWED,
    _NOT_FOUND,
    _TOO_LARGE,
    _UNAUTHORIZED,
    MAX_HEADER_BYTES,
    _head_end,
    _parse,
    _Request,
)
from shopfloor.logs import RateLimitedLog

__all__ = ["ServerSettings"]

# Password checks waiting or running: more get 503, so wrong passwords cannot queue up work.
_VERIFY_SLOTS = 4
_CHUNK = 64 * 1024
_LINGER = 1.0  # seconds to let a client read its answer and close first (no RST on our close)
_LINGER_BYTES = 64 * 1024

_HANDSHAKE, _READ, _WORK, _WRITE, _LINGERING = range(5)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What :class:`MetricsServer` needs (the agent fills it from ``[metrics]``)."""

    host: str = "127.0.0.1"
    port: int = 0
    max_requests: int = 4
    max_connections: int = 64
    read_timeout: float = 5.0
    write_timeout: float = 10.0
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    basic_auth_user: str = ""
    basic_auth_hash: str = ""


class _Conn:
    __slots__ = ("deadline", "events", "inbuf", "lingered", "out", "peer", "phase", "request",
                 "sent", "sock")

    def __init__(self, sock: socket.socket, peer: str, phase: int, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.phase = phase
        self.deadline = deadline
        self.events = 0  # what the selector watches for; 0 = not registered
        self.inbuf = bytearray()
        self.request: _Request | None = None  # while its password is checked
        self.out = memoryview(b"")
        self.sent = 0
        self.lingered = 0


class _Connections:
    """Connection handling of :class:`shopfloor.agent.metrics_server.MetricsServer` (its base
    class), on the I/O thread."""

    # Set by MetricsServer.__init__ (see there).
    settings: ServerSettings
    refused: dict[str, int]
    served: int
    _auth: BasicAuth | None
    _listener: socket.socket
    _wake_r: socket.socket
    _wake_w: socket.socket
    _wake_lock: threading.Lock
    _wake_closed: bool
    _selector: selectors.BaseSelector
    _conns: dict[int, _Conn]
    _done: collections.deque[tuple[_Conn, str, bytes | None, str | None]]
    _jobs: queue.SimpleQueue[tuple[_Conn, _Request] | None]
    _checks: queue.SimpleQueue[tuple[_Conn, bytes, bytes] | None]
    _rendering: int
    _checking: int
    _accept_paused_until: float
    _log: RateLimitedLog

    def _step(self, conn: _Conn) -> None:
        if conn.phase == _HANDSHAKE:
            assert isinstance(conn.sock, ssl.SSLSocket)
            try:
                conn.sock.do_handshake()
            except ssl.SSLWantReadError:
                self._watch(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except (ssl.SSLError, OSError) as exc:
                self._refuse("tls", conn.peer, str(exc))
                self._close(conn)
                return
            conn.phase = _READ
        if conn.phase == _READ:
            self._read(conn)
        elif conn.phase == _WRITE:
            self._write(conn)
        elif conn.phase == _LINGERING:
            self._linger(conn)

    def _read(self, conn: _Conn) -> None:
        while True:  # each turn reads >= 1 byte or returns; the buffer is capped
            try:
                # Never more than one byte past the cap: the cap bounds the buffer.
                chunk = conn.sock.recv(MAX_HEADER_BYTES + 1 - len(conn.inbuf))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._watch(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except OSError:
                self._close(conn)
                return
            if not chunk:  # closed before a full request: nothing to answer
                self._close(conn)
                return
            conn.inbuf += chunk
            end = _head_end(conn.inbuf)
            if end > MAX_HEADER_BYTES or (end < 0 and len(conn.inbuf) > MAX_HEADER_BYTES):
                self._refuse("header_too_large", conn.peer)
                self._answer(conn, _TOO_LARGE)
                return
            if end >= 0:
                request = _parse(bytes(conn.inbuf[:end]))
                conn.inbuf = bytearray()
                if request is None:
                    self._refuse("bad_request", conn.peer)
                    self._answer(conn, _BAD_REQUEST)
                else:
                    self._authorize(conn, request)
                return

    def _authorize(self, conn: _Conn, request: _Request) -> None:
        if self._auth is not None:
            credentials = _credentials(request.headers.get("authorization", ""))
            if credentials is None:
                self._refuse("unauthorized", conn.peer, "no basic auth credentials")
                self._answer(conn, _UNAUTHORIZED)
                return
            if not self._auth.known(*credentials):
                if self._checking >= _VERIFY_SLOTS:
                    self._refuse("busy", conn.peer, "password checks queued")
                    self._answer(conn, _BUSY)
                    return
                self._checking += 1
                self._park(conn)
                conn.request = request
                self._checks.put((conn, *credentials))
                return
        self._route(conn, request)

    def _route(self, conn: _Conn, request: _Request) -> None:
        if request.method != "GET":
            self._answer(conn, _NOT_ALLOWED)
        elif request.path == "/metrics":
            if self._rendering >= self.settings.max_requests:
                self._refuse("busy", conn.peer, f"{self._rendering} scrapes in progress")
                self._answer(conn, _BUSY)
                return
            self._rendering += 1
            self._park(conn)
            self._jobs.put((conn, request))
        elif request.path == "/":
            self._answer(conn, _LANDING)
        else:
            self._answer(conn, _NOT_FOUND)

    def _park(self, conn: _Conn) -> None:
        # A worker has it: nothing to watch, and no deadline (the worker's time is bounded by
        # max_requests and by what a render costs, not by the client).
        conn.phase = _WORK
        conn.deadline = float("inf")
        self._watch(conn, 0)

    def _collect_results(self) -> None:
        while self._done:
            conn, pool, answer, reason = self._done.popleft()
            if pool == "check":
                self._checking -= 1
            else:
                self._rendering -= 1
                self.served += reason is None
            if reason == "unauthorized":
                self._refuse(reason, conn.peer, "wrong user or password")
            if id(conn) not in self._conns:  # closed meanwhile (the server is stopping)
                continue
            if answer is not None:
                self._answer(conn, answer)
            else:  # the password passed: on to the route
                request, conn.request = conn.request, None
                assert request is not None
                self._route(conn, request)

    def _answer(self, conn: _Conn, data: bytes) -> None:
        conn.phase = _WRITE
        conn.out = memoryview(data)
        conn.sent = 0
        conn.deadline = time.monotonic() + self.settings.write_timeout
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        while conn.sent < len(conn.out):  # each turn sends >= 1 byte or returns
            try:
                n = conn.sock.send(conn.out[conn.sent:conn.sent + _CHUNK])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._watch(conn, selectors.EVENT_READ)
                return
            except OSError:
                self._close(conn)
                return
            if n <= 0:
                self._close(conn)
                return
            conn.sent += n
        # All sent. Half-close and read until the client closes (or a second passes): closing
        # with its bytes unread would reset the connection and could destroy the answer.
        conn.out = memoryview(b"")
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.phase = _LINGERING
        conn.deadline = time.monotonic() + _LINGER
        self._linger(conn)

    def _linger(self, conn: _Conn) -> None:
        while conn.lingered < _LINGER_BYTES:
            try:
                chunk = conn.sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._watch(conn, selectors.EVENT_READ)
                return
            except OSError:
                break
            if not chunk:
                break
            conn.lingered += len(chunk)
        self._close(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            if conn.phase != _LINGERING:
                self._refuse("timeout", conn.peer)
            self._close(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if conn.events == 0:
            self._selector.register(conn.sock, events, conn)
        elif events == 0:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(id(conn), None) is None:
            return
        if conn.events:
            self._selector.unregister(conn.sock)
            conn.events = 0
        conn.sock.close()

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        self._selector.close()
        self._listener.close()
        with self._wake_lock:
            self._wake_closed = True
            self._wake_r.close()
            self._wake_w.close()

    def _refuse(self, reason: str, peer: str, detail: str = "") -> None:
        self.refused[reason] += 1
        level = logging.WARNING if reason in ("unauthorized", "tls") else logging.INFO
        self._log.log(level, f"refused:{reason}", "metrics: refused a request from %s: %s%s",
                      peer, reason, f" ({detail})" if detail else "")

    def _wake(self) -> None:
        # Under the lock: a render finishing during close must not write to a closed socket
        # (or to whatever file took its descriptor number since).
        with self._wake_lock, contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            if not self._wake_closed:
                self._wake_w.send(b"\0")
