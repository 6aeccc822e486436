"""Payload codecs: every documented form, every reject reason, round trips, and fuzzing.

The fuzz tests are the contract the MQTT network thread relies on: whatever bytes arrive,
:func:`decode` returns readings or a rejection with a reason from the bounded set, and never
raises.
"""

from __future__ import annotations

import doctest
import json
import struct
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.receiving import codecs
from shopfloor.receiving.codecs import (
    CODECS,
    REJECT_REASONS,
    Frame,
    Limits,
    Reading,
    Rejected,
    Samples,
    decode,
    encode_frame,
    encode_json_batch,
    encode_json_scalar,
)
from shopfloor.receiving.sparkplug import DataType, SparkplugAliases, encode_data, encode_nbirth

LIMITS = Limits()
ARRIVAL = 1_767_225_600.25  # 2026-01-01 00:00:00.25 UTC
T0 = 1_767_225_600.0


def samples(payload: bytes, codec: str = "json", limits: Limits = LIMITS) -> Samples:
    out = decode(codec, payload, ARRIVAL, limits)
    assert isinstance(out, list), out
    assert len(out) == 1
    assert out[0].metric is None
    assert isinstance(out[0].data, Samples)
    return out[0].data


def frame(payload: bytes) -> Frame:
    out = decode("frame", payload, ARRIVAL, LIMITS)
    assert isinstance(out, list), out
    assert len(out) == 1
    assert isinstance(out[0].data, Frame)
    return out[0].data


def header(
    magic: bytes = b"SFVF",
    version: int = 1,
    kind: int = 2,
    reserved: int = 0,
    rate: float = 25_600.0,
    ts: float = T0,
    scale: float = 0.5,
    count: int = 4,
) -> bytes:
    """The header written field by field from the documented table, not with FRAME_HEADER."""
    return (
        magic
        + bytes([version, kind])
        + reserved.to_bytes(2, "little")
        + struct.pack("<f", rate)
        + struct.pack("<d", ts)
        + struct.pack("<f", scale)
        + count.to_bytes(4, "little")
    )


INT16_BODY = struct.pack("<4h", -2, -1, 0, 32767)

# --- the JSON forms ---------------------------------------------------------------------------


def test_json_scalar() -> None:
    s = samples(b'{"ts": 1767225600.5, "value": 21.5, "unit": "degC"}')
    np.testing.assert_array_equal(s.timestamps, [T0 + 0.5])
    np.testing.assert_array_equal(s.values, [21.5])
    assert s.timestamps.dtype == np.float64
    assert s.values.dtype == np.float64


def test_json_scalar_without_ts_is_stamped_on_arrival() -> None:
    s = samples(b'{"value": -3}')
    np.testing.assert_array_equal(s.timestamps, [ARRIVAL])
    np.testing.assert_array_equal(s.values, [-3.0])


@pytest.mark.parametrize(("payload", "value"), [(b"42", 42.0), (b" -1.5e3\n", -1500.0)])
def test_json_bare_number(payload: bytes, value: float) -> None:
    s = samples(payload)
    np.testing.assert_array_equal(s.timestamps, [ARRIVAL])
    np.testing.assert_array_equal(s.values, [value])


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("1767225600", T0),
        ("1767225600250", T0 + 0.25),  # above 1e11: milliseconds
        ("100000000000", 1e11),  # at the threshold: still seconds
        ("100000000001", 100_000_000.001),
        ('"2026-01-01T00:00:00"', T0),  # no zone: UTC
        ('"2026-01-01T00:00:00Z"', T0),
        ('"2026-01-01T01:00:00.5+01:00"', T0 + 0.5),
        ('"2026-01-01"', T0),
    ],
)
def test_json_timestamps(ts: str, expected: float) -> None:
    s = samples(f'{{"ts": {ts}, "value": 1}}'.encode())
    assert s.timestamps[0] == pytest.approx(expected, abs=1e-6)


def test_json_batch_timestamps_follow_the_rate() -> None:
    s = samples(b'{"ts": 1767225600, "rate": 4, "values": [1, 2.5, -3]}')
    np.testing.assert_array_equal(s.timestamps, T0 + np.array([0.0, 0.25, 0.5]))
    np.testing.assert_array_equal(s.values, [1.0, 2.5, -3.0])


def test_json_batch_without_ts_starts_on_arrival() -> None:
    s = samples(b'{"rate": 2, "values": [1, 2]}')
    np.testing.assert_array_equal(s.timestamps, [ARRIVAL, ARRIVAL + 0.5])


