"""The fleet: thousands of simulated MQTT devices in one CPython process running the firmware's own logic.

`board` (the `sim` board with the sensor server in-process), `device` (one device: the firmware's App,
bin sampling and light loop, stepped by the fleet), `mqtt` (a lean asyncio MQTT client with pipelined
QoS 1), `fleet` (the event heap over devices and faults, and the MQTT side). docs/simulator.md, "Fleets".
"""
from simulator.fleet.fleet import Fleet, FleetStats

__all__ = ["Fleet", "FleetStats"]
