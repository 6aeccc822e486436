"""Config errors that used to pass ``check`` or end in a traceback (issue 10, item 9).

Each test feeds the input that broke it. ``check`` and ``run`` share one validation
(:func:`~shopfloor.agent.config.load_agent_config`, then
:func:`~shopfloor.agent.config.preflight`): both exit 2 with file, line and key, never a
traceback, and ``run`` fails before it warms up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.agent.config import (
    MetricsPortInUseError,
    load_agent_config,
    parse_agent_config,
    preflight,
)
from shopfloor.agent.run import Agent
from shopfloor.cli import main
from shopfloor.config import load_config, parse_config
from shopfloor.errors import ConfigError
from shopfloor.tools.broker import TlsFiles, make_tls_files

BASE = """\
[mqtt]
host = "127.0.0.1"
port = 1883

[[subscriptions]]
topic = "plant/{site}/{line}/{asset}/{signal}"
codec = "json"

[events]
prefix = "shopfloor"

[metrics]
host = "127.0.0.1"
port = 0
"""


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the only line of ``text`` that holds ``needle``."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check", "--config", str(path)])
    return code, capsys.readouterr().err


def run_agent(path: Path) -> subprocess.CompletedProcess[str]:
    """``shopfloor run`` as systemd starts it; the timeout turns a hang into a failure."""
    return subprocess.run(
        [sys.executable, "-m", "shopfloor", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# --- /metrics: a busy port, a host that is none ----------------------------------------------


def test_busy_metrics_port_stops_run_with_port_and_option(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace("port = 0", f"port = {busy_port}")
    path = write(tmp_path, text)
    where = f"{path}:{line_of(text, f'port = {busy_port}')}: metrics.port: "
    said = f"port {busy_port} on 127.0.0.1 is already in use"
    done = run_agent(path)
    assert done.returncode == 2, done.stderr
    assert f"shopfloor run: error: {where}{said}" in done.stderr
    assert "[metrics] port" in done.stderr
    assert "Traceback" not in done.stderr
    # check says so too, but passes: the agent being checked may be the one holding it.
    code, err = check(path, capsys)
    assert code == 0
    assert f"shopfloor check: warning: {where}{said}" in err


def test_port_taken_between_check_and_start_is_a_config_error(busy_port: int) -> None:
    text = BASE.replace("port = 0", f"port = {busy_port}")
    agent = Agent(parse_agent_config(text, source="agent.toml"))
    with pytest.raises(MetricsPortInUseError) as info:
        agent.start()
    assert (info.value.key, info.value.line) == ("metrics.port", line_of(text, str(busy_port)))
    # Nothing was left running: the listener comes before the worker and the connection.
    assert agent._worker_thread is None
    assert agent.metrics_server is None


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("not a host", "is no address or host name this machine can resolve"),
        ("300.1.2.3", "is no address or host name this machine can resolve"),
        # TEST-NET-1 (RFC 5737) is never an address of a real machine: bind says EADDRNOTAVAIL.
        ("192.0.2.1", "is not an address of this machine"),
    ],
)
def test_invalid_metrics_host(
    tmp_path: Path, host: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace('host = "127.0.0.1"\nport = 0', f'host = "{host}"\nport = 0')
    path = write(tmp_path, text)
    code, err = check(path, capsys)
    assert code == 2
    assert f"{path}:{line_of(text, host)}: metrics.host: {host!r} {words}" in err
    assert "Traceback" not in err


# --- the state directory ---------------------------------------------------------------------


def test_state_directory_that_cannot_be_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "blocker").write_text("a file where a directory would go\n")
    text = BASE + '\n[state]\ndirectory = "blocker/checkpoints"\n'
    path = write(tmp_path, text)
    said = (f"{path}:{line_of(text, 'directory =')}: state.directory: cannot create "
            f"'{tmp_path}/blocker/checkpoints': '{tmp_path}/blocker' is not a directory")
    code, err = check(path, capsys)
    assert code == 2
    assert said in err
    done = run_agent(path)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr


def test_state_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    cfg = parse_agent_config(BASE + '[state]\ndirectory = "state"\n', base_dir=tmp_path)
    for create in (False, True):
        with pytest.raises(ConfigError, match=r"state\.directory: '.*/state' is not a directory"):
            preflight(cfg, create=create)


def test_run_makes_the_state_directory_and_check_does_not(tmp_path: Path) -> None:
    cfg = parse_agent_config(BASE + '[state]\ndirectory = "var/lib/sf"\n', base_dir=tmp_path)
    preflight(cfg, create=False)
    assert not (tmp_path / "var").exists()
    preflight(cfg, create=True)
    assert (tmp_path / "var" / "lib" / "sf").is_dir()


# --- the config file itself ------------------------------------------------------------------


def test_non_utf8_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    # Latin-1 as an old editor saves it: the é of "Presse-Hé" is the single byte 0xe9.
    path.write_bytes(b'[mqtt]\nhost = "127.0.0.1"\nclient_id = "Presse-H\xe9"\n')
    code, err = check(path, capsys)
    assert code == 2
    assert f"{path}:3: not UTF-8 text: byte 0xe9 at column 22; save the file as UTF-8" in err
    assert "Traceback" not in err
    # The replay reads configs the same way.
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 3


def test_crlf_config_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(BASE.replace("\n", "\r\n").encode())
    assert load_agent_config(path).events.prefix == "shopfloor"


def test_fifo_as_config_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "shopfloor", "check", "--config", str(fifo)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{fifo}: is a FIFO (named pipe), not a regular file" in done.stderr


def test_directory_as_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, capsys)
    assert code == 2
    assert f"{tmp_path}: is a directory, not a regular file" in err
    assert "Traceback" not in err


# --- files named in the config: certificates, keys, the password -----------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _mqtt(tmp_path: Path, lines: str) -> str:
    return BASE.replace("port = 1883\n", f"port = 1883\n{lines}\n", 1)


def test_real_certificates_and_keys_pass(tmp_path: Path, tls: TlsFiles) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    text = _mqtt(tmp_path, f'ca_file = "{tls.ca_file}"\ncert_file = "{tls.client_cert}"\n'
                           f'key_file = "{tls.client_key}"\npassword_file = "pw"')
    text += f'cert_file = "{tls.server_cert}"\nkey_file = "{tls.server_key}"\n'
    cfg = parse_agent_config(text, base_dir=tmp_path)
    assert cfg.mqtt.ca_file == str(tls.ca_file)
    assert cfg.metrics.key_file == str(tls.server_key)


@pytest.mark.parametrize(
    ("setting", "key", "words"),
    [
        ('ca_file = "{dir}"', "mqtt.ca_file", "is a directory, not a file"),
        ('ca_file = "{text}"', "mqtt.ca_file", "holds no CA certificate (PEM)"),
        ('ca_file = "{client_key}"', "mqtt.ca_file", "holds no CA certificate (PEM)"),
        ('password_file = "{dir}"', "mqtt.password_file", "is a directory, not a file"),
        ('password_file = "{fifo}"', "mqtt.password_file", "is a FIFO (named pipe), not a file"),
        ('password_file = "{latin1}"', "mqtt.password_file", "is not UTF-8 text"),
        ('cert_file = "{client_key}"\nkey_file = "{client_key}"', "mqtt.cert_file",
         "holds no certificate (PEM)"),
        ('cert_file = "{client_cert}"\nkey_file = "{server_key}"', "mqtt.key_file",
         "is not the private key (PEM) of"),
        ('cert_file = "{client_cert}"\nkey_file = "{encrypted}"', "mqtt.key_file",
         "is encrypted: give an unencrypted key"),
        ('cert_file = "{client_cert}"\nkey_file = "{dir}"', "mqtt.key_file",
         "is a directory, not a file"),
    ],
)
def test_files_that_are_not_what_they_are_for(
    tmp_path: Path, tls: TlsFiles, setting: str, key: str, words: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    (tmp_path / "latin1").write_bytes(b"M\xfcller\n")
    os.mkfifo(tmp_path / "fifo")
    names = {"dir": tmp_path / "certs", "text": tmp_path / "notes.txt",
             "fifo": tmp_path / "fifo", "latin1": tmp_path / "latin1",
             "client_key": tls.client_key, "client_cert": tls.client_cert,
             "server_key": tls.server_key, "encrypted": tls.client_key_encrypted}
    setting = setting.format(**{k: str(v) for k, v in names.items()})
    text = _mqtt(tmp_path, setting)
    path = write(tmp_path, text)
    code, err = check(path, capsys)
    assert code == 2, err
    name = key.split(".")[1]
    assert f"{path}:{line_of(text, f'{name} =')}: {key}: " in err
    assert words in err
    assert "Traceback" not in err
    if "password" in key:
        assert "M\xfcller" not in err  # a password file's content is never shown


def test_metrics_key_that_does_not_fit_its_certificate(tmp_path: Path, tls: TlsFiles) -> None:
    text = BASE + f'cert_file = "{tls.server_cert}"\nkey_file = "{tls.client_key}"\n'
    with pytest.raises(ConfigError) as info:
        parse_agent_config(text, source="agent.toml")
    assert (info.value.key, info.value.line) == ("metrics.key_file", line_of(text, "key_file"))


# --- [events] topics -------------------------------------------------------------------------


def test_state_topic_without_signal_fails_check_and_run_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace('prefix = "shopfloor"',
                        'prefix = "shopfloor"\nstate_topic = "{prefix}/{asset}/state"')
    path = write(tmp_path, text)
    said = (f"{path}:{line_of(text, 'state_topic')}: events.state_topic: template "
            "'{prefix}/{asset}/state' needs {asset} and {signal}")
    code, err = check(path, capsys)
    assert code == 2
    assert said in err
    done = run_agent(path)
    assert done.returncode == 2
    assert said in done.stderr


@pytest.mark.parametrize("prefix", ["a//b", "a/", "/a"])
def test_prefix_that_gives_invalid_topics(prefix: str) -> None:
    # Each passed the load as one name ("a--b") and then failed when the event sink was built.
    text = BASE.replace('prefix = "shopfloor"', f'prefix = "{prefix}"')
    with pytest.raises(ConfigError) as info:
        parse_agent_config(text)
    assert (info.value.key, info.value.line) == ("events.prefix", line_of(text, "prefix"))


@pytest.mark.parametrize(
    ("topic", "events", "key", "words"),
    [
        # The case: the prefix inside the subscribed namespace, as deep as its filter.
        ("plant/{site}/{line}/{asset}/{signal}", 'prefix = "plant/edge"', "events.prefix",
         "anomaly events: 'plant/edge/{asset}/{signal}/anomaly' matches subscriptions[0]"),
        # No [events] table: the default prefix is blamed, without a line.
        ("shopfloor/{asset}/{signal}/{kind}", "", "events.prefix", "anomaly events"),
        # Only the retained states loop back.
        ("plant/{asset}/{signal}/state", 'prefix = "plant"\ntopic = "alarms/{asset}/{signal}"',
         "events.prefix", "retained states: 'plant/{asset}/{signal}/state'"),
        # A topic template without {prefix}: the template is what to change.
        ("plant/{asset}/{signal}/value", 'prefix = "x"\ntopic = "plant/{asset}/{signal}/value"',
         "events.topic", "choose a topic outside"),
        # A shared subscription is delivered under the plain topic.
        ("$share/g/sf/{asset}/{signal}/value",
         'prefix = "sf"\ntopic = "{prefix}/{asset}/{signal}/value"', "events.prefix",
         "matches subscriptions[0].topic '$share/g/sf/{asset}/{signal}/value'"),
        # A signal named "frame" would publish where this subscription listens.
        ("lines/{asset}/frame/{signal}", 'prefix = "lines"\ntopic = "{prefix}/{asset}/{signal}/x"',
         "events.prefix", "anomaly events"),
    ],
)
def test_events_that_feed_back_into_the_agent(
    topic: str, events: str, key: str, words: str
) -> None:
    text = f'[[subscriptions]]\ntopic = "{topic}"\n' + (f"\n[events]\n{events}\n" * bool(events))
    with pytest.raises(ConfigError) as info:
        parse_agent_config(text, source="agent.toml")
    err = info.value
    assert err.key == key, str(err)
    assert words in str(err)
    name = key.split(".")[1]
    # [events] is on line 4; its keys follow.
    assert err.line == (4 + line_of(events, f"{name} =") if events else None)


@pytest.mark.parametrize(
    ("topic", "events"),
    [
        # Inside the namespace by name, but a level short of the filter: MQTT never delivers it.
        ("plant/{site}/{line}/{asset}/{signal}", 'prefix = "plant"'),
        # As deep as the filter, but its fixed last level differs from both event suffixes.
        ("plant/{asset}/{signal}/value", 'prefix = "plant"'),
    ],
)
def test_events_next_to_the_subscriptions_pass(topic: str, events: str) -> None:
    text = f'[[subscriptions]]\ntopic = "{topic}"\n\n[events]\n{events}\n'
    assert parse_agent_config(text).events.prefix == "plant"


# --- valid_range -----------------------------------------------------------------------------


@pytest.mark.parametrize("valid_range", ["[-inf, inf]", "[0.0, inf]", "[nan, 1.0]"])
def test_non_finite_valid_range_on_a_subscription(
    tmp_path: Path, valid_range: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace('codec = "json"', f'codec = "json"\nvalid_range = {valid_range}')
    path = write(tmp_path, text)
    code, err = check(path, capsys)
    assert code == 2
    assert (f"{path}:{line_of(text, 'valid_range')}: subscriptions[0].valid_range: must be "
            "finite numbers [low, high]") in err


def test_non_finite_valid_range_on_a_signal() -> None:
    text = '[[signals]]\nasset = "press-4"\nname = "force"\nvalid_range = [-inf, inf]\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="plant.toml")
    assert str(info.value) == ("plant.toml:4: signals[0].valid_range: must be finite numbers "
                               "[low, high]; got [-inf, inf] (leave valid_range out for no "
                               "limits)")


def test_the_demo_on_a_busy_metrics_port_names_the_option_to_change() -> None:
    # The demo writes its own config: "set [metrics] port" named a file the user never saw.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "shopfloor", "demo", "--duration", "5", "--broker",
             "embedded", "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2, run.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in run.stderr
    assert "--metrics-port" in run.stderr
    assert "Traceback" not in run.stderr
