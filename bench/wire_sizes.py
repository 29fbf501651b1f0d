"""Wire sizes, .mpy sizes and MicroPython heap for one report.

Prints: each report as a COSE message and a serial frame against the same data as compact JSON with no
authentication (the baseline); the compiled size of the wire codecs; the heap MicroPython (64 KB heap,
the codecs as .mpy) uses to build, MAC and frame one bin report.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

from gateway.tools.firmware_build import build, micropython_path, mpy_size
from kerbline.wire import cose, frame, report

KEY = hashlib.sha256(b"KERBLINE FAKE TEST KEY bench").digest()
TIME = 1764345600
BIN = [("fill", 42), ("dist", 1234), ("temp", 21.5), ("batt", 3712)]
BIN_JSON = {"dev": "bin-0042", "boot": 3, "seq": 17, "time": TIME, "fill": 0.42, "dist": 1.234, "temp": 21.5, "batt": 3.712}
LIGHT = [("lux", 12), ("lamp", True), ("dim", 80), ("power", 46), ("volt", 231), ("curr", 199), ("energy", 5120)]
LIGHT_JSON = {"dev": "lamp-0117", "boot": 3, "seq": 17, "time": TIME, "lux": 12, "lamp": True, "dim": 0.8,
              "power": 46, "volt": 231, "curr": 0.199, "energy": 5120}

HEAP_SCRIPT = """
import gc
from kerbline.wire import cose, frame, report
sealer = cose.Sealer("bin-0042", b"k" * 32)
records = [("fill", 42), ("dist", 1234), ("temp", 21.5), ("batt", 3712)]
frame.encode(sealer.seal(report.encode(3, 17, records, 1764345600)))  # warm up: first-call allocations
gc.collect()
gc.disable()
before = gc.mem_alloc()
wire = frame.encode(sealer.seal(report.encode(3, 18, records, 1764345600)))
after = gc.mem_alloc()
gc.enable()
print(after - before, gc.mem_alloc() + gc.mem_free())
"""


def sizes(device: str, records: list, as_json: dict) -> tuple[int, int, int]:
    message = cose.Sealer(device, KEY).seal(report.encode(3, 17, records, TIME))
    compact = json.dumps(as_json, separators=(",", ":"))
    return len(message), len(frame.encode(message)), len(compact)


def main() -> None:
    print(f"{'report':8} {'COSE':>5} {'frame':>6} {'JSON':>5} {'COSE/JSON':>10}")
    for label, device, records, as_json in (("bin", "bin-0042", BIN, BIN_JSON), ("light", "lamp-0117", LIGHT, LIGHT_JSON)):
        message, wire, compact = sizes(device, records, as_json)
        print(f"{label:8} {message:5d} {wire:6d} {compact:5d} {message / compact:10.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp))
        codecs = [f for f in files if f.board_path.startswith("kerbline/wire/")]
        print(f"wire codecs .mpy on a board: {mpy_size(codecs)} bytes in {len(codecs)} files; "
              f"whole board firmware .mpy: {mpy_size(files)} bytes (budget 49152)")
        out = subprocess.run(
            [str(micropython_path()), "-X", "heapsize=64k", "-c", f"import sys; sys.path.insert(0, {tmp!r})\n" + HEAP_SCRIPT],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()
        print(f"MicroPython heap to build, MAC and frame one bin report: {out[0]} bytes (of a {out[1]}-byte heap)")


if __name__ == "__main__":
    main()
