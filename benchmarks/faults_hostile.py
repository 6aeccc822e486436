"""Fault scenario 1, hostile input: what a broker can carry that no sensor sends.

hostile
    Every kind of bad input a broker can carry - values no sensor reads (1e300, 1.7e308,
    -1e305), NaN and Infinity as JSON text, arrays past the caps, malformed and deeply nested
    JSON, oversized payloads, wrong types and names, broken frames and Sparkplug - on the
    shipped example config and on a bare default one, with a clean control signal sent
    alongside (its own stream also carries rejected extreme values). Must hold: the agent
    lives, every message is counted, the control's valid samples are all scored, SIGTERM ends
    it with 0. Reported: two probe signals that each get one far-future timestamp (1e300,
    read as nanoseconds, and 2100-01-01) between valid samples, and how many of the valid
    samples after it are scored.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np

from benchmarks.faults_metrics import settle
from benchmarks.faults_procs import (
    Agent,
    start_agent,
    start_broker,
)
from benchmarks.faults_rig import (
    JSON_TOPIC,
    STOP_TIMEOUT,
    Env,
    Outcome,
    bare_config,
    example_config,
)
from benchmarks.faults_traffic import publish_all
from shopfloor.receiving.codecs import FRAME_HEADER, encode_frame
from shopfloor.receiving.sparkplug import DataType, encode_data, sparkplug_topic
from shopfloor.tools.broker import free_port

__all__ = ["hostile_messages", "run_hostile"]

CONTROL = "control/temp"
CONTROL_SAMPLES = 400
#: On the control signal too: beyond the gate's MAX_MAGNITUDE, so rejected on any config.
CONTROL_HOSTILE = (1e300, 1.7e308, -1e305, 1e16, -2e15)
HOSTILE_VALUES = (1e300, 1.7e308, -1e305, 1e14, -1e14, 5e-324, 1e-300)
#: Future timestamps on a probe signal between valid samples: 1e300 (read as nanoseconds:
#: ~1e291 s) and 2100-01-01.
PROBES = {"far": b"1e300", "y2100": b"4102444800.0"}
PROBE_SAMPLES = 30


def hostile_messages(example: bool) -> list[tuple[str, str, bytes]]:
    """(kind, topic, payload) of every hostile message; frames and Sparkplug only where the
    config subscribes to them (the example does, the bare config does not)."""
    t = [time.time()]

    def ts() -> float:
        t[0] += 1e-3
        return t[0]

    x = JSON_TOPIC.format("hostile", "x")
    out: list[tuple[str, str, bytes]] = []
    out += [("extreme value", x, b'{"ts":%r,"value":%r}' % (ts(), v)) for v in HOSTILE_VALUES]
    out += [("non-finite text", x, b'{"ts":%r,"value":%s}' % (ts(), word))
            for word in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999")]
    out += [("non-finite text", x, b"NaN"),
            ("non-finite text", x, b'{"ts":%r,"values":[1.0,NaN,2.0],"rate":10}' % ts())]
    ones = b",".join([b"0.5"] * 70_000)
    out += [("huge array", x, b'{"ts":%r,"values":[%s],"rate":1000}' % (ts(), ones)),
            ("huge array", x, b'{"ts":%r,"values":[%s],"rate":1000}'
             % (ts(), b",".join([b"1"] * 100_000))),
            ("huge array", x, b"[" + b",".join(b'{"ts":%r,"value":1.0}' % (t[0] + k * 1e-6)
                                              for k in range(70_000)) + b"]")]
    out += [("malformed JSON", x, p) for p in (
        b'{"ts": 1, "value": ', b"not json", b"\xff\xfe\x00\x01", b"", b'{"value": 1}}',
        b'{"ts":1767225600,"value":1,}', b"{'value': 1}", b"\x00" * 64)]
    out += [("deep nesting", x, b"[" * 100_000 + b"]" * 100_000),
            ("deep nesting", x, b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
            ("deep nesting", x, b'{"ts":%r,"value":%s}' % (ts(), b"[" * 5000 + b"]" * 5000))]
    out += [("oversized", x, b" " * 600_000 + b"1"),
            ("oversized", x, b'{"ts":%r,"value":1,"pad":"%s"}' % (ts(), b"x" * 3_000_000))]
    wrong = [b'{"ts":%r,"value":true}', b'{"ts":%r,"value":null}', b'{"ts":%r,"value":"12.5"}',
             b'{"ts":%r,"value":[1,2]}', b'{"ts":%r,"value":{"v":1}}',
             b'{"ts":%r,"value":1,"values":[1]}', b'{"ts":%r,"values":[1,2],"rate":0}',
             b'{"ts":%r,"values":[1,2],"rate":-1}', b'{"ts":%r,"values":"abc","rate":1}',
             b'{"ts":%r,"values":[1,2],"rate":1e-300}', b'{"ts":%r,"values":[],"rate":1}']
    out += [("wrong type", x, p % ts()) for p in wrong]
    out += [("wrong type", x, p) for p in (
        b'{"ts":"yesterday","value":1}', b'{"ts":-5,"value":1}', b'{"ts":1e300,"value":1}',
        b'{"ts":true,"value":1}', b'"just a string"', b"[]", b"{}", b"[1,2,3]", b"true")]
    out += [("bad name", JSON_TOPIC.format("a" * 100, "x"), b"1.0"),
            ("bad name", JSON_TOPIC.format("hostile", "x y"), b"1.0"),
            ("bad name", JSON_TOPIC.format("hostile", "température"), b"1.0")]
    if example:
        frame_topic = JSON_TOPIC.format("hostile", "vib") + "/frame"
        good = encode_frame(ts(), 12800.0, np.sin(np.arange(1024) / 7.0), "int16", 1e-4)
        nan_rate = FRAME_HEADER.pack(b"SFVF", 1, 2, 0, math.nan, ts(), 1e-4, 1024)
        out += [("bad frame", frame_topic, good[:-2]),
                ("bad frame", frame_topic, b"XXXX" + good[4:]),
                ("bad frame", frame_topic, good + b"\x00\x00"),
                ("bad frame", frame_topic, nan_rate + good[28:]),
                ("bad frame", frame_topic,
                 FRAME_HEADER.pack(b"SFVF", 1, 2, 0, 12800.0, ts(), 1e-4, 2**31) + good[28:]),
                ("bad frame", frame_topic,
                 FRAME_HEADER.pack(b"SFVF", 9, 2, 0, 12800.0, ts(), 1e-4, 1024) + good[28:]),
                ("bad frame", frame_topic, good[:10])]
        node = sparkplug_topic("plant", "DDATA", "edge-h", "dev-h")
        birth = sparkplug_topic("plant", "DBIRTH", "edge-h", "dev-h")
        out += [("bad Sparkplug", node, b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
                ("bad Sparkplug", node, encode_data(int(ts() * 1000), 1,
                                                    [(99, DataType.FLOAT, 1.0)])),
                ("bad Sparkplug", birth, b"\x12\x05\x0a\x03abc"),
                ("bad Sparkplug", birth, b"\x0a" * 1000),
                ("bad Sparkplug", node, b"")]
    return out


def run_hostile(env: Env) -> Outcome:
    out = env.outcome("hostile", "hostile values and payloads over MQTT")
    for name in ("example", "bare"):
        out.trials += 1
        with contextlib.ExitStack() as stack:
            broker = start_broker(env, f"hostile-{name}", stack)
            work = env.dir(f"hostile-{name}")
            port = free_port()
            text = (example_config(broker.port, port, "faults-hostile", work / "state")
                    if name == "example" else
                    bare_config(broker.port, port, "faults-hostile", state=work / "state"))
            agent = start_agent(work, "agent", text, port, stack)
            out.rows.append(_hostile_trial(env, out, name, agent, broker.port))
    missing = sum(CONTROL_SAMPLES - float(r["control_scored"]) for r in out.rows)
    out.lost = f"{missing:.0f} valid control samples not scored (exact)"
    return out


def _hostile_trial(env: Env, out: Outcome, name: str, agent: Agent, port: int) -> dict[str, object]:
    hostile = hostile_messages(name == "example")
    control = JSON_TOPIC.format(*CONTROL.split("/"))
    rng = np.random.default_rng(env.seed)
    t = time.time() + 10.0  # after every hostile timestamp, so none makes a control sample late
    messages: list[tuple[str, bytes]] = []
    sent_valid = 0
    extremes = iter(CONTROL_HOSTILE * 100)
    for i in range(CONTROL_SAMPLES):
        t += 0.01
        value = 20.0 + float(rng.standard_normal())
        messages.append((control, b'{"ts":%r,"value":%r}' % (t, value)))
        sent_valid += 1
        if i < len(hostile):
            messages.append(hostile[i][1:])
        if i % 40 == 7:  # an extreme value on the control's own stream: rejected, not scored
            t += 0.01
            messages.append((control, b'{"ts":%r,"value":%r}' % (t, next(extremes))))
    messages += [m[1:] for m in hostile[CONTROL_SAMPLES:]]
    # One sample stamped far in the future, between valid ones: does the signal score on?
    for probe, poison in PROBES.items():
        topic = JSON_TOPIC.format("probe", probe)
        messages += [(topic, b'{"ts":%r,"value":%r}' % (t + 1.0 + k * 0.01, 20.0 + k % 3))
                     for k in range(PROBE_SAMPLES)]
        messages.append((topic, b'{"ts":%s,"value":20.0}' % poison))
        messages += [(topic, b'{"ts":%r,"value":%r}' % (t + 2.0 + k * 0.01, 20.0 + k % 3))
                     for k in range(PROBE_SAMPLES)]
    before = agent.metrics()
    sent = publish_all(port, f"faults-hostile-pub-{name}", messages, qos=1)
    s = settle(agent, 60.0, until=lambda s: s.value("shopfloor_messages_received_total")
               - before.value("shopfloor_messages_received_total") >= sent)
    received = s.value("shopfloor_messages_received_total") - before.value(
        "shopfloor_messages_received_total")
    scored = s.scored(CONTROL)
    rejected = s.rejected()
    probes = {p: s.scored(f"probe/{p}") for p in PROBES}
    for probe, scored_probe in probes.items():
        if scored_probe < 2 * PROBE_SAMPLES:
            out.note(f"DEFECT (reported, not failed) [{name} config]: one JSON sample with "
                     f'"ts": {PROBES[probe].decode()} between {PROBE_SAMPLES} valid ones and '
                     f"{PROBE_SAMPLES} more blinds its signal: {scored_probe:.0f} samples "
                     "scored in all, the later valid ones rejected as out_of_order (no bound "
                     "on future timestamps)")
    errors = s.value("shopfloor_worker_errors_total") + s.value(
        "shopfloor_mqtt_callback_errors_total")
    alive = agent.alive
    code, seconds = agent.terminate(STOP_TIMEOUT + 10.0)
    tag = f"[{name} config]"
    out.check("agent_alive", alive, f"{tag} the agent died: exit {agent.proc.returncode}")
    out.check("every_message_received", received == sent,
              f"{tag} {sent:.0f} published at QoS 1, {received:.0f} received")
    out.check("control_fully_scored", scored == CONTROL_SAMPLES,
              f"{tag} control signal: {scored:.0f} of {CONTROL_SAMPLES} valid samples scored")
    out.check("no_worker_errors", errors == 0, f"{tag} {errors:.0f} worker/callback errors")
    out.check("sigterm_exit_0", code == 0, f"{tag} SIGTERM: exit {code} after {seconds:.1f} s")
    kinds = sorted({k for k, _, _ in hostile})
    out.figures[f"{name}_config"] = {
        "hostile_messages": len(hostile), "kinds": kinds, "published": sent,
        "received": received, "rejected_by_reason": rejected,
        "control_scored": scored, "control_valid_sent": sent_valid,
        "future_timestamp_probes": {
            f"ts={PROBES[p].decode()}": f"{v:.0f} scored of {PROBE_SAMPLES} valid + 1 "
            f"future-stamped + {PROBE_SAMPLES} valid" for p, v in probes.items()},
        "worker_and_callback_errors": errors, "sigterm_exit": code,
        "sigterm_seconds": round(seconds, 2),
    }
    env.progress(f"[faults] hostile ({name} config): {len(hostile)} hostile messages, control "
                 f"{scored:.0f}/{CONTROL_SAMPLES}, exit {code}")
    return {"config": name, "alive": alive, "sigterm_exit": code,
            "sigterm_seconds": round(seconds, 2), "control_scored": scored,
            "rejected": rejected}

