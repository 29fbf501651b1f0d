"""Kerbline device application (MicroPython; the same modules run on CPython in the simulator)."""
