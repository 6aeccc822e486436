"""JSON Schemas of the messages shopfloor publishes, shipped with the package.

``anomaly-event.v1.json`` documents the anomaly events (``shopfloor.anomaly/1``) and, under
``$defs/state``, the retained per-signal state messages (``shopfloor.state/1``). Load them
with :func:`shopfloor.agent.events.load_schema`.
"""

from __future__ import annotations

__all__: list[str] = []
