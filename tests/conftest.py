"""Shared fixtures: real Mosquitto brokers on loopback, and MQTT links that are always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import BrokerFactory, LinkFactory
from shopfloor.receiving.mqtt import MessageHandler, MqttLink, MqttSettings
from shopfloor.tools.broker import INSTALL_HINT, SBIN_DIRS, Mosquitto, find_mosquitto


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process agents see the 2 cores of CI whatever the machine: ``agent.workers = 0``
    then means one worker in the test's own process, which most tests drive directly. The
    scoring processes are tested where a test sets ``workers``."""
    monkeypatch.setattr("shopfloor.agent.config.usable_cores", lambda: 2)


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Make brokers: ``factory(start=True, persistence=True, tls=False, users=None)``.

    A missing mosquitto binary fails the test (never skips it): the broker is part of the
    development set-up.
    """
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(
            f"mosquitto is not installed (looked on PATH and in {', '.join(SBIN_DIRS)}): "
            f"{INSTALL_HINT}",
            pytrace=False,
        )
    brokers: list[Mosquitto] = []

    def make(*, start: bool = True, **options: Any) -> Mosquitto:
        broker = Mosquitto(binary, tmp_path / f"broker{len(brokers)}", **options)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: BrokerFactory) -> Mosquitto:
    """A running broker with persistence on, anonymous access, plain TCP."""
    return mosquitto_factory()


@pytest.fixture
def make_link() -> Iterator[LinkFactory]:
    """``make_link(settings, subscriptions=(), on_message=None, start=True)``; all stopped after."""
    links: list[MqttLink] = []

    def make(
        settings: MqttSettings,
        subscriptions: tuple[tuple[str, int], ...] = (),
        on_message: MessageHandler | None = None,
        start: bool = True,
    ) -> MqttLink:
        link = MqttLink(settings, subscriptions, on_message)
        links.append(link)
        if start:
            link.start()
        return link

    yield make
    for link in links:
        link.stop(timeout=1.0)
