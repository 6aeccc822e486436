"""MqttLink against a real Mosquitto on loopback: subscribe, reconnect, sessions, TLS, secrets."""

from __future__ import annotations

import logging
import shutil
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as paho_publish
import pytest

from broker import BrokerFactory, Inbox, LinkFactory, Mosquitto, link_settings, wait_until
from shopfloor.receiving.mqtt import MqttLink, MqttSettings, TlsSettings, read_password, tls_context

PROTOCOLS = ["5", "3.1.1"]


def publish_qos1(broker: Mosquitto, topic: str, payloads: list[bytes]) -> None:
    """Publish with an independent plain paho client; returns once the broker acknowledged."""
    paho_publish.multiple(
        [{"topic": topic, "payload": p, "qos": 1} for p in payloads],
        hostname=broker.host, port=broker.port, client_id="", keepalive=5,
    )


@pytest.mark.integration
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connects_subscribes_and_receives(
    mosquitto: Mosquitto, make_link: LinkFactory, protocol: str,
) -> None:
    inbox = Inbox()
    link = make_link(link_settings(mosquitto, f"rx-{protocol}", protocol=protocol),
                     [("plant/+/vib", 1), ("plant/+/temp", 0)], inbox)
    assert link.wait_ready(10)
    before = time.time()
    publish_qos1(mosquitto, "plant/pump-1/vib", [b"1.5"])
    publish_qos1(mosquitto, "plant/pump-1/other", [b"ignored"])
    publish_qos1(mosquitto, "plant/pump-1/temp", [b"20"])
    assert inbox.wait_for(2)
    (topic, payload, arrival), second = inbox.messages[:2]
    assert (topic, payload) == ("plant/pump-1/vib", b"1.5")
    assert second[:2] == ("plant/pump-1/temp", b"20")
    assert isinstance(payload, bytes)
    assert before <= arrival <= time.time()
    assert link.connected
    assert link.connects == 1
    assert link.reconnects == 0
    assert link.messages_received == 2
    assert link.callback_errors == 0


@pytest.mark.integration
def test_broker_down_at_start_is_retried(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory,
) -> None:
    broker = mosquitto_factory(start=False)
    inbox = Inbox()
    link = make_link(link_settings(broker, "late"), [("late/#", 1)], inbox)
    time.sleep(2.0)  # the broker starts two seconds after the agent
    assert not link.connected
    assert link.connect_failures >= 1
    broker.start()
    assert link.wait_ready(10)
    publish_qos1(broker, "late/x", [b"hello"])
    assert inbox.wait_for(1)
    assert link.connects == 1


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_reconnects_and_resubscribes_after_broker_restart(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, sig: signal.Signals,
) -> None:
    # Without persistence the restarted broker has forgotten the subscription: messages flow
    # again only because the link subscribes in on_connect.
    broker = mosquitto_factory(persistence=False)
    inbox = Inbox()
    link = make_link(link_settings(broker, "restart"), [("cell/#", 1)], inbox)
    assert link.wait_ready(10)
    publish_qos1(broker, "cell/a", [b"before"])
    assert inbox.wait_for(1)
    broker.restart(sig)
    assert wait_until(lambda: link.connects == 2), broker.log_tail()
    assert link.wait_ready(10)
    assert link.reconnects == 1
    assert link.session_present is False
    publish_qos1(broker, "cell/a", [b"after"])
    assert inbox.wait_for(2)
    assert inbox.payloads == [b"before", b"after"]


@pytest.mark.integration
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "clean"])
def test_messages_published_while_away_arrive_after_reconnect(
    mosquitto: Mosquitto, make_link: LinkFactory, protocol: str, persistent: bool,
) -> None:
    if persistent:
        options = {"clean_start": False, "session_expiry": 300}
    elif protocol == "5":
        options = {"clean_start": False, "session_expiry": 0}  # the MQTT 5 pitfall
    else:
        options = {"clean_start": True}
    settings = link_settings(mosquitto, f"agent-{protocol}", protocol=protocol, **options)
    first = make_link(settings, [("line/+/q", 1)], Inbox())
    assert first.wait_ready(10)
    first.stop()
    publish_qos1(mosquitto, "line/a/q", [b"m1", b"m2", b"m3"])
    mosquitto.restart(signal.SIGTERM)  # with persistence on, sessions survive the restart
    inbox = Inbox()
    second = make_link(settings, [("line/+/q", 1)], inbox)
    assert second.wait_ready(10)
    # Queued messages come before the SUBACK; a marker sent now arrives after them.
    publish_qos1(mosquitto, "line/a/q", [b"marker"])
    assert inbox.wait_for(1)
    assert wait_until(lambda: inbox.payloads[-1:] == [b"marker"])
    if persistent:
        assert second.session_present is True
        assert inbox.payloads == [b"m1", b"m2", b"m3", b"marker"]
    else:
        assert second.session_present is False
        assert inbox.payloads == [b"marker"]


