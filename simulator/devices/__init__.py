"""Simulated devices: the hardware behind faithful devices (sensor_server) and the fleet."""