def test_json_records_keep_their_order_and_times() -> None:
    payload = (
        b'[{"ts": 1767225601, "value": 1}, {"value": 2},'
        b' {"ts": "2026-01-01T00:00:00Z", "value": 3.5}]'
    )
    s = samples(payload)
    np.testing.assert_array_equal(s.timestamps, [T0 + 1.0, ARRIVAL, T0])
    np.testing.assert_array_equal(s.values, [1.0, 2.0, 3.5])


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    s = samples(b'{"value": 1, "note": "[[[[[[[[[[{{{{{{{{{{\\"[[[["}')
    np.testing.assert_array_equal(s.values, [1.0])


def test_a_large_batch_within_the_limits() -> None:
    values = np.random.default_rng(3).normal(0.0, 1e3, 100_000)
    s = samples(encode_json_batch(T0, values, 1000.0), limits=Limits(max_payload_bytes=4 << 20))
    np.testing.assert_array_equal(s.values, values)  # repr round-trips a float64 exactly


# --- encoders ---------------------------------------------------------------------------------


def test_json_encoders_round_trip() -> None:
    s = samples(encode_json_scalar(T0 + 0.125, 1e-5))
    np.testing.assert_array_equal(s.timestamps, [T0 + 0.125])
    np.testing.assert_array_equal(s.values, [1e-5])
    s = samples(encode_json_batch(T0, np.array([1.0, 2.0, 3.0]), 10.0))
    np.testing.assert_allclose(s.timestamps, T0 + np.array([0.0, 0.1, 0.2]), rtol=1e-15)
    assert json.loads(encode_json_scalar(np.float64(2.0), np.float64(0.5))) == {
        "ts": 2.0,
        "value": 0.5,
    }


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_json_scalar(T0, float("nan")),
        lambda: encode_json_scalar(float("inf"), 1.0),
        lambda: encode_json_batch(T0, [1.0, float("nan")], 10.0),
        lambda: encode_json_batch(T0, [1.0], 0.0),
        lambda: encode_frame(T0, 100.0, [1.0]),
        lambda: encode_frame(T0, 0.0, [1.0, 2.0]),
        lambda: encode_frame(-1.0, 100.0, [1.0, 2.0]),
        lambda: encode_frame(T0, 100.0, [1.0, float("nan")]),  # int16 has no NaN
        lambda: encode_frame(T0, 100.0, [1.0, 2.0], sample_type="int8"),  # type: ignore[arg-type]
        lambda: encode_frame(T0, 100.0, [1.0, 2.0], scale=0.0),
        lambda: encode_frame(T0, 100.0, [1.0, 100.0], scale=1e-3),  # 100000 steps > 32767
    ],
)
def test_encoders_refuse_what_the_format_cannot_carry(call: Any) -> None:
    with pytest.raises(ValueError, match=r"must|cannot|need|exceed"):
        call()


def test_frame_header_layout_matches_the_documented_table() -> None:
    payload = encode_frame(T0, 25_600.0, [-1.0, 0.0, 2.0, 4.0], sample_type="float32")
    assert payload[:28] == header(kind=1, scale=1.0, count=4)
    assert payload[28:] == struct.pack("<4f", -1.0, 0.0, 2.0, 4.0)


def test_int16_frame_uses_the_full_range() -> None:
    payload = encode_frame(T0, 1000.0, [-0.5, 0.25, 1.0, 0.0])
    raw = np.frombuffer(payload, "<i2", offset=28)
    assert np.abs(raw).max() == 32767
    assert struct.unpack_from("<f", payload, 20)[0] == pytest.approx(1.0 / 32767.0, rel=1e-7)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 2048),
    level=st.floats(1e-6, 1e6),
    offset=st.floats(-1e6, 1e6),
)
def test_int16_round_trip_error_within_half_a_step(
    seed: int, n: int, level: float, offset: float
) -> None:
    x = offset + level * np.random.default_rng(seed).standard_normal(n)
    payload = encode_frame(T0, 51_200.0, x)
    scale = struct.unpack_from("<f", payload, 20)[0]
    f = frame(payload)
    assert f.timestamp == T0
    assert f.sample_rate == 51_200.0
    # float32 scale times an int16 is exact in float64; only the rounding to a step is lost.
    assert np.abs(f.samples - x).max() <= scale / 2 * (1 + 1e-9)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 4096))
