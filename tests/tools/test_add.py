"""`kerbline device add` and the registry edits behind it (and behind `flash --rotate-key`)."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.registry import Registry, read_registry
from gateway.tools.provision import REFERENCE_PINS, mqtt_password
from gateway.tools.registry_file import set_key
from gateway.tools.steps import StepError

COMMENTED = """# Kerbline registry, Market district
# keys are secret: 0640 root:kerbline

[devices.bin-0001]   # the one by the fountain
kind = "bin"
key = "cd128f3348a040664141d96140729e1b738956419d7b367d4294e99e7e79b1eb"  # set 2024-05-01
site = "Market St 4"
"""


def kerbline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.tools.cli", "device", *args], capture_output=True,
                          text=True, timeout=60)


def test_add_registers_a_fresh_key_and_writes_the_reference_settings(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    run = kerbline("add", "bin-0042", "--kind", "bin", "--site", "Market St 4", "--lat", "52.52", "--lon", "13.405",
                   "--registry", str(registry))
    assert run.returncode == 0, run.stderr
    entry = tomllib.loads(registry.read_text())["devices"]["bin-0042"]
    assert entry["kind"] == "bin" and entry["site"] == "Market St 4" and entry["link"] == "serial"
    assert (entry["lat"], entry["lon"]) == (52.52, 13.405)
    assert len(bytes.fromhex(entry["key"])) == 32
    assert entry["key"] not in run.stdout + run.stderr  # never printed
    assert registry.stat().st_mode & 0o777 == 0o640
    settings = json.loads((tmp_path / "devices" / "bin-0042.json").read_text())
    assert settings == {"kind": "bin", "link": {"type": "serial", "uart": 1, "baud": 115200, "tx": 17, "rx": 16},
                        "pins": REFERENCE_PINS["bin"]}
    # the gateway reads the result as it is
    gateway_view = Registry(registry)
    gateway_view.load()
    assert gateway_view.key("bin-0042") == bytes.fromhex(entry["key"])


def test_each_device_gets_its_own_key(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    for name in ("bin-1", "bin-2"):
        assert kerbline("add", name, "--kind", "bin", "--registry", str(registry)).returncode == 0
    devices = read_registry(registry)
    assert devices["bin-1"].key != devices["bin-2"].key


def test_a_duplicate_is_refused_and_the_registry_left_alone(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(COMMENTED)
    run = kerbline("add", "bin-0001", "--kind", "light", "--registry", str(registry))
    assert run.returncode == 1
    assert "add bin-0001 failed: bin-0001 is already in the registry" in run.stderr
    assert "kerbline device flash bin-0001" in run.stderr
    assert registry.read_text() == COMMENTED
    assert not (tmp_path / "devices" / "bin-0001.json").exists()


@pytest.mark.parametrize("bad", ["Bin-42", "bin_42", "bin 42", "b" * 33, "bin-42/x", "bin-ø"])
def test_a_malformed_id_is_refused(tmp_path: Path, bad: str) -> None:
    registry = tmp_path / "registry.toml"
    run = kerbline("add", bad, "--kind", "bin", "--registry", str(registry))
    assert run.returncode == 1
    assert f"{bad!r} is not a device id" in run.stderr and "a-z, 0-9 and '-'" in run.stderr
    assert not registry.exists() and not (tmp_path / "devices").exists()


def test_add_keeps_comments_and_layout_of_a_toml_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(COMMENTED)
    assert kerbline("add", "lamp-0117", "--kind", "light", "--registry", str(registry)).returncode == 0
    text = registry.read_text()
    assert text.startswith(COMMENTED) and "[devices.lamp-0117]" in text
    assert set(read_registry(registry)) == {"bin-0001", "lamp-0117"}


def test_add_to_a_json_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"devices": {}}))
    assert kerbline("add", "lamp-0117", "--kind", "light", "--registry", str(registry)).returncode == 0
    assert read_registry(registry)["lamp-0117"].kind == "light"


def test_an_mqtt_device_needs_its_broker(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    run = kerbline("add", "bin-7", "--kind", "bin", "--link", "mqtt", "--registry", str(registry))
    assert run.returncode == 1 and "give --broker HOST[:PORT]" in run.stderr
    run = kerbline("add", "bin-7", "--kind", "bin", "--link", "mqtt", "--broker", "10.0.0.5", "--tls",
                   "--ssid", "depot", "--registry", str(registry))
    assert run.returncode == 0, run.stderr
    settings = json.loads((tmp_path / "devices" / "bin-7.json").read_text())
    assert settings["link"] == {"type": "mqtt", "host": "10.0.0.5", "port": 8883, "tls": True, "ssid": "depot"}
    assert read_registry(registry)["bin-7"].link == "mqtt"


def test_mqtt_password_is_derived_from_the_key() -> None:
    assert mqtt_password(b"\x01" * 32) == mqtt_password(b"\x01" * 32)
    assert mqtt_password(b"\x01" * 32) != mqtt_password(b"\x02" * 32)
    assert len(mqtt_password(b"\x01" * 32)) == 32


def test_concurrent_adds_all_land(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    procs = [subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", "device", "add", f"bin-{i}", "--kind", "bin",
                               "--registry", str(registry)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(8)]
    assert [p.wait(60) for p in procs] == [0] * 8
    assert set(read_registry(registry)) == {f"bin-{i}" for i in range(8)}


def test_set_key_changes_only_that_key_line(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(COMMENTED + '\n[devices.bin-0002]\nkind = "bin"\nkey = "' + "ab" * 32 + '"\n')
    set_key(registry, "bin-0001", "11" * 32)
    text = registry.read_text()
    assert f'key = "{"11" * 32}"  # set 2024-05-01' in text and "# the one by the fountain" in text
    devices = read_registry(registry)
    assert devices["bin-0001"].key.bytes == b"\x11" * 32 and devices["bin-0002"].key.bytes == b"\xab" * 32


def test_set_key_refuses_a_layout_it_cannot_edit_and_changes_nothing(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    inline = 'devices = { bin-0001 = { kind = "bin", key = "' + "ab" * 32 + '" } }\n'
    registry.write_text(inline)
    with pytest.raises(StepError, match=r"cannot find the line `key = \"...\"` under \[devices.bin-0001\]"):
        set_key(registry, "bin-0001", "11" * 32)
    assert registry.read_text() == inline


def test_a_broken_registry_is_never_added_to(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text('[devices.bin-1]\nkind = "bin"\nkey = "12"\n')
    run = kerbline("add", "bin-2", "--kind", "bin", "--registry", str(registry))
    assert run.returncode == 1
    assert "the registry is not valid" in run.stderr and "devices.bin-1.key" in run.stderr
    assert registry.read_text() == '[devices.bin-1]\nkind = "bin"\nkey = "12"\n'