@pytest.mark.integration
def test_publish_queues_while_disconnected_and_bounds_the_queue(
    mosquitto: Mosquitto, make_link: LinkFactory,
) -> None:
    # A watcher with a persistent session sees everything the broker accepts, even while the
    # broker restarts (persistence on).
    inbox = Inbox()
    watcher_settings = link_settings(mosquitto, "watcher", clean_start=False)
    watcher = make_link(watcher_settings, [("out/#", 1)], inbox)
    assert watcher.wait_ready(10)
    mosquitto.stop()
    link = make_link(link_settings(mosquitto, "queue", max_queued_messages=2))
    assert link.publish("out/a", b"1", qos=1)
    assert link.publish("out/a", b"2", qos=1)
    assert not link.publish("out/a", b"3", qos=1)  # queue full
    assert not link.publish("out/a", b"4", qos=0)  # QoS 0 is not kept while disconnected
    assert not link.publish("out/+", b"5", qos=1)  # wildcards are not topics
    assert link.publish_failed == 3
    assert link.published == 2
    assert link.unacknowledged == 2
    mosquitto.start()
    assert wait_until(lambda: link.unacknowledged == 0)
    assert link.publish("out/a", b"6", qos=1)
    assert inbox.wait_for(3)
    assert inbox.payloads == [b"1", b"2", b"6"]


@pytest.mark.integration
def test_stop_waits_for_acknowledgements(mosquitto: Mosquitto, make_link: LinkFactory) -> None:
    inbox = Inbox()
    watcher = make_link(link_settings(mosquitto, "watch"), [("ev/#", 1)], inbox)
    assert watcher.wait_ready(10)
    link = make_link(link_settings(mosquitto, "sender"))
    assert link.wait_ready(10)
    for i in range(200):
        assert link.publish("ev/x", str(i).encode(), qos=1)
    assert link.stop(timeout=10)
    assert link.unacknowledged == 0
    assert not link.connected
    assert inbox.wait_for(200)
    assert inbox.payloads == [str(i).encode() for i in range(200)]


@pytest.mark.integration
def test_handler_errors_are_contained(
    mosquitto: Mosquitto, make_link: LinkFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[bytes] = []

    def handler(topic: str, payload: bytes, arrival: float, receipt: object) -> None:
        calls.append(payload)
        if payload == b"boom":
            raise RuntimeError("decoder bug")

    link = make_link(link_settings(mosquitto, "handler"), [("h/#", 1)], handler)
    assert link.wait_ready(10)
    publish_qos1(mosquitto, "h/x", [b"boom", b"boom", b"fine"])
    assert wait_until(lambda: len(calls) == 3)
    assert link.callback_errors == 2
    assert link.connected
    failures = [r for r in caplog.records if r.getMessage().startswith("message handler failed")]
    assert len(failures) == 1  # the second failure is held back by the rate limit


@pytest.mark.integration
def test_tls_with_client_certificate(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory,
) -> None:
    assert shutil.which("openssl"), "the openssl command makes the test certificates: " \
        "`./dev.sh test` installs it (Debian package openssl)"
    broker = mosquitto_factory(tls=True)
    files = broker.tls_files
    assert files is not None
    tls = TlsSettings(ca_file=str(files.ca_file), cert_file=str(files.client_cert),
                      key_file=str(files.client_key))
    inbox = Inbox()
    link = make_link(link_settings(broker, "tls", tls=tls), [("sec/#", 1)], inbox)
    assert link.wait_ready(10), broker.log_tail()
    assert link.publish("sec/x", b"over tls", qos=1)
    assert inbox.wait_for(1)
    # The broker insists on a client certificate: without one the handshake fails, retried.
    bare = make_link(link_settings(broker, "no-cert", tls=TlsSettings(ca_file=str(files.ca_file))))
    assert wait_until(lambda: bare.connect_failures >= 1)
    assert not bare.connected
    # An encrypted key without a password is refused at once instead of prompting.
    locked = TlsSettings(ca_file=str(files.ca_file), cert_file=str(files.client_cert),
                         key_file=str(files.client_key_encrypted))
    with pytest.raises(ValueError, match="encrypted"):
        MqttLink(link_settings(broker, "locked", tls=locked))
    assert tls_context(tls).minimum_version == ssl.TLSVersion.TLSv1_2


def test_tls_files_that_cannot_be_used_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ca_file .*missing\.pem"):
        tls_context(TlsSettings(ca_file=str(tmp_path / "missing.pem")))


def test_read_password_from_file_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert read_password(str(tmp_path / "pw"), None) == "s3cret"
    (tmp_path / "pw2").write_text("two\n\n")  # only one trailing newline is removed
    assert read_password(str(tmp_path / "pw2"), None) == "two\n"
    assert read_password(None, None) is None
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_password(None, "mqtt") == "from-systemd"
    with pytest.raises(ValueError, match="creds/absent"):
        read_password(None, "absent")
    with pytest.raises(ValueError, match="plain file name"):
        read_password(None, "../pw")
    with pytest.raises(ValueError, match="not both"):
        read_password(str(tmp_path / "pw"), "mqtt")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ValueError, match="CREDENTIALS_DIRECTORY"):
        read_password(None, "mqtt")
    with pytest.raises(ValueError, match=r"nope\.txt") as err:
        read_password(str(tmp_path / "nope.txt"), None)
    assert "s3cret" not in str(err.value)


