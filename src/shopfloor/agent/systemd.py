"""systemd's notify protocol (``sd_notify``) in a few lines, with no dependency.

Under ``Type=notify`` systemd hands the service ``$NOTIFY_SOCKET``, a unix datagram socket (a
path, or an abstract name written with a leading ``@``), and reads newline-separated
``KEY=VALUE`` lines from it: ``READY=1`` once the service is usable, ``STATUS=...`` for
``systemctl status``, ``STOPPING=1`` when it begins to shut down, and ``WATCHDOG=1`` keep-alive
pings when ``WatchdogSec=`` is set (systemd then passes the interval in ``$WATCHDOG_USEC`` and
the process it expects pings from in ``$WATCHDOG_PID``).

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op that returns False, so the agent
runs the same from a terminal. A notification that cannot be delivered is logged, never
raised: systemd going away must not take the agent down with it.

Examples
--------
>>> notifier = Notifier(environ={})  # not under systemd
>>> notifier.enabled, notifier.watchdog_interval, notifier.ready("running")
(False, None, False)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "Notification",
    "Notifier",
    "NotifyListener",
    "notify",
    "socket_address",
    "watchdog_interval",
]

log = logging.getLogger("shopfloor.agent.systemd")

#: Fraction of the watchdog interval between two pings at most: systemd recommends half, a
#: quarter leaves room for a slow batch between the pings without ever missing the deadline.
PING_FRACTION = 0.25


def socket_address(name: str) -> str | None:
    """The ``AF_UNIX`` address of a ``$NOTIFY_SOCKET`` value, None if it is not one.

    An abstract name (``@name``) becomes ``"\\0name"``; a path is used as it is. Other forms
    (systemd 253 and later may hand a VM a ``vsock:`` address) are not unix sockets.

    >>> socket_address("@shopfloor/notify"), socket_address("/run/systemd/notify")
    ('\\x00shopfloor/notify', '/run/systemd/notify')
    >>> socket_address("vsock:2:1234") is None
    True
    """
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``KEY=VALUE`` lines) to ``$NOTIFY_SOCKET``; True if it was sent.

    False, and nothing done, when the variable is unset (not under systemd); False with a
    warning when it cannot be delivered.
    """
    env = os.environ if environ is None else environ
    name = env.get("NOTIFY_SOCKET", "")
    if not name:
        return False
    address = socket_address(name)
    if address is None:
        log.warning("NOTIFY_SOCKET=%r is not a unix socket path or @name: not notifying", name)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", name, exc.strerror or exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None
                      ) -> float | None:
    """The watchdog timeout systemd expects pings within, in seconds; None when it expects none.

    Like ``sd_watchdog_enabled``: ``$WATCHDOG_USEC`` must be a positive integer, and
    ``$WATCHDOG_PID``, when set, must name this process (``pid``, default ``os.getpid()``).

    >>> watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42)
    30.0
    >>> watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, pid=42) is None
    True
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a whole number of microseconds: no watchdog", raw)
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None  # the pings are expected from another process
        except ValueError:
            return None
    return usec / 1e6


class Notifier:
    """The agent's side of ``Type=notify``: readiness, status, watchdog pings, stopping.

    Parameters
    ----------
    environ
        Where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are read (default:
        ``os.environ``), once, here.
    pid
        This process (default ``os.getpid()``), checked against ``WATCHDOG_PID``.
    clock
        Monotonic seconds, for the pings' rate limit.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = dict(os.environ if environ is None else environ)
        self._env = {"NOTIFY_SOCKET": env.get("NOTIFY_SOCKET", "")}
        self.enabled = bool(self._env["NOTIFY_SOCKET"])
        #: Seconds systemd waits for a ping, or None when it expects none.
        self.watchdog_interval = watchdog_interval(env, pid) if self.enabled else None
        self._clock = clock
        self._last_ping = -float("inf")
        self._lock = threading.Lock()
        self.pings = 0  # pings sent (for tests and the log)

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True if sent."""
        if not self.enabled:
            return False
        return notify("\n".join(lines), self._env)

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: configuration valid, kernels compiled, /metrics listening."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line for ``systemctl status``."""
        return self.send(*_status(text))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun (draining, flushing, disconnecting)."""
        return self.send("STOPPING=1", *_status(status))

    def watchdog(self, status: Callable[[], str] | None = None) -> bool:
        """``WATCHDOG=1`` if the watchdog is on and the last ping is old enough; True if sent.

        Meant to be called on every turn of the worker loop: pings go out at most every
        :data:`PING_FRACTION` of the interval, however often it is called. ``status``, if
        given, is called only when a ping goes out, and its text rides along as ``STATUS=``.
        """
        interval = self.watchdog_interval
        if interval is None:
            return False
        with self._lock:
            now = self._clock()
            if now - self._last_ping < interval * PING_FRACTION:
                return False
            self._last_ping = now
        sent = self.send("WATCHDOG=1", *_status(status() if status is not None else None))
        if sent:
            self.pings += 1
        return sent


def _status(text: str | None) -> tuple[str, ...]:
    # One line: a newline would start a new KEY=VALUE assignment in the datagram.
    return () if text is None else ("STATUS=" + " ".join(text.split()),)


# --- the service manager's end, for tests, benchmarks and supervisors other than systemd ------


@dataclass(frozen=True, slots=True)
class Notification:
    """One datagram received: when (monotonic seconds), from which process, what it said."""

    time: float
    pid: int  # the sender, from the kernel's SCM_CREDENTIALS (what NotifyAccess=main checks)
    fields: dict[str, str]


class NotifyListener:
    """A bound unix datagram socket that collects notifications, as systemd's end of
    ``$NOTIFY_SOCKET``; :attr:`name` is the value to hand a child in that variable.

    Parameters
    ----------
    name
        A socket path, or ``@name`` for an abstract socket (no file; gone with the socket).
    """

    def __init__(self, name: str) -> None:
        address = socket_address(name)
        if address is None:
            raise ValueError(f"not a socket path or @name: {name!r}")
        self.name = name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(address)
        self._sock.settimeout(0.1)
        self._received: list[Notification] = []
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        credentials = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self._closed.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, credentials)
            except TimeoutError:
                continue
            except OSError:
                return
            pid = 0
            for level, kind, payload in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                    pid = struct.unpack("3i", payload[: struct.calcsize("3i")])[0]
            fields = dict(
                line.split("=", 1) for line in data.decode("utf-8", "replace").split("\n")
                if "=" in line
            )
            with self._cond:
                self._received.append(Notification(time.monotonic(), pid, fields))
                self._cond.notify_all()

    @property
    def received(self) -> list[Notification]:
        """Everything received so far, in order."""
        with self._cond:
            return list(self._received)

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30.0,
                 after: int = 0) -> Notification | None:
        """The first notification from index ``after`` on that sets ``key`` (to ``value``);
        None if none arrives within ``timeout`` seconds."""
        def match() -> Notification | None:
            for n in self._received[after:]:
                if key in n.fields and (value is None or n.fields[key] == value):
                    return n
            return None

        with self._cond:
            self._cond.wait_for(lambda: match() is not None, timeout)
            return match()

    def close(self) -> None:
        """Stop receiving and close the socket (a path socket's file is removed)."""
        self._closed.set()
        self._thread.join()
        self._sock.close()
        if not self.name.startswith("@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
