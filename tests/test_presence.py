"""The agent says whether it is there (issue 11, item 12): a retained online message after
each connect, offline at a clean stop, and the same as its MQTT will when it dies."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from broker import Inbox, LinkFactory, Mosquitto, link_settings, wait_until
from test_agent_integration import AgentFactory, agent_toml
from test_agent_integration import start_agent as start_agent  # the fixture, by name

TOPIC = "shopfloor/agent/{}/status"


def statuses(inbox: Inbox, agent: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in list(inbox.messages) if t == TOPIC.format(agent)]


@pytest.mark.integration
@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_online_then_offline_whether_it_stops_or_dies(
    mosquitto: Mosquitto, make_link: LinkFactory, start_agent: AgentFactory, how: str,
) -> None:
    name = "presence-" + how.replace(" ", "")
    inbox = Inbox()
    make_link(link_settings(mosquitto, "watch-" + name), [("shopfloor/agent/+/status", 1)], inbox)
    agent = start_agent(agent_toml(mosquitto, name), name)
    assert wait_until(lambda: bool(statuses(inbox, name)), 30), agent.tail()
    first = statuses(inbox, name)[0]
    assert (first["status"], first["agent"]) == ("online", name)
    if how == "SIGTERM":
        code, _ = agent.stop(signal.SIGTERM)
        assert code == 0
    else:
        agent.stop(signal.SIGKILL)  # the broker sees the socket close and sends the will
    assert wait_until(lambda: statuses(inbox, name)[-1]["status"] == "offline", 10)
    # Retained: a dashboard or a peer that subscribes later still learns it.
    late = Inbox()
    make_link(link_settings(mosquitto, "late-" + name), [(TOPIC.format(name), 1)], late)
    assert wait_until(lambda: bool(statuses(late, name)), 10)
    assert statuses(late, name)[-1]["status"] == "offline"
