"""`kerbline device monitor DEVICE`: the device's reports live, verified under its registry key, readable.

Sources, any together: the serial link port (`--port`: frames, and any text the board puts on the
line), the board's USB console (`--console`: what it prints: boot, safe mode, crashes), or the broker
(`--broker`: the device's `up` and `state` topics, as the gateway sees them). Each line is stamped with
the local time and its source. A report is shown only after its MAC verified under the key in the
registry, with names and units (`watch.format_report`); a refused frame shows the gateway's reason and
what it most likely means. A resend of a report already shown in this session is marked `(again)`
(the device resends until the gateway acks; the monitor never acks, so it never takes a report away
from the gateway).

It runs until Ctrl-C, or `--count` verified reports, or `--seconds`; then prints a summary. Memory is
bounded: the resend detector remembers the last `SEEN_MAX` reports.
"""
from __future__ import annotations

import collections
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from gateway.tools.registry_file import read_devices
from gateway.tools.steps import StepError
from gateway.tools.watch import (Got, KeyLookup, MqttWatcher, Refused, SerialWatcher, State, Text, format_refusal,
                                 format_report)

SEEN_MAX = 1000
POLL_S = 0.05


@dataclass
class Summary:
    reports: int = 0
    again: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    text_lines: int = 0

    def line(self) -> str:
        refused = ", ".join(f"{reason} {n}" for reason, n in sorted(self.refused.items())) or "none"
        return (f"{self.reports} reports verified ({self.again} of them resends), refused: {refused}, "
                f"{self.text_lines} console lines")


def monitor(device_id: str, registry: Path, port: str | None = None, console: str | None = None,
            broker: str | None = None, username: str | None = None, password: str | None = None,
            count: int | None = None, seconds: float | None = None, out: TextIO | None = None) -> Summary:
    stream = out or sys.stdout
    device = read_devices(registry).get(device_id)
    if device is None:
        raise StepError(f"{device_id} is not in the registry {registry}", "check the id (or --registry)")
    if not (port or console or broker):
        raise StepError("nothing to watch", "give --port (link), --console (USB) and/or --broker HOST:PORT")
    key = device.key.bytes

    def lookup(kid: str) -> bytes | None:
        return key if kid == device_id else None

    sources: list[tuple[str, SerialWatcher | MqttWatcher]] = []
    try:
        if port:
            sources.append(("link", _serial(port, lookup)))
        if console:
            sources.append(("console", _serial(console, lambda _kid: None)))
        if broker:
            host, _, port_text = broker.rpartition(":") if ":" in broker else (broker, "", "1883")
            try:
                sources.append(("broker", MqttWatcher(host, int(port_text), device_id, lookup, username, password)))
            except ConnectionError as exc:
                raise StepError(str(exc), "check the broker address and the --mqtt-user login") from None
        return _run(device_id, sources, count, seconds, stream)
    finally:
        for _, watcher in sources:
            watcher.close()


def _serial(port: str, lookup: KeyLookup) -> SerialWatcher:
    try:
        return SerialWatcher(port, lookup)
    except OSError as exc:
        raise StepError(f"cannot open {port}: {exc}",
                        "check the port (`kerbline device ports`) and close whatever holds it (the gateway, "
                        "mpremote, screen)") from None


def _run(device_id: str, sources: list[tuple[str, SerialWatcher | MqttWatcher]], count: int | None,
         seconds: float | None, out: TextIO) -> Summary:
    summary = Summary()
    seen: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
    names = ", ".join(f"{name} {getattr(w, 'port_name', '')}".strip() for name, w in sources)
    print(f"monitoring {device_id} ({names}); Ctrl-C to stop", file=out, flush=True)
    deadline = time.monotonic() + seconds if seconds is not None else None
    try:
        while (count is None or summary.reports < count) and (deadline is None or time.monotonic() < deadline):
            for name, watcher in sources:
                event = watcher.get(POLL_S / len(sources))
                if event is None:
                    if watcher.error:
                        raise StepError(f"the {name} stopped: {watcher.error}", "check the cable, then start again")
                    continue
                stamp = time.strftime("%H:%M:%S")
                if isinstance(event, Got):
                    pair = (event.report.boot, event.report.seq)
                    again = pair in seen
                    seen[pair] = None
                    if len(seen) > SEEN_MAX:
                        seen.popitem(last=False)
                    summary.reports += 1
                    summary.again += again
                    line = format_report(event.report) + (" (again)" if again else "")
                elif isinstance(event, Refused):
                    summary.refused[event.reason] += 1
                    line = format_refusal(event)
                elif isinstance(event, State):
                    line = f"state {event.value}{' (retained)' if event.retained else ''}"
                else:
                    assert isinstance(event, Text)
                    summary.text_lines += 1
                    line = f"| {event.line}"
                print(f"{stamp} {name:<7} {line}", file=out, flush=True)
    except KeyboardInterrupt:
        pass
    print(summary.line(), file=out, flush=True)
    return summary
