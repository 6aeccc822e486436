"""paho-mqtt adapted to a service: a verifying TLS context, quiet logging, a client that says why.

:func:`tls_context` builds the client's TLS context from the link's
:class:`~shopfloor.receiving.mqtt_settings.TlsSettings` (an encrypted key fails instead of prompting
on the terminal), ``_PahoLog`` turns paho's own log lines down to DEBUG, and ``_Client`` is paho's
client remembering why a connection attempt failed and closing the socket of a refused TLS
handshake. These are the workarounds for paho itself (see the pitfalls in
:mod:`shopfloor.receiving.mqtt`), kept apart from the link's logic; :mod:`shopfloor.receiving.mqtt`
re-exports :func:`tls_context`.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from shopfloor.receiving.mqtt_settings import TlsSettings

__all__ = ["tls_context"]


def _fail_password() -> str:
    raise _EncryptedKeyError


class _EncryptedKeyError(Exception):
    pass


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A verifying client context (hostname checked) with TLS >= ``tls.minimum_version``.

    Raises ValueError naming the file that cannot be used.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use tls.ca_file {tls.ca_file}: {exc}") from None
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.minimum_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    if tls.cert_file is not None:
        key = tls.key_file or tls.cert_file
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_fail_password)
        except _EncryptedKeyError:
            raise ValueError(f"tls.key_file {key} is encrypted: give an unencrypted key") from None
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot use tls.cert_file {tls.cert_file} / key {key}: {exc}"
            ) from None
    return context


class _PahoLog:
    """paho's own log lines, all at DEBUG.

    paho's levels are not ours: it logs a routine "Client is not connected" as ERROR on every
    reconnect attempt. The events that matter are logged by MqttLink's callbacks.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def log(self, level: int, message: str, *args: object) -> None:
        self._logger.debug(message, *args)


class _Client(paho.Client):
    """paho's client, remembering why the last connection attempt failed: paho calls
    ``on_connect_fail`` without the exception (a TLS refusal looked like a broker that is
    down, even at debug level)."""

    # Kept as text: the exception's traceback would keep the failed socket alive (and
    # unclosed) for as long as the client lives.
    last_error: str | None = None
    # Called before every connection attempt, first one included (MqttLink forgets what it
    # owes the old connection: paho drops queued packets here and the broker redelivers).
    on_reconnecting: Callable[[], None] | None = None

    def reconnect(self) -> MQTTErrorCode:
        if self.on_reconnecting is not None:
            self.on_reconnecting()
        try:
            return super().reconnect()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        # paho's own leaves the socket of a failed handshake (a refused certificate) open
        # until the collector finds it, once per retry: close it here. Our contexts check the
        # host name themselves (tls_context), so paho's second check is not needed.
        assert self._ssl_context is not None
        ssl_sock = self._ssl_context.wrap_socket(
            tcp_sock, server_hostname=self._host, do_handshake_on_connect=False)
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock
