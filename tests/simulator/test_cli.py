"""`kerbline-sim`: scenarios checked with the bad key named, and a run end to end from the command line
(the fleet mode, stepped, against the simulator's own broker and the real gateway)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """
[scenario]
name = "cli-fleet"
seed = 77
start = 2026-04-02T05:00:00Z
duration = "3h"
time_factor = 600
link = "mqtt"

[lights]
interval_s = "30m"

[faults]
net_cut_per_day = 6
power_cut_per_day = 3
power_cut_mean_s = "5m"

[[site]]
name = "gorbals"
lat = 55.8500
lon = -4.2500
tz = "Europe/London"
bins = 40
lights = 10
"""


def sim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_check_describes_a_shipped_scenario() -> None:
    result = sim("check", "demo")
    assert result.returncode == 0
    assert "scenario 'demo'" in result.stdout and "6 devices" in result.stdout


def test_a_bad_scenario_is_refused_with_its_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SCENARIO.replace("lat = 55.8500", "lat = 155.85"))
    result = sim("check", str(bad))
    assert result.returncode == 2 and "site[0].lat" in result.stderr
    result = sim("run", str(bad), "--plain")
    assert result.returncode == 2 and "site[0].lat" in result.stderr


def test_a_stepped_run_needs_every_device_in_the_fleet(tmp_path: Path) -> None:
    result = sim("run", "demo", "--stepped", "--plain", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "stepped run needs every device in the fleet" in result.stdout


@pytest.mark.timeout(180)
def test_fleet_run_end_to_end(tmp_path: Path) -> None:
    scenario = tmp_path / "fleet.toml"
    scenario.write_text(SCENARIO)
    run = tmp_path / "run"
    result = sim("run", str(scenario), "--mode", "fleet", "--stepped", "--shared", "2", "--plain", "--run-dir", str(run),
                 timeout=170)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    out = result.stdout
    assert "fleet devices 50:" in out and "ground truth check: PASSED" in out
    readings = [json.loads(line) for line in (run / "readings.jsonl").read_text().splitlines()]
    assert len({r["device"] for r in readings}) == 50
    assert all(not r["time_estimated"] for r in readings)  # the fleet's clocks are simulated time, sane
    fleet_line = next(line for line in out.splitlines() if "fleet devices 50:" in line)
    reports = int(fleet_line.split("reports ")[1].split(",")[0])
    assert len({(r["device"], r["boot"], r["seq"]) for r in readings}) == reports  # all of them upstream


def test_live_view_shows_progress_devices_totals_and_events() -> None:
    import io

    from simulator.live import LiveView, Row, Snapshot, render

    start = 1_782_000_000.0
    snap = Snapshot(title="Kerbline street simulator: demo", sim_now=start + 6 * 3600, sim_start=start,
                    sim_end=start + 24 * 3600, wall_elapsed=15.0, factor=1440.0, tz="Europe/London",
                    rows=[Row("bin-0001", "bin", "mqtt", "running", "fill  42%", "fill 41%", (), 20, 20, 0),
                          Row("bin-0003", "bin", "serial", "running", "fill  10%", "fill 9% 88C", ("fire",), 9, 8, 1)],
                    totals=[("reports sent", "29"), ("acked", "28"), ("alarms upstream", "fire 1")],
                    events=["15:10  alarm  fire raised by bin-0003"])
    text = render(snap, width=140)
    lines = text.splitlines()
    assert "25%" in lines[1] and "x1440" in lines[1] and "BST" in lines[1]  # civil time at the site
    assert lines.index(next(line for line in lines if "bin-0003" in line)) < \
        lines.index(next(line for line in lines if "bin-0001" in line))  # devices with alarms first
    assert "reports sent: 29" in text and "fire raised by bin-0003" in text
    out = io.StringIO()
    view = LiveView(out, plain_every_s=0.0)  # not a terminal: progress lines, no escape codes
    view.update(snap)
    assert "\x1b" not in out.getvalue() and "reports sent 29" in out.getvalue()


@pytest.mark.timeout(120)
def test_keep_running_goes_on_until_sigterm_then_reports(tmp_path: Path) -> None:
    import signal
    import time

    scenario = tmp_path / "fleet.toml"
    scenario.write_text(SCENARIO.replace('duration = "3h"', 'duration = "10m"'))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", "run", str(scenario), "--mode", "fleet",
                             "--keep-running", "--plain", "--run-dir", str(run)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run / "readings.jsonl").exists():
        time.sleep(0.2)
    time.sleep(3.0)  # 10 simulated minutes at 600x is 1 s: it is past its scenario's end by now
    assert proc.poll() is None  # still running past the end
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]  # stopped, not completed
    assert "stopped early" in out and "fleet devices 50:" in out
    assert (run / "readings.jsonl").stat().st_size > 0
