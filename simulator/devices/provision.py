"""Provisioning simulated devices: keys, configs that match the world's hardware, flash dirs, the registry.

What a technician does with a real board, done for a simulated one:
- a fresh 32-byte key per device (`new_key()`), never printed;
- the device's `/config.json` (`device_config()`): its id, kind and key, the `sim` board, the link, and
  the wiring and calibration of the hardware the world simulates, so the firmware's numbers mean the
  world's numbers: a bin's sonar sits `mount_offset_mm` above the full level of a `depth_mm` deep bin
  (`BinParams`), a streetlight reports every `interval_s` (`LightParams`) in its site's civil time;
- the flash directory (`flash()`): the files it is given plus `config.json`, as `kerbline device flash`
  would leave it; a faithful street gives boot.py and main.py, and the `kerbline` package goes into the
  street's ROMFS image (`simulator/devices/faithful.py`), as on a board with a ROM partition;
- the gateway's device registry (`registry_toml()`), the one file both sides share.

Pins are the reference wiring of docs/firmware.md's bin and streetlight boards; the sensor server maps
them back to roles from the same config, so any wiring works as long as the config says it.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from gateway.tools.firmware_build import BuiltFile, build
from gateway.tools.provision import REFERENCE_PINS
from simulator.scenario import DeviceSpec, Scenario

MAX_RANGE_MARGIN_MM = 500  # the sonar's max_mm: the bin's bottom plus a margin


def new_key() -> str:
    """A fresh device key, 64 hex digits."""
    return secrets.token_bytes(32).hex()


def serial_link(pty_path: str) -> dict[str, Any]:
    return {"type": "serial", "pty": pty_path}


def mqtt_link(host: str, port: int, password: str | None = None, keepalive: int = 60) -> dict[str, Any]:
    link: dict[str, Any] = {"type": "mqtt", "host": host, "port": port, "keepalive": keepalive}
    if password is not None:
        link["password"] = password
    return link


def tz_minutes(scenario: Scenario, spec: DeviceSpec) -> int:
    """The site's UTC offset in minutes at the scenario's start (the firmware's `tz_min` is fixed)."""
    from simulator.world.localtime import LocalTime

    site = scenario.site(spec.site)
    return round(LocalTime(site.tz, site.lon).offset(scenario.start) / 60)


def device_config(scenario: Scenario, spec: DeviceSpec, key: str, link: Mapping[str, Any],
                  sim_host: str = "127.0.0.1", sim_port: int = 0,
                  settings: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The device's /config.json as a dict. `settings` overrides firmware settings (e.g. `sample_s`)."""
    cfg: dict[str, Any] = {"id": spec.id, "kind": spec.kind, "key": key, "board": "sim", "link": dict(link),
                           "sim": {"host": sim_host, "port": sim_port}}
    if spec.kind == "bin":
        b = scenario.bins
        cfg["pins"] = dict(REFERENCE_PINS["bin"])
        cfg["interval"] = max(60, round(b.interval_s))
        cfg["offset_mm"] = round(b.mount_offset_mm)
        cfg["depth_mm"] = round(b.depth_mm)
        cfg["max_mm"] = round(b.mount_offset_mm + b.depth_mm) + MAX_RANGE_MARGIN_MM
    else:
        cfg["pins"] = dict(REFERENCE_PINS["light"])
        cfg["report_s"] = max(10, round(scenario.lights.interval_s))
        cfg["tz_min"] = tz_minutes(scenario, spec)
    cfg.update(settings or {})
    return cfg


def firmware(cache_dir: Path) -> list[BuiltFile]:
    """The compiled firmware set in `cache_dir` (rebuilt only where a source changed)."""
    return build(cache_dir)


def flash(flash_dir: Path, files: Iterable[BuiltFile], config: Mapping[str, Any]) -> None:
    """Write a device's flash directory: `files` and its config.json. State files that are already there
    (boot counter, queue, cid) are kept, as re-flashing the code keeps a board's data."""
    flash_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = flash_dir / f.board_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f.local_path, target)
    tmp = flash_dir / "config.json.tmp"
    tmp.write_text(json.dumps(config))
    tmp.replace(flash_dir / "config.json")


def registry_toml(entries: Iterable[tuple[DeviceSpec, str]], scenario: Scenario | None = None) -> str:
    """The gateway's registry file (TOML) for (device, key) pairs."""
    lines = ["# Written by the Kerbline simulator: one entry per simulated device. Keys are secrets.", ""]
    for spec, key in entries:
        lines.append(f"[devices.{spec.id}]")
        lines.append(f'kind = "{spec.kind}"')
        lines.append(f'key = "{key}"')
        lines.append(f'link = "{spec.link}"')
        lines.append(f'site = "{spec.site}"')
        if scenario is not None:
            site = scenario.site(spec.site)
            lines.append(f"lat = {site.lat}")
            lines.append(f"lon = {site.lon}")
            interval = scenario.bins.interval_s if spec.kind == "bin" else scenario.lights.interval_s
            lines.append(f"interval_s = {interval}")
        lines.append("")
    return "\n".join(lines)
