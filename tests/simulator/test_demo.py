"""The demo, end to end, as `make demo` runs it: `python -m simulator.demo` starts its own broker and the
gateway, plays the shipped street with faithful devices on mixed links, and ends by itself with a summary
and a passed ground-truth check. The test plays a shortened day; the full one is marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.scenario import builtin_scenario

ROOT = Path(__file__).resolve().parents[2]


def run_demo(run_dir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator.demo", "--plain", "--run-dir", str(run_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def check_run(run_dir: Path, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "ground truth check: PASSED" in out and "completed" in out
    devices = {d.id for d in builtin_scenario("demo").devices}
    readings = [json.loads(line) for line in (run_dir / "readings.jsonl").read_text().splitlines()]
    assert {r["device"] for r in readings} == devices  # every device reached the file, serial and MQTT alike
    assert (run_dir / "truth.jsonl").stat().st_size > 0
    assert not any(p.exists() for p in (run_dir / "dev").glob("*"))  # cables and ports gone with the run


@pytest.mark.timeout(180)
def test_demo_plays_a_shortened_day_end_to_end(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "run", "--duration", "3h", "--drain-s", "15", timeout=170)
    check_run(tmp_path / "run", result)
    assert "Summary of 'demo'" in result.stdout and "broker: mosquitto" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_demo_plays_the_whole_day(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "run", timeout=380)
    check_run(tmp_path / "run", result)
    assert "fire on bin-0003" in result.stdout and "alarm upstream" in result.stdout
    assert "broker_restart 1" in result.stdout and "unplug 1" in result.stdout


def test_demo_names_what_is_missing(tmp_path: Path) -> None:
    """With the broker binary gone, the demo stops at once with one line naming it (exit 2)."""
    env_script = ("import simulator.stack, simulator.links.broker as b, pathlib, sys;"
                  "b.MOSQUITTO = simulator.stack.MOSQUITTO = pathlib.Path('/nonexistent/mosquitto');"
                  "from simulator.demo import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", env_script, "--plain", "--run-dir", str(tmp_path / "run")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "missing the MQTT broker /nonexistent/mosquitto" in result.stdout


def test_truth_check_catches_a_wrong_value_and_a_missing_alarm(tmp_path: Path) -> None:
    """The check the demo ends with can fail: a reading off by more than the sensor's resolution, a reading
    with nothing true near it, and a fire that a later report does not show."""
    from simulator.truthcheck import Upstream, check

    truth = tmp_path / "truth.jsonl"
    lines = [{"t": 1000.0, "device": "bin-0001", "quantity": "fill", "value": 0.40},
             {"t": 1000.0, "device": "bin-0001", "quantity": "temp", "value": 20.0},
             {"t": 1900.0, "device": "bin-0001", "quantity": "fill", "value": 0.41},
             {"t": 1950.0, "device": "bin-0001", "quantity": "event", "value": "fire"},
             {"t": 9000.0, "device": "bin-0001", "quantity": "fill", "value": 0.45}]
    truth.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def reading(seq: int, name: str, value: object, t: float) -> str:
        return json.dumps({"device": "bin-0001", "boot": 1, "seq": seq, "name": name, "value": value, "time": t,
                           "time_estimated": False}) + "\n"

    good = tmp_path / "good.jsonl"
    good.write_text(reading(1, "fill", 40, 1000) + reading(1, "temp", 20.1875, 1000) + reading(2, "fill", 41, 1900)
                    + reading(3, "fill", 45, 9000) + reading(3, "alarm", "fire", 9000))
    up = Upstream(good)
    up.poll()
    result = check(truth, up, lambda r: float(r["time"]), window_s=600)
    assert result.ok and sum(result.matched.values()) == 4

    bad = tmp_path / "bad.jsonl"
    bad.write_text(reading(1, "fill", 40, 1000) + reading(2, "fill", 48, 1900) + reading(3, "fill", 45, 20000)
                   + reading(4, "fill", 45, 9000))
    up = Upstream(bad)
    up.poll()
    result = check(truth, up, lambda r: float(r["time"]), window_s=600)
    assert not result.ok
    assert result.mismatched["fill"] == 1 and result.no_truth["fill"] == 1
    assert result.alarms_missing == [("bin-0001", "fire", 1950.0)]  # a report from 9000 s has no fire alarm
