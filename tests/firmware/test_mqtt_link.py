"""The device's MQTT link end to end: flash queue -> QoS 1 on `up` -> PUBACK empties the queue; a sealed
command on `down` reaches the application. Real mosquitto, the compiled firmware under the MicroPython VM."""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import paho.mqtt.client as paho

from gateway import wire as gw
from tests.harness.micropython import compiled_rom, start_micropython
from tests.harness.mosquitto import Mosquitto

RUNNER = "import sys\nsys.path.insert(0, sys.argv[1])\nimport mqtt_link_device\nmqtt_link_device.main(*sys.argv[2:])\n"
KEY = bytes(range(32))  # fake test key
REPORTS = 6
# The budget, with the firmware deployed as on a board: the package in a ROMFS image run in place.
LINK_HEAP = "64k"


def test_queued_reports_leave_on_puback_and_a_command_reaches_the_app(mosquitto: Mosquitto, tmp_path: Path,
                                                                     mp_lib: Path) -> None:
    received: queue.Queue[bytes] = queue.Queue()
    subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="platform")
    subscriber.on_message = lambda _c, _u, msg: received.put(msg.payload)
    subscriber.connect(mosquitto.host, mosquitto.port)
    subscriber.subscribe("kerbline/v1/bin-0042/up", qos=1)
    subscriber.loop_start()
    try:
        with start_micropython(RUNNER, heap=LINK_HEAP, firmware=None, rom=compiled_rom(), args=[str(mp_lib), str(tmp_path), mosquitto.host,
                                                          str(mosquitto.port), KEY.hex(), str(REPORTS)]) as device:
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=lambda: [lines.put(raw.decode().strip()) for raw in device.stdout],
                             daemon=True).start()
            assert lines.get(timeout=30) == f"EMPTY 0 {REPORTS} {REPORTS}", device.stderr_text()
            seqs = sorted({gw.decode_mqtt_report(received.get(timeout=10), "kerbline/v1/bin-0042/up",
                                                 {"bin-0042": KEY}.get).seq for _ in range(REPORTS)})
            assert seqs == list(range(1, REPORTS + 1))
            ping = gw.seal_command("bin-0042", KEY, gw.Command(1, "ping", {}))
            subscriber.publish("kerbline/v1/bin-0042/down", ping, qos=1)
            assert lines.get(timeout=30) == "PING"
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    assert not (tmp_path / "queue").exists() or (tmp_path / "queue").stat().st_size < 1000
