"""Scenarios: the shipped ones load, devices expand as documented, and every error names its key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from simulator.scenario import ScenarioError, builtin_scenario, load_scenario, parse_scenario

BASE = """
[scenario]
seed = 1
start = 2026-06-21T00:00:00Z
duration = "1d"
{head}

[[site]]
name = "a"
lat = 51.5
lon = -0.1
bins = 4
lights = 2
{site}

{rest}
"""


def scenario_text(head: str = "", site: str = "", rest: str = "") -> str:
    return BASE.format(head=head, site=site, rest=rest)


def error_of(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="t.toml")
    return info.value


@pytest.mark.parametrize("name, devices", [("demo", 6), ("soak", 48), ("fleet10k", 10_000)])
def test_shipped_scenarios_load(name: str, devices: int) -> None:
    sc = builtin_scenario(name)
    assert sc.name == name
    assert len(sc.devices) == devices
    assert len({d.id for d in sc.devices}) == devices


def test_demo_is_a_small_mixed_fleet_over_one_day_in_about_a_minute() -> None:
    sc = builtin_scenario("demo")
    kinds = [d.kind for d in sc.devices]
    assert kinds.count("bin") == 4 and kinds.count("light") == 2
    assert {d.link for d in sc.devices} == {"serial", "mqtt"}
    assert sc.duration_s == 86400 and 50 <= sc.duration_s / sc.time_factor <= 90
    assert sc.end == sc.start + 86400
    assert sc.events, "the demo scripts a few faults"


def test_devices_expand_with_ids_uses_and_links() -> None:
    sc = parse_scenario(scenario_text(
        head='link = "mixed"\nserial_share = 0.5',
        site="kinds = { residential = 0.5, park = 0.5 }",
    ))
    assert [d.id for d in sc.devices] == ["bin-0001", "bin-0002", "bin-0003", "bin-0004", "lamp-0001", "lamp-0002"]
    assert [d.use for d in sc.devices] == ["residential", "residential", "park", "park", None, None]
    assert [d.link for d in sc.devices] == ["mqtt", "serial"] * 3
    assert [d.index for d in sc.devices] == [0, 1, 2, 3, 0, 1]
    assert sc.start == dt.datetime(2026, 6, 21, tzinfo=dt.timezone.utc).timestamp()


def test_site_link_overrides_the_scenario_link() -> None:
    sc = parse_scenario(scenario_text(head='link = "mqtt"', site='link = "serial"'))
    assert {d.link for d in sc.devices} == {"serial"}


def test_durations_accept_units_and_events_accept_after() -> None:
    sc = parse_scenario(scenario_text(
        rest='[bins]\ninterval_s = "10m"\n[[event]]\nkind = "fire"\ndevice = "bin-0002"\nafter = "2h"',
    ))
    assert sc.bins.interval_s == 600
    assert sc.events[0].at == sc.start + 7200 and sc.events[0].device == "bin-0002"


@pytest.mark.parametrize(
    "text, key, words",
    [
        (scenario_text().replace("lat = 51.5", "lat = 123"), "site[0].lat", "<= 90"),
        (scenario_text(site='lat = "north"').replace("lat = 51.5\n", ""), "site[0].lat", "number"),
        (scenario_text(site="latt = 1"), "site[0].latt", "unknown key"),
        (scenario_text(head="seed = 2"), "", "TOML"),  # duplicate key: not TOML at all
        (scenario_text().replace("seed = 1\n", ""), "scenario.seed", "required"),
        (scenario_text().replace("2026-06-21T00:00:00Z", "2026-06-21T00:00:00"), "scenario.start", "UTC offset"),
        (scenario_text().replace('"1d"', '"1 fortnight"'), "scenario.duration", "duration"),
        (scenario_text(head="time_factor = 0"), "scenario.time_factor", "> 0"),
        (scenario_text(head='link = "carrier-pigeon"'), "scenario.link", "serial, mqtt"),
        (scenario_text(site='tz = "Mars/Olympus"'), "site[0].tz", "time zone"),
        (scenario_text(site="kinds = { residential = 1, slum = 1 }"), "site[0].kinds.slum", "unknown name"),
        (scenario_text(site='collection = { days = ["mon", "funday"] }'), "site[0].collection.days", "funday"),
        (scenario_text().replace("bins = 4", "bins = -1"), "site[0].bins", "between 0 and"),
        (scenario_text(rest="[faults]\nultrasonic_spike = 1.5"), "faults.ultrasonic_spike", "<= 1"),
        (scenario_text(rest="[faults]\nunplug_per_dya = 1"), "faults.unplug_per_dya", "unknown key"),
        (scenario_text(rest="[bins]\ndepth_mm = 0"), "bins.depth_mm", "> 0"),
        (scenario_text(rest="[bins]\nstart_soc_min = 0.9\nstart_soc_max = 0.2"), "bins.start_soc_min", "<= bins"),
        (scenario_text(rest="[lights]\nrated_w = true"), "lights.rated_w", "number"),
        (scenario_text(rest="[bins.fill_per_day]\nresidential = -0.1"), "bins.fill_per_day.residential", ">= 0"),
        (scenario_text(rest='[[event]]\nkind = "meteor"\ndevice = "bin-0001"\nafter = "1h"'), "event[0].kind", "fire"),
        (scenario_text(rest='[[event]]\nkind = "fire"\ndevice = "bin-9999"\nafter = "1h"'), "event[0].device", "no device"),
        (scenario_text(rest='[[event]]\nkind = "fire"\ndevice = "lamp-0001"\nafter = "1h"'), "event[0].device", "bin"),
        (scenario_text(rest='[[event]]\nkind = "lamp_fail"\ndevice = "lamp-0001"\nafter = "2d"'), "event[0].after", "within"),
        (scenario_text(rest='[[event]]\nkind = "unplug"\ndevice = "bin-0001"\nafter = "1h"'), "event[0].device", "serial"),
        (scenario_text(rest='[[event]]\nkind = "broker_restart"\ndevice = "bin-0001"\nafter = "1h"'), "event[0].device", "broker-wide"),
        (scenario_text(rest='[[event]]\nkind = "fire"\ndevice = "bin-0001"'), "event[0].at", "exactly one"),
        (scenario_text(rest='[[site]]\nname = "a"\nlat = 1\nlon = 1'), "site[1].name", "duplicate"),
        (scenario_text(site="bins = 0\nlights = 0").replace("bins = 4\nlights = 2\n", ""), "site", "no device"),
        ("site = 3\n" + scenario_text().split("[[site]]")[0], "site", "array of tables"),
    ],
)
def test_errors_name_the_key(text: str, key: str, words: str) -> None:
    err = error_of(text)
    assert err.key == key
    assert words in err.problem
    assert str(err).startswith("t.toml: ")
    if key:
        assert key in str(err)


def test_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
