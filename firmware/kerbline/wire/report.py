"""Reports: the CBOR map a device sends, with its readings as SenML records (RFC 8428 CBOR labels).

Building writes the deterministic encoding directly (keys are emitted in sorted order by construction),
so a report costs one bytearray and no intermediate dicts. Values are already quantized by the caller
to an integer or a float exact in float16/float32 (the ESP32 has 32-bit floats); an integral float is
sent as an integer, the shortest exact form.

Checking a received report is `kerbline.wire.report_parse`, which a device never imports.
"""
from kerbline.compat import const
from kerbline.wire import cbor

VERSION = const(1)
MAX_RECORDS = const(32)

# report keys
K_VERSION = const(1)
K_BOOT = const(2)
K_SEQ = const(3)
K_TIME = const(4)
K_UPTIME = const(5)
K_RECORDS = const(6)
# SenML CBOR labels
L_BASE_NAME = const(-2)
L_BASE_TIME = const(-3)
L_BASE_UNIT = const(-4)
L_NAME = const(0)
L_UNIT = const(1)
L_VALUE = const(2)
L_STRING = const(3)
L_BOOL = const(4)
L_SUM = const(5)
L_TIME = const(6)

_UINT = const(0)
_ARRAY = const(4)
_MAP = const(5)



def _value_label(value):
    if isinstance(value, bool):
        return L_BOOL
    if isinstance(value, str):
        return L_STRING
    return L_VALUE


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
    if not 1 <= len(records) <= MAX_RECORDS:
        raise ValueError("1 to 32 records")
    if time is None and uptime is None:
        raise ValueError("time or uptime needed")
    out = bytearray(cbor.head(_MAP, 4 + (time is not None) + (uptime is not None)))
    for key, value in ((K_VERSION, VERSION), (K_BOOT, boot), (K_SEQ, seq), (K_TIME, time), (K_UPTIME, uptime)):
        if value is not None:
            out.append(key)
            out.extend(cbor.head(_UINT, value))
    out.append(K_RECORDS)
    out.extend(cbor.head(_ARRAY, len(records)))
    for record in records:
        offset = record[2] if len(record) > 2 else None
        out.extend(cbor.head(_MAP, 2 if offset is None else 3))
        out.append(L_NAME)
        cbor.encode_into(out, record[0])
        value = record[1]
        out.append(_value_label(value))
        cbor.encode_into(out, _number(value))
        if offset is not None:
            out.append(L_TIME)
            cbor.encode_into(out, _number(offset))
    return bytes(out)