def test_float32_round_trip_is_float32_exact(seed: int, n: int) -> None:
    x = np.random.default_rng(seed).normal(0.0, 3.0, n)
    f = frame(encode_frame(T0, 12_800.0, x, sample_type="float32"))
    np.testing.assert_array_equal(f.samples, x.astype(np.float32).astype(np.float64))


def test_float32_frame_with_explicit_scale() -> None:
    x = np.array([0.5, -1.25, 3.0])
    f = frame(encode_frame(T0, 100.0, x, sample_type="float32", scale=0.25))
    np.testing.assert_array_equal(f.samples, x)
    f = frame(encode_frame(T0, 100.0, x, scale=0.25))
    np.testing.assert_array_equal(f.samples, x)


def test_float32_dropouts_reach_the_frame_as_nan() -> None:
    x = np.array([1.0, np.nan, np.inf, -np.inf, 2.0])
    f = frame(encode_frame(T0, 100.0, x, sample_type="float32"))
    np.testing.assert_array_equal(f.samples, [1.0, np.nan, np.nan, np.nan, 2.0])


def test_frame_timestamp_zero_is_stamped_on_arrival() -> None:
    assert frame(encode_frame(0.0, 100.0, [1.0, 2.0])).timestamp == ARRIVAL


def test_frame_int16_minimum_is_a_value() -> None:
    f = frame(header(scale=0.5) + INT16_BODY)
    np.testing.assert_array_equal(f.samples, [-1.0, -0.5, 0.0, 16383.5])
    f = frame(header(count=2) + struct.pack("<2h", -32768, 1))
    np.testing.assert_array_equal(f.samples, [-16384.0, 0.5])


# --- every reject reason ----------------------------------------------------------------------

_DEEP = b'{"value": 1, "x": ' + b"[" * 8 + b"]" * 8 + b"}"
SMALL = Limits(max_payload_bytes=64, max_json_depth=8, max_batch_values=4)

