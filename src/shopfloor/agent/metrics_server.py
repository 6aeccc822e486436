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
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import gzip
import hashlib
import hmac
import logging
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

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

#: Request line and headers together; Prometheus sends a few hundred bytes.
MAX_HEADER_BYTES = 16 * 1024
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256: ~0.2 s on an x86 core, ~1 s on a Raspberry Pi 4,
#: paid once per agent run by a legitimate client (see BasicAuth).
DEFAULT_ITERATIONS = 600_000
HASH_SCHEME = "pbkdf2-sha256"
MIN_ITERATIONS = 10_000
MAX_ITERATIONS = 100_000_000
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
# Password checks waiting or running: more get 503, so wrong passwords cannot queue up work.
_VERIFY_SLOTS = 4
_ACCEPT_BATCH = 64  # connections accepted per turn of the loop, so open ones still get turns
_CHUNK = 64 * 1024
_LINGER = 1.0  # seconds to let a client read its answer and close first (no RST on our close)
_LINGER_BYTES = 64 * 1024
_GZIP_LEVEL = 6  # most of level 9's ratio on exposition text for a fraction of its CPU

_STATUS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_HANDSHAKE, _READ, _WORK, _WRITE, _LINGERING = range(5)


class TlsFileError(ValueError):
    """A TLS file of the server that cannot be used; ``key`` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


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


# --- passwords -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """``pbkdf2-sha256$ITERATIONS$SALT$DIGEST`` (salt and digest in base64, unpadded)."""

    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Raises ValueError saying what is wrong (never echoing the text)."""
        parts = text.split("$")
        if len(parts) != 4 or parts[0] != HASH_SCHEME:
            raise ValueError(
                f"must be {HASH_SCHEME}$ITERATIONS$SALT$HASH, as `shopfloor hash-password` "
                "prints it"
            )
        if not parts[1].isdigit():
            raise ValueError("the iteration count is not a whole number")
        iterations = int(parts[1])
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ValueError(
                f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}; "
                f"got {iterations}"
            )
        try:
            salt, digest = _unb64(parts[2]), _unb64(parts[3])
        except (binascii.Error, ValueError):
            raise ValueError("salt and hash must be base64") from None
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("the salt needs 8 bytes at least and the hash 16")
        return cls(iterations, salt, digest)

    def verify(self, password: bytes) -> bool:
        """The slow part: one PBKDF2 (hashlib releases the GIL while it runs)."""
        got = hashlib.pbkdf2_hmac(
            "sha256", password, self.salt, self.iterations, dklen=len(self.digest)
        )
        return hmac.compare_digest(got, self.digest)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The ``basic_auth_hash`` of ``password``: salted PBKDF2-SHA256 (bcrypt is not a
    dependency, and the standard library has this)."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}")
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{HASH_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


class BasicAuth:
    """One user and the hash of their password.

    :meth:`verify` runs the hash; :meth:`known` answers in microseconds for the credentials
    that passed last, compared as a digest keyed by a secret of this process, so the password
    itself is never kept.
    """

    def __init__(self, user: str, password_hash: str) -> None:
        self.user = user.encode("utf-8")
        self.hash = PasswordHash.parse(password_hash)
        self._key = os.urandom(32)
        self._passed: bytes | None = None

    def _fingerprint(self, user: bytes, password: bytes) -> bytes:
        message = len(user).to_bytes(4, "big") + user + password
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def known(self, user: bytes, password: bytes) -> bool:
        passed = self._passed
        return passed is not None and hmac.compare_digest(passed, self._fingerprint(user, password))

    def verify(self, user: bytes, password: bytes) -> bool:
        # The hash runs whatever the user name, so a wrong name takes as long as a wrong
        # password; & (not `and`) keeps both comparisons.
        ok = hmac.compare_digest(user, self.user) & self.hash.verify(password)
        if ok:
            self._passed = self._fingerprint(user, password)
        return ok


def _credentials(header: str) -> tuple[bytes, bytes] | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


# --- TLS -------------------------------------------------------------------------------------


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    # Called by OpenSSL only for an encrypted key: nothing could type its passphrase.
    raise _EncryptedKey


def server_tls_context(cert_file: str, key_file: str, client_ca_file: str = "") -> ssl.SSLContext:
    """A server context, TLS 1.2 at least; with ``client_ca_file`` a client certificate signed
    by one of its CAs is required. Raises :class:`TlsFileError` naming the setting."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file or None, password=_no_password)
    except _EncryptedKey:
        raise TlsFileError(
            "key_file", f"{key_file} is encrypted: give an unencrypted key"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise TlsFileError(
            "cert_file", f"cannot use {cert_file} with the key {key_file}: {exc}"
        ) from None
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsFileError(
                "client_ca_file", f"{client_ca_file} holds no usable CA certificate: {exc}"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# --- HTTP ------------------------------------------------------------------------------------


def _response(status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {_STATUS[status]}", f"Content-Length: {len(body)}",
             "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)
_BAD_REQUEST = _response(400, b"bad request\n", _TEXT)
_TOO_LARGE = _response(431, b"request header too large\n", _TEXT)
_NOT_FOUND = _response(404, b"not found: the metrics are at /metrics\n", _TEXT)
_NOT_ALLOWED = _response(405, b"use GET\n", (*_TEXT, ("Allow", "GET")))
_BUSY = _response(503, b"too many requests at once\n", (*_TEXT, ("Retry-After", "1")))
_UNAUTHORIZED = _response(
    401, b"unauthorized\n", (*_TEXT, ("WWW-Authenticate", 'Basic realm="shopfloor"'))
)
_FAILED = _response(500, b"the metrics could not be rendered (logged)\n", _TEXT)
_LANDING = _response(200, b"shopfloor agent: the metrics are at /metrics\n", _TEXT)


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]


def _head_end(buffer: bytearray) -> int:
    """Length of the request head including its blank line, or -1 while incomplete."""
    ends = [i + n for i, n in ((buffer.find(b"\r\n\r\n"), 4), (buffer.find(b"\n\n"), 2))
            if i >= 0]
    return min(ends) if ends else -1


def _parse(head: bytes) -> _Request | None:
    lines = head.decode("latin-1").splitlines()
    parts = lines[0].split() if lines else []
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():  # RFC 9112: no space before the colon
            return None
        headers[name.lower()] = value.strip()
    path, _, query = parts[1].partition("?")
    return _Request(parts[0], path, query, headers)


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


# --- the server ------------------------------------------------------------------------------


class MetricsServer:
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
