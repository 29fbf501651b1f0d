# A bin through several wakes on the scripted board. argv: a JSON list of wakes, each a dict of
# channels for the board ("echo": [...], "temp": t16, "batt": mV, "tilt": 0/1, "lid": 0/1, "pin_wake": bool,
# "reset": true = a power cut before this wake) and optional "cfg" settings for config().
import json
import sys

from fwkit import config, make_app
from scripted_board import Board, Slept

from kerbline import bin_cycle

wakes = json.loads(sys.argv[1])
settings = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
board = Board({})
for i, wake in enumerate(wakes):
    if wake.get("power_cut"):
        board.rtc = None
        board.cause = "power"
    board.echo = list(wake.get("echo", [5830]))
    board.temp[4] = wake.get("temp", 320)
    board.adc[34] = wake.get("batt", 1900)
    board.pins[27] = wake.get("tilt", 0)
    board.pins[26] = wake.get("lid", 0)
    app = make_app(board, config("bin", **settings))
    try:
        bin_cycle.run(app)
    except Slept:
        print("S " + json.dumps([board.slept[0], list(board.slept[1]), app.state.boot, app.state.seq]))
    board.wake_after_sleep(wake.get("pin_wake", False))
