"""Which (device, boot, seq) the gateway has already accepted, in bounded memory per device.

A device numbers its reports 1, 2, 3... within a boot and resends a report with its old seq until it
is acknowledged, so the gateway must recognise a resend forever, not only for a while. Per (device,
boot) it keeps the highest seq below which every report has been accepted (`contiguous`) and the
accepted seqs above it (`above`, the reports that overtook a gap). In the usual case, reports in order,
`above` stays empty and the state is one integer.

Bounds, and what happens at them:
- `above` holds at most `MAX_ABOVE` seqs. Past that the oldest gap is given up: `contiguous` moves up
  to the lowest accepted seq above it. A report from that gap arriving later is then taken for a
  duplicate. A gap that old (MAX_ABOVE later reports accepted) is a report the device itself dropped.
- At most `MAX_BOOTS` boots are tracked per device. When a newer boot arrives the oldest is forgotten
  and the device's `floor` rises above it: reports from boots below the floor are refused as
  duplicates, so a captured old report cannot be replayed after its boot has been forgotten.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_ABOVE = 256
MAX_BOOTS = 8


@dataclass
class SeqWindow:
    """Accepted seqs of one (device, boot)."""

    contiguous: int = 0
    above: set[int] = field(default_factory=set)

    def accept(self, seq: int) -> bool:
        """Record `seq`; False when it was already accepted (or falls in a gap given up)."""
        if seq <= self.contiguous or seq in self.above:
            return False
        if seq == self.contiguous + 1:
            self.contiguous = seq
            above = self.above
            while above and self.contiguous + 1 in above:
                self.contiguous += 1
                above.discard(self.contiguous)
            return True
        self.above.add(seq)
        while len(self.above) > MAX_ABOVE:
            lowest = min(self.above)
            self.above.discard(lowest)
            self.contiguous = lowest
            while self.contiguous + 1 in self.above:
                self.contiguous += 1
                self.above.discard(self.contiguous)
        return True

    def encode_above(self) -> bytes:
        """`above` as stored in the dedup table: sorted little-endian uint64s."""
        return struct.pack(f"<{len(self.above)}Q", *sorted(self.above))

    @classmethod
    def decode(cls, contiguous: int, above: bytes) -> SeqWindow:
        return cls(contiguous, set(struct.unpack(f"<{len(above) // 8}Q", above)))


class DedupIndex:
    """The accepted-report index for every device, mirrored in the spool's `dedup` tables.

    `accept` changes memory only; the spool writes `changed` windows and floors in the same transaction
    as the reports they admitted, and calls `reload` when that transaction fails so memory never claims
    more than the disk holds.
    """

    def __init__(self) -> None:
        self._windows: dict[tuple[str, int], SeqWindow] = {}
        self._boots: dict[str, list[int]] = {}
        self._floors: dict[str, int] = {}
        self.changed: set[tuple[str, int]] = set()
        self.forgotten: list[tuple[str, int]] = []
        self.floors_changed: set[str] = set()

    def load(self, windows: list[tuple[str, int, int, bytes]], floors: list[tuple[str, int]]) -> None:
        """Replace the state with rows read from the database."""
        self._windows.clear()
        self._boots.clear()
        self._floors = dict(floors)
        for device, boot, contiguous, above in windows:
            self._windows[(device, boot)] = SeqWindow.decode(contiguous, above)
            self._boots.setdefault(device, []).append(boot)
        for boots in self._boots.values():
            boots.sort()
        self.clear_changes()

    def clear_changes(self) -> None:
        self.changed.clear()
        self.forgotten.clear()
        self.floors_changed.clear()

    def seen(self, device: str, boot: int, seq: int) -> bool:
        """True when (device, boot, seq) was accepted before (or its boot is below the device's floor)."""
        window = self._windows.get((device, boot))
        if window is None:
            return boot < self._floors.get(device, 0)
        return seq <= window.contiguous or seq in window.above

    def accept(self, device: str, boot: int, seq: int) -> bool:
        """True when (device, boot, seq) is new; it is then recorded as accepted."""
        key = (device, boot)
        window = self._windows.get(key)
        if window is None:
            if boot < self._floors.get(device, 0):
                return False
            window = self._windows[key] = SeqWindow()
            self._track_boot(device, boot)
        if not window.accept(seq):
            return False
        self.changed.add(key)
        return True

    def next_seq(self, device: str, boot: int) -> int:
        """The seq after the highest accepted one: how the gateway numbers the reports it makes itself."""
        window = self._windows.get((device, boot))
        if window is None:
            return 1
        return max(window.contiguous, *window.above, 0) + 1

    def window(self, device: str, boot: int) -> SeqWindow | None:
        return self._windows.get((device, boot))

    def floor(self, device: str) -> int:
        return self._floors.get(device, 0)

    def _track_boot(self, device: str, boot: int) -> None:
        boots = self._boots.setdefault(device, [])
        boots.append(boot)
        boots.sort()
        while len(boots) > MAX_BOOTS:
            oldest = boots.pop(0)
            del self._windows[(device, oldest)]
            self.changed.discard((device, oldest))
            self.forgotten.append((device, oldest))
            self._floors[device] = oldest + 1
            self.floors_changed.add(device)

    def __len__(self) -> int:
        return len(self._windows)
