"""A simulated plant for ``shopfloor simulate``: seeded sensor traffic with labelled faults.

Vibration assets (``motor-1``, ...) send accelerometer frames of their ``accel`` signal; quality
assets (``station-1``, ...) measure every part, a ``diameter_mm`` and a ``torque_nm``; optional
extra healthy gauges (asset ``aux``) make load. Faults are injected into chosen signals from
chosen times: a developing bearing defect (impacts at the outer-race defect frequency, their
severity ramping up from 0), a slow drift (tool wear), a level shift and outliers.

Topics follow the Unified Namespace: ``plant/{site}/{line}/{asset}/{signal}`` carries JSON
scalars and ``plant/{site}/{line}/{asset}/{signal}/frame`` binary frames. The frame topics have
one level more so that the two subscriptions (one per codec) never overlap: a broker may deliver
a message once per matching subscription (Mosquitto does over MQTT 5), and a frame read as JSON
would only be rejected.

Generation is pure and separate from publishing: every signal draws from its own generator,
seeded from the plant's seed, the signal's name and a fixed-size chunk of its messages, so
adding a signal or lengthening a run changes no other message. Timestamps are simulated time
(``t0`` + offset), so a run faster than real time still carries the plant's own clock.

The parts: this module holds the ``simulate`` command (its options, :func:`plant_from_args` and
:func:`run`); the faults are in :mod:`shopfloor.tools.simulate_faults`, the plant and its generators
in :mod:`shopfloor.tools.simulate_plant`, the agent configuration for a plant in
:mod:`shopfloor.tools.simulate_config` and the publisher in :mod:`shopfloor.tools.simulate_publish`.
Everything is re-exported here.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from shopfloor.errors import UserError
from shopfloor.tools.simulate_config import agent_config_toml
from shopfloor.tools.simulate_faults import FAULT_KINDS, Fault, standard_faults
from shopfloor.tools.simulate_plant import (
    FRAME_SCALE,
    FRAME_TOPIC,
    SCALAR_TOPIC,
    Measurement,
    Plant,
    SimSignal,
)
from shopfloor.tools.simulate_publish import PublishReport, publish

__all__ = [
    "FAULT_KINDS",
    "FRAME_SCALE",
    "FRAME_TOPIC",
    "SCALAR_TOPIC",
    "Fault",
    "Measurement",
    "Plant",
    "PublishReport",
    "SimSignal",
    "add_parser",
    "agent_config_toml",
    "plant_from_args",
    "publish",
    "run",
    "standard_faults",
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` command to ``subparsers`` (from ``add_subparsers``)."""
    d = Plant()
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="a simulated plant publishing to an MQTT broker",
        description="Publish seeded vibration frames and quality measurements, with a bearing "
        "defect and quality faults from --fault-start on, to an MQTT broker.",
    )
    p.add_argument("--host", default="127.0.0.1", help="broker (default: 127.0.0.1)")
    p.add_argument("--port", type=_int(1, 65535), default=1883, help="default: 1883")
    p.add_argument("--seed", type=_int(0, 2**63 - 1), default=d.seed, help="default: 0")
    p.add_argument("--duration", type=_float(0.0, above=True), metavar="SECONDS",
                   help="simulated seconds to publish (default: until Ctrl-C)")
    p.add_argument("--max-messages", type=_int(1, 2**62), metavar="N", help="stop after N")
    p.add_argument("--speed", type=_speed, default=1.0, metavar="X",
                   help="times real time, or 'max' for as fast as the broker takes (default: 1)")
    p.add_argument("--rate", type=_float(0.0, above=True), metavar="MSG_PER_S",
                   help="at most this many messages per second")
    p.add_argument("--vibration-assets", type=_int(0, 10_000), default=d.vibration_assets,
                   metavar="N",
                   help=f"motor-N assets sending frames (default: {d.vibration_assets})")
    p.add_argument("--quality-assets", type=_int(0, 10_000), default=d.quality_assets,
                   metavar="N",
                   help=f"station-N assets measuring parts (default: {d.quality_assets})")
    p.add_argument("--frame-rate", type=_float(1e-3, 10_000.0), default=d.frame_rate,
                   metavar="HZ", help=f"frames per second per motor (default: {d.frame_rate:g})")
    p.add_argument("--sample-rate", type=_float(2_000.0, 1e6), default=d.sample_rate,
                   metavar="HZ", help=f"accelerometer sample rate (default: {d.sample_rate:g})")
    p.add_argument("--frame-len", type=_int(64, 1 << 20), default=d.frame_len, metavar="N",
                   help=f"samples per frame (default: {d.frame_len})")
    p.add_argument("--parts-per-second", type=_float(1e-3, 100_000.0),
                   default=d.parts_per_second, metavar="HZ",
                   help=f"parts measured per station (default: {d.parts_per_second:g})")
    p.add_argument("--extra-signals", type=_int(0, 100_000), default=0, metavar="N",
                   help="extra healthy gauges at the parts rate, for load tests (default: 0)")
    p.add_argument("--fault-asset", action="append", metavar="ASSET",
                   help="asset that develops faults (repeatable; 'none' for a healthy plant; "
                   "default: motor-1 and station-1)")
    p.add_argument("--fault-start", type=_float(0.0), default=120.0, metavar="SECONDS",
                   help="when the faults begin, in simulated seconds (default: 120)")
    p.add_argument("--qos", type=_int(0, 1), default=1, help="MQTT QoS (default: 1)")
    p.add_argument("--site", default=d.site, help=f"site in the topics (default: {d.site})")
    p.add_argument("--line", default=d.line, help=f"line in the topics (default: {d.line})")
    p.add_argument("--print-config", action="store_true",
                   help="print the agent configuration for this plant and broker, then exit")
    return p


