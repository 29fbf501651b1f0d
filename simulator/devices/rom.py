"""Host side of a board's ROM partition on the unix-port VM (the VM side is `mpy/rom_partition.py`).

A board with a ROMFS partition runs the firmware's bytecode in place in flash; the unix port has no
flash to map, so the image is read into the VM's own heap. To keep the firmware's heap exactly a
board's, the VM is started with a heap larger by the image (plus the GC's bookkeeping for it) and the
VM side hands back any surplus as ballast: the program gets the usable heap that `-X heapsize=HEAP`
alone gives, measured here once per size by asking such a VM.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from gateway.tools.firmware_build import micropython_path

VM_SIDE = Path(__file__).resolve().with_name("mpy") / "rom_partition.py"
GC_BLOCK = 32  # bytes per GC block on the 64-bit unix port
GC_OVERHEAD = 1.0 / 64  # allocation and finaliser tables, with room to spare (they take 3/256)


def heap_bytes(heap: str | int) -> int:
    """`64k`, `1m` or a number of bytes, as `micropython -X heapsize=` reads it."""
    if isinstance(heap, int):
        return heap
    text = heap.strip().lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(text[-1:], 1)
    return int(text.rstrip("km")) * scale


@functools.lru_cache(maxsize=None)
def usable_heap(heap: str | int) -> int:
    """What `gc.mem_free() + gc.mem_alloc()` reports in a VM started with `-X heapsize=heap`."""
    out = subprocess.run([str(micropython_path()), "-X", f"heapsize={heap_bytes(heap)}", "-c",
                          "import gc; print(gc.mem_free() + gc.mem_alloc())"],
                         capture_output=True, text=True, check=True, timeout=30)
    return int(out.stdout.split()[-1])


def rom_heap(heap: str | int, image: Path) -> tuple[int, int]:
    """(the `-X heapsize` to start the VM with, the usable heap `rom_partition.mount` leaves the program)."""
    blocks = -(-image.stat().st_size // GC_BLOCK) + 4  # the partition, the VfsRom object, the mount entry
    extra = int(blocks * GC_BLOCK * (1 + GC_OVERHEAD)) + 1024
    return heap_bytes(heap) + extra, usable_heap(heap)
