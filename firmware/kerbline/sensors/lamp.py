"""The streetlight's lamp: when to light it and how bright, and what it draws.

Control (`LampControl.level`), evaluated at every sample:
- With a light reading: the lamp goes on when lux < lux_on and off when lux > lux_off (lux_on < lux_off:
  hysteresis), and only after `switch_n` samples in a row agree, so headlights or a passing cloud do
  not switch it. The first reading after boot decides at once (on below the middle of the band).
- Without one (every light sensor failed): fail safe by the clock, on from dark_start to dark_end local
  time; with no clock either, on (a dark street is worse than a lit one by day).
- Level when on: night_dim during the night window [night_start, night_end) local time, else dim.
  Windows may wrap midnight; start == end is an empty window. No clock: no night window.
The level is applied through a relay (pin "relay": on when level > 0) and/or PWM (pin "pwm", a dimming
driver's input: duty = level * 1023 / 100).

Metering (`PowerMeter`): lamp voltage and current on the ADC (after an RMS converter / a DC driver's
shunt), scaled by volt_gain and curr_gain/curr_zero_mv: V, mA, W = V * mA / 1000, and energy in Wh
since boot, accumulated in mJ per sample so integer rounding never adds up. `lamp_fail` is the lamp
drawing less than lamp_min_ma while on, or at least that much while off (a welded relay), once the
level has been steady for one sample (the driver's soft start is not a fault).
"""
from kerbline.compat import const
from kerbline.sensors import scaled

_MJ_PER_WH = const(3600000)


def in_window(minute, start, end):
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


class LampControl:
    def __init__(self, cfg):
        self.cfg = cfg
        self.on = None  # None until the first decision
        self.count = 0

    def level(self, lux, minute):
        """Lamp level 0..100 for this sample; `minute` is the local minute of day or None."""
        cfg = self.cfg
        if lux is None:
            self.count = 0
            self.on = True if minute is None else in_window(minute, cfg["dark_start"], cfg["dark_end"])
        elif self.on is None:
            self.on = lux < (cfg["lux_on"] + cfg["lux_off"]) // 2
        else:
            past = lux > cfg["lux_off"] if self.on else lux < cfg["lux_on"]
            self.count = self.count + 1 if past else 0
            if self.count >= cfg["switch_n"]:
                self.on = not self.on
                self.count = 0
        if not self.on:
            return 0
        if minute is not None and in_window(minute, cfg["night_start"], cfg["night_end"]):
            return cfg["night_dim"]
        return cfg["dim"]


def drive(board, pins, level):
    """Apply a level to the relay and/or the PWM dimming input."""
    if "relay" in pins:
        board.set_relay(pins["relay"], level > 0)
    if "pwm" in pins:
        board.set_pwm(pins["pwm"], level * 1023 // 100)


class PowerMeter:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        self.wh = 0
        self._mj = 0  # energy not yet a whole Wh

    def read(self, dt_ms):
        """(volt V, curr mA, power W) now, adding the energy of the last dt_ms at this power."""
        cfg = self.cfg
        pins = cfg["pins"]
        volt = scaled(self.board.adc_mv(pins["volt"]), cfg["volt_gain"])
        curr = scaled(self.board.adc_mv(pins["curr"]), cfg["curr_gain"], cfg["curr_zero_mv"])
        mw = volt * curr
        # mW * ms / 1000 = mJ, split in whole seconds and the rest so no product passes 2**30
        self._mj += mw * (dt_ms // 1000) + mw * (dt_ms % 1000) // 1000
        if self._mj >= _MJ_PER_WH:
            self.wh += self._mj // _MJ_PER_WH
            self._mj %= _MJ_PER_WH
        return volt, curr, (mw + 500) // 1000

    def failed(self, level, curr, steady):
        """lamp_fail: current that does not match the lamp's state, once the state has settled."""
        if not steady:
            return False
        return (curr < self.cfg["lamp_min_ma"]) if level > 0 else (curr >= self.cfg["lamp_min_ma"])
