"""Watch a device's traffic for a person: frames verified with the gateway's own decoder, text as text.

`StreamSplitter` turns the bytes of a serial port into events, in order:
- `Got(report)`: a frame that decoded, whose MAC verified under the device's registry key and whose
  report parsed (`gateway.wire.decode_serial_report`: the same checks, in the same order, as the gateway);
- `Refused(reason, detail)`: a frame the gateway would refuse, with the gateway's reason;
- `Text(line)`: what the board printed (a console port, a boot banner on the link), line by line.
A frame is COBS bytes up to a 0x00; a text line is printable bytes up to a newline. A boot message
glued to the front of a frame is split off (the frame is found after one of the message's newlines).
Nothing grows without bound: one pending run of at most `MAX_PENDING` bytes; a longer printable run is
shown as a line, a longer binary run is refused as `too_large` and dropped.

`format_report()` gives the readable form (names, units, time); `SerialWatcher` and `MqttWatcher` read a
port or a broker in a thread and hand events over a bounded queue (at the bound the oldest waiting
event is dropped and counted: a person reading a terminal cannot use a backlog).
"""
from __future__ import annotations

import datetime
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial  # type: ignore[import-untyped]  # pyserial ships no stubs

from gateway.wire import (MAX_FRAME, MEASUREMENTS, Reading, Reason, Rejected, Report, decode_frame,
                          decode_mqtt_report, decode_serial_report, state_topic, up_topic)

MAX_PENDING = MAX_FRAME
QUEUE_MAX = 1000
KeyLookup = Callable[[str], bytes | None]

# What a technician calls each measurement, and how its SenML unit reads.
LABELS = {"fill": "fill level", "dist": "distance", "temp": "temperature", "batt": "battery", "tilt": "tilted",
          "lid": "lid open", "lux": "light", "lamp": "lamp on", "dim": "dimming", "power": "power",
          "volt": "mains", "curr": "lamp current", "energy": "energy since boot", "rssi": "signal",
          "heap": "free memory", "queue": "reports waiting", "uptime": "uptime", "alarm": "ALARM"}
UNITS = {"/100": "%", "Cel": "°C", "mm": "mm", "mV": "mV", "lx": "lx", "W": "W", "V": "V", "mA": "mA",
         "Wh": "Wh", "dBm": "dBm", "B": "bytes", "count": "", "s": "s"}
# What each refusal most likely means on a technician's bench.
MEANING = {
    Reason.BAD_TAG: "the device's key differs from the registry's: flash the device again",
    Reason.UNKNOWN_DEVICE: "a device id that is not in the registry (another device on this line?)",
    Reason.BAD_CRC: "bytes lost or changed on the line: check the wiring, common ground and baud rate",
    Reason.BAD_COBS: "line noise or a wrong baud rate",
    Reason.TOO_LARGE: "a long run of bytes with no frame end: wrong baud rate or the wrong port",
    Reason.KID_MISMATCH: "published on another device's topic",
}


@dataclass(frozen=True)
class Got:
    report: Report


@dataclass(frozen=True)
class Refused:
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Text:
    line: str


@dataclass(frozen=True)
class State:
    value: str
    retained: bool


Event = Got | Refused | Text | State


def _printable(data: bytes | bytearray) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in data)


class StreamSplitter:
    """Bytes in, events out (see the module docstring)."""

    def __init__(self, lookup_key: KeyLookup) -> None:
        self._lookup = lookup_key
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for byte in data:
            if byte == 0:
                self._chunk(bytes(self._pending), events)
                self._pending.clear()
                continue
            self._pending.append(byte)
            if byte == 10 and _printable(self._pending) and self._pending.strip():
                events.append(Text(self._pending.decode("ascii").rstrip("\r\n")))
                self._pending.clear()
            elif len(self._pending) > MAX_PENDING:
                if _printable(self._pending):
                    events.append(Text(self._pending.decode("ascii")))
                else:
                    events.append(Refused(Reason.TOO_LARGE, f"more than {MAX_PENDING} bytes without a frame end"))
                self._pending.clear()
        return events

    def _chunk(self, chunk: bytes, events: list[Event]) -> None:
        if not chunk:
            return
        try:
            message = decode_frame(chunk)
        except Rejected as first:
            for i, byte in enumerate(chunk):  # a boot message glued to the front of a frame
                if byte == 10 and _printable(chunk[:i + 1]):
                    try:
                        message = decode_frame(chunk[i + 1:])
                    except Rejected:
                        continue
                    events.extend(Text(line) for line in chunk[:i + 1].decode("ascii").splitlines() if line.strip())
                    events.append(self._report(message))
                    return
            if _printable(chunk):
                events.extend(Text(line) for line in chunk.decode("ascii").splitlines() if line.strip())
            else:
                events.append(Refused(first.reason, first.detail))
            return
        events.append(self._report(message))

    def _report(self, message: bytes) -> Event:
        try:
            return Got(decode_serial_report(message, self._lookup))
        except Rejected as exc:
            return Refused(exc.reason, exc.detail)


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def format_reading(reading: Reading) -> str:
    label = LABELS.get(reading.name, reading.name)
    if isinstance(reading.value, bool):
        return label if reading.value else f"not {label}"
    if isinstance(reading.value, str):
        return f"{label} {reading.value}"
    unit = reading.unit if reading.unit is not None else MEASUREMENTS.get(reading.name, (None, "v"))[0]
    shown = UNITS.get(unit or "", unit or "")
    return f"{label} {_number(reading.value)}{' ' + shown if shown else ''}{' (sum)' if reading.is_sum else ''}"


