"""A bin sensor's battery: one Li-ion cell, drained by sleep, wakes and reports, charged by a solar panel.

State of charge (SoC) is integrated in milliamp-seconds; the terminal voltage is the cell's open-circuit
voltage at that SoC (load sag is ignored: the device reads its battery while asleep-ish). The OCV curve is
a typical 1S lithium-ion (NMC/LCO) discharge curve, 3.0 V empty to 4.18 V full, as seen in common 18650
datasheets; it is a shape, not any one cell's data.

Solar charge: the panel's rated power (at 1000 W/m2) times the site's irradiance, times a per-bin shading
factor (trees, buildings, the panel's tilt), through a charger of 80 % efficiency, converted to charge at
the cell's present voltage. Charge stops at full; at empty the SoC stays at 0 (the device browns out).
"""

from __future__ import annotations

from simulator.world.sky import Sky

CHARGER_EFFICIENCY = 0.8
STC_IRRADIANCE = 1000.0  # W/m2 at which panels are rated
# (state of charge, open-circuit millivolts)
_OCV = (
    (0.00, 3000.0), (0.05, 3300.0), (0.10, 3450.0), (0.20, 3560.0), (0.30, 3620.0), (0.40, 3670.0),
    (0.50, 3720.0), (0.60, 3780.0), (0.70, 3860.0), (0.80, 3950.0), (0.90, 4060.0), (1.00, 4180.0),
)
_OCV_STEP = 0.1


def ocv_mv(soc: float) -> float:
    """Open-circuit voltage (mV) of the cell at a state of charge in [0, 1]."""
    if soc <= 0.0:
        return _OCV[0][1]
    if soc >= 1.0:
        return _OCV[-1][1]
    if soc < 0.1:
        (s0, v0), (s1, v1) = (_OCV[0], _OCV[1]) if soc < 0.05 else (_OCV[1], _OCV[2])
    else:
        i = int(soc / _OCV_STEP) + 1  # table rows 2.. are every 0.1 from 0.1
        (s0, v0), (s1, v1) = _OCV[i], _OCV[min(i + 1, len(_OCV) - 1)]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0) if s1 > s0 else v0


class Battery:
    """Charge bookkeeping between samples. `advance(t)` integrates sleep drain and solar charge to t."""

    __slots__ = ("_sky", "_cap_mas", "_sleep_ma", "_panel_w", "_charge", "_t", "_mv", "_mv_charge")

    def __init__(self, sky: Sky, capacity_mah: float, soc: float, sleep_ua: float, panel_w: float,
                 shading: float, t: float) -> None:
        self._sky = sky
        self._cap_mas = capacity_mah * 3600.0
        self._sleep_ma = sleep_ua / 1000.0
        self._panel_w = panel_w * shading / STC_IRRADIANCE * CHARGER_EFFICIENCY  # W per (W/m2)
        self._charge = soc * self._cap_mas
        self._t = t
        self._mv_charge = -1.0  # the charge at which _mv was computed
        self._mv = 0.0

    @property
    def soc(self) -> float:
        return self._charge / self._cap_mas

    @property
    def mv(self) -> float:
        """Terminal voltage (mV); cached while the charge does not change."""
        if self._charge != self._mv_charge:
            self._mv_charge = self._charge
            self._mv = ocv_mv(self._charge / self._cap_mas)
        return self._mv

    def advance(self, t: float) -> None:
        """Integrate from the last instant to t: sleep current out, solar charge in."""
        dt = t - self._t
        if dt <= 0.0:
            return
        solar_j = self._sky.insolation(self._t, t) * self._panel_w
        # charge (mAs) = energy (J) / volts * 1000; the cell's voltage at the start of the step
        gained = solar_j * 1e6 / self.mv if solar_j > 0.0 else 0.0
        self._t = t
        self._add(gained - self._sleep_ma * dt)

    def draw(self, mas: float) -> None:
        """Take a burst of charge (a wake, a radio report), in milliamp-seconds."""
        self._add(-mas)

    def _add(self, mas: float) -> None:
        c = self._charge + mas
        self._charge = 0.0 if c < 0.0 else self._cap_mas if c > self._cap_mas else c
