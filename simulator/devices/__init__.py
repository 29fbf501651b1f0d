"""Simulated devices, one MicroPython process each ("faithful"): what a board is, without the board.

`sensor_server` (the hardware behind every simulated device: sensors and outputs by line protocol),
`provision` (keys, configs matching the world, flash directories, the gateway's registry), `runner` (one
device's boot loop and power supply), `faithful` (a street of them on the world, with links and faults),
`mpy/device_main.py` (the first code each process runs). The fleet (`simulator.fleet`) runs the same
firmware logic for thousands of devices in one process. docs/simulator.md, "Devices".
"""