def format_report(report: Report) -> str:
    if report.time is not None:
        when = datetime.datetime.fromtimestamp(report.time, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    else:
        when = f"uptime {_number((report.uptime or 0) / 1000)} s (clock not set)"
    readings = ", ".join(format_reading(r) for r in report.readings)  # a report has at least one
    return f"{report.device} boot {report.boot} seq {report.seq} at {when}: {readings}"


def format_refusal(event: Refused) -> str:
    meaning = MEANING.get(Reason(event.reason))  # a Refused always carries one of the gateway's reasons
    return f"refused: {event.reason}{' (' + event.detail + ')' if event.detail else ''}" + \
        (f" - {meaning}" if meaning else "")


class _Watcher:
    """A thread that puts events on a bounded queue; `get(timeout)` takes the next one or None."""

    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue(QUEUE_MAX)
        self.dropped = 0
        self.error: str | None = None
        self._stop = threading.Event()

    def put(self, event: Event) -> None:
        while True:
            try:
                self.events.put_nowait(event)
                return
            except queue.Full:
                try:
                    self.events.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float) -> Event | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


class SerialWatcher(_Watcher):
    """Reads one serial port (opened at once, so the caller learns of a bad port now) into events."""

    def __init__(self, port: str, lookup_key: KeyLookup, baudrate: int = 115200) -> None:
        super().__init__()
        self.port_name = port
        link = serial.Serial()
        link.port = port
        link.baudrate = baudrate
        link.timeout = 0.1
        link.exclusive = True
        # DTR and RTS released: on ESP32 boards they drive EN and GPIO0, and opening must not reset the board.
        link.dtr = False
        link.rts = False
        link.open()
        self._serial = link
        self._splitter = StreamSplitter(lookup_key)
        self._thread = threading.Thread(target=self._run, name=f"watch {port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._serial.read(4096)
                for event in self._splitter.feed(data):
                    self.put(event)
        except (serial.SerialException, OSError) as exc:
            self.error = f"{self.port_name}: {exc}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._serial.close()


class MqttWatcher(_Watcher):
    """Subscribes to a device's `up` and `state` topics; reports verified like the gateway does."""

    def __init__(self, host: str, port: int, device_id: str, lookup_key: KeyLookup, username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_file: str | None = None,
                 connect_timeout: float = 10.0) -> None:
        super().__init__()
        import os

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.device_id = device_id
        self._lookup = lookup_key
        self._subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"kerbline-tools-{os.getpid()}",
                             protocol=mqtt.MQTTv311)
        if username is not None:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set(ca_certs=ca_file)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *args: self._subscribed.set()
        client.on_message = self._on_message
        self._client = client
        try:
            client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the broker at {host}:{port}: {exc}") from None
        client.loop_start()
        if not self._subscribed.wait(connect_timeout):
            self.close()
            raise ConnectionError(self.error or f"the broker at {host}:{port} did not accept the subscription "
                                  f"within {connect_timeout:.0f} s")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.error = f"the broker refused the connection: {reason}"
            return
        client.subscribe([(up_topic(self.device_id), 1), (state_topic(self.device_id), 1)])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == state_topic(self.device_id):
            self.put(State(message.payload.decode("utf-8", "replace")[:32], bool(message.retain)))
            return
        try:
            self.put(Got(decode_mqtt_report(message.payload, message.topic, self._lookup)))
        except Rejected as exc:
            self.put(Refused(exc.reason, exc.detail))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
