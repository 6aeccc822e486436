"""The agent's config: MQTT, subscriptions, queue and events validated before connecting."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.agent.config import parse_agent_config
from shopfloor.cli import main
from shopfloor.errors import ConfigError

GOOD = """
[mqtt]
host = "127.0.0.1"
port = 1883
client_id = "edge-7"

[[subscriptions]]
topic = "plant/{site}/{line}/{asset}/{signal}"
codec = "json"
detector = { kind = "cusum" }

[[subscriptions]]
topic = "vib/{asset}/{signal}"
codec = "frame"
[subscriptions.features]
sample_rate = 12000.0

[agent]
queue_size = 500
drop_policy = "drop_newest"
max_signals = 50

[events]
prefix = "shopfloor/edge-7"
"""


def test_good_agent_config() -> None:
    cfg = parse_agent_config(GOOD, source="agent.toml")
    assert cfg.client_id == "edge-7"
    assert cfg.pipeline.signals == ()
    json_sub, frame_sub = cfg.subscriptions
    assert json_sub.template.filter == "plant/+/+/+/+"
    assert json_sub.kind == "scalar"
    assert json_sub.stage.detector == {"kind": "cusum"}
    assert frame_sub.kind == "frame"
    spec = frame_sub.signal_spec("pump-1", "de")
    assert spec.id == "pump-1/de"
    assert spec.features["sample_rate"] == 12000.0
    assert cfg.agent.queue_size == 500
    assert cfg.agent.drop_policy == "drop_newest"
    assert cfg.metrics.port == 9817
    assert cfg.mqtt.clean_start is False


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ('topic = "vib/{asset}/{signal}"', 'topic = "vib/{asset}/x"', "subscriptions[1].topic",
         "{signal}"),
        ('topic = "vib/{asset}/{signal}"', 'topic = "vib/+/{asset}/{signal}"',
         "subscriptions[1].topic", "wildcards"),
        ('codec = "json"', 'codec = "xml"', "subscriptions[0].codec", "must be one of"),
        ('codec = "frame"', 'codec = "json"', "subscriptions[1].features",
         "only frame signals"),
        ("port = 1883", "port = 0", "mqtt.port", "between 1 and 65535"),
        ("port = 1883", 'port = "1883"', "mqtt.port", "must be int"),
        ('drop_policy = "drop_newest"', 'drop_policy = "newest"', "agent.drop_policy",
         "drop_oldest"),
        ('client_id = "edge-7"', 'client_id = "edge-7"\npasword_file = "x"', "mqtt.pasword_file",
         "unknown key"),
        ('prefix = "shopfloor/edge-7"', 'prefix = "a"\ntopic = "{prefix}/{machine}"',
         "events.topic", "{asset}"),
        ('detector = { kind = "cusum" }', 'detector = { kind = "cusum", k = -1 }',
         "subscriptions[0].detector.k", ""),
    ],
)
def test_errors_name_key_and_line(old: str, new: str, key: str, words: str) -> None:
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ConfigError) as info:
        parse_agent_config(text, source="agent.toml")
    err = info.value
    assert err.key == key, str(err)
    assert err.line is not None
    assert words in str(err)
    line = text.splitlines()[err.line - 1]
    assert key.rsplit(".", 1)[-1].split("[")[0] in line or line.startswith("["), (line, str(err))


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    text = GOOD.replace('client_id = "edge-7"', 'client_id = "edge-7"\npassword_file = "pw"')
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: cannot read .*pw"):
        parse_agent_config(text, source="agent.toml", base_dir=tmp_path)
    (tmp_path / "pw").write_text("secret\n")
    cfg = parse_agent_config(text, source="agent.toml", base_dir=tmp_path)
    assert cfg.mqtt.password_file == str(tmp_path / "pw")
    text = GOOD.replace('client_id = "edge-7"', 'client_id = "e"\ncert_file = "pw"')
    with pytest.raises(ConfigError, match="key_file"):
        parse_agent_config(text, source="agent.toml", base_dir=tmp_path)


def test_fixed_asset_and_signal_replace_placeholders() -> None:
    text = GOOD.replace('topic = "vib/{asset}/{signal}"',
                        'topic = "lathe/spindle"\nasset = "lathe-2"\nsignal = "spindle"')
    sub = parse_agent_config(text).subscriptions[1]
    assert (sub.asset, sub.signal, sub.template.filter) == ("lathe-2", "spindle", "lathe/spindle")


def test_check_command_reads_agent_configs(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(GOOD)
    assert main(["check", "--config", str(cfg)]) == 0
    assert "2 subscriptions" in capsys.readouterr().out
    cfg.write_text(GOOD.replace("port = 1883", "port = 99999"))
    assert main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "agent.toml:4: mqtt.port: must be between 1 and 65535" in err


def test_the_default_reconnect_is_back_within_a_second_of_the_broker() -> None:
    # With a 60 s ceiling a broker restart cost ~5 s of backoff after the broker was back.
    from shopfloor.agent.config import MqttConfig

    assert MqttConfig().reconnect_max_delay <= 1.0
    assert MqttConfig().reconnect_min_delay <= MqttConfig().reconnect_max_delay
