"""What every fault scenario shares: its outcome record, its environment, the shipped files'
settings, bounded waits and the agent configurations.

The processes (agent, broker) are in :mod:`benchmarks.faults_procs`, /metrics and /proc
readings in :mod:`benchmarks.faults_metrics`, the MQTT load in :mod:`benchmarks.faults_traffic`.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.agent_procs import ROOT, BenchError
from shopfloor.tools.broker import HOST

__all__ = ["BAD_CHECKPOINT_LINES", "EXAMPLE", "JSON_TOPIC", "MEMORY_MAX", "MIB", "SHIPPED_BROKER",
           "STOP_TIMEOUT", "BenchError", "Env", "Outcome", "bare_config", "config_with",
           "example_config", "memory_max", "unit_setting", "wait_for"]

MIB = 2**20
#: The JSON topics of the rig's plant: plant/{site}/{line}/{asset}/{signal}, site s1, line l1.
JSON_TOPIC = "plant/s1/l1/{}/{}"
_N = TypeVar("_N", int, float)
EXAMPLE = ROOT / "edge" / "agent.example.toml"
SHIPPED_BROKER = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
UNIT = ROOT / "deploy" / "systemd" / "shopfloor-agent.service"

#: What the agent logs when a checkpoint cannot be used (src/shopfloor/agent/state.py ``discard``
#: and src/shopfloor/agent/checkpoints.py): any of these after a restart means the state was not
#: restored.
BAD_CHECKPOINT_LINES = (
    "checkpoint unusable, starting cold",
    "cannot be moved aside",
    "saved state refused",
    "configuration changed since the checkpoint",
)


def unit_setting(key: str, default: str) -> str:
    """A setting of the shipped systemd unit, so that scenarios follow the file."""
    found = re.search(rf"^{key}=(\S+)\s*$", UNIT.read_text(), re.MULTILINE)
    return found.group(1) if found else default


def memory_max() -> int:
    """The unit's ``MemoryMax=`` in bytes (512M when this was written)."""
    text = unit_setting("MemoryMax", "512M")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


MEMORY_MAX = memory_max()
#: systemd's TimeoutStopSec: after it, systemd kills the agent (20s when this was written).
STOP_TIMEOUT = float(unit_setting("TimeoutStopSec", "20s").rstrip("s"))


# --- outcomes ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One scenario's record: trials, failed checks, what was lost, key figures, findings.

    A *check* is a property that must hold (the agent alive, a control signal fully scored);
    each failed check counts as a failure and says why in :attr:`findings`. A *finding* with no
    failure is an observed defect the scenario reports without failing on it (:meth:`note`).
    """

    key: str
    title: str
    trials: int = 0
    failures: int = 0
    lost: str = "n/a"
    checks: dict[str, bool] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    seconds: float = 0.0

    def check(self, name: str, ok: bool, detail: str) -> bool:
        """Record a must-hold property; False (a failure, with ``detail``) when it did not."""
        self.checks[name] = self.checks.get(name, True) and ok
        if not ok:
            self.failures += 1
            self.findings.append(f"FAILED {name}: {detail}")
        return ok

    def note(self, text: str) -> None:
        """An observation: a defect reported without failing the run, or context."""
        self.notes.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "title": self.title, "trials": self.trials,
            "failures": self.failures, "lost": self.lost, "checks": self.checks,
            "figures": self.figures, "findings": self.findings, "notes": self.notes,
            "trials_detail": self.rows, "error": self.error, "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class Env:
    """What a scenario is given: the broker binary, a private directory, the mode, a seeded
    random source and the progress line writer."""

    mosquitto: str
    work: Path
    quick: bool
    seed: int
    progress: Callable[[str], None]

    #: The outcome the scenario is filling in (:meth:`outcome`): kept if the scenario raises.
    current: Outcome | None = None

    def outcome(self, key: str, title: str) -> Outcome:
        """The scenario's outcome, remembered so that what it found survives an exception."""
        self.current = Outcome(key, title)
        return self.current

    def size(self, quick: _N, full: _N) -> _N:
        """The quick or the full value of a trial count or a duration."""
        return quick if self.quick else full

    def dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# --- waiting -------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
    """Poll until ``predicate`` holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()



# --- configurations ------------------------------------------------------------------------------


def bare_config(broker_port: int, metrics_port: int, client_id: str, *,
                state: Path | None = None, mqtt: str = "", agent: str = "",
                subscriptions: str = "", checkpoint_interval: float | None = None) -> str:
    """The default configuration a user starts from: one JSON subscription with default
    detection and every ``[agent]`` bound at its default, plus the rig's broker and /metrics
    (and ``mqtt``, ``agent`` lines and more ``subscriptions`` when given)."""
    text = f"""
[mqtt]
host = "{HOST}"
port = {broker_port}
client_id = "{client_id}"
{mqtt}

[metrics]
host = "127.0.0.1"
port = {metrics_port}

[agent]
{agent}

[[subscriptions]]
topic = "plant/{{site}}/{{line}}/{{asset}}/{{signal}}"
codec = "json"
{subscriptions}
"""
    if state is not None:
        text += f'\n[state]\ndirectory = "{state}"\n'
        if checkpoint_interval is not None:
            text += f"checkpoint_interval = {checkpoint_interval!r}\n"
    return text


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?")


def config_with(text: str, settings: dict[tuple[str, str], Any]) -> str:
    """``text`` (a TOML file) with ``(table, key)`` settings replaced in place; every one must
    be found exactly once as an active ``key = value`` line, and the result must parse to those
    values. Used to point the shipped example at the rig without rewriting the rest of it."""
    lines = text.splitlines()
    table = ""
    found: dict[tuple[str, str], int] = dict.fromkeys(settings, 0)
    for n, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            table = header.group(1)
            continue
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith(
            "#") else ""
        if (table, key) in settings:
            value = settings[(table, key)]
            lines[n] = f"{key} = {_toml(value)}"
            found[(table, key)] += 1
    missing = [f"{t}.{k}" for (t, k), count in found.items() if count != 1]
    if missing:
        raise BenchError(f"cannot set {', '.join(missing)} in the configuration: not exactly "
                         "one active line each")
    out = "\n".join(lines) + "\n"
    doc = tomllib.loads(out)
    for (t, k), value in settings.items():
        if doc[t][k] != value:
            raise BenchError(f"{t}.{k} reads {doc[t][k]!r} after setting it to {value!r}")
    return out


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def example_config(broker_port: int, metrics_port: int, client_id: str, state: Path) -> str:
    """The shipped edge/agent.example.toml, pointed at the rig's broker, /metrics and a state
    directory; every other option as shipped."""
    return config_with(EXAMPLE.read_text(), {
        ("mqtt", "host"): "127.0.0.1", ("mqtt", "port"): broker_port,
        ("mqtt", "client_id"): client_id, ("metrics", "port"): metrics_port,
        ("state", "directory"): str(state),
    })
