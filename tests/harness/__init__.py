"""Reusable test fixtures for Kerbline: a real mosquitto broker, the real MicroPython VM, pty serial pairs.

The modules work outside pytest too (bench scripts); `tests.harness.plugin` turns them into fixtures and
is loaded by tests/conftest.py.
"""
