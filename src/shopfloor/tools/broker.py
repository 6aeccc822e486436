"""A Mosquitto process on loopback: for the demo, the benchmarks and the tests.

Each broker gets its own directory (configuration, log, persistence database, certificates),
listens on 127.0.0.1 only on a free port, and keeps its port across restarts so that clients
reconnect to it. It is stopped by signal (SIGTERM lets persistence save sessions; SIGKILL is a
power cut).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BrokerError", "Mosquitto", "TlsFiles", "find_mosquitto", "free_port",
           "make_tls_files", "stop_process"]

HOST = "127.0.0.1"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
INSTALL_HINT = "`./dev.sh test` or `./dev.sh demo` installs it (Debian package mosquitto)"


class BrokerError(RuntimeError):
    """The broker (or a tool it needs) could not be started."""


def find_mosquitto() -> str | None:
    """The mosquitto binary on PATH or in the sbin directories (Debian puts it in /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path  # the same key under the password "secret"


def _run(*args: str, cwd: Path) -> None:
    done = subprocess.run(  # noqa: S603 - a fixed argv over our own files
        args, cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise BrokerError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def make_tls_files(directory: Path) -> TlsFiles:
    """Make the certificates with the ``openssl`` command line (EC P-256, valid two days)."""
    if shutil.which("openssl") is None:
        raise BrokerError("the openssl command is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
         "-subj", "/CN=shopfloor test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    for name, usage, extra in (
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
        ("client", "clientAuth", ""),
    ):
        (directory / f"{name}.ext").write_text(
            f"{extra}extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
        common_name = "127.0.0.1" if name == "server" else "shopfloor-agent"
        _run("openssl", "req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={common_name}", cwd=directory)
        _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
             cwd=directory)
    _run("openssl", "pkey", "-in", "client.key", "-aes256", "-passout", "pass:secret",
         "-out", "client-encrypted.key", cwd=directory)
    return TlsFiles(
        ca_file=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        client_key_encrypted=directory / "client-encrypted.key",
    )


class Mosquitto:
    """One Mosquitto process on 127.0.0.1 and an ephemeral port, in its own directory.

    Parameters
    ----------
    binary
        Path of the mosquitto executable.
    workdir
        Directory for the configuration, log, persistence database and certificates.
    persistence
        Keep sessions and queued messages across a SIGTERM restart.
    tls
        Serve TLS only, requiring a client certificate signed by :attr:`tls_files`' CA.
    users
        User name -> password; when given, anonymous clients are refused.
    """

    host = HOST

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        persistence: bool = True,
        tls: bool = False,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.persistence = persistence
        self.users = dict(users or {})
        self.port = free_port()
        self.log_file = workdir / "mosquitto.log"
        self.tls_files = make_tls_files(workdir / "tls") if tls else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ever_started = False
        workdir.mkdir(parents=True, exist_ok=True)
        if self.users:
            passwords = workdir / "passwords"
            passwords.touch(mode=0o600)
            for user, password in self.users.items():
                _run("mosquitto_passwd", "-b", str(passwords), user, password, cwd=workdir)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {HOST}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_file}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            # Mosquitto's default of 1000 queued QoS 1 messages per client silently drops the
            # rest when a subscriber falls behind (a busy CI machine, a burst in a test, the
            # demo at high speed); deploy/mosquitto/mosquitto.conf raises it for plants too.
            "max_queued_messages 100000",
            # Without it, Nagle holds back small messages to a client that also publishes (the
            # agent's events), adding tens of ms to every alarm; the plant config sets it too.
            "set_tcp_nodelay true",
            # Started as root, mosquitto would switch to the 'mosquitto' user, which cannot
            # read our temporary directory; as anyone else this line is ignored.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if self.users:
            lines.append(f"password_file {self.workdir / 'passwords'}")
        if self.tls_files is not None:
            t = self.tls_files
            lines += [f"cafile {t.ca_file}", f"certfile {t.server_cert}",
                      f"keyfile {t.server_key}", "require_certificate true"]
        config = self.workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until the port accepts TCP connections."""
        if self.running:
            raise BrokerError("mosquitto is already running")
        # A port picked by free_port() may be taken before mosquitto binds it; only a first
        # start may move to another port (a restart must keep the clients' port).
        for attempt in range(3):
            try:
                self._start_once(timeout)
                self._ever_started = True
                return
            except BrokerError:
                if self._ever_started or attempt == 2 or "in use" not in self.log_tail():
                    raise
                self.port = free_port()

    def _start_once(self, timeout: float) -> None:
        config = self._write_config()
        with self.log_file.open("ab") as out:
            self._proc = subprocess.Popen(  # noqa: S603 - our binary, our config
                [self.binary, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise BrokerError(f"mosquitto exited with code {code}:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop(signal.SIGKILL)
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout} s:\n"
                          f"{self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Send ``sig`` and wait for the process; SIGKILL if it outlives ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, sig, timeout)

    def restart(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop with ``sig`` and start again on the same port."""
        self.stop(sig)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM,
                 timeout: float = 10.0) -> int | None:
    """Send ``sig`` to a child and wait; SIGKILL if it outlives ``timeout``. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode
