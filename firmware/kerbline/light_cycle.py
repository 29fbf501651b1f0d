"""The streetlight's cycle: always on, sampling every `sample_s`, lighting the lamp on its own.

Each sample: ambient light (BH1750, else the LDR), the lamp level from it and the local time
(`sensors.lamp.LampControl`), applied to the relay/PWM at once; then the lamp's volts, current, power and
energy (when the meter is wired), the enclosure temperature (when wired). A report goes out when the lamp
changed (on/off or level), when an alarm is raised, when the gateway pings, and every `report_s`
otherwise. The link is polled between samples, and nothing here waits for it: with no gateway at all
the lamp is still driven and the reports wait in the bounded flash queue.

Alarms: lamp_fail (see PowerMeter.failed), sensor_fault (a light sensor failed, even when the LDR stood
in; the DS18B20 when wired), fire as for the bin (temp >= fire_at until < fire_at - 5 degC).

The watchdog is fed once per loop turn, after the sample (when due) and the link poll have returned: a
loop stuck anywhere stops feeding it. After `healthy_s` of running the crash count is cleared.
"""
from kerbline.compat import const
from kerbline.sensors.lamp import LampControl, PowerMeter, drive
from kerbline.sensors.light import LightSensor

_LOOP_MS = const(50)


class Light:
    def __init__(self, app):
        self.app = app
        board = app.board
        cfg = app.cfg
        pins = cfg["pins"]
        self.sensor = LightSensor(board, cfg)
        self.control = LampControl(cfg)
        self.meter = PowerMeter(board, cfg) if "volt" in pins and "curr" in pins else None
        self.level = None  # applied at the last sample
        self.records = None  # of the last sample

    def sample(self, dt_ms):
        """Sample, drive the lamp; returns (lamp changed, alarm raised) and keeps `records`."""
        app = self.app
        board = app.board
        cfg = app.cfg
        pins = cfg["pins"]
        lux = self.sensor.lux()
        t = board.unix_time()
        minute = None if t is None else (t // 60 + cfg["tz_min"]) % 1440
        level = self.control.level(lux, minute)
        steady = level == self.level
        if not steady:
            drive(board, pins, level)
        records = []
        active = []
        if lux is not None:
            records.append(("lux", lux))
        if self.sensor.fault:
            active.append("sensor_fault")
        records.append(("lamp", level > 0))
        records.append(("dim", level))
        if self.meter is not None:
            volt, curr, power = self.meter.read(dt_ms)
            records.append(("power", power))
            records.append(("volt", volt))
            records.append(("curr", curr))
            records.append(("energy", self.meter.wh))
            if self.meter.failed(level, curr, steady):
                active.append("lamp_fail")
        if "temp" in pins:
            t16 = board.temp_16(pins["temp"])
            if t16 is None:
                active.append("sensor_fault")
            else:
                records.append(("temp", t16 / 16))
                fire16 = cfg["fire_at"] * 16
                if t16 >= fire16 or (app.was("fire") and t16 >= fire16 - 80):
                    active.append("fire")
        fault = "sensor_fault" in active and not app.was("sensor_fault")
        raised = app.alarm_records(active, records)
        if fault:
            app.log("light: sensor fault: %s" % (self.sensor.fault or "DS18B20 silent"))
        self.level = level
        self.records = records
        return not steady, raised


def run(app):
    board = app.board
    cfg = app.cfg
    app.poll_link()  # the link's buffers first, while the heap is in one piece
    light = Light(app)
    wdt = board.watchdog(cfg["wdt_ms"])
    start = board.ticks_ms()
    sampled = reported = None
    while True:
        now = board.ticks_ms()
        if sampled is None or board.ticks_diff(now, sampled) >= cfg["sample_s"] * 1000:
            changed, raised = light.sample(0 if sampled is None else board.ticks_diff(now, sampled))
            sampled = now
            due = reported is None or board.ticks_diff(now, reported) >= cfg["report_s"] * 1000
            if changed or raised or due or app.ping:
                app.send(light.records, raised)
                app.ping = False
                reported = now
        elif app.ping:
            app.send(light.records)
            app.ping = False
        app.poll_link()
        if app.reboot:
            board.reset()
        wdt.feed()
        if app.crashes and board.ticks_diff(now, start) >= cfg["healthy_s"] * 1000:
            app.healthy()
        board.sleep_ms(_LOOP_MS)
