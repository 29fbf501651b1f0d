"""The gateway's one TOML config file: read, checked, and turned into typed settings.

Every key has a default good enough for the demo (a JSON Lines sink to a file, MQTT on localhost:1883, no
serial ports, HTTP on 127.0.0.1:8080), so an empty file, or none, runs. A wrong key never passes
silently: `ConfigError` names it (`mqtt.port: must be an integer in 1..65535, got 'x'`), unknown keys
included, since a typo in a key would otherwise leave a setting at its default without anyone noticing.

Sinks are G2's dataclasses (gateway.upstream); their keys are read by looking at the dataclass fields, so
the TOML keys are the field names (`[[sinks]]` with `type = "jsonl" | "http" | "mqtt" | "ngsild"`; the
HTTP endpoint's keys sit flat in the sink table; `[sinks.batch]` and `[sinks.retry]` tune that sink).
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from gateway.spool import SpoolConfig
from gateway.upstream import BatchConfig, RetryPolicy, SinkSpec
from gateway.upstream.http import HttpSink, HttpSinkConfig
from gateway.upstream.httpclient import HttpEndpoint
from gateway.upstream.jsonl import JsonlSink, JsonlSinkConfig
from gateway.upstream.mqtt import MqttSink, MqttSinkConfig
from gateway.upstream.ngsild import NgsiLdSink, NgsiLdSinkConfig


class ConfigError(ValueError):
    """A config problem; `key` is the dotted key at fault (e.g. `mqtt.port`), "" for the file itself."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


@dataclass(frozen=True)
class GatewaySection:
    """Where the gateway keeps its state and finds its device registry."""

    state_dir: Path = Path("kerbline-state")  # relative paths are taken from the config file's folder
    registry: Path = Path("kerbline-state/registry.toml")
    log_level: str = "info"
    # How often the registry file is checked for changes (the technician's tools add devices to it).
    registry_check_s: float = 5.0
    # Run on uvloop (libuv) instead of asyncio's own loop. Measured slower here with the spool's commit
    # thread (figures in docs/gateway.md), so off by default; asyncio's loop when uvloop is not installed.
    uvloop: bool = False


@dataclass(frozen=True)
class MqttSection:
    """The broker the devices publish to. `share_group` makes the subscription `$share/{group}/...`
    so several gateways split one fleet. `session_expiry_s` is how long the broker keeps our session
    (and queues reports for us) while the gateway is down. `receive_maximum` is how many unacknowledged
    QoS 1 reports the broker may have in flight to us: PUBACK waits for the spool commit, so this
    window, not the per-message cost, sets the rate. `max_packet` tells the broker the largest packet
    we take (larger ones it drops and counts); between the contract's 1024-byte limit and this, a
    message reaches us and is refused as `too_large`."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "kerbline-gateway"
    share_group: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 2048
    max_packet: int = 65536
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True)
class SerialSection:
    """Serial ports (paths such as /dev/serial/by-id/...), one device behind each."""

    ports: tuple[Path, ...] = ()
    baudrate: int = 115200
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    # The `time` command is sent again at most this often to a device whose clock looks unset or wrong.
    time_resend_s: float = 60.0
    # The ports that have data are read together at most this often (0: each at every wake-up): what
    # arrives in between waits in the kernel's buffer and costs one read, not one per USB transfer
    # (gateway/ingest/serial.py, ReadPacer).
    read_interval_s: float = 0.05


@dataclass(frozen=True)
class VerifySection:
    """Quarantine bounds: at either bound the oldest frames go. `log_burst` rejection lines per reason
    are written per `log_window_s`; the rest are counted and summed up in one line."""

    quarantine_frames: int = 1000
    quarantine_bytes: int = 1024 * 1024
    log_burst: int = 20
    log_window_s: float = 60.0


@dataclass(frozen=True)
class DevicesSection:
    """`interval_s`: expected report interval when the registry names none for a device; a device silent
    for `offline_after` intervals gets an `offline` alarm. Commands wait at most `command_ttl_s` for
    their device to show up; `max_commands` are kept per device (finished ones are dropped first)."""

    interval_s: float = 900.0
    offline_after: float = 3.0
    check_every_s: float = 5.0
    command_ttl_s: float = 3600.0
    max_commands: int = 16


@dataclass(frozen=True)
class TimeSection:
    """A device time is sane when it is after `min_valid` (unix s) and at most `max_future_s` ahead of
    the gateway's clock."""

    min_valid: int = 1577836800  # 2020-01-01
    max_future_s: float = 300.0


