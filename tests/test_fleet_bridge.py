"""A site broker forwards the agents' anomaly events to a central broker (issue 12, item 4).

Two real Mosquitto brokers on loopback: the central one serves TLS only and requires a client
certificate; the site one runs the shipped deploy/mosquitto/mosquitto.conf with the shipped
deploy/mosquitto/bridge-to-central.conf appended, rewritten only for where they listen and
write and which certificate files they use. Events published at the site arrive at the central
broker under the site's prefix, unchanged, in both shapes of event topic; the agents' retained
statuses arrive retained; the samples stay at the site; and an event published while the
central broker is down arrives once it is back.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
from pathlib import Path

import pytest

from broker import BrokerFactory, Inbox, LinkFactory, Mosquitto, link_settings, wait_until
from shopfloor.agent.events import AnomalyEvent, event_document
from shopfloor.receiving.codecs import encode_json_scalar
from shopfloor.receiving.mqtt import TlsSettings
from shopfloor.tools.broker import find_mosquitto
from test_events import EVENTS

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"
REMOTE = "sites/plant1/"


class SiteBroker(Mosquitto):
    """The site's broker, configured by the shipped files instead of the test's own."""

    def __init__(self, binary: str, workdir: Path, central: Mosquitto) -> None:
        super().__init__(binary, workdir)
        self.central = central

    def _write_config(self) -> Path:
        files = self.central.tls_files
        assert files is not None
        base = (DEPLOY / "mosquitto.conf").read_text()
        base = re.sub(r"^persistence_location .*$", f"persistence_location {self.workdir}/",
                      base, flags=re.M)
        base = re.sub(r"^listener 1883$", f"listener {self.port} 127.0.0.1", base, flags=re.M)
        bridge = (DEPLOY / "bridge-to-central.conf").read_text()
        for key, path in (("bridge_cafile", files.ca_file),
                          ("bridge_certfile", files.client_cert),
                          ("bridge_keyfile", files.client_key)):
            bridge, n = re.subn(rf"^{key} .*$", f"{key} {path}", bridge, flags=re.M)
            assert n == 1, key
        bridge, n = re.subn(r"^address .*$", f"address 127.0.0.1:{self.central.port}", bridge,
                            flags=re.M)
        assert n == 1
        # As root, mosquitto would switch to the 'mosquitto' user, who cannot read tmp_path.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        config = self.workdir / "site.conf"
        config.write_text(f"{user}{base}\n{bridge}")
        return config


def central_tls(central: Mosquitto) -> TlsSettings:
    files = central.tls_files
    assert files is not None
    return TlsSettings(ca_file=str(files.ca_file), cert_file=str(files.client_cert),
                       key_file=str(files.client_key))


def event(asset: str, sig: str, ts: float, **labels: str) -> bytes:
    doc = event_document(AnomalyEvent(kind="raised", asset=asset, signal=sig, ts=ts, score=7.5,
                                      threshold=3.0, value=412.0, labels=labels), agent="edge-1")
    EVENTS.validate(doc)
    return json.dumps(doc, separators=(",", ":")).encode()


def test_the_shipped_bridge_forwards_events_from_the_site_to_the_central_broker(
    mosquitto_factory: BrokerFactory, make_link: LinkFactory, tmp_path: Path,
) -> None:
    assert shutil.which("openssl"), "`./dev.sh test` installs openssl (the test certificates)"
    binary = find_mosquitto()
    assert binary is not None
    central = mosquitto_factory(tls=True)  # TLS only, a client certificate required
    site = SiteBroker(binary, tmp_path / "site", central)
    try:
        site.start()
        # The bridge says it is connected (1) on the central broker, retained.
        state = "$SYS/broker/connection/shopfloor-bridge-plant1/state"
        inbox = Inbox()
        make_link(link_settings(central, "central-watch", tls=central_tls(central)),
                  [(REMOTE + "#", 1), (state, 1)], inbox)

        def bridged() -> bool:
            said = [p for t, p, _ in list(inbox.messages) if t == state]
            return bool(said) and said[-1] == b"1"

        assert wait_until(bridged, 30), site.log_tail()
        at_site = make_link(link_settings(site, "edge-1"))
        assert at_site.wait_ready(10)
        sent = {
            "shopfloor/press-4/force/anomaly": event("press-4", "force", 1.7e9),
            "shopfloor/site1/line2/press-4/force/anomaly": event(
                "press-4", "force", 1.7e9 + 1, site="site1", line="line2"),
        }
        # Samples and states stay at the site: published first on the same connection, they
        # would arrive before the events if they were forwarded.
        assert at_site.publish("plant/line1/press-4/force", encode_json_scalar(1.7e9, 1.0))
        assert at_site.publish("shopfloor/press-4/force/state", b"{}", retain=True)
        status = b'{"agent":"edge-1","status":"online"}'
        assert at_site.publish("shopfloor/agent/edge-1/status", status, retain=True)
        for topic, payload in sent.items():
            assert at_site.publish(topic, payload)

        def arrived() -> dict[str, bytes]:
            return {t.removeprefix(REMOTE): p for t, p, _ in list(inbox.messages)
                    if t.startswith(REMOTE)}

        assert wait_until(lambda: sent.items() <= arrived().items(), 15), (
            arrived(), site.log_tail())
        assert set(arrived()) == {*sent, "shopfloor/agent/edge-1/status"}
        for payload in sent.values():
            EVENTS.validate(json.loads(payload))
        # The status is retained on the central broker: a dashboard that starts later sees it.
        late = Inbox()
        make_link(link_settings(central, "central-late", tls=central_tls(central)),
                  [(REMOTE + "shopfloor/agent/+/status", 1)], late)
        assert late.wait_for(1, 10)
        assert late.messages[0][1] == status

        # The WAN or the central broker goes down: the site keeps the event for the bridge.
        central.stop(signal.SIGTERM)
        late_event = event("press-4", "force", 1.7e9 + 2)
        assert at_site.publish("shopfloor/press-4/force/anomaly", late_event)
        assert wait_until(lambda: at_site.unacknowledged == 0, 10)
        central.start()  # same port; the bridge backs off from 2 s, the watcher's session waits
        assert wait_until(lambda: [p for t, p, _ in list(inbox.messages)
                                   if t == REMOTE + "shopfloor/press-4/force/anomaly"][-1]
                          == late_event, 30), site.log_tail()
    finally:
        site.stop()
