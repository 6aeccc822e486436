"""edge/agent.example.toml documents every option, at its true default, and passes the check.

The options are read from the code, not listed here: every field of every settings section of
:class:`~shopfloor.agent.config.AgentConfig`, every key the parser accepts in
``[[subscriptions]]``, ``[[signals]]``, ``[[assets]]`` and ``[defaults]``, every constructor
parameter of every detector kind, threshold kind, the alarm and the frame features. Adding an
option without documenting it fails here.

An option is documented by a ``key = value`` line, or by a commented ``# key = value`` line
(for defaults TOML cannot write, like "not set"). Commented lines are parsed as TOML too and
belong to the table header above them, so a commented example must be valid and sits where it
would be used. Where an option has a default, the value shown must be that default.
"""

from __future__ import annotations

import inspect
import re
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from shopfloor import config
from shopfloor.agent import config as agent_config
from shopfloor.cli import main
from shopfloor.scoring.detect.registry import (
    ALARMS,
    DETECTORS,
    THRESHOLDS,
    build,
    parameters,
    resolve,
)
from shopfloor.scoring.diagnosis import DIAGNOSIS_OPTIONS, FrameDiagnosis, split_frame_options
from shopfloor.scoring.features import FrameFeatures

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "edge" / "agent.example.toml"
PROFILES = sorted((ROOT / "edge" / "profiles").glob("*.toml"))
RIVER_KINDS = {kind for kind, target in DETECTORS.items() if ".river:" in target}

_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=")
_COMMENTED_OPTION = re.compile(r"^#\s?([A-Za-z_][A-Za-z0-9_]*\s*=.*)$")
_TRAILING_COMMENT = re.compile(r"\s#\s")


@dataclass(frozen=True)
class Entry:
    """One documented option: its table (``signals.detector``), key, value, and how shown."""

    section: str
    key: str
    value: Any
    active: bool  # a real setting, not a commented example


def _walk(section: str, table: Mapping[str, Any], active: bool) -> Iterator[Entry]:
    for key, value in table.items():
        yield Entry(section, key, value, active)
        inner = f"{section}.{key}" if section else key
        if isinstance(value, dict):
            yield from _walk(inner, value, active)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                yield from _walk(inner, item, active)


def documented(text: str) -> list[Entry]:
    """Every option of a config file: its settings, and its commented ``# key = value`` lines."""
    entries = list(_walk("", tomllib.loads(text), True))
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = _HEADER.match(stripped)
        if header:
            section = header.group(1)
            continue
        option = _COMMENTED_OPTION.match(stripped)
        if option:
            try:
                parsed = tomllib.loads(option.group(1))
            except tomllib.TOMLDecodeError as exc:
                pytest.fail(f"{EXAMPLE.name}:{number}: commented option is not TOML: {exc}")
            entries += _walk(section, parsed, False)
    return entries


def _plain(value: Any) -> Any:
    # TOML gives lists where constructors default to tuples.
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return documented(EXAMPLE.read_text(encoding="utf-8"))


def keys_in(entries: list[Entry], section: str) -> set[str]:
    return {e.key for e in entries if e.section == section}


def stage_tables(entries: list[Entry]) -> list[dict[str, Any]]:
    """Every detector/threshold/alarm-like table shown: inline ones, and each table header's
    settings together with the commented options under it."""
    tables = [dict(e.value) for e in entries if isinstance(e.value, dict)]
    merged: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.section.startswith("defaults."):
            merged.setdefault(e.section, {}).setdefault(e.key, e.value)
    return tables + list(merged.values())


def settings_sections() -> dict[str, type[Any]]:
    """``[mqtt]``, ``[agent]``, ...: the dataclass-typed fields of AgentConfig, by name."""
    hints = typing.get_type_hints(agent_config.AgentConfig)
    return {
        f.name: hints[f.name]
        for f in fields(agent_config.AgentConfig)
        if isinstance(hints[f.name], type)
        and is_dataclass(hints[f.name])
        and f.name != "pipeline"
    }


def test_settings_sections_are_found() -> None:
    # Guards the discovery above: if it found nothing, the next test would check nothing.
    assert {"mqtt", "agent", "events", "metrics", "state"} <= set(settings_sections())


@pytest.mark.parametrize("section", sorted(settings_sections()))
def test_every_setting_is_shown_at_its_default(entries: list[Entry], section: str) -> None:
    cls = settings_sections()[section]
    shown = {e.key: e for e in entries if e.section == section}
    for f in fields(cls):
        assert f.name in shown, f"[{section}] {f.name} is not in {EXAMPLE.name}"
        entry = shown[f.name]
        if entry.active and f.default is not MISSING:
            assert entry.value == f.default, f"[{section}] {f.name}: default is {f.default!r}"
            assert type(entry.value) is type(f.default), f"[{section}] {f.name}: type"


