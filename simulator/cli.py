"""`kerbline-sim`: run a scenario against a real broker and gateway, watch it, get a report.

    kerbline-sim run SCENARIO [--duration 6h] [--time-factor 720] [--keep-running] [--run-dir DIR]
                              [--mode faithful|fleet] [--stepped] [--shared N] [--heap 64k] [--plain]
                              [--no-check]
    kerbline-sim check SCENARIO          read and check a scenario file, print what it builds

SCENARIO is a TOML file or the name of a shipped one (`demo`, `soak`, `fleet10k`). A run starts its own
mosquitto and gateway (see simulator/run.py), shows the live view (progress bar, devices, reports sent,
acked, queued, alarms) and ends with the final report; the exit status is 0 when the run completed and
the ground-truth check passed, 1 when not, 2 when something the run needs is missing or the scenario
is wrong.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections import Counter
from pathlib import Path

from simulator.devices.runner import DEFAULT_HEAP
from simulator.run import RunOptions, run_street, with_overrides
from simulator.scenario import SCENARIO_DIR, Scenario, ScenarioError, builtin_scenario, load_scenario

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(text: str) -> float:
    """Seconds from "90", "90s", "15m", "36h" or "7d" (the scenario files' syntax)."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f'expected a duration such as "90s", "15m", "6h", "1d"; got {text!r}')
    return float(m.group(1)) * _UNITS[m.group(2)]


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options a run takes (shared with `python -m simulator.demo`)."""
    parser.add_argument("--duration", type=duration, help="simulated time to play (default: the scenario's)")
    parser.add_argument("--time-factor", type=positive, help="simulated seconds per wall second (default: the scenario's)")
    parser.add_argument("--keep-running", action="store_true", help="go on past the scenario's end until Ctrl-C")
    parser.add_argument("--run-dir", type=Path, help="where configs, flash dirs, logs and outputs go (default: a new temp dir)")
    parser.add_argument("--mode", choices=("faithful", "fleet"), default="faithful",
                        help="faithful: a MicroPython process per device; fleet: MQTT devices in this process")
    parser.add_argument("--stepped", action="store_true", help="fleet only: as fast as possible, not paced")
    parser.add_argument("--shared", type=int, metavar="N", help="fleet: N shared MQTT connections (default: one per device)")
    parser.add_argument("--heap", default=DEFAULT_HEAP, help=f"MicroPython heap per faithful device (default {DEFAULT_HEAP})")
    parser.add_argument("--drain-s", type=positive, default=20.0, help="at the end, how long the gateway may take to catch up")
    parser.add_argument("--plain", action="store_true", help="progress lines instead of the in-place live view")
    parser.add_argument("--no-check", action="store_true", help="skip the ground-truth check at the end")


def options_from(args: argparse.Namespace, scenario: Scenario) -> RunOptions:
    return RunOptions(scenario=with_overrides(scenario, args.duration, args.time_factor), run_dir=args.run_dir,
                      mode=args.mode, stepped=args.stepped, shared=args.shared, keep_running=args.keep_running,
                      heap=args.heap, drain_s=args.drain_s, plain=args.plain, check=not args.no_check)


def scenario_arg(text: str) -> Scenario:
    """A scenario file, or the name of a shipped one."""
    if not text.endswith(".toml") and (SCENARIO_DIR / f"{text}.toml").exists():
        return builtin_scenario(text)
    return load_scenario(text)


def describe(sc: Scenario) -> str:
    kinds = Counter((d.kind, d.link) for d in sc.devices)
    devices = ", ".join(f"{n} {kind}s on {link}" for (kind, link), n in sorted(kinds.items()))
    return (f"scenario {sc.name!r}: seed {sc.seed}, {len(sc.sites)} sites, {len(sc.devices)} devices ({devices}), "
            f"{sc.duration_s / 3600:g} h at x{sc.time_factor:g}, {len(sc.events)} scripted events")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kerbline-sim", description="The Kerbline street simulator.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario end to end against a real broker and gateway")
    run.add_argument("scenario", help="a scenario TOML file or a shipped name (demo, soak, fleet10k)")
    add_run_options(run)
    chk = sub.add_parser("check", help="check a scenario file and describe it")
    chk.add_argument("scenario")
    args = parser.parse_args(argv)
    try:
        scenario = scenario_arg(args.scenario)
    except ScenarioError as e:
        print(f"scenario error: {e}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(describe(scenario))
        return 0
    return asyncio.run(run_street(options_from(args, scenario)))


if __name__ == "__main__":
    sys.exit(main())
