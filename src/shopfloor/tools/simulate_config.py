"""The agent configuration (TOML) that listens to a simulated plant.

:func:`agent_config_toml` writes what ``shopfloor simulate --print-config`` prints and the demo
and the tests start an agent with: one subscription per topic family of the plant, with its
sample rate and bearing, and the broker, metrics and events sections. A module of its own
because it is about the agent, not about generating or publishing the plant's messages.
Re-exported by :mod:`shopfloor.tools.simulate`.
"""

from __future__ import annotations

import json

from shopfloor.scoring.features import BEARING_6205_2RS
from shopfloor.tools.simulate_plant import SHAFT_HZ, Plant

__all__ = ["agent_config_toml"]


def agent_config_toml(
    plant: Plant,
    broker_host: str = "127.0.0.1",
    broker_port: int = 1883,
    *,
    client_id: str = "shopfloor-agent",
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 9817,
    events_prefix: str = "shopfloor",
    warmup: int = 100,
) -> str:
    """The agent configuration (TOML) that listens to ``plant`` on the given broker.

    One subscription per topic family, pinned to the plant's site and line: frames with the
    plant's sample rate and the 6205 bearing's defect orders, scalars with a z-score. The
    alarms ignore their first ``warmup`` samples (100: as many as the detectors need for a
    baseline), so a fault must start after ``warmup / rate`` seconds to be seen; with the
    default rates (2 frames and 2 parts a second) that is 50 s.
    """
    subscriptions: list[dict[str, object]] = []
    prefix = f"plant/{plant.site}/{plant.line}/"
    if plant.vibration_assets:
        subscriptions.append({
            "topic": prefix + "{asset}/{signal}/frame", "codec": "frame", "qos": plant.qos,
            "kind": "frame",
            # Just inside int16 full scale, so a clipped frame is rejected, not scored.
            "valid_range": [-3.2, 3.2],
            "features": {"sample_rate": float(plant.sample_rate), "shaft_hz": SHAFT_HZ,
                         "defect_orders": dict(BEARING_6205_2RS)},
            "detector": {"kind": "zscore"},
            "alarm": {"warmup": warmup},
        })
    if plant.quality_assets or plant.extra_signals:
        subscriptions.append({
            "topic": prefix + "{asset}/{signal}", "codec": "json", "qos": plant.qos,
            "kind": "scalar", "detector": {"kind": "zscore"}, "alarm": {"warmup": warmup},
        })
    sections: dict[str, dict[str, object]] = {
        "mqtt": {"host": broker_host, "port": broker_port, "protocol": "5",
                 "client_id": client_id, "keepalive": 30, "clean_start": False,
                 "session_expiry": 3600},
        "agent": {"queue_size": 10_000, "drop_policy": "drop_oldest",
                  "max_signals": max(1000, 2 * len(plant.signals)), "batch_max": 5000,
                  "shutdown_timeout": 10.0},
        "events": {"prefix": events_prefix, "qos": 1},
        "metrics": {"host": metrics_host, "port": metrics_port},
    }
    lines = [f"# Agent configuration for the simulated plant {plant.site}/{plant.line} "
             f"(seed {plant.seed}), written by shopfloor simulate.", ""]
    for name in ("mqtt", "agent", "events", "metrics"):
        lines += [f"[{name}]", *_toml_table(sections[name], name), ""]
    for sub in subscriptions:
        lines += ["[[subscriptions]]", *_toml_table(sub, "subscriptions"), ""]
    return "\n".join(lines)


def _toml_table(table: dict[str, object], path: str) -> list[str]:
    # Scalars first, then sub-tables as [path.key] headers, as TOML requires.
    out = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            out += ["", f"[{path}.{k}]", *_toml_table(v, f"{path}.{k}")]
    return out


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {type(v).__name__}")