def plant_from_args(args: argparse.Namespace) -> Plant:
    """The :class:`Plant` the ``simulate`` options describe; ValueError on a bad combination."""
    assets = args.fault_asset
    if assets is None:
        assets = [a for a, n in (("motor-1", args.vibration_assets),
                                 ("station-1", args.quality_assets)) if n]
    for a in assets:
        kind, _, number = a.partition("-")
        count = {"motor": args.vibration_assets, "station": args.quality_assets}.get(kind, 0)
        if a != "none" and not (number.isdigit() and 1 <= int(number) <= count):
            raise ValueError(f"--fault-asset {a}: not an asset of this plant, which has "
                             f"motor-1..{args.vibration_assets} and "
                             f"station-1..{args.quality_assets} (or 'none')")
    faults = tuple(f for a in assets if a != "none" for f in standard_faults(a, args.fault_start))
    return Plant(site=args.site, line=args.line, vibration_assets=args.vibration_assets,
                 quality_assets=args.quality_assets, frame_rate=args.frame_rate,
                 sample_rate=args.sample_rate, frame_len=args.frame_len,
                 parts_per_second=args.parts_per_second, extra_signals=args.extra_signals,
                 faults=faults, seed=args.seed, qos=args.qos)


def run(args: argparse.Namespace) -> int:
    """Run ``shopfloor simulate``; SIGINT and SIGTERM end it cleanly (exit 0)."""
    try:
        plant = plant_from_args(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.print_config:
        sys.stdout.write(agent_config_toml(plant, args.host, args.port))
        return 0
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    for s in plant.signals:
        start = min((f.start for f in plant.faults if f.asset == s.asset
                     and f.signal == s.signal), default=math.inf)
        if start * s.rate < 150:
            print(f"simulate: warning: the fault on {s.id} starts after {start * s.rate:.0f} "
                  "samples; the agent's alarms warm up for 100, and its detectors need as many "
                  "again to settle", file=sys.stderr)
    t0 = time.time()
    truth = ", ".join(f"{k} from {v - t0:g} s" for k, v in plant.ground_truth(t0).items())
    print(f"simulate: {len(plant.signals)} signals, {plant.message_rate:g} messages per "
          f"simulated second to {args.host}:{args.port}; faults: {truth or 'none'}",
          file=sys.stderr)
    try:
        report = publish(plant, args.host, args.port, t0=t0, duration=args.duration,
                         max_messages=args.max_messages, realtime=args.speed != math.inf,
                         speed=args.speed, rate_limit=args.rate, stop=stop)
    except ConnectionError as exc:
        print(f"shopfloor simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"simulate: sent {report.messages} messages ({report.payload_bytes / 1e6:.1f} MB) in "
          f"{report.wall_seconds:.1f} s ({report.rate:.0f}/s), {report.simulated_seconds:.1f} s "
          f"of plant time; stopped by {report.stopped_by}; {report.lost} lost", file=sys.stderr)
    return 0


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}; got {value}")
        return value

    return parse


def _float(low: float, high: float = math.inf, *, above: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        fits = value > low if above else value >= low
        if not (math.isfinite(value) and fits and value <= high):
            bounds = f"{'>' if above else '>='} {low:g}"
            bounds += f" and <= {high:g}" if high < math.inf else ""
            raise argparse.ArgumentTypeError(f"must be a number {bounds}; got {text}")
        return value

    return parse


def _speed(text: str) -> float:
    return math.inf if text == "max" else _float(0.0, above=True)(text)
