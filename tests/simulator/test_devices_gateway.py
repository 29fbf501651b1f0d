"""Faithful devices reach the real gateway: one over a pty (the gateway opens it with pyserial), one over
MQTT (its own connection to the simulator's mosquitto, ACLs and passwords on), both running the unchanged
firmware on the world, deployed as on a board with a ROM partition and at its 64 KB heap budget, the gateway
a real `python -m gateway run` process writing its JSON Lines sink."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

from simulator.devices import provision
from simulator.devices.faithful import ROM_IMAGE, FaithfulStreet
from simulator.links.broker import GATEWAY_USER, Broker
from simulator.scenario import builtin_scenario
from simulator.stack import GatewayProcess, MqttAccess
from simulator.world import TruthLog, World
from tests.simulator.devices_rig import firmware


async def test_a_serial_and_an_mqtt_device_reach_the_gateway(tmp_path: Path) -> None:
    sc = builtin_scenario("demo")
    specs = [next(d for d in sc.devices if d.kind == "bin" and d.link == link) for link in ("serial", "mqtt")]
    keys = {s.id: provision.new_key() for s in specs}
    passwords = {s.id: secrets.token_hex(8) for s in specs if s.link == "mqtt"}
    broker = Broker(tmp_path / "broker", passwords={GATEWAY_USER: "gw-pass", **passwords})
    broker.start()
    gateway = GatewayProcess(tmp_path, registry_text=provision.registry_toml([(s, keys[s.id]) for s in specs], sc),
                             mqtt=MqttAccess(broker.host, broker.port, password="gw-pass"),
                             serial_ports=[FaithfulStreet.port_path(tmp_path, s.id) for s in specs
                                           if s.link == "serial"], batch_window_s=0.05)
    truth = TruthLog(tmp_path / "truth.jsonl")
    street = None
    console: list[tuple[str, str]] = []
    try:
        await gateway.start()
        world = World(sc, truth)
        street = FaithfulStreet(world, world.clock(paced=True), tmp_path, specs, broker=broker, passwords=passwords,
                                keys=keys, firmware=firmware(tmp_path / "firmware"),
                                on_line=lambda device, text: console.append((device, text)))
        await street.start()
        seen: dict[str, set[tuple[int, int]]] = {}
        for _ in range(600):
            seen = {}
            if gateway.jsonl_path.exists():
                for line in gateway.jsonl_path.read_text().splitlines():
                    r = json.loads(line)
                    seen.setdefault(r["device"], set()).add((r["boot"], r["seq"]))
            if all(len(seen.get(s.id, ())) >= 2 for s in specs):
                break
            await asyncio.sleep(0.1)
        assert {s.id: len(seen.get(s.id, ())) >= 2 for s in specs} == {s.id: True for s in specs}, seen
        metrics = await gateway.metrics()
        stored = {dict(labels)["link"]: v for (name, labels), v in metrics.items()
                  if name == "kerbline_reports_stored_total"}
        assert stored.get("serial", 0) >= 2 and stored.get("mqtt", 0) >= 2
        for d in street.devices.values():
            assert d.tap.sent >= 2 and d.tap.rejected == {}, d.spec.id
            # the package is in the street's one ROM image; the flash has the start-up files, config, state
            assert d.runner.rom == (tmp_path / ROM_IMAGE).resolve()
            assert not (d.flash_dir / "kerbline").exists()
            assert {"boot.py", "main.py", "config.json"} <= {p.name for p in d.flash_dir.iterdir()}
            assert d.runner.heap == "64k" and d.runner.stats.crashes == 0
        assert [x for x in console if "MemoryError" in x[1] or x[1].startswith("crash:")] == []
    finally:
        if street is not None:
            await street.stop()
        assert await gateway.stop() == 0
        broker.stop()
        truth.close()
