"""The bin cycle on the scripted board, one scenario per run, for tests/firmware/test_cycles.py.

Usage: bin_cycle_cases.py SCENARIO. Runs in a device root (the VFS root is the board's flash) under the 64 KB
VM. Prints what happens, one event per line, for the pytest side to check:
  R <alarm 0|1> <hex>   a report the link stand-in (fwkit.Tap) took from the real flash queue and acked
  S <ms> <pin,...>      the bin went to deep sleep for ms, to wake early on those pins
  X                     the board was reset;  T  the run was stopped (light: the virtual time is up)
  O <relay 0|1> <pwm>   the lamp outputs at that moment;  Q <n>  reports waiting in the queue
"""
import sys

from fwkit import config, make_app, run_scenario
from scripted_board import Board, Reset, Slept

from kerbline import bin_cycle


def bin_board(echo=5830, temp=320, batt=1900, tilt=0, lid=0):
    b = Board({})
    b.echo = [echo] if not isinstance(echo, list) else echo
    b.temp[4] = temp
    b.adc[34] = batt
    b.pins[27] = tilt
    b.pins[26] = lid
    return b

def wake(board, raw=None, ack=True):
    """One run of the bin cycle on `board` (its state kept from the previous run, as RTC memory is)."""
    app = make_app(board, raw or config("bin"), ack)
    try:
        bin_cycle.run(app)
    except Slept:
        print("S %d %s" % (board.slept[0], ",".join(str(p) for p in board.slept[1])))
    except Reset:
        print("X")
    return app

def after_sleep(board, pin=False):
    board.wake_after_sleep(pin)

def scenario_bin_wakes():
    b = bin_board()
    wake(b)
    after_sleep(b)
    b.pins[27] = 1  # knocked over while asleep: the tilt switch wakes it
    wake(b)
    after_sleep(b, pin=True)
    b.pins[27] = 0
    wake(b)

def scenario_bin_power_cut():
    b = bin_board()
    pins = dict(config("bin")["pins"])
    pins["power"] = 13  # the sensors' load switch
    wake(b, config("bin", pins=pins))
    print("P %s" % ",".join("%d:%d" % (pin, on) for pin, on in b.switched))
    after_sleep(b)
    wake(b)
    b.rtc = None  # the battery was swapped: RTC memory is gone
    b.cause = "power"
    wake(b)

def scenario_bin_alarms():
    b = bin_board()
    # fill 85 %: echo for 250 mm at 20 degC (100 mm offset + 150 mm empty of 1000)
    # then 75 % (350 mm), 69 % (410 mm); then 71 degC with 3300 mV, 68.75 degC with 3500 mV, 62.5 degC
    for echo, temp, batt in ((1456, 320, 1900), (2038, 320, 1900), (2388, 320, 1900), (2388, 1136, 1650),
                             (2388, 1100, 1750), (2388, 1000, 1760)):
        b.echo = [echo]
        b.temp[4] = temp
        b.adc[34] = batt
        wake(b)
        after_sleep(b)

def scenario_bin_sensor_faults():
    b = bin_board(echo=[None])
    wake(b)
    after_sleep(b)
    b.echo = [5830]
    b.temp[4] = None  # the DS18B20 stopped answering: the sonar uses 20 degC
    wake(b)
    after_sleep(b)
    b.temp[4] = 320
    b.pins[26] = 1  # lid open: no fill measured
    wake(b)

def scenario_bin_commands():
    b = bin_board()
    app = make_app(b, config("bin"))
    app.link.commands = [("on_time", 1764345600), ("on_ping",), ("on_config", {"interval": 600})]
    try:
        bin_cycle.run(app)
    except Slept:
        print("S %d %s" % (b.slept[0], ",".join(str(p) for p in b.slept[1])))
    with open("/config.json") as f:
        print("C " + f.read())
    after_sleep(b)
    app = make_app(b, config("bin", interval=600))  # the next boot reads the changed config
    app.link.commands = [("on_reboot",)]
    try:
        bin_cycle.run(app)
    except Reset:
        print("X")

def scenario_bin_no_gateway():
    b = bin_board()
    for _ in range(3):
        app = wake(b, ack=False)  # nobody acks: the reports stay on flash, the bin still sleeps
        print("Q %d" % len(app.queue))
        after_sleep(b)


def main(name):
    run_scenario(globals(), name)


if __name__ == "__main__":
    main(sys.argv[1])
