"""Sensors: readings from the board layer, filtered and quantized to the units of docs/protocol.md.

Each sensor is plain logic over a board object, so the tests drive it with scripted hardware. A reading
that cannot be trusted is None plus a reason (`fault`), which the application turns into an
`alarm`/`sensor_fault` record: a made-up value is never reported. Arithmetic is integer (the ESP32's
floats are 32-bit and its small ints 31-bit, so products are ordered to stay below 2**30).
"""


def scaled(mv, gain, zero=0):
    """An ADC reading turned into a quantity: (mv - zero) * gain / 1000, rounded down, never negative."""
    mv -= zero
    return mv * gain // 1000 if mv > 0 else 0
