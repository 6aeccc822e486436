"""The agent's checkpoints: what is saved, when, and how much of it comes back.

Every pipeline's state (detector, threshold, alarm with its warm-up counter, reject counts) is
saved periodically and on shutdown by the worker thread between batches, so the snapshot is
consistent without locks. On start, each signal comes back only if its pipeline spec is the
same as when it was saved (a changed detector or threshold starts that signal cold, with a log
line) - so editing one signal's config does not throw away what the others learned. Signals
first seen on a subscription are rebuilt from that subscription and admitted again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shopfloor.agent.config import AgentConfig
from shopfloor.agent.state import (
    CheckpointError,
    clean_temporaries,
    discard,
    read_checkpoint,
    write_checkpoint,
)
from shopfloor.config import SignalSpec
from shopfloor.receiving.admission import Admission
from shopfloor.scoring.pipeline import AssetPipeline, Plant, Signal

__all__ = ["Checkpointer", "malformed", "spec_hash"]

log = logging.getLogger("shopfloor.agent.checkpoints")

FILE_NAME = "pipelines.ckpt"


def malformed(tree: Any) -> str | None:
    """What is wrong with a checkpoint's structure, or None when it has the shape
    :meth:`Checkpointer.write` gives it (a table of signals and one of assets, each entry a
    table with a spec hash, a state table and, for signals, an integer subscription)."""
    if not isinstance(tree, dict):
        return f"the checkpoint is a {type(tree).__name__}, not a table"
    for section in ("signals", "assets"):
        entries = tree.get(section)
        if not isinstance(entries, dict):
            return f"{section} is a {type(entries).__name__}, not a table"
        for key, entry in entries.items():
            where = f"{section}[{key!r}]"
            if not isinstance(key, str) or (section == "signals" and "/" not in key):
                return f"{where}: not an asset/signal name"
            if not isinstance(entry, dict):
                return f"{where} is a {type(entry).__name__}, not a table"
            if not isinstance(entry.get("spec"), str) or not isinstance(entry.get("state"), dict):
                return f"{where} lacks its spec hash or its state table"
            index = entry.get("subscription", -1)
            if isinstance(index, bool) or not isinstance(index, int):
                return f"{where}: subscription is {index!r}, not an index"
            labels = entry.get("labels", [])
            if not (isinstance(labels, list) and all(
                    isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                    for p in labels)):
                return f"{where}: labels are not a list of [name, value] pairs"
    return None


def spec_hash(spec: Any) -> str:
    """A stable hash of a (frozen dataclass) spec: what must match for state to be reused."""
    fields = dataclasses.asdict(spec)
    # What dashboards print, not what the model learned (and absent from older checkpoints).
    fields.pop("unit", None)
    fields.pop("units", None)
    if not fields.get("labels", True):
        # Specs without labels hash as they did before labels existed: checkpoints written
        # before signals were told apart by their topic's levels stay usable.
        del fields["labels"]
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
    """Saves and restores one agent's plant under ``directory``."""

    def __init__(self, config: AgentConfig, plant: Plant, directory: Path, interval: float
                 ) -> None:
        self.config = config
        self.plant = plant
        self.directory = directory
        self.path = directory / FILE_NAME
        self.interval = interval
        self.last_written: float | None = None  # wall-clock time of the last good write
        self.written = 0
        self.failed = 0
        self.config_hash = hashlib.sha256(
            json.dumps([spec_hash(s) for s in config.pipeline.signals]
                       + [spec_hash(s) for s in config.subscriptions], sort_keys=True).encode()
        ).hexdigest()[:16]
        self._next = time.monotonic() + interval
        self._legacy: dict[str, dict[str, Any]] = {}  # old unlabelled entries, by asset/name
        self.restored: list[str] = []  # the signals the last restore brought back

    def restore(self, admit: Admission | None = None,
                owns: Callable[[str], bool] | None = None) -> int:
        """Load the checkpoint if there is a usable one; returns the pipelines restored.

        ``admit`` (the ingest's admitted signals) gains the restored run-time signals;
        :attr:`restored` lists every signal restored. ``owns`` (a scoring process's share of
        the signals and assets, see :mod:`shopfloor.agent.scorer`) leaves the others to their
        owners.
        """
        self.restored = []
        self.directory.mkdir(parents=True, exist_ok=True)
        stray = clean_temporaries(self.directory)
        if stray:
            log.info("removed %d temporary file(s) left by an interrupted checkpoint", stray)
        if not self.path.exists():
            log.info("no checkpoint at %s: starting cold", self.path)
            return 0
        try:
            checkpoint = read_checkpoint(self.path, self.config_hash)
            tree = checkpoint.state
            problem = malformed(tree)
            if problem:
                raise CheckpointError(f"valid checksum but a wrong structure: {problem}")
        except CheckpointError as exc:
            discard(self.path, str(exc))
            return 0
        signals, assets = tree["signals"], tree["assets"]
        restored = 0
        for sid, saved in signals.items():
            if owns is None or owns(sid):
                restored += self._restore_signal(sid, saved, admit)
        for name, saved in assets.items():
            if owns is not None and not owns(name):
                continue
            pipe = self.plant.assets.get(name)
            if pipe is None or saved.get("spec") != self._asset_hash(name):
                log.info("asset %s: configuration changed since the checkpoint; starting cold",
                         name)
                continue
            try:
                pipe.set_state(saved["state"])
                restored += 1
            except Exception as exc:  # any refusal: this asset starts cold, the rest go on
                log.warning("asset %s: saved state refused (%s); starting cold", name, exc)
                self.plant.assets[name] = AssetPipeline(pipe.spec, pipe.columns)
        log.info("restored %d pipeline(s) from %s (written %s)", restored, self.path,
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checkpoint.header["created"])))
        return restored

    def _restore_signal(self, sid: str, saved: dict[str, Any], admit: Admission | None
                        ) -> int:
        pipe = self.plant.signals.get(sid)
        if pipe is None:
            index = saved.get("subscription", -1)
            if not 0 <= index < len(self.config.subscriptions):
                log.info("signal %s: no longer configured; its state is dropped", sid)
                return 0
            labels = tuple((str(k), str(v)) for k, v in saved.get("labels", []))
            if not labels and self.config.subscriptions[index].label_names:
                # Written before a signal's identity had its topic's other levels: which line
                # it was is unknown. The first signal of that asset and name to come takes it.
                self._legacy[sid] = saved
                self.plant.adopt = self._adopt_legacy
                log.info("signal %s: saved without its topic labels; the first signal of "
                         "that asset and name to arrive takes its state", sid)
                return 0
            state = saved.get("state")
            if not (isinstance(state, dict) and isinstance(state.get("scored"), int)
                    and state["scored"] > 0):
                # Junk from a topic flood: it never produced a valid sample, and restoring it
                # would fill the signal table again at every start.
                log.info("signal %s: never produced a valid sample; not restored", sid)
                return 0
            if admit is not None and len(admit) >= self.config.agent.max_signals:
                log.warning("signal %s: over agent.max_signals; its state is dropped", sid)
                return 0
            asset, name = sid.split("{", 1)[0].split("/", 1)
            spec: SignalSpec = self.config.subscriptions[index].signal_spec(asset, name, labels)
            if saved.get("spec") != spec_hash(spec):
                log.info("signal %s: configuration changed since the checkpoint; starting cold",
                         sid)
                return 0
            pipe = self.plant.add_signal(spec, index, self.config.asset_stage,
                                         self.config.agent.asset_signals)
        elif saved.get("spec") != spec_hash(pipe.spec):
            log.info("signal %s: configuration changed since the checkpoint; starting cold", sid)
            return 0
        try:
            pipe.set_state(saved["state"])
        except Exception as exc:  # any refusal: this signal starts cold, the rest go on
            log.warning("signal %s: saved state refused (%s); starting cold", sid, exc)
            # A refusal half-way leaves a half-restored pipeline: start it afresh.
            pipe.reset()
            return 0
        if admit is not None and sid not in admit:
            admit.add(sid, proven=True)
        self.restored.append(sid)
        return 1

    def _adopt_legacy(self, pipe: Signal) -> Signal:
        """A new labelled signal, with the state its asset and name had in an old checkpoint."""
        saved = self._legacy.pop(f"{pipe.spec.asset}/{pipe.spec.name}", None)
        if saved is None or saved.get("spec") != spec_hash(
                dataclasses.replace(pipe.spec, labels=())):
            return pipe
        try:
            pipe.set_state(saved["state"])
        except Exception as exc:  # as a refused restore: cold, and the rest goes on
            log.warning("signal %s: saved state refused (%s); starting cold", pipe.spec.id, exc)
            pipe.reset()
            return pipe
        log.info("signal %s: took the state saved for %s/%s", pipe.spec.id, pipe.spec.asset,
                 pipe.spec.name)
        return pipe

    def _asset_hash(self, name: str) -> str:
        # The asset's inputs are its members' values (or one frame feature), so what matters is
        # its own spec and how those inputs are made - not the members' detectors.
        pipe = self.plant.assets[name]
        members = [self.plant.signals[pipe.spec.member(s)].spec for s in pipe.spec.signals]
        inputs = [[m.kind, dict(m.features), m.valid_range] for m in members]
        return hashlib.sha256(f"{spec_hash(pipe.spec)}{json.dumps(inputs, default=str)}"
                              .encode()).hexdigest()[:16]

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def write(self) -> bool:
        """Save every pipeline now; False (counted, logged) if the disk refuses."""
        return self.write_tree(self.tree())

    def tree(self, owns: Callable[[str], bool] | None = None) -> dict[str, Any]:
        """What a checkpoint holds of this plant's pipelines (those ``owns`` names, if given):
        a scoring process sends its share, and the agent writes them as one file."""
        return {
            "signals": {
                sid: {"spec": spec_hash(p.spec), "subscription": p.subscription,
                      "state": p.get_state(), "labels": [list(kv) for kv in p.spec.labels]}
                for sid, p in self.plant.signals.items() if owns is None or owns(sid)
            },
            "assets": {name: {"spec": self._asset_hash(name), "state": p.get_state()}
                       for name, p in self.plant.assets.items() if owns is None or owns(name)},
        }

    def write_tree(self, tree: dict[str, Any]) -> bool:
        """Write ``tree`` (see :meth:`tree`) as the checkpoint; False (counted, logged) if the
        disk refuses."""
        self._next = time.monotonic() + self.interval
        started = time.perf_counter()
        try:
            size = write_checkpoint(self.path, tree, self.config_hash)
        except OSError as exc:
            self.failed += 1
            log.error("checkpoint to %s failed: %s", self.path, exc.strerror or exc)
            return False
        self.written += 1
        self.last_written = time.time()
        log.debug("checkpoint: %d bytes in %.3f s", size, time.perf_counter() - started)
        return True
