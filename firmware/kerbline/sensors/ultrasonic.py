"""Fill level from an ultrasonic distance sensor over the waste: HC-SR04 / JSN-SR04T.

Two ways to read it: trigger-echo (pins "trig" and "echo"; the echo pulse width timed by the board) or
the JSN-SR04T's serial mode (pins "jsn_tx"/"jsn_rx", UART 2 at 9600 baud: the device sends 0x55 and the
sensor answers 0xFF, distance high byte, low byte, checksum = low 8 bits of the sum of the other three).

A sample is `pings` readings 60 ms apart (the HC-SR04's shortest safe cycle). Timeouts are dropped; a
majority must answer, else the sample is a fault ("no echo"). The median of the answers is the centre;
readings further than `tol_mm` from it are outliers (a fly, a reflection off the wall); a majority of
inliers must remain ("noisy") and their median is the sample. The distance must lie within
[min_mm, max_mm] ("out of range"). A sensor that gives exactly the same raw value on every ping, sample
after sample (`stuck_n` samples), is wet or broken: a real echo always jitters by a few microseconds
("stuck"). Every fault is a `sensor_fault` alarm and no fill value.

Speed of sound: c = 331.3 m/s + 0.606 m/s per degC, from the enclosure temperature in 1/16 degC, all in
integers: distance_mm = echo_us * (c_mm_s >> 4) // 125000, which stays below 2**30 for any echo up to
the HC-SR04's 38 ms no-echo pulse. The JSN-SR04T in serial mode converts with its own fixed speed.

fill % = 100 - (distance - offset_mm) * 100 / depth_mm, rounded, clamped to 0..100: offset_mm is the
sensor's height above the full level, depth_mm the depth from the full level to the bottom.
"""
from kerbline.compat import const

_GAP_MS = const(60)
_JSN_UART = const(2)
_JSN_BAUD = const(9600)
_JSN_TRIGGER = b"\x55"
_DEFAULT_T16 = const(320)  # 20 degC, used when the enclosure temperature is unknown


def sound_mm_s(t16):
    """Speed of sound in mm/s at t16 sixteenths of a degC."""
    return 331300 + 606 * t16 // 16


def echo_to_mm(echo_us, t16):
    return echo_us * (sound_mm_s(t16) >> 4) // 125000


def mm_to_echo(mm, t16):
    return mm * 125000 // (sound_mm_s(t16) >> 4)


def fill_percent(dist_mm, offset_mm, depth_mm):
    empty = dist_mm - offset_mm
    fill = 100 - (empty * 100 + depth_mm // 2) // depth_mm
    return 0 if fill < 0 else 100 if fill > 100 else fill


def jsn_frame_mm(data):
    """The distance in the last valid 4-byte frame within `data`, or None."""
    found = None
    for i in range(len(data) - 3):
        if data[i] == 0xFF and (0xFF + data[i + 1] + data[i + 2]) & 0xFF == data[i + 3]:
            found = data[i + 1] << 8 | data[i + 2]
    return found


class Sonar:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        pins = cfg["pins"]
        self._trig = pins.get("trig")
        self._echo = pins.get("echo")
        self._port = None
        if self._trig is None:
            self._port = board.uart(_JSN_UART, _JSN_BAUD, pins["jsn_tx"], pins["jsn_rx"])
        self.last = 0  # stuck detector: raw value of the last sample and how many samples repeated it
        self.same = 0
        self.fault = None

    def _ping_raw(self, timeout_us):
        """One reading: echo us (trigger-echo) or mm (serial), None when nothing came back."""
        if self._port is None:
            return self.board.ultrasonic_echo_us(self._trig, self._echo, timeout_us)
        port = self._port
        while port.read(64):  # drop stale bytes so only the answer to this trigger counts
            pass
        port.write(_JSN_TRIGGER)
        self.board.sleep_ms(_GAP_MS)
        return jsn_frame_mm(port.read(16) or b"")

    def sample(self, t16=None):
        """(distance mm, fill %) or None with `fault` set to why."""
        cfg = self.cfg
        t16 = _DEFAULT_T16 if t16 is None else t16
        serial = self._port is not None
        tol = cfg["tol_mm"] if serial else mm_to_echo(cfg["tol_mm"], t16)
        timeout = mm_to_echo(cfg["max_mm"] + cfg["max_mm"] // 8, t16)  # 1/8 margin past the farthest
        n = cfg["pings"]
        need = n // 2 + 1
        readings = []
        for i in range(n):
            if i and not serial:
                self.board.sleep_ms(_GAP_MS)
            raw = self._ping_raw(timeout)
            if raw is not None:
                readings.append(raw)
        self.fault = None
        if len(readings) < need:
            return self._fail("no echo")
        readings.sort()
        centre = readings[len(readings) // 2]
        inliers = [r for r in readings if -tol <= r - centre <= tol]
        if len(inliers) < need:
            return self._fail("noisy")
        raw = inliers[len(inliers) // 2]
        if inliers[0] == inliers[-1] and raw == self.last:
            self.same += 1
        else:
            self.same = 0
        self.last = raw
        if self.same >= cfg["stuck_n"] - 1:
            return self._fail("stuck")
        dist = raw if serial else echo_to_mm(raw, t16)
        if not cfg["min_mm"] <= dist <= cfg["max_mm"]:
            return self._fail("out of range")
        return dist, fill_percent(dist, cfg["offset_mm"], cfg["depth_mm"])

    def _fail(self, why):
        self.fault = "sonar: " + why
        return None