@dataclass(frozen=True)
class HttpSection:
    """The local API. The command and quarantine endpoints need `Authorization: Bearer <token>`; with no
    token configured they are refused, never open."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ShutdownSection:
    """SIGTERM: ingest stops, the spool commits, upstream gets `drain_s` to deliver what it holds."""

    drain_s: float = 10.0


@dataclass(frozen=True)
class DebugSection:
    """Test hooks. `commit_delay_s` holds every verified report this long before it goes to the spool,
    widening the window between receipt and commit (the tests kill the gateway inside it)."""

    commit_delay_s: float = 0.0


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection
    mqtt: MqttSection
    serial: SerialSection
    verify: VerifySection
    devices: DevicesSection
    time: TimeSection
    http: HttpSection
    shutdown: ShutdownSection
    debug: DebugSection
    spool: SpoolConfig
    sinks: tuple[SinkSpec, ...]
    source: Path | None = None


# ------------------------------------------------------------------------------------------ reading


def load_config(path: Path | None) -> Config:
    """The config in `path` (None: all defaults); relative paths in it are taken from the file's folder."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
        base = Path(path).resolve().parent
    return parse_config(data, base, path)


def parse_config(data: Mapping[str, Any], base: Path, source: Path | None = None) -> Config:
    """Check `data` (a parsed TOML document) and build the Config; relative paths are under `base`."""
    known = {"gateway", "mqtt", "serial", "verify", "devices", "time", "http", "shutdown", "debug", "spool",
             "sinks"}
    for key in data:
        if key not in known:
            raise ConfigError(key, f"unknown section (known: {', '.join(sorted(known))})")
    gateway_table = dict(_table(data, "gateway"))
    gateway_table.setdefault("state_dir", "kerbline-state")
    gateway = _build(GatewaySection, gateway_table, "gateway", base)
    state_dir = gateway.state_dir
    if "registry" not in gateway_table:  # beside the spool unless the config says otherwise
        gateway = dataclasses.replace(gateway, registry=state_dir / "registry.toml")
    if gateway.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("gateway.log_level", "must be one of debug, info, warning, error")
    mqtt = _section(data, "mqtt", MqttSection, base)
    _check_mqtt(mqtt)
    serial = _section(data, "serial", SerialSection, base)
    if len(set(serial.ports)) != len(serial.ports):
        raise ConfigError("serial.ports", "a port is listed twice")
    spool_table = dict(_table(data, "spool"))
    spool_table.setdefault("path", str(state_dir / "spool.db"))
    spool = _build(SpoolConfig, spool_table, "spool", base)
    sinks_data = data.get("sinks")
    if sinks_data is None:
        sinks_data = [{"type": "jsonl", "name": "file", "path": str(state_dir / "readings.jsonl")}]
    if not isinstance(sinks_data, list) or not all(isinstance(s, dict) for s in sinks_data):
        raise ConfigError("sinks", "must be an array of tables ([[sinks]])")
    sinks = tuple(_sink(table, f"sinks[{i}]", base) for i, table in enumerate(sinks_data))
    names = [spec.sink.name for spec in sinks]
    if len(set(names)) != len(names):
        raise ConfigError("sinks", "two sinks have the same name (each sink's name keeps its own cursor)")
    return Config(
        gateway=gateway,
        mqtt=mqtt,
        serial=serial,
        verify=_section(data, "verify", VerifySection, base),
        devices=_section(data, "devices", DevicesSection, base),
        time=_section(data, "time", TimeSection, base),
        http=_section(data, "http", HttpSection, base),
        shutdown=_section(data, "shutdown", ShutdownSection, base),
        debug=_section(data, "debug", DebugSection, base),
        spool=spool,
        sinks=sinks,
        source=source,
    )


def _check_mqtt(mqtt: MqttSection) -> None:
    if mqtt.share_group is not None and (not mqtt.share_group or any(c in mqtt.share_group for c in "/+#")):
        raise ConfigError("mqtt.share_group", "must be a non-empty name without '/', '+' or '#'")
    if mqtt.reconnect_min_s > mqtt.reconnect_max_s:
        raise ConfigError("mqtt.reconnect_min_s", "must not exceed mqtt.reconnect_max_s")
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        raise ConfigError("mqtt.cert_file", "cert_file and key_file go together")


# Limits per key: (minimum, maximum); keys not listed take any value of their type.
_LIMITS: dict[str, tuple[float, float]] = {
    "mqtt.port": (1, 65535),
    "http.port": (0, 65535),
    "mqtt.keepalive_s": (5, 65535),
    "mqtt.session_expiry_s": (0, 2**32 - 1),
    "mqtt.receive_maximum": (1, 65535),
    "mqtt.max_packet": (2048, 2**28),
    "mqtt.reconnect_min_s": (0.01, 3600),
    "mqtt.reconnect_max_s": (0.01, 3600),
    "serial.baudrate": (300, 4_000_000),
    "serial.reconnect_min_s": (0.01, 3600),
    "serial.reconnect_max_s": (0.01, 3600),
    "serial.time_resend_s": (1, 86400),
    "serial.read_interval_s": (0, 0.2),
    "verify.quarantine_frames": (1, 1_000_000),
    "verify.quarantine_bytes": (2048, 1 << 30),
    "verify.log_burst": (1, 100_000),
    "verify.log_window_s": (1, 86400),
    "devices.interval_s": (1, 30 * 86400),
    "devices.offline_after": (1, 1000),
    "devices.check_every_s": (0.05, 3600),
    "devices.command_ttl_s": (1, 30 * 86400),
    "devices.max_commands": (1, 1000),
    "time.min_valid": (0, 2**62),
    "time.max_future_s": (0, 86400 * 365),
    "shutdown.drain_s": (0, 3600),
    "debug.commit_delay_s": (0, 3600),
    "gateway.registry_check_s": (0.05, 3600),
}


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(name, "must be a table")
    return table


