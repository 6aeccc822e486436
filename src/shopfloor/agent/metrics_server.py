"""The ``/metrics`` HTTP server: bounded in threads, connections, time and bytes.

prometheus_client's ``start_http_server`` gives every connection a thread of its own and no
timeout: 100 half-open connections held 100 threads for over a minute, 1,000 pegged both cores
of the edge device and kept SIGTERM from being honoured (issue 10). This server is built the
other way round, on node_exporter's model (``--web.max-requests``, and its web config for basic
auth and TLS client certificates):

- One I/O thread multiplexes every connection with a selector. It completes the TLS handshake
  and reads the request head before any worker sees the connection, so a silent, slow or
  half-open client costs a file descriptor and a buffer, never a thread, and cannot delay a
  Prometheus that sends its request at once.
- Each connection has ``read_timeout`` seconds in all, from accept, to finish its handshake and
  its request head (a slow-loris dribbling a byte a second gains nothing), and
  ``write_timeout`` seconds to take its answer. The request head is capped at
  :data:`MAX_HEADER_BYTES` (431 beyond it).
- At most ``max_connections`` connections are open: a new one pushes out the oldest that has
  not yet sent a full request, so a flood of idle connections cannot lock a scrape out.
- At most ``max_requests`` expositions are rendered at once, by a fixed pool of that many
  threads; a request beyond them gets 503 at once, as node_exporter answers (Prometheus
  retries at the next scrape).
- Basic auth checks a salted PBKDF2-SHA256 hash (:func:`hash_password`), in one thread of its
  own so that a flood of wrong passwords costs at most one core and never a scrape worker;
  the credentials that passed are remembered (as a keyed digest), so a legitimate Prometheus
  pays for the hash once per agent run, not on every scrape.
- :meth:`MetricsServer.close` returns within a second whatever the connections do: the I/O
  thread is woken through a socket pair and the threads are daemons.

Every refusal is counted by reason in ``shopfloor_metrics_requests_refused_total``.

The pieces are modules of their own: basic auth in :mod:`shopfloor.agent.metrics_auth`, TLS in
:mod:`shopfloor.agent.metrics_tls`, request parsing and the fixed answers in
:mod:`shopfloor.agent.metrics_http`, and each connection's steps on the I/O thread in
:mod:`shopfloor.agent.metrics_connections`; this module holds the server (its threads, accepting,
rendering) and re-exports what they offer.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from shopfloor.agent.metrics_auth import DEFAULT_ITERATIONS, BasicAuth, PasswordHash, hash_password
from shopfloor.agent.metrics_connections import (
    _HANDSHAKE,
    _LINGERING,
    _READ,
    _WRITE,
    ServerSettings,
    _Conn,
    _Connections,
)
from shopfloor.agent.metrics_http import (
    _FAILED,
    _UNAUTHORIZED,
    MAX_HEADER_BYTES,
    _Request,
    _response,
)
from shopfloor.agent.metrics_tls import TlsFileError, server_tls_context
from shopfloor.logs import RateLimitedLog

__all__ = [
    "DEFAULT_ITERATIONS",
    "MAX_HEADER_BYTES",
    "REFUSAL_REASONS",
    "BasicAuth",
    "MetricsServer",
    "PasswordHash",
    "ServerSettings",
    "TlsFileError",
    "hash_password",
    "server_tls_context",
]

log = logging.getLogger("shopfloor.agent.metrics")

#: Why a request or connection was refused: the ``reason`` label.
REFUSAL_REASONS = (
    "busy",  # max_requests renders (or the password check queue) full: 503
    "connections",  # pushed out or turned away at max_connections
    "timeout",  # handshake and request not in read_timeout, or answer not taken in write_timeout
    "header_too_large",  # request head over MAX_HEADER_BYTES: 431
    "bad_request",  # not an HTTP request line and headers: 400
    "unauthorized",  # basic auth missing or wrong: 401
    "tls",  # TLS handshake failed (no or a bad client certificate, not TLS at all)
)
_ACCEPT_BATCH = 64  # connections accepted per turn of the loop, so open ones still get turns
_GZIP_LEVEL = 6  # most of level 9's ratio on exposition text for a fraction of its CPU


# --- the server ------------------------------------------------------------------------------


class MetricsServer(_Connections):
    """Serve ``registry`` on ``settings.host:settings.port`` (0: a free port, see :attr:`port`).

    The constructor binds (raising OSError as socket does) and registers the server's own
    metrics in ``registry``; :meth:`start` starts the threads; :meth:`close` stops them.
    """

    def __init__(self, registry: CollectorRegistry, settings: ServerSettings) -> None:
        if settings.max_requests < 1 or settings.max_connections < 1:
            raise ValueError("max_requests and max_connections must be 1 or more")
        self.settings = settings
        self.registry = registry
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.served = 0  # scrapes answered with 200
        self._tls = (server_tls_context(settings.cert_file, settings.key_file,
                                        settings.client_ca_file)
                     if settings.cert_file else None)
        if settings.client_ca_file and self._tls is None:
            raise ValueError("client_ca_file needs cert_file and key_file (TLS)")
        self._auth = (BasicAuth(settings.basic_auth_user, settings.basic_auth_hash)
                      if settings.basic_auth_hash else None)
        self._listener = _listen(settings.host, settings.port)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_lock = threading.Lock()
        self._wake_closed = False
        for s in (self._listener, self._wake_r, self._wake_w):
            s.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}  # accept order: the first is the oldest
        # Results from the threads: (connection, which pool, answer or None for a password
        # that passed, refusal reason or "error" or None).
        self._done: collections.deque[tuple[_Conn, str, bytes | None, str | None]] = (
            collections.deque())
        self._jobs: queue.SimpleQueue[tuple[_Conn, _Request] | None] = queue.SimpleQueue()
        self._checks: queue.SimpleQueue[tuple[_Conn, bytes, bytes] | None] = queue.SimpleQueue()
        self._rendering = 0  # in the pool or queued for it (the I/O thread alone counts)
        self._checking = 0
        self._accept_paused_until = 0.0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._log = RateLimitedLog(log)
        self._collector = _ServerCollector(self)
        registry.register(self._collector)

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def start(self) -> None:
        """Start the I/O thread, the render pool and (with basic auth) the password checker."""
        self._threads.append(threading.Thread(target=self._serve, name="metrics-io", daemon=True))
        self._threads += [
            threading.Thread(target=self._render_loop, name=f"metrics-render-{i}", daemon=True)
            for i in range(self.settings.max_requests)
        ]
        if self._auth is not None:
            self._threads.append(
                threading.Thread(target=self._check_loop, name="metrics-auth", daemon=True))
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 1.0) -> bool:
        """Stop serving, close every connection; True if the threads ended within ``timeout``.

        A render in progress is left to finish on its own (its thread is a daemon): it holds
        no connection any more, and the agent must not wait on a collector to exit."""
        if self._stopping:
            return True
        self._stopping = True
        for _ in range(self.settings.max_requests):
            self._jobs.put(None)
        self._checks.put(None)
        self._wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not self._threads:  # never started: the I/O thread did not close these
            self._close_all()
        with contextlib.suppress(KeyError):  # unregistered by the caller already
            self.registry.unregister(self._collector)
        return not any(t.is_alive() for t in self._threads)

    # --- the I/O thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        sel = self._selector
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping:
                for key, _ in sel.select(self._select_timeout()):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        _drain(self._wake_r)
                    else:
                        self._step(key.data)
                self._collect_results()
                self._expire()
        except Exception:  # a bug here must not end /metrics silently
            log.exception("the metrics server failed; /metrics is down")
        finally:
            self._close_all()

    def _select_timeout(self) -> float:
        now = time.monotonic()
        soonest = min((c.deadline for c in self._conns.values()), default=now + 1.0)
        if self._accept_paused_until:
            soonest = min(soonest, self._accept_paused_until)
        return min(1.0, max(0.0, soonest - now))

    def _accept(self) -> None:
        now = time.monotonic()
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: stop accepting for a moment
                self._log.log(logging.WARNING, "accept", "metrics: cannot accept: %s", exc)
                self._selector.unregister(self._listener)
                self._accept_paused_until = now + 0.1
                return
            peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else "?"
            if len(self._conns) >= self.settings.max_connections and not self._make_room():
                # Every open one has a render or a password check in progress: the newcomer
                # is turned away (Prometheus retries at its next scrape).
                self._refuse("connections", peer)
                sock.close()
                continue
            sock.setblocking(False)
            if self._tls is not None:
                try:
                    sock = self._tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ssl.SSLError):  # the peer is gone already
                    sock.close()
                    continue
            conn = _Conn(sock, peer, _HANDSHAKE if self._tls else _READ,
                         now + self.settings.read_timeout)
            self._conns[id(conn)] = conn
            # A request (or ClientHello) that came with the connection is read now, before
            # the next accepts of this batch could push the connection out as idle.
            self._step(conn)

    def _make_room(self) -> bool:
        """Close one connection for a new one; False if every one has a render or a password
        check in progress (at most max_requests + a few: the cap is not that small).

        First one answered already, then the oldest still to send its request, then the
        oldest still taking its answer: a client that reads its answer slowly on purpose
        could otherwise fill the cap for write_timeout at the price of a render each."""
        for phases in ((_LINGERING,), (_HANDSHAKE, _READ), (_WRITE,)):
            victim = next((c for c in self._conns.values() if c.phase in phases), None)
            if victim is not None:
                if victim.phase != _LINGERING:
                    self._refuse("connections", victim.peer)
                self._close(victim)
                return True
        return False

    # --- the workers -------------------------------------------------------------------------

    def _finish(self, conn: _Conn, pool: str, answer: bytes | None, reason: str | None) -> None:
        self._done.append((conn, pool, answer, reason))
        self._wake()

    def _render_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            conn, request = job
            try:
                answer, reason = self._render(request), None
            except Exception:  # a collector's bug: a 500 and a log line, the worker goes on
                self._log.log(logging.ERROR, "render", "metrics: rendering failed",
                              exc_info=True)
                answer, reason = _FAILED, "error"
            self._finish(conn, "render", answer, reason)

    def _render(self, request: _Request) -> bytes:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        registry: Any = self.registry
        names = parse_qs(request.query).get("name[]")
        if names:  # as prometheus_client serves it: only these families
            registry = registry.restricted_registry(names)
        body = encoder(registry)
        headers: tuple[tuple[str, str], ...] = (("Content-Type", content_type),)
        if gzip_accepted(request.headers.get("accept-encoding", "")):
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
            headers += (("Content-Encoding", "gzip"),)
        return _response(200, body, headers)

    def _check_loop(self) -> None:
        assert self._auth is not None
        while (job := self._checks.get()) is not None:
            conn, user, password = job
            ok = self._auth.verify(user, password)
            self._finish(conn, "check", None if ok else _UNAUTHORIZED,
                         None if ok else "unauthorized")


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As http.server does: a restarted agent can bind while old connections sit in
        # TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Room for a burst: a full accept queue drops SYNs, and the client's retry comes a
        # second later. The kernel caps it at net.core.somaxconn.
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def _drain(sock: socket.socket) -> None:
    for _ in range(64):
        try:
            if not sock.recv(4096):
                return
        except OSError:
            return


class _ServerCollector(Collector):
    """The server's own counters, in the agent's registry."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        s = self.server
        refused = CounterMetricFamily(
            "shopfloor_metrics_requests_refused",
            "Requests and connections the /metrics server refused or dropped, by reason.",
            labels=["reason"],
        )
        for reason in REFUSAL_REASONS:
            refused.add_metric([reason], s.refused[reason])
        yield refused
        served = CounterMetricFamily(
            "shopfloor_metrics_requests_served", "Scrapes of /metrics answered (HTTP 200)."
        )
        served.add_metric([], s.served)
        yield served
        open_now = GaugeMetricFamily(
            "shopfloor_metrics_connections", "Connections open to the /metrics server."
        )
        open_now.add_metric([], s.open_connections)
        yield open_now
