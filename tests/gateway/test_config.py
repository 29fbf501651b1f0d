"""Config and registry: defaults that run the demo, every bad key named, check-config's exit status,
keys never printed."""
from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.registry import Registry, RegistryError, read_registry
from gateway.upstream.jsonl import JsonlSink
from tests.gateway.rig import DEVICES, PYTHON, ROOT, write_registry


def _parse(text: str, tmp: Path = Path("/srv/kerbline")) -> object:
    return parse_config(tomllib.loads(text), tmp)


def test_defaults_are_the_demo() -> None:
    config = load_config(None)
    assert config.mqtt.enabled and config.mqtt.host == "127.0.0.1" and config.mqtt.port == 1883
    assert config.serial.ports == ()
    assert config.http.host == "127.0.0.1"
    assert config.http.token is None  # commands stay off until a token is set
    (sink,) = config.sinks
    assert isinstance(sink.sink, JsonlSink)


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nstate_dir = "var"\n[serial]\nports = ["dev/ttyUSB0"]\n')
    config = load_config(path)
    assert config.gateway.state_dir == tmp_path / "var"
    assert config.gateway.registry == tmp_path / "var/registry.toml"
    assert config.spool.path == tmp_path / "var/spool.db"
    assert config.serial.ports == (tmp_path / "dev/ttyUSB0",)


@pytest.mark.parametrize(("text", "key", "words"), [
    ('[mqtt]\nport = "1883"', "mqtt.port", "integer"),
    ("[mqtt]\nport = 70000", "mqtt.port", "1..65535"),
    ('[mqtt]\nhots = "x"', "mqtt.hots", "unknown key"),
    ("[mqtt]\nshare_group = 'a/b'", "mqtt.share_group", "'/'"),
    ("[mqtt]\nreceive_maximum = 0", "mqtt.receive_maximum", "1..65535"),
    ("[verify]\nquarantine_frames = 0", "verify.quarantine_frames", "1..1000000"),
    ("[serial]\nports = ['/dev/a', 5]", "serial.ports[1]", "string"),
    ("[serial]\nports = ['/dev/a', '/dev/a']", "serial.ports", "twice"),
    ("[spool]\nmax_bytes = 10", "spool", "65536"),
    ("[gateway]\nlog_level = 'loud'", "gateway.log_level", "debug, info"),
    ("[nonsense]\nx = 1", "nonsense", "unknown section"),
    ('[[sinks]]\ntype = "carrier-pigeon"', "sinks[0].type", "one of"),
    ('[[sinks]]\ntype = "http"', "sinks[0].url", "required"),
    ('[[sinks]]\ntype = "http"\nurl = "http://x"\nbatch.max_records = "many"', "sinks[0].batch.max_records",
     "integer"),
    ('[[sinks]]\ntype = "jsonl"\npath = "a"\n[[sinks]]\ntype = "jsonl"\npath = "b"', "sinks", "same name"),
])
def test_bad_keys_are_named(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(text)
    assert caught.value.key == key
    assert words in str(caught.value)
    assert str(caught.value).startswith(key)


def test_sinks_of_every_type_are_built() -> None:
    config = _parse("""
[[sinks]]
type = "jsonl"
path = "out.jsonl"
[[sinks]]
type = "http"
name = "platform"
url = "https://platform.example/readings"
token = "secret-token"
format = "senml"
retry.max_s = 5.0
[[sinks]]
type = "mqtt"
host = "cluster.example"
topic = "city/readings"
[[sinks]]
type = "ngsild"
url = "https://broker.example"
""")
    names = [spec.sink.name for spec in config.sinks]
    assert names == ["jsonl", "platform", "mqtt", "ngsild"]
    assert config.sinks[1].retry.max_s == 5.0
    assert "secret-token" not in repr(config)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PYTHON), "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_check_config_exit_status_names_the_key(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    write_registry(tmp_path / "registry.toml")
    good.write_text(f'[gateway]\nregistry = "{tmp_path}/registry.toml"\n')
    ok = _cli("check-config", "--config", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "3 devices" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nport = -1\n")
    refused = _cli("check-config", "--config", str(bad))
    assert refused.returncode == 2
    assert "http.port" in refused.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[http\n")
    assert _cli("check-config", "--config", str(broken)).returncode == 2
    missing = _cli("check-config", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_check_config_names_the_bad_registry_entry_without_showing_keys(tmp_path: Path) -> None:
    real_key = DEVICES["bin-0042"]["key"]
    (tmp_path / "registry.toml").write_text(f'[devices.bin-0042]\nkind = "bin"\nkey = "{real_key[:-1]}"\n')
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nregistry = "{tmp_path}/registry.toml"\n')
    result = _cli("check-config", "--config", str(config))
    assert result.returncode == 2
    assert "devices.bin-0042.key" in result.stderr
    assert real_key[:16] not in result.stderr + result.stdout


@pytest.mark.parametrize(("entry", "field"), [
    ('kind = "tree"\nkey = "00"', "kind"),
    ('kind = "bin"', "key"),
    ('kind = "bin"\nkey = "' + "zz" * 32 + '"', "key"),
    ('kind = "bin"\nkey = "' + "00" * 32 + '"\ninterval_s = -5', "interval_s"),
    ('kind = "bin"\nkey = "' + "00" * 32 + '"\ncolour = "red"', "colour"),
])
def test_registry_errors_name_entry_and_field(tmp_path: Path, entry: str, field: str) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(f"[devices.bin-0001]\n{entry}\n")
    with pytest.raises(RegistryError, match=f"devices.bin-0001.{field}"):
        read_registry(path)


def test_registry_json_reload_and_keys_print_as_placeholder(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    key = "ab" * 32
    path.write_text('{"devices": {"lamp-0001": {"kind": "light", "key": "%s", "interval_s": 60}}}' % key)
    registry = Registry(path)
    registry.load()
    device = registry.get("lamp-0001")
    assert device is not None and registry.key("lamp-0001") == bytes.fromhex(key)
    assert key not in repr(device) and str(device.key) == "<key>" and "<key>" not in repr(device.public())
    assert not registry.reload_if_changed()
    path.write_text('{"devices": {"lamp-0001": {"kind": "light", "key": "%s"}, "lamp-0002": '
                    '{"kind": "light", "key": "%s"}}}' % (key, "cd" * 32))
    assert registry.reload_if_changed() and len(registry) == 2
    path.write_text('{"devices": {"lamp-0003": {"kind": "light"}}}')  # a half-written file
    with pytest.raises(RegistryError):
        registry.reload_if_changed()
    assert len(registry) == 2 and registry.error  # the previous registry stays in force
