"""The street without hardware.

`simulator.world` is the physics (bins filling, daylight, lamps ageing, enclosure temperature, batteries),
the faults seen in the field and the ground-truth log; `simulator.scenario` reads the TOML scenarios that
say which street to build. Devices, fleets, virtual links and the virtual board are built on top of them.
"""