@pytest.mark.integration
def test_password_authenticates_and_is_never_logged(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "pa55-Wörd-do-not-log"
    broker = mosquitto_factory(users={"agent": secret})
    (tmp_path / "pw").write_text(secret + "\n")
    caplog.set_level(logging.DEBUG, logger="shopfloor")  # paho's own debug lines included
    password = read_password(str(tmp_path / "pw"), None)
    good = link_settings(broker, "auth", username="agent", password=password)
    link = make_link(good, [("auth/#", 1)])
    assert link.wait_ready(10)
    wrong = link_settings(broker, "wrong", username="agent", password="not-it")
    refused = make_link(wrong)
    assert wait_until(lambda: refused.connect_failures >= 1)
    assert not refused.connected
    link.stop()
    assert any("CONNECT" in r.getMessage() for r in caplog.records)  # the log did run
    assert secret not in caplog.text
    assert secret not in repr(good)
    assert "not-it" not in caplog.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 0}, "port"),
        ({"protocol": "4"}, "protocol"),
        ({"client_id": ""}, "client_id"),
        ({"session_expiry": -1}, "session_expiry"),
        ({"reconnect_min_delay": 5.0, "reconnect_max_delay": 1.0}, "reconnect_max_delay"),
        ({"max_queued_messages": 0}, "max_queued_messages"),
        ({"protocol": "3.1.1", "password": "x"}, "username"),
    ],
)
def test_settings_are_validated(overrides: dict[str, Any], message: str) -> None:
    values = {"host": "127.0.0.1", "client_id": "a", **overrides}
    with pytest.raises(ValueError, match=message):
        MqttSettings(**values)


@pytest.mark.parametrize("bad", ["a/#/b", "a+/b", "", "a/##"])
def test_bad_subscription_filters_are_refused_before_connecting(bad: str) -> None:
    settings = MqttSettings(host="127.0.0.1", client_id="f")
    with pytest.raises(ValueError, match="filter"):
        MqttLink(settings, [(bad, 1)])


@pytest.mark.integration
def test_a_refused_broker_certificate_is_logged_as_such(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    # TLS refusals were logged only as "cannot reach broker", even at debug: the cause now
    # shows, as Mosquitto and Telegraf log it.
    broker = mosquitto_factory(tls=True)
    files = broker.tls_files
    assert files is not None
    untrusting = TlsSettings(cert_file=str(files.client_cert), key_file=str(files.client_key))
    with caplog.at_level(logging.WARNING, logger="shopfloor.receiving.mqtt"):
        link = make_link(link_settings(broker, "untrusting", tls=untrusting))
        assert wait_until(lambda: link.connect_failures >= 1)
        assert wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text), caplog.text
    assert not link.connected


def test_a_world_readable_password_file_is_accepted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="shopfloor.receiving.mqtt"):
        assert read_password(str(secret), None) == "s3cret"
    assert "readable by every user" not in caplog.text
    secret.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="shopfloor.receiving.mqtt"):
        assert read_password(str(secret), None) == "s3cret"
    assert "readable by every user (mode 644)" in caplog.text
    assert "s3cret" not in caplog.text