def _section(data: Mapping[str, Any], name: str, cls: type[Any], base: Path) -> Any:
    return _build(cls, _table(data, name), name, base)


def _build(cls: type[Any], table: Mapping[str, Any], prefix: str, base: Path,
           fixed: Mapping[str, Any] | None = None) -> Any:
    """An instance of dataclass `cls` from `table`, each value checked against the field's type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = dict(fixed or {})
    for key, raw in table.items():
        if key not in fields or key in values:
            raise ConfigError(f"{prefix}.{key}", f"unknown key (known: {', '.join(sorted(set(fields) - set(values)))})")
        values[key] = _convert(raw, hints[key], f"{prefix}.{key}", base)
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}.{name}", "is required")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(prefix, str(exc)) from None


def _convert(raw: Any, hint: Any, key: str, base: Path) -> Any:
    """`raw` as the type `hint` names (str, int, float, bool, Path, tuples of them, Optional)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _convert(raw, options[0], key, base)
    if origin is tuple:
        (item,) = {arg for arg in typing.get_args(hint) if arg is not Ellipsis}
        if not isinstance(raw, list):
            raise ConfigError(key, f"must be an array, got {_show(raw)}")
        return tuple(_convert(v, item, f"{key}[{i}]", base) for i, v in enumerate(raw))
    converter = _CONVERTERS.get(hint)
    if converter is None:
        raise ConfigError(key, "cannot be set from the config file")
    value = converter(raw, key, base)
    limits = _LIMITS.get(key)
    if limits is not None and not limits[0] <= value <= limits[1]:
        raise ConfigError(key, f"must be in {_num(limits[0])}..{_num(limits[1])}, got {_show(raw)}")
    return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _show(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def _to_str(raw: Any, key: str, base: Path) -> str:
    if not isinstance(raw, str):
        raise ConfigError(key, f"must be a string, got {_show(raw)}")
    return raw


def _to_int(raw: Any, key: str, base: Path) -> int:
    if type(raw) is not int:
        raise ConfigError(key, f"must be an integer, got {_show(raw)}")
    return raw


def _to_float(raw: Any, key: str, base: Path) -> float:
    if type(raw) not in (int, float) or not math.isfinite(raw):
        raise ConfigError(key, f"must be a number, got {_show(raw)}")
    return float(raw)


def _to_bool(raw: Any, key: str, base: Path) -> bool:
    if type(raw) is not bool:
        raise ConfigError(key, f"must be true or false, got {_show(raw)}")
    return raw


def _to_path(raw: Any, key: str, base: Path) -> Path:
    text = _to_str(raw, key, base)
    if not text:
        raise ConfigError(key, "must not be empty")
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


_CONVERTERS: dict[Any, Callable[[Any, str, Path], Any]] = {
    str: _to_str,
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    Path: _to_path,
}


# -------------------------------------------------------------------------------------------- sinks

_SINKS: dict[str, tuple[type[Any], Callable[[Any], Any], bool]] = {
    # type -> (config dataclass, sink class, takes an HTTP endpoint)
    "jsonl": (JsonlSinkConfig, JsonlSink, False),
    "http": (HttpSinkConfig, HttpSink, True),
    "mqtt": (MqttSinkConfig, MqttSink, False),
    "ngsild": (NgsiLdSinkConfig, NgsiLdSink, True),
}


def _sink(table: Mapping[str, Any], prefix: str, base: Path) -> SinkSpec:
    table = dict(table)
    kind = table.pop("type", None)
    if kind not in _SINKS:
        raise ConfigError(f"{prefix}.type", f"must be one of {', '.join(sorted(_SINKS))}, got {_show(kind)}")
    config_cls, sink_cls, has_endpoint = _SINKS[kind]
    name = table.get("name", kind)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{prefix}.name", "must be a non-empty string")
    table["name"] = name
    batch = _build(BatchConfig, _sub(table, "batch", prefix), f"{prefix}.batch", base)
    retry = _build(RetryPolicy, _sub(table, "retry", prefix), f"{prefix}.retry", base)
    fixed: dict[str, Any] = {}
    if has_endpoint:
        endpoint_keys = {f.name for f in dataclasses.fields(HttpEndpoint)}
        endpoint_table = {k: table.pop(k) for k in list(table) if k in endpoint_keys}
        fixed["endpoint"] = _build(HttpEndpoint, endpoint_table, prefix, base)
    config = _build(config_cls, table, prefix, base, fixed)
    return SinkSpec(sink_cls(config), batch, retry)


def _sub(table: dict[str, Any], name: str, prefix: str) -> Mapping[str, Any]:
    sub = table.pop(name, {})
    if not isinstance(sub, dict):
        raise ConfigError(f"{prefix}.{name}", "must be a table")
    return sub