REJECTS: list[tuple[str, str, bytes, Limits]] = [
    # (expected reason, codec, payload, limits)
    ("too_large", "json", b"1" * 65, SMALL),
    ("too_large", "frame", b"\0" * 65, SMALL),
    ("too_large", "sparkplug", b"\0" * 65, SMALL),
    ("too_large", "json", b'{"rate": 1, "values": [1, 2, 3, 4, 5]}', SMALL),
    ("too_large", "json", b'[{"value":1},{"value":1},{"value":1},{"value":1},{"value":1}]', SMALL),
    ("too_large", "frame", header(count=5) + b"\0" * 10, SMALL),
    ("not_utf8", "json", b'{"value": 1, "n": "\xff"}', LIMITS),
    ("not_utf8", "json", '{"value": 1}'.encode("utf-16"), LIMITS),
    ("bad_json", "json", b'{"value": 1', LIMITS),
    ("bad_json", "json", b"{'value': 1}", LIMITS),
    ("bad_json", "json", b'{"value": 1} 2', LIMITS),
    ("bad_json", "json", b"1" * 5000, LIMITS),  # an integer literal too long to convert
    ("too_deep", "json", _DEEP, LIMITS),
    ("too_deep", "json", b"[" * 1_000_000, LIMITS),
    ("too_deep", "json", b'{"a":' * 100_000, LIMITS),
    ("non_finite", "json", b'{"value": NaN}', LIMITS),
    ("non_finite", "json", b"Infinity", LIMITS),
    ("non_finite", "json", b'{"ts": -Infinity, "value": 1}', LIMITS),
    ("non_finite", "json", b'{"value": 1e400}', LIMITS),
    ("non_finite", "json", b'{"value": ' + b"9" * 400 + b"}", LIMITS),
    ("non_finite", "json", b'{"rate": 1, "values": [1, 1e999]}', LIMITS),
    ("non_finite", "json", b'{"rate": 1, "values": [1, ' + b"9" * 400 + b"]}", LIMITS),
    ("non_finite", "json", b'[{"value": 1}, {"value": NaN}]', LIMITS),
    ("wrong_type", "json", b'{"value": true}', LIMITS),
    ("wrong_type", "json", b"false", LIMITS),
    ("wrong_type", "json", b'"21.5"', LIMITS),
    ("wrong_type", "json", b"null", LIMITS),
    ("wrong_type", "json", b'{"value": "21.5"}', LIMITS),
    ("wrong_type", "json", b'{"value": null}', LIMITS),
    ("wrong_type", "json", b'{"value": [1]}', LIMITS),
    ("wrong_type", "json", b'{"reading": 1}', LIMITS),
    ("wrong_type", "json", b'{"value": 1, "values": [1], "rate": 1}', LIMITS),
    ("wrong_type", "json", b'{"ts": true, "value": 1}', LIMITS),
    ("wrong_type", "json", b'{"ts": null, "value": 1}', LIMITS),
    ("wrong_type", "json", b'{"ts": -5, "value": 1}', LIMITS),
    ("wrong_type", "json", b'{"ts": "yesterday", "value": 1}', LIMITS),
    ("wrong_type", "json", b'{"ts": "1969-12-31T23:59:59Z", "value": 1}', LIMITS),
    ("wrong_type", "json", b'{"ts": "' + b"2" * 65 + b'", "value": 1}', LIMITS),
    ("wrong_type", "json", b'{"values": [1, 2]}', LIMITS),  # no rate
    ("wrong_type", "json", b'{"values": [1, 2], "rate": 0}', LIMITS),
    ("wrong_type", "json", b'{"values": [1, 2], "rate": "fast"}', LIMITS),
    ("wrong_type", "json", b'{"values": 1, "rate": 1}', LIMITS),
    ("wrong_type", "json", b'{"values": [1, true], "rate": 1}', LIMITS),
    ("wrong_type", "json", b'{"values": [1, "2"], "rate": 1}', LIMITS),
    ("wrong_type", "json", b'{"values": [[1]], "rate": 1}', LIMITS),
    ("wrong_type", "json", b'[{"value": 1}, 2]', LIMITS),
    ("wrong_type", "json", b'[{"ts": 1}]', LIMITS),
    ("wrong_type", "nonsense", b"1", LIMITS),
    ("truncated", "frame", header()[:27], LIMITS),
    ("truncated", "frame", header() + INT16_BODY[:-1], LIMITS),
    ("truncated", "frame", header(kind=1) + INT16_BODY, LIMITS),  # float32 needs 16 bytes
    ("bad_header", "frame", header(magic=b"SFVG") + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(version=2) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(kind=3) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(reserved=1) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(rate=0.0) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(rate=-1.0) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(rate=float("nan")) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(rate=float("inf")) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(ts=float("inf")) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(ts=float("nan")) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(ts=-1.0) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(ts=T0 * 1000) + INT16_BODY, LIMITS),  # milliseconds
    ("bad_header", "frame", header(scale=0.0) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(scale=float("-inf")) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(scale=float("nan")) + INT16_BODY, LIMITS),
    ("bad_header", "frame", header(count=1) + INT16_BODY[:2], LIMITS),
    ("bad_header", "frame", header() + INT16_BODY + b"\0", LIMITS),  # trailing bytes
    ("bad_sparkplug", "sparkplug", b"\x08", LIMITS),
    ("unknown_alias", "sparkplug", encode_data(1, 0, [(7, DataType.DOUBLE, 1.0)]), LIMITS),
    ("empty", "json", b"", LIMITS),
    ("empty", "json", b" \n\t", LIMITS),
    ("empty", "json", b'{"values": [], "rate": 1}', LIMITS),
    ("empty", "json", b"[]", LIMITS),
    ("empty", "frame", b"", LIMITS),
    ("empty", "sparkplug", b"", LIMITS),
    ("bad_quality", "json", b'{"value": 1.0, "q": false}', LIMITS),
    ("bad_quality", "json", b'{"ts": 1, "value": 1.0, "quality": 2147483648}', LIMITS),
]


@pytest.mark.parametrize(
    ("reason", "codec", "payload", "limits"),
    REJECTS,
    ids=[f"{r}-{c}-{i}" for i, (r, c, _, _) in enumerate(REJECTS)],
)
def test_reject(reason: str, codec: str, payload: bytes, limits: Limits) -> None:
    out = decode(codec, payload, ARRIVAL, limits, SparkplugAliases(), "spBv1.0/g/NDATA/edge")
    assert isinstance(out, Rejected)
    assert (out.reason, codec) == (reason, codec), out.detail
    assert out.detail


def test_every_reject_reason_is_exercised() -> None:
    assert {reason for reason, *_ in REJECTS} == set(REJECT_REASONS)


