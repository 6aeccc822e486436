"""The pipeline configuration: which signals exist, how each is scored, and per asset.

Read once from TOML into frozen objects, validated completely before anything runs: every
detector, threshold and alarm is built once as a dry run, so ``shopfloor check`` and
``shopfloor run`` reject exactly the same files. Errors name file, line and key.

A minimal file::

    [defaults.detector]         # every signal's detector unless it sets its own
    kind = "zscore"

    [[signals]]
    asset = "press-4"
    name = "force"
    valid_range = [0.0, 500.0]

Parameter tables (``detector``, ``threshold``, ``alarm``) merge over ``[defaults.*]`` key by key;
a signal that picks another detector ``kind`` starts from that kind's own defaults.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopfloor.errors import ConfigError
from shopfloor.scoring.detect.registry import (
    ALARMS,
    DETECTORS,
    THRESHOLDS,
    BuildError,
    build,
    parameters,
    resolve,
)
from shopfloor.tomlkeys import KeyLines

__all__ = [
    "DEFAULT_ALARM",
    "DEFAULT_ASSET_DETECTOR",
    "DEFAULT_DETECTOR",
    "DEFAULT_THRESHOLD",
    "AssetSpec",
    "PipelineConfig",
    "SignalSpec",
    "StageSpec",
    "asset_id",
    "config_from_dict",
    "load_config",
    "parse_config",
    "signal_id",
]

# Names end up in MQTT topics, metric labels and CSV headers: keep them to a safe alphabet.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

# Defaults chosen to generalise, not to fit one data set: a z-score of one-step forecast
# residuals (frame features: of the values) against a slowly forgetting EWMA baseline reacts to
# steps and spikes and holds its false-alarm rate on autocorrelated process data; a threshold
# from a Pareto tail fitted to the signal's own warm-up scores, for one false alarm per thousand
# samples; three samples in a row to raise; an alarm lifecycle that always ends.
DEFAULT_DETECTOR: Mapping[str, Any] = {"kind": "zscore"}
DEFAULT_ASSET_DETECTOR: Mapping[str, Any] = {"kind": "mahalanobis"}
DEFAULT_THRESHOLD: Mapping[str, Any] = {"kind": "pot", "false_alarm_rate": 0.001}
DEFAULT_ALARM: Mapping[str, Any] = {}

_BUILTIN_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "detector": DEFAULT_DETECTOR,
    "asset_detector": DEFAULT_ASSET_DETECTOR,
    "threshold": DEFAULT_THRESHOLD,
    "alarm": DEFAULT_ALARM,
}

_TOP_KEYS = {"defaults", "signals", "assets"}
# The agent's own sections (validated by shopfloor.agent.config): a replay may read the agent's
# config file and use just its pipeline part.
AGENT_SECTIONS = frozenset({"mqtt", "subscriptions", "agent", "events", "metrics", "state",
                            "fleet"})
_DEFAULT_KEYS = {"detector", "asset_detector", "threshold", "alarm"}
_SIGNAL_KEYS = {
    "name",
    "asset",
    "kind",
    "column",
    "valid_range",
    "features",
    "unit",
    "detector",
    "threshold",
    "alarm",
}
_ASSET_KEYS = {"name", "signals", "frame_feature", "enabled", "detector", "threshold", "alarm"}


@dataclass(frozen=True, slots=True)
class StageSpec:
    """Detector, threshold and alarm parameters for one signal or asset (merged over defaults)."""

    detector: Mapping[str, Any]
    threshold: Mapping[str, Any]
    alarm: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One signal: a scalar measurement or a stream of vibration frames."""

    asset: str
    name: str
    kind: str  # "scalar" or "frame"
    stage: StageSpec
    column: str | None = None  # CSV column in replay; defaults to the name
    valid_range: tuple[float, float] | None = None
    features: Mapping[str, Any] = field(default_factory=dict)
    # The topic's other named levels ((name, value), in template order): a signal discovered
    # on plant/{site}/{line}/{asset}/{signal} is one per site and line. Empty for [[signals]].
    labels: tuple[tuple[str, str], ...] = ()
    unit: str = ""  # for the dashboards ("degC", "mm/s", "N.m"); not part of the model

    @property
    def id(self) -> str:
        """``asset/name``, with its labels if any: unique within an agent."""
        return signal_id(self.asset, self.name, self.labels)


