"""The simulated street's physics, faults and ground truth.

Start from a scenario and build a `World`::

    from simulator.scenario import builtin_scenario
    from simulator.world import World, TruthLog

    scenario = builtin_scenario("demo")
    with TruthLog("truth.jsonl") as truth:
        world = World(scenario, truth)
        bin_model = world.bin("bin-0001")
        s = bin_model.sample(scenario.start + 900)       # BinSample: fill, dist_mm, temp_c, batt_mv, ...
        dist = world.sensor("bin-0001", "dist").read(s.dist_mm, s.t)   # may raise SensorError
        bin_model.reported(s.t)                          # the radio's charge
        lamp = world.light("lamp-0001")
        lamp.set_output(s.t, on=True, dim=0.8)
        l = lamp.sample(s.t + 60)                        # LightSample: lux, power_w, curr_ma, ...
        events = world.faults.device("bin-0001").pop_due(s.t)   # LinkEvents for the link layer

The modules: `solar` (NOAA sun position), `sky` (daylight, clouds, irradiance, air temperature),
`localtime` (civil time, weekly schedules), `bins`, `battery`, `lamps`, `sensors` (fault wrappers),
`links` (link and power fault schedule), `truth` (ground-truth log), `clock` (stepped or paced time),
`rng` (seeded streams). docs/simulator.md, "The world", gives each model's parameters and sources.
"""

from simulator.world.bins import BinModel, BinSample
from simulator.world.clock import Scheduler, SimClock
from simulator.world.lamps import LampModel, LightSample
from simulator.world.links import EventStream, FaultSchedule, LinkEvent
from simulator.world.sensors import BusError, NoEcho, Sensor, SensorError
from simulator.world.sky import Sky
from simulator.world.solar import sun_elevation, sunrise_sunset
from simulator.world.truth import TruthLog, TruthRecord, read_truth
from simulator.world.world import World

__all__ = [
    "BinModel", "BinSample", "BusError", "EventStream", "FaultSchedule", "LampModel", "LightSample",
    "LinkEvent", "NoEcho", "Scheduler", "Sensor", "SensorError", "SimClock", "Sky", "TruthLog",
    "TruthRecord", "World", "read_truth", "sun_elevation", "sunrise_sunset",
]
