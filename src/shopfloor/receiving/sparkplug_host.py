"""The agent as a Sparkplug 3.0 host application: it asks edge nodes to be born again.

A host that does not know a node's aliases (it restarted, or missed a BIRTH) or sees a gap in
the node's sequence numbers cannot trust what it reads; Sparkplug's answer is a rebirth
request, an NCMD with ``Node Control/Rebirth = true``, after which the node publishes its
NBIRTH and DBIRTHs again. Before this the agent rejected every DATA as ``unknown_alias`` until
the node happened to re-birth by itself - after a restart of the agent, possibly never.

Requests go out at most once per ``interval`` seconds per node (a node that answers slowly
is not flooded), at QoS 0 as the specification asks. A host application also publishes its
``STATE`` (retained, ``spBv1.0/STATE/{host_id}``, JSON ``{"online": ..., "timestamp": ...}``)
with its death as the MQTT will: nodes configured with a primary host wait for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from shopfloor.receiving.mqtt import Presence
from shopfloor.receiving.sparkplug import (
    DataType,
    SparkplugAliases,
    encode_payload,
    sparkplug_topic,
)

__all__ = ["REBIRTH_INTERVAL", "SparkplugHost", "host_state", "rebirth_request"]

#: Seconds between two rebirth requests to one node.
REBIRTH_INTERVAL = 10.0
_MAX_NODES = 4096  # request times kept; older ones are forgotten beyond it


def rebirth_request(timestamp_ms: int) -> bytes:
    """The NCMD payload that asks a node for its births."""
    return encode_payload(timestamp_ms, None,
                          [("Node Control/Rebirth", None, DataType.BOOLEAN, True)])


def host_state(host_id: str, timestamp_ms: int) -> Presence:
    """The host application's STATE birth and death (Sparkplug 3.0: one timestamp for both)."""

    def doc(online: bool) -> bytes:
        return json.dumps({"online": online, "timestamp": timestamp_ms},
                          separators=(",", ":")).encode()

    return Presence(f"spBv1.0/STATE/{host_id}", doc(True), doc(False))


class SparkplugHost:
    """Sends the rebirth requests the alias table asks for, rate-limited per node."""

    def __init__(self, publish: Callable[[str, bytes], bool],
                 interval: float = REBIRTH_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._publish = publish
        self.interval = interval
        self._clock = clock
        self._sent: dict[tuple[str, str], float] = {}
        self.requested = 0  # rebirth requests published
        self.held = 0  # requests held back by the rate limit

    def serve(self, aliases: SparkplugAliases) -> None:
        """Ask every node the table wants a rebirth from (network thread)."""
        now = self._clock()
        while aliases.wanted:
            node = next(iter(aliases.wanted))
            del aliases.wanted[node]
            last = self._sent.get(node)
            if last is not None and now - last < self.interval:
                self.held += 1
                continue
            if len(self._sent) >= _MAX_NODES:
                self._sent = {k: t for k, t in self._sent.items() if now - t < self.interval}
            self._sent[node] = now
            group, edge = node
            if self._publish(sparkplug_topic(group, "NCMD", edge),
                             rebirth_request(int(time.time() * 1000))):
                self.requested += 1
