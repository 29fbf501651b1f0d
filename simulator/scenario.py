"""Scenarios: which street to simulate, read from TOML and checked key by key.

A scenario names its sites (where, which civil time zone, how many bins and lights, which mix of bin
uses, when the truck comes), the links, the simulated period and its speed, the seed, the physical
parameters of bins and lamps, the fault rates and a list of scripted events. Every value is checked when
the file is read; an error names the key (`site[1].lat`, `faults.unplug_per_day`) and says what was
expected, so a typo never becomes a silently different simulation. Unknown keys are errors too.

`load_scenario(path)` or `parse_scenario(text)` return a frozen `Scenario`; `Scenario.devices` is the
expanded device list (ids, kinds, sites, links) that the device, fleet and demo layers build from.
Shipped scenarios live in `simulator/scenarios/` (`builtin_scenario("demo")`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SCENARIO_DIR = Path(__file__).with_name("scenarios")
BIN_KINDS = ("residential", "commercial", "park")
LINKS = ("serial", "mqtt")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Scripted event kinds, and what they apply to.
BIN_EVENTS = ("fire", "tilt", "lid")
LIGHT_EVENTS = ("lamp_fail",)
DEVICE_EVENTS = ("brownout", "power_cut")
SERIAL_EVENTS = ("unplug", "garbage", "drop_bytes")
MQTT_EVENTS = ("net_cut",)
BROKER_EVENTS = ("broker_restart",)
EVENT_KINDS = BIN_EVENTS + LIGHT_EVENTS + DEVICE_EVENTS + SERIAL_EVENTS + MQTT_EVENTS + BROKER_EVENTS
_ID_RE = re.compile(r"^[a-z0-9-]{1,32}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ScenarioError(ValueError):
    """A scenario that cannot be used; `key` is the dotted path of the offending key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True)
class Collection:
    """A site's collection round: on these weekdays (0 = Monday) the truck starts at `hour` (civil time)
    and reaches the site's bins one after the other, evenly over `window_h` hours; it misses a bin with
    probability `miss_rate`."""

    weekdays: tuple[int, ...] = (0, 3)
    hour: float = 7.0
    window_h: float = 2.0
    miss_rate: float = 0.0


@dataclass(frozen=True)
class Site:
    name: str
    lat: float
    lon: float
    tz: str | None = None
    bins: int = 0
    lights: int = 0
    kinds: tuple[tuple[str, float], ...] = (("residential", 1.0),)
    link: str | None = None  # None: the scenario's link
    collection: Collection = Collection()
    temp_mean_c: float = 15.0
    temp_amp_c: float = 5.0
    cloud_mean: float = 0.4
    cloud_spread: float = 0.4
    spill_lux: float = 2.0