@pytest.mark.parametrize(
    ("section", "accepted"),
    [
        ("subscriptions", agent_config._SUB_KEYS),
        ("signals", config._SIGNAL_KEYS),
        ("assets", config._ASSET_KEYS),
        ("defaults", config._DEFAULT_KEYS),
        ("", config._TOP_KEYS | config.AGENT_SECTIONS),
    ],
    ids=["subscriptions", "signals", "assets", "defaults", "top-level"],
)
def test_every_key_the_parser_accepts_is_shown(
    entries: list[Entry], section: str, accepted: set[str]
) -> None:
    missing = set(accepted) - keys_in(entries, section)
    assert not missing, f"not in {EXAMPLE.name} under [{section}]: {sorted(missing)}"


def _check_full_table(table: dict[str, Any], cls: type[Any], what: str) -> None:
    for name, p in parameters(cls).items():
        if p.default is not inspect.Parameter.empty and p.default is not None:
            assert _plain(table[name]) == _plain(p.default), (
                f"{what}: {name} is shown as {table[name]!r}, its default is {p.default!r}"
            )


@pytest.mark.parametrize(
    ("registry", "kind"),
    [(DETECTORS, k) for k in DETECTORS] + [(THRESHOLDS, k) for k in THRESHOLDS],
    ids=[f"detector-{k}" for k in DETECTORS] + [f"threshold-{k}" for k in THRESHOLDS],
)
def test_every_kind_is_shown_with_every_parameter(
    entries: list[Entry], registry: Mapping[str, str], kind: str
) -> None:
    cls = resolve(registry, kind)
    wanted = set(parameters(cls))
    full = [t for t in stage_tables(entries) if t.get("kind") == kind and wanted <= set(t)]
    assert full, (
        f"{EXAMPLE.name} shows no {kind!r} table with all of its parameters "
        f"{sorted(wanted)} (e.g. a commented line: # detector = {{ kind = {kind!r}, ... }})"
    )
    for table in full:
        _check_full_table(table, cls, kind)
        build(registry, table)  # the values shown are valid


def test_the_alarm_is_shown_with_every_parameter(entries: list[Entry]) -> None:
    cls = resolve(ALARMS, "alarm")
    wanted = set(parameters(cls))
    full = [t for t in stage_tables(entries) if "kind" not in t and wanted <= set(t)]
    assert full, f"{EXAMPLE.name} shows no alarm table with all of {sorted(wanted)}"
    for table in full:
        _check_full_table(table, cls, "alarm")
        build(ALARMS, {"kind": "alarm", **table})


def test_every_frame_feature_parameter_is_shown(entries: list[Entry]) -> None:
    shown: dict[str, Any] = {}
    for e in entries:
        if e.section.endswith(".features"):
            shown.setdefault(e.key, e.value)
    missing = (set(parameters(FrameFeatures)) | DIAGNOSIS_OPTIONS) - set(shown)
    assert not missing, f"frame features not in {EXAMPLE.name}: {sorted(missing)}"
    _check_full_table(shown, FrameFeatures, "features")
    frame, diagnosis = split_frame_options(shown)
    for name in DIAGNOSIS_OPTIONS:  # the diagnosis' options are shown at their defaults
        assert diagnosis[name] == parameters(FrameDiagnosis)[name].default, name
    # Commented examples included, the values are valid together.
    FrameDiagnosis(FrameFeatures(**frame).names, **diagnosis)


def test_every_setting_line_has_a_comment() -> None:
    """Each option is explained where it is first set: a trailing comment, or comment lines
    right above it (table headers between them do not count as a gap)."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    explained: dict[tuple[str, str], bool] = {}
    section = ""
    for i, line in enumerate(lines):
        header = _HEADER.match(line.strip())
        if header:
            section = header.group(1)
            continue
        key = _KEY.match(line)
        if not key:
            continue
        j = i - 1
        while j >= 0 and _HEADER.match(lines[j].strip()):
            j -= 1
        commented = bool(_TRAILING_COMMENT.search(line)) or (
            j >= 0 and lines[j].lstrip().startswith("#")
        )
        where = (section, key.group(1))
        explained[where] = explained.get(where, False) or commented
    bare = sorted(f"[{s}] {k}" for (s, k), ok in explained.items() if not ok)
    assert not bare, f"options without a comment in {EXAMPLE.name}: {bare}"


def test_the_example_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(EXAMPLE)]) == 0, capsys.readouterr().err
    assert "ok" in capsys.readouterr().out


def test_the_profiles_are_found() -> None:
    assert {p.stem for p in PROFILES} == {"raspberry-pi", "industrial-pc"}


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_a_profile_passes_check_as_it_is(
    profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--config", str(profile)]) == 0, capsys.readouterr().err
    raw = tomllib.loads(profile.read_text(encoding="utf-8"))
    assert raw["subscriptions"], "a profile needs a subscription template to start from"
    # Under systemd the checkpoints go to $STATE_DIRECTORY; a directory here would bypass it.
    assert not raw.get("state", {}).get("directory")


def test_the_raspberry_pi_profile_configures_no_river_model() -> None:
    text = (ROOT / "edge" / "profiles" / "raspberry-pi.toml").read_text(encoding="utf-8")
    kinds = {e.value for e in _walk("", tomllib.loads(text), True) if e.key == "kind"}
    assert kinds, "the profile should name its detector kinds"
    assert not kinds & RIVER_KINDS
