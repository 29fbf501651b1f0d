"""Kerbline gateway: the CPython asyncio service between the street devices and the city platform.

Subpackages follow the data path: `wire` (the wire contract: framing, COSE, typed reports and
commands), then ingest, verify, spool, upstream, devices and service; `tools` holds the technician's
command-line tools.
"""
