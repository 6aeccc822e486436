"""The Sparkplug alias table: metric names, aliases and data types per edge node and device.

:class:`SparkplugAliases` is what BIRTH messages fill and DATA messages are resolved against
(see :mod:`shopfloor.receiving.sparkplug`, whose decoder updates it), bounded and with eviction so
that a flood of fake BIRTHs cannot lock real devices out, and it follows each node's sequence
numbers for the Sparkplug host (:mod:`shopfloor.receiving.sparkplug_host`). It is a module of its
own because it is state, not wire format; :mod:`shopfloor.receiving.sparkplug` re-exports it (and
runs its examples with its own doctests).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["SparkplugAliases"]


class SparkplugAliases:
    """Metric names, aliases and data types per (group, edge node, device), bounded.

    Parameters
    ----------
    max_entries
        Most (group, edge, device) entries; a BIRTH for a new one beyond it is rejected.
    max_metrics
        Most metrics one BIRTH may register.
    max_aliases
        Most metrics over all entries, so that many full entries still fit in memory.
    max_node_devices
        Most entries of one edge node: a node that floods BIRTHs displaces its own entries,
        not the other nodes'.

    A BIRTH that finds the table (or its node) full evicts entries instead of being refused:
    those that never carried data first (oldest BIRTH first), then the least recently used.
    1,000 fake DBIRTHs used to fill the table for good, after which a real device's DBIRTH
    was refused and its DDATA never scored. Evictions are counted (``evicted``); an evicted
    device's DATA is ``unknown_alias`` until it is born again.

    Updated by :func:`shopfloor.receiving.sparkplug.decode_sparkplug` in the network thread only, so
    it needs no lock.

    Examples
    --------
    >>> from shopfloor.receiving.codecs import Limits, decode
    >>> from shopfloor.receiving.sparkplug import DataType, encode_data, encode_dbirth
    >>> aliases, limits = SparkplugAliases(), Limits()
    >>> birth = encode_dbirth(1767225600000, 0, [("rms_g", 1, DataType.FLOAT, 0.5)])
    >>> [r.metric for r in decode("sparkplug", birth, 0.0, limits, aliases,
    ...                           "spBv1.0/plant/DBIRTH/press-7/accel-1")]
    ['rms_g']
    >>> data = encode_data(1767225601000, 1, [(1, DataType.FLOAT, 0.75)])
    >>> [r] = decode("sparkplug", data, 0.0, limits, aliases, "spBv1.0/plant/DDATA/press-7/accel-1")
    >>> r.metric, r.data.values
    ('rms_g', array([0.75]))
    >>> decode("sparkplug", data, 0.0, limits, aliases, "spBv1.0/plant/DDATA/press-7/b").reason
    'unknown_alias'
    """

    def __init__(
        self, max_entries: int = 1000, max_metrics: int = 10_000, max_aliases: int = 100_000,
        max_node_devices: int = 256,
    ) -> None:
        for name, value in (
            ("max_entries", max_entries),
            ("max_metrics", max_metrics),
            ("max_aliases", max_aliases),
            ("max_node_devices", max_node_devices),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.max_entries = max_entries
        self.max_metrics = max_metrics
        self.max_aliases = max_aliases
        self.max_node_devices = max_node_devices
        self.evicted = 0
        # (group, edge) -> device ("" for the node itself) -> (alias -> (name, type), name -> type)
        self._nodes: dict[tuple[str, str], dict[str, _Entry]] = {}
        # Per entry: the tick of its BIRTH and of its latest DATA (0: none yet).
        self._tick = 0
        self._born: dict[tuple[str, str, str], int] = {}
        self._used: dict[tuple[str, str, str], int] = {}
        # Host behaviour (shopfloor.receiving.sparkplug_host): each node's last sequence number, and
        # the nodes to ask for a rebirth (an unknown alias, a gap in the sequence, no NBIRTH seen).
        self._seq: dict[tuple[str, str], int] = {}
        self.wanted: dict[tuple[str, str], None] = {}
        self.gaps = 0  # sequence numbers that did not follow their node's last one

    def sequence(self, group: str, edge: str, kind: str, seq: int | None) -> None:
        """Follow a node's sequence numbers (0-255, one counter for the node and its devices,
        reset by NBIRTH); a gap, or DATA from a node whose NBIRTH this table never saw, asks
        for a rebirth."""
        node = (group, edge)
        if kind == "NBIRTH":
            self._seq[node] = 0 if seq is None else seq
            return
        if kind == "NDEATH":
            self._seq.pop(node, None)
            return
        if seq is None:
            return
        last = self._seq.get(node)
        if last is None or seq != (last + 1) % 256:
            self.gaps += last is not None
            self.wanted[node] = None
        if len(self._seq) >= 4 * self.max_entries and node not in self._seq:
            self._seq.clear()  # bounded: forgotten nodes are asked for a rebirth again
        self._seq[node] = seq

    def __len__(self) -> int:
        return sum(len(devices) for devices in self._nodes.values())

    @property
    def alias_count(self) -> int:
        """Metrics registered over all entries."""
        return sum(len(e.types) for d in self._nodes.values() for e in d.values())

    def register(
        self,
        group: str,
        edge: str,
        device: str | None,
        metrics: Iterable[tuple[str, int | None, int]],
    ) -> None:
        """Replace the entry of a BIRTH with its (name, alias, datatype) triples.

        Raises
        ------
        ValueError
            If the table or the entry would exceed its bounds (the entry is then left out).
        """
        entry = _Entry({}, {})
        for name, alias, datatype in metrics:
            entry.types[name] = datatype
            if alias is not None:
                entry.aliases[alias] = (name, datatype)
            if len(entry.types) > self.max_metrics:
                raise ValueError(f"BIRTH registers more than max_metrics={self.max_metrics}")
        if len(entry.types) > self.max_aliases:
            raise ValueError(f"BIRTH registers more than max_aliases={self.max_aliases}")
        key = device or ""
        self.clear(group, edge, key)  # a re-birth replaces its entry
        while len(self._nodes.get((group, edge), {})) >= self.max_node_devices:
            self._evict((group, edge))
        while len(self) >= self.max_entries or (
                self.alias_count + len(entry.types) > self.max_aliases):
            self._evict(None)
        self._nodes.setdefault((group, edge), {})[key] = entry
        self._tick += 1
        self._born[(group, edge, key)] = self._tick
        self._used[(group, edge, key)] = 0

    def _evict(self, node: tuple[str, str] | None) -> None:
        """Drop the least valuable entry (of ``node``, or of the whole table)."""
        keys = [k for k in self._born if node is None or k[:2] == node]
        # Never used before used; then the oldest BIRTH, or the least recent DATA.
        victim = min(keys, key=lambda k: (self._used[k] > 0, self._used[k] or self._born[k]))
        self.clear(*victim)
        self.evicted += 1

    def clear(self, group: str, edge: str, device: str | None = None) -> None:
        """Forget a device, or (device None) a node and all its devices."""
        if device is None:
            for key in self._nodes.pop((group, edge), {}):
                self._born.pop((group, edge, key), None)
                self._used.pop((group, edge, key), None)
        else:
            devices = self._nodes.get((group, edge))
            if devices is not None:
                devices.pop(device, None)
                self._born.pop((group, edge, device), None)
                self._used.pop((group, edge, device), None)
                if not devices:  # no empty dicts left behind by device churn
                    del self._nodes[(group, edge)]

    def lookup(self, group: str, edge: str, device: str | None, use: bool = True
               ) -> _Entry | None:
        """The entry of a (group, edge, device), if it was born. ``use``: a DATA message's
        lookup counts as use, which keeps the entry from eviction; a BIRTH's own must not (a
        flood of fake BIRTHs marked themselves used, and a live device was evicted first)."""
        entry = self._nodes.get((group, edge), {}).get(device or "")
        if entry is not None and use:
            self._tick += 1
            self._used[(group, edge, device or "")] = self._tick
        return entry


class _Entry(NamedTuple):
    aliases: dict[int, tuple[str, int]]
    types: dict[str, int]
