"""The live view: what a person watching a simulated street sees, redrawn in place on a terminal.

The runner (demo or CLI) builds a `Snapshot` (plain data: clock, one `Row` per device worth showing,
totals, recent events) and hands it to `LiveView.update()`. On a terminal the screen is redrawn in place
(ANSI: home, clear to end); anywhere else (a CI log, a pipe) one compact progress line is printed every
`plain_every_s` seconds, so logs stay readable. `render()` is pure, for tests.

Rows are capped at `max_rows` (alarms first, then by id); a fleet of thousands shows its totals and the
devices that matter.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO
from zoneinfo import ZoneInfo

BAR_WIDTH = 30


@dataclass
class Row:
    device: str
    kind: str
    link: str
    state: str
    world: str  # what the street is doing (ground truth), e.g. "fill 42%" or "lamp on 50%"
    sent: str  # what the device last reported, e.g. "fill 41%"
    alarms: tuple[str, ...] = ()
    reports: int = 0
    acked: int = 0
    queued: int = 0


@dataclass
class Snapshot:
    title: str
    sim_now: float
    sim_start: float
    sim_end: float | None  # None: runs until stopped
    wall_elapsed: float
    factor: float | None
    tz: str | None = None
    rows: list[Row] = field(default_factory=list)
    totals: list[tuple[str, str]] = field(default_factory=list)  # (label, value), in display order
    events: list[str] = field(default_factory=list)  # newest last


def _clock_text(t: float, tz: str | None) -> str:
    zone = ZoneInfo(tz) if tz else dt.timezone.utc
    return dt.datetime.fromtimestamp(t, zone).strftime("%a %d %b %H:%M %Z")


def progress(s: Snapshot) -> str:
    """One line: bar, percentage, simulated time, wall time, pace."""
    pace = f"x{s.factor:g}" if s.factor else "stepped"
    when = _clock_text(s.sim_now, s.tz)
    if s.sim_end is None or s.sim_end <= s.sim_start:
        return f"[{'~' * BAR_WIDTH}] {when}  wall {s.wall_elapsed:,.0f} s  {pace}"
    frac = min(1.0, max(0.0, (s.sim_now - s.sim_start) / (s.sim_end - s.sim_start)))
    done = int(frac * BAR_WIDTH)
    return f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] {frac * 100:3.0f}%  {when}  wall {s.wall_elapsed:,.0f} s  {pace}"


def render(s: Snapshot, width: int = 120, max_rows: int = 24, max_events: int = 6) -> str:
    """The whole screen as text."""
    lines = [s.title[:width], progress(s)[:width], ""]
    if s.rows:
        rows = sorted(s.rows, key=lambda r: (not r.alarms, r.device))[:max_rows]
        lines.append(f"{'device':<11}{'link':<7}{'state':<9}{'street (truth)':<22}{'last report':<22}"
                     f"{'sent':>6}{'acked':>7}{'queue':>6}  alarms"[:width])
        for r in rows:
            lines.append(f"{r.device:<11}{r.link:<7}{r.state:<9}{r.world:<22}{r.sent:<22}"
                         f"{r.reports:>6}{r.acked:>7}{r.queued:>6}  {','.join(r.alarms) or '-'}"[:width])
        if len(s.rows) > len(rows):
            lines.append(f"... and {len(s.rows) - len(rows)} more devices")
        lines.append("")
    if s.totals:
        cells = [f"{label}: {value}" for label, value in s.totals]
        line = ""
        for cell in cells:
            if line and len(line) + 3 + len(cell) > width:
                lines.append(line)
                line = ""
            line = f"{line}   {cell}" if line else cell
        lines.append(line)
    if s.events:
        lines.append("")
        lines += [e[:width] for e in s.events[-max_events:]]
    return "\n".join(lines)


class LiveView:
    """Draws snapshots on `out`: in place on a terminal, else as occasional progress lines."""

    def __init__(self, out: TextIO = sys.stdout, plain_every_s: float = 10.0, force_plain: bool = False) -> None:
        self.out = out
        self.fancy = not force_plain and out.isatty()
        self.plain_every_s = plain_every_s
        self._last_plain = -1e9
        self._drawn = False

    def update(self, s: Snapshot) -> None:
        if self.fancy:
            width = shutil.get_terminal_size((120, 40)).columns
            text = render(s, width=width)
            # home, draw over the old screen line by line (clear each line's rest), clear below
            self.out.write("\x1b[H" + "\x1b[K\n".join(text.split("\n")) + "\x1b[K\n\x1b[J")
            if not self._drawn:
                self._drawn = True
            self.out.flush()
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            totals = "  ".join(f"{label} {value}" for label, value in s.totals[:6])
            self.out.write(f"{progress(s)}  {totals}\n")
            self.out.flush()

    def start(self) -> None:
        if self.fancy:
            self.out.write("\x1b[2J\x1b[H\x1b[?25l")  # clear, home, hide the cursor
            self.out.flush()

    def close(self) -> None:
        if self.fancy:
            self.out.write("\x1b[?25h")  # the cursor back
            self.out.flush()