def signal_id(asset: str, name: str, labels: tuple[tuple[str, str], ...] = ()) -> str:
    """A signal's identity: ``asset/name``, or ``asset/name{site=s1,line=l2}`` when its topic
    has other named levels. Keying on asset and name alone merged line 2's station-1/torque
    into line 1's model without a word."""
    return f"{asset}/{name}{_braced(labels)}"


def asset_id(asset: str, labels: tuple[tuple[str, str], ...] = ()) -> str:
    """An asset's identity, as :func:`signal_id` for its signals."""
    return f"{asset}{_braced(labels)}"


def _braced(labels: tuple[tuple[str, str], ...]) -> str:
    # Label names are template field names; a value is one topic level (no '/').
    return "{" + ",".join(f"{k}={v}" for k, v in labels) + "}" if labels else ""


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """The asset-level detector over several signals of one machine."""

    name: str
    signals: tuple[str, ...]  # signal names within the asset, in column order
    stage: StageSpec
    frame_feature: str = "rms"  # which feature of a frame signal enters the asset vector
    labels: tuple[tuple[str, str], ...] = ()  # a discovered asset's topic labels

    @property
    def id(self) -> str:
        return asset_id(self.name, self.labels)

    def member(self, signal: str) -> str:
        """The id of the member signal named ``signal``."""
        return signal_id(self.name, signal, self.labels)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """A validated configuration."""

    signals: tuple[SignalSpec, ...]
    assets: tuple[AssetSpec, ...]
    source: str = "<config>"


def load_config(
    path: str | Path, *, defaults: Mapping[str, Mapping[str, Any]] | None = None
) -> PipelineConfig:
    """Read and validate a TOML configuration file (``defaults``: see :func:`parse_config`)."""
    return parse_config(read_config_file(path), source=str(path), defaults=defaults)


def read_config_file(path: str | Path) -> str:
    """A config file's text; an unreadable file is a :class:`ConfigError` naming it.

    Only a regular file is read: a FIFO would block the reader until someone writes to it (a
    ``check`` that hangs, a unit that never gets READY), a device may never end. Opened without
    blocking and refused by what the open file is, so a file swapped for a FIFO between a look
    and the read cannot hang us either. Text that is not UTF-8 is refused with its line.
    """
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=where) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ConfigError(
            f"is {file_kind(mode)}, not a regular file: give the path of a TOML file", file=where
        )
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", file=where) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise ConfigError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column}; "
            "save the file as UTF-8",
            file=where,
            line=line,
        ) from None
    # As text-mode reading did before: CRLF and lone CR line ends become LF.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: "a directory", "a FIFO (named pipe)"..."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def config_from_dict(raw: dict[str, Any], *, source: str) -> PipelineConfig:
    """Validate a configuration given as a dict (as parsed TOML); errors carry no line."""
    return Parser(raw, KeyLines(""), source).config()


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> PipelineConfig:
    """Validate TOML ``text``; errors name ``source``, the line and the key.

    ``defaults`` overrides keys of the file's ``[defaults.*]`` tables, as if written there
    (``{"alarm": {"warmup": 400}}`` for ``replay --warmup 400``): every signal and asset that
    does not set the key itself gets the given value; one that sets it keeps its own.
    """
    raw = read_toml(text, source)
    for section, values in (defaults or {}).items():
        table = raw.setdefault("defaults", {})
        # A malformed [defaults] is left as it is, so the parser reports the file's own error.
        if isinstance(table, dict) and isinstance(
            table.setdefault(section, dict(_BUILTIN_DEFAULTS.get(section, {}))), dict
        ):
            table[section].update(values)
    return Parser(raw, KeyLines(text), source).config(AGENT_SECTIONS)


def read_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML; a syntax error becomes a :class:`ConfigError` with its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's tomllib puts the position only in the message: "... (at line 2, column 8)".
        message = str(exc)
        at = re.search(r"\s*\(at line (\d+), column \d+\)", message)
        line = int(at.group(1)) if at else None
        message = message[: at.start()] if at else message
        raise ConfigError(f"not valid TOML: {message}", file=source, line=line) from None


