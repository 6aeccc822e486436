"""TLS of the ``/metrics`` server: the server context made from the certificate, key and
client CA files, and :class:`TlsFileError` naming the setting whose file cannot be used.

Apart from the server (:mod:`shopfloor.agent.metrics_server`, which re-exports both) because
the config loader (:mod:`shopfloor.agent.config_checks`) builds the same context to refuse a
bad file with its line, before anything listens.
"""

from __future__ import annotations

import ssl

__all__ = ["TlsFileError", "server_tls_context"]


class TlsFileError(ValueError):
    """A TLS file of the server that cannot be used; ``key`` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


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
