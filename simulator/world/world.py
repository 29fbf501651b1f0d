"""The world of one scenario: its sites' skies, its bins and lamps, their sensors' faults, the link fault
schedule and the clock, all derived from the scenario and its seed.

Models are made on first use and kept, so a fleet that touches 10,000 devices pays for each once, and a
test that needs one bin builds one. Each model takes non-decreasing simulated instants; give every device
its own model (one per device id, which is what `bin()` and `light()` return).
"""

from __future__ import annotations

import random

from simulator.scenario import DeviceSpec, Scenario
from simulator.world import rng
from simulator.world.bins import BinModel
from simulator.world.clock import SimClock
from simulator.world.lamps import LampModel
from simulator.world.links import FaultSchedule
from simulator.world.localtime import LocalTime
from simulator.world.rng import SlowNoise
from simulator.world.sensors import BusErrors, Fault, Noise, Sensor, Spikes, Stuck, Timeouts
from simulator.world.sky import Sky
from simulator.world.truth import TruthLog

MAINS_KNOT_S = 600.0
SPIKE_RANGE_MM = (30.0, 400.0)  # spurious echoes come from close by: the rim, the lid, a cobweb
LIGHT_SENSORS = ("lux", "power", "volt", "curr")


class World:
    """Everything physical in a scenario. Pass a `TruthLog` to record the ground truth."""

    def __init__(self, scenario: Scenario, truth: TruthLog | None = None) -> None:
        self.scenario = scenario
        self.truth = truth
        self.devices: dict[str, DeviceSpec] = {d.id: d for d in scenario.devices}
        self.faults = FaultSchedule(scenario)
        self._skies: dict[str, Sky] = {}
        self._locals: dict[str, LocalTime] = {}
        self._mains: dict[str, SlowNoise] = {}
        self._bins: dict[str, BinModel] = {}
        self._lamps: dict[str, LampModel] = {}
        self._sensors: dict[tuple[str, str], Sensor] = {}

    def clock(self, paced: bool = False) -> SimClock:
        """A clock at the scenario's start: stepped, or paced by the scenario's time factor."""
        return SimClock(self.scenario.start, self.scenario.time_factor if paced else None)

    def sky(self, site: str) -> Sky:
        """The sky over a site (shared by all its devices)."""
        sky = self._skies.get(site)
        if sky is None:
            s = self.scenario.site(site)
            sky = self._skies[site] = Sky(
                self.scenario.seed, site, s.lat, s.lon, cloud_mean=s.cloud_mean, cloud_spread=s.cloud_spread,
                temp_mean_c=s.temp_mean_c, temp_amp_c=s.temp_amp_c,
            )
        return sky

    def local_time(self, site: str) -> LocalTime:
        lt = self._locals.get(site)
        if lt is None:
            s = self.scenario.site(site)
            lt = self._locals[site] = LocalTime(s.tz, s.lon)
        return lt

    def _spec(self, device_id: str, kind: str) -> DeviceSpec:
        spec = self.devices.get(device_id)
        if spec is None:
            raise KeyError(f"no device {device_id!r} in scenario {self.scenario.name!r}")
        if spec.kind != kind:
            raise KeyError(f"{device_id} is a {spec.kind}, not a {kind}")
        return spec

    def bin(self, device_id: str) -> BinModel:
        """The model of one bin."""
        model = self._bins.get(device_id)
        if model is None:
            spec = self._spec(device_id, "bin")
            sc = self.scenario
            site = sc.site(spec.site)
            model = self._bins[device_id] = BinModel(
                device_id=device_id, seed=sc.seed, use=spec.use or "residential", index=spec.index,
                site_bins=site.bins, params=sc.bins, collection=site.collection, sky=self.sky(spec.site),
                local=self.local_time(spec.site), link=spec.link, start=sc.start, events=sc.events,
                truth=self.truth,
            )
        return model

    def light(self, device_id: str) -> LampModel:
        """The model of one streetlight."""
        model = self._lamps.get(device_id)
        if model is None:
            spec = self._spec(device_id, "light")
            sc = self.scenario
            mains = self._mains.get(spec.site)
            if mains is None:
                mains = self._mains[spec.site] = SlowNoise(rng.derive_key(sc.seed, spec.site, "mains"), MAINS_KNOT_S)
            model = self._lamps[device_id] = LampModel(
                device_id=device_id, seed=sc.seed, params=sc.lights, spill_lux=sc.site(spec.site).spill_lux,
                sky=self.sky(spec.site), mains=mains, start=sc.start, events=sc.events, truth=self.truth,
            )
        return model

    def sensor(self, device_id: str, quantity: str) -> Sensor:
        """The fault chain in front of one quantity of a device, from the scenario's fault rates.

        Bins: `dist` (ultrasonic: wet-stuck windows, spikes, timeouts), `temp` (I2C errors, noise),
        `batt` (ADC noise). Lights: `lux` (I2C errors), `power`, `volt`, `curr` (the metering chip's I2C
        errors). Any other quantity of a known device reads clean.
        """
        key = (device_id, quantity)
        sensor = self._sensors.get(key)
        if sensor is None:
            spec = self.devices.get(device_id)
            if spec is None:
                raise KeyError(f"no device {device_id!r} in scenario {self.scenario.name!r}")
            f = self.scenario.faults
            seed = self.scenario.seed

            def r(name: str) -> random.Random:  # one stream per fault mechanism
                return rng.stream(seed, device_id, "sensor", quantity, name)

            chain: list[Fault] = []
            if spec.kind == "bin" and quantity == "dist":
                if f.wet_per_day > 0:
                    chain.append(Stuck(r("wet"), f.wet_per_day, f.wet_mean_s, self.scenario.start))
                if f.ultrasonic_spike > 0:
                    chain.append(Spikes(r("spike"), f.ultrasonic_spike, *SPIKE_RANGE_MM))
                if f.ultrasonic_timeout > 0:
                    chain.append(Timeouts(r("timeout"), f.ultrasonic_timeout))
            elif spec.kind == "bin" and quantity == "temp":
                if f.i2c_error > 0:
                    chain.append(BusErrors(r("i2c"), f.i2c_error))
                if f.temp_noise_c > 0:
                    chain.append(Noise(r("noise"), f.temp_noise_c))
            elif spec.kind == "bin" and quantity == "batt":
                if f.adc_noise_mv > 0:
                    chain.append(Noise(r("adc"), f.adc_noise_mv))
            elif spec.kind == "light" and quantity in LIGHT_SENSORS:
                if f.i2c_error > 0:
                    chain.append(BusErrors(r("i2c"), f.i2c_error))
            sensor = self._sensors[key] = Sensor(device_id, quantity, chain, self.truth)
        return sensor
