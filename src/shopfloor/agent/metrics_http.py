"""The HTTP of the ``/metrics`` server: reading a request head, and the fixed answers.

:func:`_head_end` finds where a request head ends (capped at :data:`MAX_HEADER_BYTES`),
:func:`_parse` reads its request line and headers into a :class:`_Request`, and
:func:`_response` builds an answer; the answers that never change (400, 404, 503, ...) are built
once here. Only bytes in and bytes out, apart from the connections that carry them
(:mod:`shopfloor.agent.metrics_connections`); :mod:`shopfloor.agent.metrics_server` re-exports
:data:`MAX_HEADER_BYTES`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_HEADER_BYTES"]

#: Request line and headers together; Prometheus sends a few hundred bytes.
MAX_HEADER_BYTES = 16 * 1024

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
