"""Ambient light: a BH1750 on I2C, with an LDR on the ADC as the fallback.

BH1750 (address 0x23): each sample is a one-time high-resolution measurement (the chip powers down
after it, and a bus glitch cannot leave it in a wrong continuous mode). Automatic range through the
measurement-time register MTreg, stepped over 31, 69 (the default), 254:
  lux = count / 1.2 * 69 / MTreg = count * 345 / (6 * MTreg), rounded to the nearest lx
so MTreg 254 resolves 0.23 lx up to 14,800 lx (dusk, where the lamp decides), 69 gives 1 lx up to
54,600 lx and 31 reaches 121,000 lx (full sun). A count near saturation (>= 60000) steps down and
measures again at once, a count under 500 steps up and measures again; at most two steps per sample,
and the chosen MTreg is kept for the next sample. Measurement time is 180 ms * MTreg / 69 at most.

A bus error (OSError: NACK, timeout) is retried `i2c_tries` times in all, 10 ms apart; then the BH1750
is faulty for this sample: `fault` is set (a `sensor_fault` alarm) and the LDR, when wired, gives the
reading. The LDR's curve is a table of (ADC mV, lux) points (config "ldr_table"), interpolated
linearly: coarse, but good enough to switch a lamp at dusk.
"""
from kerbline.compat import const

ADDR = const(0x23)
_POWER_ON = const(0x01)
_ONE_TIME_H = const(0x20)
_MT_HIGH = const(0x40)
_MT_LOW = const(0x60)
_SATURATED = const(60000)
_DARK = const(500)
MT_STEPS = (31, 69, 254)


def bh1750_lux(count, mt):
    return (count * 345 + 3 * mt) // (6 * mt)  # rounded to the nearest lx


def ldr_lux(mv, table):
    """Lux for an LDR reading by linear interpolation in the (mV, lux) table; clamped at its ends."""
    if mv <= table[0][0]:
        return table[0][1]
    for i in range(1, len(table)):
        m1, l1 = table[i]
        if mv <= m1:
            m0, l0 = table[i - 1]
            return l0 + (l1 - l0) * (mv - m0) // (m1 - m0)
    return table[-1][1]


class Bh1750:
    def __init__(self, board, tries):
        self.board = board
        self.tries = tries
        self._cmd = bytearray(1)
        self.step = 1  # index in MT_STEPS
        self.errors = 0  # bus errors since boot

    def _send(self, byte):
        self._cmd[0] = byte
        self.board.i2c_write(ADDR, self._cmd)

    def _measure(self):
        mt = MT_STEPS[self.step]
        board = self.board
        for attempt in range(self.tries):
            try:
                self._send(_POWER_ON)
                self._send(_MT_HIGH | mt >> 5)
                self._send(_MT_LOW | mt & 0x1F)
                self._send(_ONE_TIME_H)
                board.sleep_ms(180 * mt // 69 + 1)
                data = board.i2c_read(ADDR, 2)
                return data[0] << 8 | data[1]
            except OSError:
                self.errors += 1
                board.sleep_ms(10)
        return None

    def lux(self):
        """Lux, or None after `tries` failed attempts."""
        count = self._measure()
        for _ in range(2):
            if count is None:
                return None
            if count >= _SATURATED and self.step > 0:
                self.step -= 1
            elif count < _DARK and self.step < len(MT_STEPS) - 1:
                self.step += 1
            else:
                break
            count = self._measure()
        return None if count is None else bh1750_lux(count, MT_STEPS[self.step])


class LightSensor:
    """The BH1750 when wired (pins scl/sda), else or on its failure the LDR (pin ldr)."""

    def __init__(self, board, cfg):
        pins = cfg["pins"]
        self.board = board
        self._ldr = pins.get("ldr")
        self._table = cfg["ldr_table"]
        self.bh = Bh1750(board, cfg["i2c_tries"]) if "scl" in pins else None
        self.fault = None

    def lux(self):
        """Lux or None; `fault` names a sensor that failed (also when the LDR stood in for it)."""
        self.fault = None
        if self.bh is not None:
            lux = self.bh.lux()
            if lux is not None:
                return lux
            self.fault = "bh1750: no answer on I2C"
        if self._ldr is not None:
            return ldr_lux(self.board.adc_mv(self._ldr), self._table)
        if self.fault is None:
            self.fault = "no light sensor wired"
        return None