def _p(default: float, lo: float = 0.0, hi: float | None = None, *, positive: bool = False,
       duration: bool = False) -> Any:
    """A parameter field with its bounds, which `_params` checks when it reads a table."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "positive": positive, "duration": duration})


@dataclass(frozen=True)
class BinParams:
    """Physical parameters shared by all bins (defaults: a 240 l wheelie bin with a solar-topped sensor)."""

    interval_s: float = _p(900.0, duration=True)
    depth_mm: float = _p(900.0, positive=True)
    mount_offset_mm: float = _p(150.0)
    fill_per_day: tuple[tuple[str, float], ...] = (("residential", 0.22), ("commercial", 0.6), ("park", 0.35))
    capacity_mah: float = _p(3400.0, positive=True)
    start_soc_min: float = _p(0.5, 0.0, 1.0)
    start_soc_max: float = _p(0.9, 0.0, 1.0)
    panel_w: float = _p(0.3)
    sleep_ua: float = _p(40.0)
    wake_mas: float = _p(8.0)
    report_mas_serial: float = _p(5.0)
    report_mas_mqtt: float = _p(450.0)
    enclosure_tau_s: float = _p(1800.0, duration=True)
    solar_gain_c: float = _p(8.0)
    fire_per_year: float = _p(0.05)
    fire_ramp_c_per_min: float = _p(6.0, positive=True)
    fire_peak_c: float = _p(350.0, positive=True)
    fire_burn_min: float = _p(60.0, positive=True)
    tilt_per_day: float = _p(0.005)
    tilt_mean_h: float = _p(6.0, positive=True)
    lid_per_day: float = _p(0.02)
    lid_mean_h: float = _p(1.0, positive=True)

    def fill_rate(self, use: str) -> float:
        """Mean fill per day (fraction of the bin) for a bin use."""
        return dict(self.fill_per_day)[use]


@dataclass(frozen=True)
class LightParams:
    """Parameters shared by all streetlights (defaults: a 60 W LED luminaire on a 230 V supply)."""

    interval_s: float = _p(300.0, duration=True)
    rated_w: float = _p(60.0, positive=True)
    rated_lm: float = _p(8000.0, positive=True)
    standby_w: float = _p(0.5)
    mains_v: float = _p(230.0, positive=True)
    l70_h: float = _p(50_000.0, positive=True)
    weibull_beta: float = _p(3.0, positive=True)
    weibull_eta_h: float = _p(90_000.0, positive=True)
    age_max_h: float = _p(40_000.0)
    flicker_h: float = _p(300.0)


@dataclass(frozen=True)
class FaultRates:
    """How often things go wrong. Per-read probabilities are per sensor read; the others are Poisson
    rates per device (or per broker) with exponentially distributed durations of the given mean."""

    ultrasonic_spike: float = _p(0.0, 0.0, 1.0)
    ultrasonic_timeout: float = _p(0.0, 0.0, 1.0)
    wet_per_day: float = _p(0.0)
    wet_mean_s: float = _p(3600.0, duration=True)
    i2c_error: float = _p(0.0, 0.0, 1.0)
    adc_noise_mv: float = _p(0.0)
    temp_noise_c: float = _p(0.0)
    garbage_per_hour: float = _p(0.0)
    garbage_max_bytes: float = _p(64.0, 1.0, 1024.0)
    drop_per_hour: float = _p(0.0)
    drop_max_bytes: float = _p(16.0, 1.0, 1024.0)
    unplug_per_day: float = _p(0.0)
    unplug_mean_s: float = _p(60.0, duration=True)
    broker_restart_per_day: float = _p(0.0)
    broker_down_mean_s: float = _p(10.0, duration=True)
    net_cut_per_day: float = _p(0.0)
    net_cut_mean_s: float = _p(120.0, duration=True)
    power_cut_per_day: float = _p(0.0)
    power_cut_mean_s: float = _p(30.0, duration=True)
    brownout_per_day: float = _p(0.0)


@dataclass(frozen=True)
class Event:
    """A scripted event at a simulated instant; `device` is None for broker-wide events."""

    at: float
    kind: str
    device: str | None = None
    duration_s: float = 0.0


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device, as the upper layers build it."""

    id: str
    kind: str  # "bin" or "light"
    site: str
    index: int  # position among the devices of its kind at its site, from 0
    link: str  # "serial" or "mqtt"
    use: str | None = None  # bins: "residential" | "commercial" | "park"


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    start: float  # unix seconds
    duration_s: float
    time_factor: float
    link: str  # "serial" | "mqtt" | "mixed"
    serial_share: float
    sites: tuple[Site, ...]
    bins: BinParams = BinParams()
    lights: LightParams = LightParams()
    faults: FaultRates = FaultRates()
    events: tuple[Event, ...] = ()
    devices: tuple[DeviceSpec, ...] = field(default=(), compare=False)

    @property
    def end(self) -> float:
        return self.start + self.duration_s

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)


