"""The files a config names, checked when it is loaded: each readable now and holding what it is
for, not found wanting at the first reconnect at 3 a.m.

TLS certificates and keys, CA files and the MQTT password file are resolved against the
config's folder and loaded as the connection would load them (:func:`_readable_files`); who may
scrape /metrics, basic auth and client certificates, is checked as the server will use it
(:func:`_metrics_access`). Apart from the parsing of the sections because these look at the
machine, not at the text.
"""

from __future__ import annotations

import os
import re
import ssl
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from shopfloor.agent.config_sections import MetricsSettings
from shopfloor.agent.metrics_auth import PasswordHash
from shopfloor.agent.metrics_tls import TlsFileError, server_tls_context
from shopfloor.config import Parser, file_kind

__all__: list[str] = []


def _metrics_access(parser: Parser, metrics: MetricsSettings, base_dir: Path) -> MetricsSettings:
    """Who may scrape /metrics - basic auth, TLS client certificates - checked as the server
    will use them, so a bad hash or CA file fails here with its line, not at start."""
    metrics = _readable_files(parser, "metrics", metrics, base_dir, ("client_ca_file",))
    if metrics.client_ca_file and not metrics.cert_file:
        raise parser.error(
            "metrics.client_ca_file", "client certificates need TLS: set cert_file and key_file"
        )
    if metrics.client_ca_file:
        try:
            server_tls_context(metrics.cert_file, metrics.key_file, metrics.client_ca_file)
        except TlsFileError as exc:
            raise parser.error(f"metrics.{exc.key}", str(exc)) from None
    user, hashed = metrics.basic_auth_user, metrics.basic_auth_hash
    if bool(user) != bool(hashed):
        raise parser.error(
            f"metrics.basic_auth_{'hash' if user else 'user'}",
            "basic auth needs both basic_auth_user and basic_auth_hash",
        )
    if ":" in user:  # RFC 7617: the colon ends the user name
        raise parser.error("metrics.basic_auth_user", "may not contain ':'")
    if hashed:
        try:
            PasswordHash.parse(hashed)
        except ValueError as exc:
            raise parser.error("metrics.basic_auth_hash", str(exc)) from None
    return metrics


def _readable_files(
    parser: Parser, section: str, settings: Any, base_dir: Path, keys: tuple[str, ...]
) -> Any:
    """Resolve file settings against the config's folder; each must be a regular file,
    readable now, holding what it is for (a certificate, a key, a UTF-8 password)."""
    for key in keys:
        value = getattr(settings, key)
        if value:
            path = Path(value) if os.path.isabs(value) else base_dir / value
            # stat before anything opens it: a FIFO would hang the load, a directory passes
            # os.access and fails only at the first connect.
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                raise parser.error(
                    f"{section}.{key}", f"cannot read {str(path)!r}: {exc.strerror or exc}"
                ) from None
            if not stat.S_ISREG(mode):
                raise parser.error(
                    f"{section}.{key}", f"{str(path)!r} is {file_kind(mode)}, not a file"
                )
            if not os.access(path, os.R_OK):
                raise parser.error(f"{section}.{key}", f"cannot read {str(path)!r}")
            settings = replace(settings, **{key: str(path)})
    if bool(getattr(settings, "cert_file", "")) != bool(getattr(settings, "key_file", "")):
        raise parser.error(f"{section}.cert_file", "a certificate needs key_file too, and back")
    _file_contents(parser, section, settings)
    return settings


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> str:
    # Called by ssl only for an encrypted key: nobody is there to type its passphrase.
    raise _EncryptedKeyError


def _ssl_reason(exc: OSError) -> str:
    # "[SSL] PEM lib (_ssl.c:3900)": the source position helps nobody who edits a config.
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))


def _file_contents(parser: Parser, section: str, settings: Any) -> None:
    """Load each named file as what it is for, as the connection would at 3 a.m."""
    password = getattr(settings, "password_file", "")
    if password:
        try:
            Path(password).read_bytes().decode("utf-8")  # never shown: it is the password
        except OSError as exc:
            raise parser.error(
                f"{section}.password_file", f"cannot read {password!r}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise parser.error(
                f"{section}.password_file",
                f"{password!r} is not UTF-8 text: it must hold the password on one line",
            ) from None
    ca = getattr(settings, "ca_file", "")
    if ca:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca)
        except OSError as exc:  # ssl.SSLError is one
            raise parser.error(
                f"{section}.ca_file",
                f"{ca!r} holds no CA certificate (PEM) that can be loaded: {_ssl_reason(exc)}",
            ) from None
    cert, key = getattr(settings, "cert_file", ""), getattr(settings, "key_file", "")
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # First the certificate alone, so a file of the wrong kind is blamed on its own key.
        try:
            context.load_verify_locations(cafile=cert)
        except OSError as exc:
            raise parser.error(
                f"{section}.cert_file",
                f"{cert!r} holds no certificate (PEM) that can be loaded: {_ssl_reason(exc)}",
            ) from None
        try:
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except _EncryptedKeyError:
            raise parser.error(
                f"{section}.key_file",
                f"{key!r} is encrypted: give an unencrypted key (the agent starts unattended)",
            ) from None
        except OSError as exc:
            raise parser.error(
                f"{section}.key_file",
                f"{key!r} is not the private key (PEM) of {cert!r}: {_ssl_reason(exc)}",
            ) from None