def test_a_too_large_payload_is_rejected_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(codecs, "_decode_json", boom)
    monkeypatch.setattr(codecs, "_decode_frame", boom)
    for codec in CODECS:
        out = decode(codec, b"x" * 65, ARRIVAL, SMALL)
        assert isinstance(out, Rejected)
        assert out.reason == "too_large"


@pytest.mark.parametrize(
    ("codec", "target", "reason"),
    [("json", "_decode_json", "bad_json"), ("frame", "_decode_frame", "bad_header")],
)
def test_unexpected_exceptions_become_rejections(
    monkeypatch: pytest.MonkeyPatch, codec: str, target: str, reason: str
) -> None:
    def boom(*args: object) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(codecs, target, boom)
    out = decode(codec, b"1", ARRIVAL, LIMITS)
    assert out == Rejected(reason, "unexpected ZeroDivisionError while decoding")


def test_unexpected_exception_in_sparkplug_becomes_a_rejection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shopfloor.receiving import sparkplug

    def boom(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(sparkplug, "_decode", boom)
    out = decode("sparkplug", b"\x08\x01", ARRIVAL, LIMITS, None, "spBv1.0/g/NDATA/e")
    assert out == Rejected("bad_sparkplug", "unexpected MemoryError while decoding")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_payload_bytes": 0}, "max_payload_bytes"),
        ({"max_json_depth": 1}, "max_json_depth"),
        ({"max_batch_values": 1}, "max_batch_values"),
        ({"max_batch_values": 10.0}, "max_batch_values"),
    ],
)
def test_limits_are_validated(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Limits(**kwargs)


def test_depth_limit_is_the_configured_one() -> None:
    nested = b'{"value": 1, "x": [[[]]]}'  # depth 4
    assert isinstance(decode("json", nested, ARRIVAL, Limits(max_json_depth=4)), list)
    out = decode("json", nested, ARRIVAL, Limits(max_json_depth=3))
    assert isinstance(out, Rejected)
    assert out.reason == "too_deep"


def test_hostile_strings_are_stripped_in_linear_time() -> None:
    # Each of these would make a naive string regex retry from every quote (quadratic): the
    # test would not finish. Unterminated strings are bad JSON, never too_deep by accident.
    for payload in (b'\\"' * 500_000, b'"' + b"[\\" * 400_000, b'["' + b"\\\\" * 400_000):
        out = decode("json", payload, ARRIVAL, LIMITS)
        assert isinstance(out, Rejected)
        assert out.reason == "bad_json"


# --- fuzz: never raises -----------------------------------------------------------------------


def check_decoded(out: object) -> None:
    if isinstance(out, Rejected):
        assert out.reason in REJECT_REASONS
        assert isinstance(out.detail, str)
        return
    assert isinstance(out, list)
    for reading in out:
        assert isinstance(reading, Reading)
        data = reading.data
        if isinstance(data, Samples):
            assert data.timestamps.shape == data.values.shape
            assert data.values.dtype == np.float64
            assert np.isfinite(data.values).all()
            assert np.isfinite(data.timestamps).all()
        else:
            assert isinstance(data, Frame)
            assert data.samples.dtype == np.float64
            assert not np.isinf(data.samples).any()
            assert np.isfinite(data.timestamp)
            assert data.sample_rate > 0


def decode_everywhere(payload: bytes) -> None:
    aliases = SparkplugAliases(max_entries=4, max_metrics=8, max_aliases=16)
    for codec in CODECS:
        for topic in ("spBv1.0/g/NBIRTH/e", "spBv1.0/g/DDATA/e/d", "bad/topic"):
            check_decoded(decode(codec, payload, ARRIVAL, SMALL, aliases, topic))
            check_decoded(decode(codec, payload, ARRIVAL, LIMITS, aliases, topic))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["2026-01-01T00:00:00Z", "ts", "value", "values", "rate"]),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.sampled_from(["ts", "value", "values", "rate", "x"]), children),
    max_leaves=30,
)


def valid_payloads() -> list[bytes]:
    birth = encode_nbirth(
        1_767_225_600_000,
        [("rpm", 1, DataType.UINT32, 1450), ("temp", 2, DataType.FLOAT, 41.5)],
    )
    return [
        encode_json_scalar(T0, 1.5),
        encode_json_batch(T0, [1.0, 2.0, 3.0], 100.0),
        b'[{"ts": "2026-01-01T00:00:00Z", "value": 1}, {"value": 2}]',
        encode_frame(T0, 100.0, [1.0, -2.0, 3.0]),
        encode_frame(T0, 100.0, [1.0, np.nan, 3.0], sample_type="float32"),
        birth,
        encode_data(1_767_225_601_000, 1, [(1, DataType.UINT32, 1460), (2, DataType.FLOAT, 42.0)]),
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=300))
def test_fuzz_random_bytes(payload: bytes) -> None:
    decode_everywhere(payload)


