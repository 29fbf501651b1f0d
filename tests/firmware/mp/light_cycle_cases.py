"""The light cycle on the scripted board, one scenario per run, for tests/firmware/test_cycles.py.

Usage: light_cycle_cases.py SCENARIO. Runs in a device root (the VFS root is the board's flash) under the 64 KB
VM. Prints what happens, one event per line, for the pytest side to check:
  R <alarm 0|1> <hex>   a report the link stand-in (fwkit.Tap) took from the real flash queue and acked
  S <ms> <pin,...>      the bin went to deep sleep for ms, to wake early on those pins
  X                     the board was reset;  T  the run was stopped (light: the virtual time is up)
  O <relay 0|1> <pwm>   the lamp outputs at that moment;  Q <n>  reports waiting in the queue
"""
import sys

from fwkit import config, make_app, run_scenario
from scripted_board import Board, Reset, TimeUp

from kerbline import light_cycle


def light_board(counts, curr=37):
    b = Board({})
    b.i2c = counts  # BH1750 counts, one per measurement (1.2 counts per lx at MTreg 69)
    b.adc[35] = 2000
    b.adc[32] = 1150  # 230 V
    b.adc[33] = curr  # 37 mV: 199 mA, a lit lamp
    return b

BRIGHT = b"\x04\xb0"  # 1200 counts at MTreg 69: 1000 lx

DUSK = [b"\x00\x07", b"\x00\x1a"]  # 7 counts at 69 (too few: step up), then 26 at MTreg 254: 6 lx

def run_light(board, raw, until_ms, fail=None):
    app = make_app(board, raw)
    app.link.fail = fail
    board.until = until_ms
    try:
        light_cycle.run(app)
    except TimeUp:
        print("T")
    except Reset:
        print("X")
    print("O %d %d" % (board.relay.get(25, 0), board.pwm.get(26, -1)))
    print("Q %d" % len(app.queue))
    return app

def scenario_light_dusk():
    # 1000 lx for 4 samples (0-15 s), then 6 lx: on after switch_n (2) dark samples, at 25 s, no current
    # drawn while off, 199 mA once on
    board = light_board([BRIGHT] * 4 + DUSK, [0] * 5 + [37])
    run_light(board, config("light", sample_s=5, report_s=60, dim=80), 130000)

def scenario_light_lamp_fail():
    run_light(light_board(list(DUSK), 0), config("light", sample_s=5, report_s=3600), 20000)

def scenario_light_no_gateway():
    board = light_board([BRIGHT] * 3 + DUSK, [0] * 4 + [37])
    run_light(board, config("light", sample_s=5, report_s=20), 60000, OSError(5))

def scenario_light_bus_fault():
    b = light_board([BRIGHT], 0)
    b.i2c_fail = 1000  # the BH1750 is gone: the LDR (2000 mV = 80 lx) takes over, sensor_fault raised
    run_light(b, config("light", sample_s=5, report_s=3600), 12000)


def main(name):
    run_scenario(globals(), name)


if __name__ == "__main__":
    main(sys.argv[1])
