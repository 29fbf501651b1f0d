"""The ground-truth log: every physical quantity the world hands to a device, as JSON Lines.

One line per quantity: ``{"t": 1781913600.000, "device": "bin-0001", "quantity": "fill", "value": 0.42}``
(simulated unix time, device id, quantity name, value). Physical events the devices should notice
(`collected`, `fire`, `tilt`, `lid_open`, `lamp_fail`) are lines with quantity `event` and a text value;
sensor faults the world injected are lines with quantity `fault.<sensor>` (e.g. `fault.dist` = `no_echo`).
An end-to-end test reads it back with `read_truth` and compares what reached upstream with what the
street did.

Quantity names are the wire's measurement names (docs/protocol.md) and values are in `UNITS`; `fill` is
a ratio 0..1 here (the wire sends percent). Values are written with a fixed precision finer than any
sensor's resolution (fill 1e-6, dist 0.01 mm, temp 0.001 C, batt 0.1 mV, current 0.01 mA). Lines are in
the order written: each device's lines are in time order, but events discovered while advancing a device
can carry an instant earlier than another device's last line.

Memory stays bounded: lines go through one fixed-size write buffer to the file. The file itself is bounded
by `max_bytes`: past it, lines are counted in `dropped` instead of written, and `close()` appends one
final line with quantity `truncated` and the number of dropped lines as value, so a reader can tell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from simulator.world.bins import BinSample
    from simulator.world.lamps import LightSample

UNITS: dict[str, str] = {
    "fill": "/", "dist": "mm", "temp": "Cel", "batt": "mV", "tilt": "deg", "lid": "bool",
    "lux": "lx", "lamp": "bool", "dim": "/", "power": "W", "volt": "V", "curr": "mA", "energy": "Wh",
    "event": "text",
}
BUFFER_BYTES = 1 << 20
DEFAULT_MAX_BYTES = 4 << 30


@dataclass(frozen=True, slots=True)
class TruthRecord:
    t: float
    device: str | None
    quantity: str
    value: Any


class TruthLog:
    """Append-only JSON Lines file of ground truth. Use as a context manager, or call `close()`."""

    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.bytes_written = 0
        self.lines = 0
        self.dropped = 0
        self._file = open(self.path, "w", encoding="ascii", buffering=BUFFER_BYTES, newline="\n")

    def __enter__(self) -> "TruthLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, text: str, lines: int) -> None:
        if self.bytes_written + len(text) > self.max_bytes:
            self.dropped += lines
            return
        self._file.write(text)
        self.bytes_written += len(text)
        self.lines += lines

    def record(self, t: float, device: str | None, quantity: str, value: Any) -> None:
        """One line of any quantity; the value is JSON-encoded as is."""
        self._write(f'{{"t":{t:.3f},"device":{json.dumps(device)},"quantity":{json.dumps(quantity)},'
                    f'"value":{json.dumps(value)}}}\n', 1)

    def event(self, t: float, device: str, name: str) -> None:
        """A physical event (collected, fire, tilt, lid_open, lamp_fail)."""
        self._write(f'{{"t":{t:.3f},"device":"{device}","quantity":"event","value":"{name}"}}\n', 1)

    def fault(self, t: float, device: str, sensor: str, name: str) -> None:
        """A sensor fault the world injected into a reading (quantity `fault.<sensor>`)."""
        self._write(f'{{"t":{t:.3f},"device":"{device}","quantity":"fault.{sensor}","value":"{name}"}}\n', 1)

    def bin_sample(self, device: str, s: "BinSample") -> None:
        """The six quantities a bin's sensors face, in one write."""
        head = f'{{"t":{s.t:.3f},"device":"{device}","quantity":'
        self._write(
            f'{head}"fill","value":{s.fill:.6f}}}\n'
            f'{head}"dist","value":{s.dist_mm:.2f}}}\n'
            f'{head}"temp","value":{s.temp_c:.3f}}}\n'
            f'{head}"batt","value":{s.batt_mv:.1f}}}\n'
            f'{head}"tilt","value":{s.tilt_deg:.2f}}}\n'
            f'{head}"lid","value":{"true" if s.lid_open else "false"}}}\n',
            6,
        )

    def light_sample(self, device: str, s: "LightSample") -> None:
        """The seven quantities a streetlight's sensors and meter face, in one write."""
        head = f'{{"t":{s.t:.3f},"device":"{device}","quantity":'
        self._write(
            f'{head}"lux","value":{s.lux:.3f}}}\n'
            f'{head}"lamp","value":{"true" if s.on else "false"}}}\n'
            f'{head}"dim","value":{s.dim:.4f}}}\n'
            f'{head}"power","value":{s.power_w:.3f}}}\n'
            f'{head}"volt","value":{s.volt_v:.2f}}}\n'
            f'{head}"curr","value":{s.curr_ma:.2f}}}\n'
            f'{head}"energy","value":{s.energy_wh:.4f}}}\n',
            7,
        )

    def flush(self) -> None:
        """Push buffered lines to the file, e.g. before another process reads it mid-run."""
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        if self.dropped:
            self._file.write(f'{{"t":null,"device":null,"quantity":"truncated","value":{self.dropped}}}\n')
        self._file.close()


def read_truth(path: str | Path) -> Iterator[TruthRecord]:
    """The records of a ground-truth log, in file order."""
    with open(path, encoding="ascii") as f:
        for line in f:
            d = json.loads(line)
            yield TruthRecord(d["t"], d["device"], d["quantity"], d["value"])