class Parser:
    """Validates parsed TOML against the pipeline schema; other sections build on its helpers."""

    def __init__(self, raw: dict[str, Any], lines: KeyLines, source: str) -> None:
        self.raw = raw
        self.lines = lines
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.source, line=self.lines.line(key), key=key)

    def table(self, value: Any, key: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, got {type(value).__name__}")
        if allowed is not None:
            for k in value:
                if k not in allowed:
                    raise self.error(
                        f"{key}.{k}" if key else k,
                        f"unknown key; allowed here: {', '.join(sorted(allowed))}",
                    )
        return value

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            raise self.error(
                key,
                "must be a name of 1-64 letters, digits, '_', '.' or '-' "
                f"starting with a letter or digit; got {value!r}",
            )
        return value

    def config(self, extra_keys: frozenset[str] = frozenset(), need_signals: bool = True
               ) -> PipelineConfig:
        raw = self.table(self.raw, "", _TOP_KEYS | extra_keys)
        defaults = self.table(raw.get("defaults", {}), "defaults", _DEFAULT_KEYS)
        base = {
            "detector": self.table(defaults.get("detector", DEFAULT_DETECTOR), "defaults.detector"),
            "asset_detector": self.table(
                defaults.get("asset_detector", DEFAULT_ASSET_DETECTOR), "defaults.asset_detector"
            ),
            "threshold": self.table(
                defaults.get("threshold", DEFAULT_THRESHOLD), "defaults.threshold"
            ),
            "alarm": self.table(defaults.get("alarm", DEFAULT_ALARM), "defaults.alarm"),
        }
        self.base = base  # the merged defaults, for sections that build stages of their own
        entries = raw.get("signals", [])
        if not isinstance(entries, list) or (need_signals and not entries):
            raise self.error("signals", "at least one [[signals]] table is needed")
        signals = tuple(self.signal(e, f"signals[{i}]", base) for i, e in enumerate(entries))
        seen: dict[str, str] = {}
        for i, s in enumerate(signals):
            if s.id in seen:
                raise self.error(
                    f"signals[{i}].name",
                    f"signal {s.id!r} is defined twice (first at {seen[s.id]})",
                )
            seen[s.id] = f"signals[{i}]"
        assets = tuple(self.assets(raw.get("assets", []), signals, base))
        return PipelineConfig(signals=signals, assets=assets, source=self.source)

    def signal(self, entry: Any, key: str, base: dict[str, Any]) -> SignalSpec:
        t = self.table(entry, key, _SIGNAL_KEYS)
        for required in ("asset", "name"):
            if required not in t:
                raise self.error(key, f"missing key {required!r}")
        kind = t.get("kind", "scalar")
        if kind not in ("scalar", "frame"):
            raise self.error(f"{key}.kind", f"must be 'scalar' or 'frame'; got {kind!r}")
        column = t.get("column")
        if column is not None and not isinstance(column, str):
            raise self.error(f"{key}.column", "must be a string (the CSV column name)")
        features = self.table(t.get("features", {}), f"{key}.features")
        if kind == "frame":
            self.frame_features(features, f"{key}.features")
        elif features:
            raise self.error(f"{key}.features", "only frame signals have a features table")
        spec = SignalSpec(
            asset=self.name(t["asset"], f"{key}.asset"),
            name=self.name(t["name"], f"{key}.name"),
            kind=kind,
            column=column,
            valid_range=self.valid_range(t.get("valid_range"), f"{key}.valid_range"),
            features=features,
            stage=self.stage(t, key, base, "detector", frame=kind == "frame"),
            unit=self.unit(t.get("unit", ""), f"{key}.unit"),
        )
        return spec

    def unit(self, value: Any, key: str) -> str:
        """A unit of measure as dashboards show it: up to 32 printable characters."""
        if not isinstance(value, str) or len(value) > 32 or not value.isprintable():
            raise self.error(key, f"must be a unit of up to 32 printable characters, like "
                             f"'degC' or 'mm/s'; got {value!r}")
        return value

    def valid_range(self, value: Any, key: str) -> tuple[float, float] | None:
        if value is None:
            return None
        numbers = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        )
        # TOML can write inf and nan: [-inf, inf] would pass the load and then fail every batch
        # the signal is in. "No limits" is said by leaving valid_range out (non-finite values
        # are refused either way).
        if numbers and not all(math.isfinite(v) for v in value):
            raise self.error(
                key,
                f"must be finite numbers [low, high]; got {value!r} "
                "(leave valid_range out for no limits)",
            )
        if not numbers or value[0] > value[1]:
            raise self.error(key, f"must be [low, high] numbers with low <= high; got {value!r}")
        return (float(value[0]), float(value[1]))

    def frame_features(self, features: dict[str, Any], key: str) -> None:
        from shopfloor.scoring.diagnosis import FrameDiagnosis, split_frame_options
        from shopfloor.scoring.features import FrameFeatures

        if "sample_rate" not in features:
            raise self.error(key, "frame signals need features.sample_rate (Hz)")
        frame, diagnosis = split_frame_options(features)
        try:
            FrameDiagnosis(FrameFeatures(**frame).names, **diagnosis)
        except TypeError as exc:
            raise self.error(key, f"{exc}") from None
        except ValueError as exc:
            bad = next((k for k in features if k in str(exc)), "")
            raise self.error(f"{key}.{bad}" if bad else key, str(exc)) from None

    def stage(
        self, t: dict[str, Any], key: str, base: dict[str, Any], detector_key: str,
        frame: bool = False,
    ) -> StageSpec:
        merged: dict[str, dict[str, Any]] = {}
        for part, default_key, table in (
            ("detector", detector_key, DETECTORS),
            ("threshold", "threshold", THRESHOLDS),
            ("alarm", "alarm", ALARMS),
        ):
            own = t.get(part)
            merged[part] = self.merge(base[default_key], own, f"{key}.{part}")
            if part == "detector" and frame:
                self.frame_detector(merged[part])
            # Build once as a dry run so bad values fail at load time, not at the first sample.
            try:
                build(table, merged[part] if part != "alarm" else {"kind": "alarm", **merged[part]})
            except BuildError as exc:
                # Blame the table the bad value came from: the signal's own, or the defaults.
                mine = isinstance(own, dict) and exc.key in own
                where = f"{key}.{part}" if mine else f"defaults.{default_key}"
                raise self.error(f"{where}.{exc.key}", exc.message) from None
        return StageSpec(**merged)

    @staticmethod
    def frame_detector(detector: dict[str, Any]) -> None:
        """Frame features chart raw unless told otherwise: frames are nearly independent of
        each other, and a developing bearing defect is a slow rise that a forecaster would
        track away (the residual charts are for autocorrelated process signals)."""
        kind = detector.get("kind")
        if (isinstance(kind, str) and kind in DETECTORS and "forecast" not in detector
                and "forecast" in parameters(resolve(DETECTORS, kind))):
            detector["forecast"] = False

    def merge(self, default: Mapping[str, Any], override: Any, key: str) -> dict[str, Any]:
        if override is None:
            return dict(default)
        override = self.table(override, key)
        if "kind" in override and override["kind"] != default.get("kind"):
            return dict(override)
        return {**default, **override}

    def assets(
        self, entries: Any, signals: tuple[SignalSpec, ...], base: dict[str, Any]
    ) -> list[AssetSpec]:
        if not isinstance(entries, list):
            raise self.error("assets", "must be an array of tables ([[assets]])")
        by_asset: dict[str, list[str]] = {}
        for s in signals:
            by_asset.setdefault(s.asset, []).append(s.name)
        configured: dict[str, tuple[str, dict[str, Any]]] = {}
        for i, entry in enumerate(entries):
            key = f"assets[{i}]"
            t = self.table(entry, key, _ASSET_KEYS)
            if "name" not in t:
                raise self.error(key, "missing key 'name'")
            name = self.name(t["name"], f"{key}.name")
            if name not in by_asset:
                raise self.error(f"{key}.name", f"no signal belongs to asset {name!r}")
            if name in configured:
                raise self.error(f"{key}.name", f"asset {name!r} is configured twice")
            configured[name] = (key, t)
        out: list[AssetSpec] = []
        # Every asset with two or more signals gets the multivariate detector unless disabled:
        # correlation breaks between signals are what univariate charts miss.
        for asset, names in by_asset.items():
            key, t = configured.get(asset, (f"assets[{asset}]", {}))
            enabled = t.get("enabled", True)
            if not isinstance(enabled, bool):
                raise self.error(f"{key}.enabled", "must be true or false")
            chosen = t.get("signals", names)
            if not isinstance(chosen, list) or not all(isinstance(n, str) for n in chosen):
                raise self.error(f"{key}.signals", "must be a list of signal names")
            for j, n in enumerate(chosen):
                if n not in names:
                    raise self.error(
                        f"{key}.signals",
                        f"entry {j} {n!r} is not a signal of "
                        f"asset {asset!r}; it has: {', '.join(names)}",
                    )
            if len(set(chosen)) != len(chosen):
                raise self.error(f"{key}.signals", "lists a signal twice")
            feature = t.get("frame_feature", "rms")
            if not isinstance(feature, str):
                raise self.error(f"{key}.frame_feature", "must be a feature name such as 'rms'")
            if not enabled or len(chosen) < 2:
                continue
            out.append(
                AssetSpec(
                    name=asset,
                    signals=tuple(chosen),
                    frame_feature=feature,
                    stage=self.stage(t, key, base, "asset_detector"),
                )
            )
        return out