# --- reading -----------------------------------------------------------------------------------------
class _Table:
    """A TOML table being read: typed getters that name the full key in errors, and unknown-key checks."""

    def __init__(self, source: str, path: str, data: Any) -> None:
        self.source = source
        self.path = path
        if not isinstance(data, dict):
            self.fail("", f"must be a table, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ScenarioError(self.source, self.key(name) if name else self.path, problem)

    def _get(self, name: str) -> Any:
        self._used.add(name)
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return name in self.data

    def number(
        self, name: str, default: float | None, lo: float | None = None, hi: float | None = None,
        *, lo_open: bool = False,
    ) -> float:
        value = self._get(name)
        if value is None:
            if default is None:
                self.fail(name, "is required")
            return float(default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(name, f"must be a number, got {value!r}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            self.fail(name, f"must be {'>' if lo_open else '>='} {lo:g}, got {value!r}")
        if hi is not None and value > hi:
            self.fail(name, f"must be <= {hi:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, default: int | None, lo: int = 0, hi: int | None = None) -> int:
        value = self._get(name)
        if value is None:
            if default is None:
                self.fail(name, "is required")
            return int(default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"must be an integer, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            self.fail(name, f"must be between {lo} and {hi}, got {value}" if hi is not None
                      else f"must be >= {lo}, got {value}")
        return value

    def string(self, name: str, default: str | None, choices: tuple[str, ...] | None = None) -> str | None:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(name, f"must be a string, got {value!r}")
        if choices is not None and value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def duration(self, name: str, default: float | None) -> float:
        """Seconds, given as a number of seconds or a string such as "90s", "15m", "36h", "7d"."""
        value = self._get(name)
        if value is None:
            if default is None:
                self.fail(name, "is required")
            return float(default)
        if isinstance(value, str):
            m = _DURATION_RE.match(value)
            if not m:
                self.fail(name, f'must be seconds or a duration such as "15m", "36h", "7d"; got {value!r}')
            seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            seconds = float(value)
        else:
            self.fail(name, f"must be seconds or a duration string, got {value!r}")
        if seconds <= 0:
            self.fail(name, f"must be > 0, got {value!r}")
        return seconds

    def instant(self, name: str) -> float:
        """Unix seconds from a TOML offset date-time (a UTC offset is required)."""
        value = self._get(name)
        if not isinstance(value, _dt.datetime):
            self.fail(name, f"must be a date-time with a UTC offset (e.g. 2026-06-21T00:00:00Z), got {value!r}")
        if value.tzinfo is None:
            self.fail(name, "must have a UTC offset (e.g. 2026-06-21T00:00:00Z or +01:00)")
        return value.timestamp()

    def table(self, name: str) -> "_Table":
        value = self._get(name)
        return _Table(self.source, self.key(name), {} if value is None else value)

    def tables(self, name: str) -> list["_Table"]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(name, f"must be an array of tables ([[{name}]]), got {type(value).__name__}")
        return [_Table(self.source, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)]

    def shares(self, name: str, allowed: tuple[str, ...], default: tuple[tuple[str, float], ...],
               require_positive_total: bool = True) -> tuple[tuple[str, float], ...]:
        """A table of name = non-negative number, names from `allowed`, in `allowed` order."""
        if not self.has(name):
            self._used.add(name)
            return default
        sub = self.table(name)
        for k in sub.data:
            if k not in allowed:
                sub.fail(k, f"unknown name; expected one of {', '.join(allowed)}")
        result = tuple((k, sub.number(k, None, 0.0)) for k in allowed if k in sub.data)
        if require_positive_total and sum(v for _, v in result) <= 0:
            self.fail(name, "must have at least one share > 0")
        return result

    def finish(self) -> None:
        for k in self.data:
            if k not in self._used:
                self.fail(k, "unknown key")


def _collection(t: _Table) -> Collection:
    days_raw = t._get("days")
    weekdays: tuple[int, ...] = Collection.weekdays
    if days_raw is not None:
        if not isinstance(days_raw, list) or not days_raw:
            t.fail("days", f'must be a non-empty list such as ["mon", "thu"], got {days_raw!r}')
        for d in days_raw:
            if d not in WEEKDAYS:
                t.fail("days", f"{d!r} is not one of {', '.join(WEEKDAYS)}")
        weekdays = tuple(sorted({WEEKDAYS.index(d) for d in days_raw}))
    c = Collection(
        weekdays=weekdays,
        hour=t.number("hour", Collection.hour, 0.0, 23.99),
        window_h=t.number("window_h", Collection.window_h, 0.0, 12.0),
        miss_rate=t.number("miss_rate", Collection.miss_rate, 0.0, 1.0),
    )
    t.finish()
    return c


def _site(t: _Table) -> Site:
    name = t.string("name", None)
    if name is None:
        t.fail("name", "is required")
    tz = t.string("tz", None)
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            t.fail("tz", f"unknown time zone {tz!r} (use an IANA name such as Europe/London)")
    d = Site
    site = Site(
        name=name,
        lat=t.number("lat", None, -90.0, 90.0),
        lon=t.number("lon", None, -180.0, 180.0),
        tz=tz,
        bins=t.integer("bins", 0, 0, 1_000_000),
        lights=t.integer("lights", 0, 0, 1_000_000),
        kinds=t.shares("kinds", BIN_KINDS, d.kinds),
        link=t.string("link", None, LINKS + ("mixed",)),
        collection=_collection(t.table("collection")),
        temp_mean_c=t.number("temp_mean_c", d.temp_mean_c, -50.0, 50.0),
        temp_amp_c=t.number("temp_amp_c", d.temp_amp_c, 0.0, 25.0),
        cloud_mean=t.number("cloud_mean", d.cloud_mean, 0.0, 1.0),
        cloud_spread=t.number("cloud_spread", d.cloud_spread, 0.0, 1.0),
        spill_lux=t.number("spill_lux", d.spill_lux, 0.0, 50.0),
    )
    t.finish()
    return site


def _params(cls: type, t: _Table) -> Any:
    """A parameters dataclass from a table: every field optional, each checked against its bounds."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = f.name
        default: Any = f.default  # a number, or the fill_per_day pairs
        if name == "fill_per_day":
            given = dict(t.shares(name, BIN_KINDS, (), require_positive_total=False))
            values[name] = tuple((k, given.get(k, v)) for k, v in default)
            continue
        m = f.metadata
        if m["duration"]:
            values[name] = t.duration(name, default)
        else:
            values[name] = t.number(name, default, m["lo"], m["hi"], lo_open=m["positive"])
    t.finish()
    return cls(**values)


def _event(t: _Table, start: float, end: float, devices: dict[str, DeviceSpec]) -> Event:
    kind = t.string("kind", None, EVENT_KINDS)
    if kind is None:
        t.fail("kind", f"is required (one of {', '.join(EVENT_KINDS)})")
    if t.has("at") == t.has("after"):
        t.fail("at", 'give exactly one of "at" (a date-time) or "after" (a duration from the start)')
    at = t.instant("at") if t.has("at") else start + t.duration("after", None)
    if not start <= at <= end:
        t.fail("at" if t.has("at") else "after", "must fall within the scenario's start and start + duration")
    device = t.string("device", None)
    if kind in BROKER_EVENTS:
        if device is not None:
            t.fail("device", f"{kind} is broker-wide: leave device out")
    else:
        if device is None:
            t.fail("device", f"is required for {kind}")
        spec = devices.get(device)
        if spec is None:
            t.fail("device", f"no device {device!r} in this scenario")
        need = ("bin" if kind in BIN_EVENTS else "light" if kind in LIGHT_EVENTS else None)
        if need is not None and spec.kind != need:
            t.fail("device", f"{kind} happens to a {need}, {device} is a {spec.kind}")
        link = "serial" if kind in SERIAL_EVENTS else "mqtt" if kind in MQTT_EVENTS else None
        if link is not None and spec.link != link:
            t.fail("device", f"{kind} needs a {link} device, {device} is on {spec.link}")
    windowed = kind in ("tilt", "lid", "unplug", "net_cut", "power_cut", "broker_restart")
    duration = t.duration("duration", 600.0 if windowed else None) if (windowed or t.has("duration")) else 0.0
    t.finish()
    return Event(at=at, kind=kind, device=device, duration_s=duration)


def expand_devices(sites: tuple[Site, ...], link: str, serial_share: float) -> tuple[DeviceSpec, ...]:
    """Device specs in a fixed order: site by site, bins then lights, ids numbered across the scenario.

    Bin uses follow the site's mix by quota (bin j gets the use whose cumulative share holds (j + 0.5) / n),
    and in a "mixed" link the k-th device is serial when floor((k + 1) * share) > floor(k * share), so the
    serial devices are spread evenly through the scenario.
    """
    n_bins = sum(s.bins for s in sites)
    n_lights = sum(s.lights for s in sites)
    width = max(4, len(str(max(n_bins, n_lights, 1))))
    specs: list[DeviceSpec] = []
    b = l = k = 0
    for s in sites:
        site_link = s.link or link
        total = sum(v for _, v in s.kinds)
        for kind, count in (("bin", s.bins), ("light", s.lights)):
            for j in range(count):
                if kind == "bin":
                    b += 1
                    dev_id = f"bin-{b:0{width}d}"
                    target = (j + 0.5) / count * total
                    acc = 0.0
                    use = s.kinds[-1][0]
                    for name, share in s.kinds:
                        acc += share
                        if target < acc:
                            use = name
                            break
                else:
                    l += 1
                    dev_id, use = f"lamp-{l:0{width}d}", None
                if site_link == "mixed":
                    dev_link = "serial" if math.floor((k + 1) * serial_share) > math.floor(k * serial_share) else "mqtt"
                else:
                    dev_link = site_link
                k += 1
                specs.append(DeviceSpec(dev_id, kind, s.name, j, dev_link, use))
    return tuple(specs)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """A scenario from TOML text; `source` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "", f"not valid TOML: {exc}") from None
    root = _Table(source, "", data)
    head = root.table("scenario")
    name = head.string("name", None) or Path(source).stem
    seed = head.integer("seed", None, 0, 2**63 - 1)
    start = head.instant("start")
    duration = head.duration("duration", None)
    factor = head.number("time_factor", 1.0, 0.0, 1e7, lo_open=True)
    link = head.string("link", None, LINKS + ("mixed",)) or "mqtt"
    share = head.number("serial_share", 0.5, 0.0, 1.0)
    head.finish()
    site_tables = root.tables("site")
    if not site_tables:
        root.fail("site", "at least one [[site]] is required")
    sites = tuple(_site(t) for t in site_tables)
    names = [s.name for s in sites]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise ScenarioError(source, f"site[{i}].name", f"duplicate site name {n!r}")
    if sum(s.bins + s.lights for s in sites) == 0:
        root.fail("site", "the sites hold no device: give some site bins or lights")
    devices = expand_devices(sites, link, share)
    if any(not _ID_RE.match(d.id) for d in devices):
        root.fail("site", "too many devices for 32-character ids")
    by_id = {d.id: d for d in devices}
    bins = _params(BinParams, root.table("bins"))
    if bins.start_soc_min > bins.start_soc_max:
        raise ScenarioError(source, "bins.start_soc_min", "must be <= bins.start_soc_max")
    lights = _params(LightParams, root.table("lights"))
    faults = _params(FaultRates, root.table("faults"))
    events = tuple(_event(t, start, start + duration, by_id) for t in root.tables("event"))
    root.finish()
    return Scenario(
        name=name, seed=seed, start=start, duration_s=duration, time_factor=factor, link=link,
        serial_share=share, sites=sites, bins=bins, lights=lights, faults=faults,
        events=tuple(sorted(events, key=lambda e: e.at)), devices=devices,
    )


def load_scenario(path: str | Path) -> Scenario:
    """A scenario from a TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    return parse_scenario(text, source=str(path))


def builtin_scenario(name: str) -> Scenario:
    """A scenario shipped in simulator/scenarios/, by name: "demo", "soak", "fleet10k"."""
    return load_scenario(SCENARIO_DIR / f"{name}.toml")
