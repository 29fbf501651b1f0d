"""The bin's cycle: wake, sample, report, deliver, deep sleep; then the next wake is a new run.

One run: take a sample (sensors powered through the "power" pin's load switch when wired; enclosure
temperature first, for the speed of sound; then the sonar unless the lid is open; battery; tilt and lid
switches) and queue its report. Stay awake while the link delivers
what the queue holds, at most `wake_s`, and at most 8 s with nothing acked (the gateway is away: a bin
must not spend its battery waiting; what is left waits on flash for the next wake); answer a `ping`
with a fresh sample; honour `reboot`. Then save boot, seq, alarms and the sonar's stuck detector to RTC
memory, mark the run healthy for the crash counter, and deep sleep for the rest of `interval`.

Early wake: the tilt and lid switches (wired active-high) wake the board from deep sleep; a switch
already active when the bin goes to sleep is left out of the wake pins, or a bin lying on its side would
wake again at once and drain its battery. A wake by pin samples and reports at once, like any wake.

Alarms, with hysteresis so a value at a threshold does not flap: full at fill >= full_at until fill
< full_at - 10; fire at temp >= fire_at until < fire_at - 5 degC; lowbatt at batt < lowbatt_mv until
>= lowbatt_mv + 100; tilt while the switch is active; sensor_fault while a sensor failed this sample
(the sonar; the DS18B20 when wired: the distance then uses 20 degC).
"""
from kerbline.compat import const
from kerbline.mem import drop
from kerbline.sensors import scaled

_LOOP_MS = const(20)
_SETTLE_MS = const(50)  # sensors powered up before the first reading
_STALL_MS = const(8000)  # awake with nothing acked this long: give up until the next wake


def _sonar(app, t16):
    """(distance, fill) or None (logged); the stuck detector's state lives in app.state."""
    from kerbline.sensors.ultrasonic import Sonar

    st = app.state
    sonar = Sonar(app.board, app.cfg)
    sonar.last = st.sonar_last
    sonar.same = st.sonar_same
    got = sonar.sample(t16)
    st.sonar_last = sonar.last
    st.sonar_same = sonar.same
    if got is None:
        app.log(sonar.fault)
    return got


def sample(app):
    """(records, whether an alarm was raised) for one sample; the sonar's code is dropped afterwards."""
    board = app.board
    cfg = app.cfg
    pins = cfg["pins"]
    if "power" in pins:  # the sensors' load switch: on only while sampling (an HC-SR04 idles at 2 mA)
        board.set_relay(pins["power"], True)
        board.sleep_ms(_SETTLE_MS)
    records = []
    active = []
    t16 = None
    if "temp" in pins:
        t16 = board.temp_16(pins["temp"])
        if t16 is None:
            active.append("sensor_fault")
            app.log("temp: no answer from the DS18B20")
    lid = "lid" in pins and board.pin_value(pins["lid"]) == 1
    if lid:
        if app.was("full"):  # no measurement with the lid open: the full alarm stands as it was
            active.append("full")
    else:
        got = _sonar(app, t16)
        drop("kerbline.sensors.ultrasonic")
        if got is None:
            active.append("sensor_fault")
        else:
            dist, fill = got
            records.append(("fill", fill))
            records.append(("dist", dist))
            full_at = cfg["full_at"]
            if fill >= full_at or (app.was("full") and fill >= full_at - 10):
                active.append("full")
    if t16 is not None:
        records.append(("temp", t16 / 16))
        fire16 = cfg["fire_at"] * 16
        if t16 >= fire16 or (app.was("fire") and t16 >= fire16 - 80):
            active.append("fire")
    if "batt" in pins:
        mv = scaled(board.adc_mv(pins["batt"]), cfg["batt_gain"])
        records.append(("batt", mv))
        low = cfg["lowbatt_mv"]
        if mv < low or (app.was("lowbatt") and mv < low + 100):
            active.append("lowbatt")
    if "tilt" in pins and board.pin_value(pins["tilt"]) == 1:
        records.append(("tilt", True))
        active.append("tilt")
    if lid:
        records.append(("lid", True))
    if "power" in pins:
        board.set_relay(pins["power"], False)
    return records, app.alarm_records(active, records)


def report(app):
    records, raised = sample(app)
    return app.send(records, raised)


def run(app):
    board = app.board
    cfg = app.cfg
    pins = cfg["pins"]
    wdt = board.watchdog(cfg["wdt_ms"])
    start = board.ticks_ms()
    app.poll_link()  # the link first: its buffers find room before sampling leaves the heap in pieces
    report(app)
    wdt.feed()
    waiting = len(app.queue)
    moved = board.ticks_ms()  # when the queue last got shorter
    while waiting and board.ticks_diff(board.ticks_ms(), start) < cfg["wake_s"] * 1000:
        if board.ticks_diff(board.ticks_ms(), moved) >= _STALL_MS:
            break  # nothing acked for a while: the gateway is away; the reports wait on flash
        app.poll_link()
        if app.reboot:
            board.reset()
        if app.ping:
            app.ping = False
            report(app)
        if len(app.queue) < waiting:
            moved = board.ticks_ms()
        waiting = len(app.queue)
        wdt.feed()
        board.sleep_ms(_LOOP_MS)
    app.save()
    app.healthy()
    awake = board.ticks_diff(board.ticks_ms(), start)
    wake = [pins[name] for name in ("tilt", "lid") if name in pins and board.pin_value(pins[name]) == 0]
    board.deep_sleep(max(1000, cfg["interval"] * 1000 - awake), wake)
