"""Reports: the CBOR map a device sends, with its readings as SenML records (RFC 8428 CBOR labels).

Building writes the deterministic encoding directly (keys are emitted in sorted order by construction),
so a report costs one bytearray and no intermediate dicts. Values are already quantized by the caller
to an integer or a float exact in float16/float32 (the ESP32 has 32-bit floats); an integral float is
sent as an integer, the shortest exact form.

Checking a received report is `kerbline.wire.report_parse`, which a device never imports.
"""
from kerbline.compat import const
from kerbline.wire import cbor

# Private consts, so the compiler inlines them and no name (a qstr each) is left on the board;
# kerbline.wire.report_parse declares the same labels for the checking side (the vectors hold both to the
# contract).
_VERSION = const(1)
_MAX_RECORDS = const(32)

# report keys
_K_VERSION = const(1)
_K_BOOT = const(2)
_K_SEQ = const(3)
_K_TIME = const(4)
_K_UPTIME = const(5)
_K_RECORDS = const(6)
# SenML CBOR labels
_L_BASE_NAME = const(-2)
_L_BASE_TIME = const(-3)
_L_BASE_UNIT = const(-4)
_L_NAME = const(0)
_L_UNIT = const(1)
_L_VALUE = const(2)
_L_STRING = const(3)
_L_BOOL = const(4)
_L_SUM = const(5)
_L_TIME = const(6)

_UINT = const(0)
_ARRAY = const(4)
_MAP = const(5)



def _value_label(value):
    if isinstance(value, bool):
        return _L_BOOL
    if isinstance(value, str):
        return _L_STRING
    return _L_VALUE


def _number(value):
    """The shortest exact form of a reading: integral floats become ints; NaN and infinities are refused."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("reading is not a finite number")
        # below 2**53 every integral float is an exact int; beyond, the float is already the shortest form
        if -9.007199254740992e15 <= value <= 9.007199254740992e15 and value == int(value):
            return int(value)
    return value


def encode(boot, seq, records, time=None, uptime=None):
    """The report payload.

    `records`: a list of (name, value) or (name, value, t_offset) tuples; value is a number (v), a str
    (vs) or a bool (vb). `time` is unix seconds when the clock is set, else `uptime` (ms) is given.
    """
    if not 1 <= len(records) <= _MAX_RECORDS:
        raise ValueError("1 to 32 records")
    if time is None and uptime is None:
        raise ValueError("time or uptime needed")
    w = cbor.writer()
    w.head(_MAP, 4 + (time is not None) + (uptime is not None))
    _put_uint(w, _K_VERSION, _VERSION)
    _put_uint(w, _K_BOOT, boot)
    _put_uint(w, _K_SEQ, seq)
    _put_uint(w, _K_TIME, time)
    _put_uint(w, _K_UPTIME, uptime)
    w.byte(_K_RECORDS)
    w.head(_ARRAY, len(records))
    for record in records:
        offset = record[2] if len(record) > 2 else None
        w.head(_MAP, 2 if offset is None else 3)
        w.byte(_L_NAME)
        w.value(record[0])
        value = record[1]
        w.byte(_value_label(value))
        w.value(_number(value))
        if offset is not None:
            w.byte(_L_TIME)
            w.value(_number(offset))
    return w.getvalue()


def _put_uint(w, key, value):
    if value is not None:
        w.byte(key)
        w.head(_UINT, value)
