"""CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).

A 16-entry nibble table trades a little speed for a fraction of the RAM of a 256-entry byte table.
Check value: crc16(b"123456789") == 0x29B1.
"""
from kerbline.compat import const

_MASK = const(0xFFFF)
# CRC of each nibble value shifted through poly 0x1021 (tests/firmware check the whole function against
# binascii.crc_hqx, so a wrong entry cannot go unnoticed); a literal costs no code at import.
_TABLE = (0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
          0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF)


def crc16(data, crc=_MASK):
    """CRC of `data` (any buffer); pass a previous result as `crc` to continue over several pieces."""
    table = _TABLE
    for byte in data:
        crc = ((crc << 4) & _MASK) ^ table[(crc >> 12) ^ (byte >> 4)]
        crc = ((crc << 4) & _MASK) ^ table[(crc >> 12) ^ (byte & 0x0F)]
    return crc