@settings(max_examples=200, deadline=None)
@given(doc=JSON_VALUES, allow_nan=st.booleans())
def test_fuzz_random_json(doc: object, allow_nan: bool) -> None:
    try:
        payload = json.dumps(doc, allow_nan=allow_nan).encode()
    except ValueError:
        return  # NaN with allow_nan=False: nothing to send
    out = decode("json", payload, ARRIVAL, LIMITS)
    check_decoded(out)
    decode_everywhere(payload)


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(valid_payloads()) - 1),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 10_000),
                  st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_mutated_valid_payloads(which: int, edits: list[tuple[str, int, int]]) -> None:
    payload = bytearray(valid_payloads()[which])
    for op, where, byte in edits:
        at = where % (len(payload) + 1)
        if op == "flip" and at < len(payload):
            payload[at] ^= 1 << (byte % 8)
        elif op == "cut":
            del payload[at:]
        elif op == "insert":
            payload.insert(at, byte)
        elif op == "delete" and at < len(payload):
            del payload[at]
    decode_everywhere(bytes(payload))


def test_valid_payloads_decode() -> None:
    # The fuzz seeds themselves must be valid, or the mutation test fuzzes noise only.
    aliases = SparkplugAliases()
    codec_of = ["json", "json", "json", "frame", "frame", "sparkplug", "sparkplug"]
    topics = ["", "", "", "", "", "spBv1.0/g/NBIRTH/e", "spBv1.0/g/NDATA/e"]
    for payload, codec, topic in zip(valid_payloads(), codec_of, topics, strict=True):
        out = decode(codec, payload, ARRIVAL, LIMITS, aliases, topic)
        assert isinstance(out, list), out
        assert out
        check_decoded(out)


def test_docstring_examples() -> None:
    assert doctest.testmod(codecs, raise_on_error=True).attempted >= 5


def test_iso_timestamp_is_utc() -> None:
    s = samples(b'{"ts": "2026-06-01T12:00:00", "value": 1}')
    assert s.timestamps[0] == datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("ts", "seconds"), [
    (1_750_000_000, 1_750_000_000.0),  # seconds
    (1_750_000_000_123, 1_750_000_000.123),  # milliseconds
    (1_750_000_000_123_456, 1_750_000_000.123456),  # microseconds (were read as ms: year 57429)
    (1_750_000_000_123_456_789, 1_750_000_000.123456789),  # nanoseconds
])
def test_epoch_timestamps_in_any_unit_gateways_send(ts: int, seconds: float) -> None:
    s = samples(f'{{"ts": {ts}, "value": 1.5}}'.encode())
    assert s.timestamps[0] == pytest.approx(seconds, abs=1e-6)


def test_a_batch_rate_that_makes_times_infinite_is_refused() -> None:
    out = decode("json", b'{"ts": 1750000000, "rate": 5e-324, "values": [1, 2]}', ARRIVAL,
                 LIMITS)
    assert isinstance(out, Rejected)
    assert out.reason == "wrong_type"
    assert "rate" in out.detail


@pytest.mark.parametrize("key", ["ts", "timestamp", "time"])
@pytest.mark.parametrize("when", [1767225600, 1767225600000, "2026-01-01T00:00:00Z"])
def test_a_gateways_time_key_is_the_samples_time_not_the_arrival(key: str, when: object) -> None:
    # {"timestamp": ..., "value": ...} was silently stamped with the arrival time.
    limits = Limits()
    for payload in ({key: when, "value": 1.5}, {key: when, "values": [1.0, 2.0], "rate": 1.0},
                    [{key: when, "value": 1.5}]):
        out = decode("json", json.dumps(payload).encode(), 1.0, limits)
        assert not isinstance(out, Rejected), out
        assert out[0].data.timestamps[0] == 1767225600.0  # type: ignore[union-attr]


def test_two_time_keys_in_one_object_are_refused() -> None:
    out = decode("json", b'{"ts": 1, "time": 2, "value": 1}', 5.0, Limits())
    assert isinstance(out, Rejected)
    assert out.reason == "wrong_type"
