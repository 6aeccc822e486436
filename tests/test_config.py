"""Configuration: merging over defaults, and errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.config import load_config, parse_config
from shopfloor.errors import ConfigError
from shopfloor.tomlkeys import KeyLines

GOOD = """
[defaults.detector]
kind = "zscore"

[defaults.alarm]
raise_after = 2

[[signals]]
asset = "press-4"
name = "force"
valid_range = [0.0, 500.0]

[[signals]]
asset = "press-4"
name = "stroke"
detector = { kind = "cusum" }

[[signals]]
asset = "lathe-1"
name = "diameter"
"""


def test_good_config_merges_defaults() -> None:
    cfg = parse_config(GOOD, source="plant.toml")
    force, stroke, diameter = cfg.signals
    assert force.id == "press-4/force"
    assert force.valid_range == (0.0, 500.0)
    assert force.stage.detector["kind"] == "zscore"
    assert force.stage.alarm["raise_after"] == 2
    assert stroke.stage.detector == {"kind": "cusum"}
    # An asset with two or more signals gets the multivariate detector; one signal does not.
    assert [a.name for a in cfg.assets] == ["press-4"]
    assert cfg.assets[0].signals == ("force", "stroke")
    assert cfg.assets[0].stage.detector["kind"] == "mahalanobis"
    assert diameter.kind == "scalar"


@pytest.mark.parametrize(
    ("patch", "line", "key", "words"),
    [
        ('name = "stroke"', 16, "signals[1].colour", "unknown key"),
        ('detector = { kind = "cusum" }', 16, "signals[1].detector.kind", "unknown kind"),
        ("valid_range = [0.0, 500.0]", 11, "signals[0].valid_range", "low <= high"),
        ("raise_after = 2", 6, "defaults.alarm.raise_after", "raise_after"),
        ('name = "diameter"', 19, "signals[2].name", "defined twice"),
        ('name = "force"', 10, "signals[0].name", "must be a name"),
    ],
)
def test_errors_name_line_and_key(patch: str, line: int, key: str, words: str) -> None:
    replacements = {
        'name = "stroke"': 'name = "stroke"\ncolour = "red"',
        'detector = { kind = "cusum" }': 'detector = { kind = "cusmu" }',
        "valid_range = [0.0, 500.0]": "valid_range = [500.0, 0.0]",
        "raise_after = 2": "raise_after = -1",
        'name = "diameter"': 'name = "force"\nasset = "press-4"',
        'name = "force"': 'name = "for ce"',
    }
    text = GOOD.replace(patch, replacements[patch], 1)
    if patch == 'name = "diameter"':
        text = text.replace('asset = "lathe-1"\n', "")
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="plant.toml")
    err = info.value
    assert err.file == "plant.toml"
    assert err.key == key
    assert err.line == line, str(err)
    assert words in str(err)
    assert str(err).startswith(f"plant.toml:{line}: {key}: ")


def test_unknown_detector_parameter_lists_the_accepted_ones() -> None:
    text = GOOD.replace('detector = { kind = "cusum" }', 'detector = { kind = "cusum", kk = 1 }')
    expected = r"signals\[1\]\.detector\.kk: unknown parameter .* accepts"
    with pytest.raises(ConfigError, match=expected):
        parse_config(text, source="plant.toml")


def test_bad_toml_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[[signals]]\nname = \n", source="x.toml")
    assert info.value.line == 2
    assert "not valid TOML" in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_no_signals() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        parse_config("[defaults.detector]\nkind = 'zscore'\n", source="x.toml")


def test_asset_table_errors() -> None:
    text = GOOD + '\n[[assets]]\nname = "press-4"\nsignals = ["force", "nope"]\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="x.toml")
    assert info.value.key == "assets[0].signals"
    assert "nope" in str(info.value)
    assert info.value.line == GOOD.count("\n") + 4


def test_asset_can_be_disabled() -> None:
    cfg = parse_config(GOOD + '\n[[assets]]\nname = "press-4"\nenabled = false\n')
    assert cfg.assets == ()


def test_keylines_array_tables_and_fallback() -> None:
    lines = KeyLines('[[a]]\nx = 1\n[[a]]\n[a.b]\ny = { z = 2 }\n"q k" = 3\n')
    assert lines.line("a[0].x") == 2
    assert lines.line("a[1].b.y.z") == 5
    assert lines.line("a[1].b.q k") == 6
    assert lines.line("a[1].b.missing") == 4
    assert lines.line("zzz") is None
