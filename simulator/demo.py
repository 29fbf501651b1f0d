"""`make demo` = `python -m simulator.demo`: the street end to end, on the embedded defaults, no hardware needed.

The shipped `demo` scenario (simulator/scenarios/demo.toml: four bins and two streetlights in Camden on
midsummer's day, mixed serial and MQTT links, a scripted fire, an unplugged cable, a broker restart and a
lamp failure, a day in about a minute) played by faithful devices (real MicroPython processes running the
unchanged firmware) through the simulator's own mosquitto and the real gateway into a JSON Lines file,
with a live view and, at the end, a summary and a check that what reached the file is what the street
did (see simulator/run.py for the steps). Bounded by default; `--keep-running` goes on until Ctrl-C.

    python -m simulator.demo [--keep-running] [--duration 6h] [--time-factor 720] [--run-dir DIR] [--plain]
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from simulator.cli import add_run_options, options_from
from simulator.run import run_street
from simulator.scenario import builtin_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__.split("\n\n")[0])
    add_run_options(parser)
    args = parser.parse_args(argv)
    return asyncio.run(run_street(options_from(args, builtin_scenario("demo"))))


if __name__ == "__main__":
    sys.exit(main())
