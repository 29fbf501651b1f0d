"""CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).

A 16-entry nibble table trades a little speed for 32 bytes of RAM instead of a 512-byte byte table;
it is built at import so no hand-typed constants can be wrong. Check value: crc16(b"123456789") == 0x29B1.
"""
from kerbline.compat import const

_POLY = const(0x1021)
_MASK = const(0xFFFF)


def _nibble_table():
    table = []
    for nibble in range(16):
        crc = nibble << 12
        for _ in range(4):
            crc = ((crc << 1) ^ _POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & _MASK)
    return tuple(table)


_TABLE = _nibble_table()


def crc16(data, crc=_MASK):
    """CRC of `data` (any buffer); pass a previous result as `crc` to continue over several pieces."""
    table = _TABLE
    for byte in data:
        crc = ((crc << 4) & _MASK) ^ table[(crc >> 12) ^ (byte >> 4)]
        crc = ((crc << 4) & _MASK) ^ table[(crc >> 12) ^ (byte & 0x0F)]
    return crc
