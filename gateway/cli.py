"""`kerbline-gateway`: run the gateway, or check its config.

    kerbline-gateway run [--config FILE]            serve until SIGTERM; exit 0 after a clean drain
    kerbline-gateway check-config [--config FILE]   exit 0 if the config and its registry are valid,
                                                    else 2 with the bad key named on stderr

Without --config every default applies (the demo: JSON Lines file sink, MQTT on localhost:1883, no
serial ports, HTTP on 127.0.0.1:8080).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, load_config
from gateway.logging import configure
from gateway.registry import RegistryError, read_registry

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerbline-gateway", description="The Kerbline gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the gateway until SIGTERM"), ("check-config", "check the config and exit")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", type=Path, default=None, help="the TOML config file")
    return parser


def _load(path: Path | None) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return None


def check_config(path: Path | None) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    registry = config.gateway.registry
    if registry.exists():
        try:
            devices = read_registry(registry)
        except RegistryError as exc:
            print(f"registry error: gateway.registry: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        count = f"{len(devices)} devices"
    else:
        count = "no registry file yet (every report will be refused as unknown_device)"
    sinks = ", ".join(f"{spec.sink.name}" for spec in config.sinks)
    print(f"config ok: {path or '(defaults)'}; registry {registry}: {count}; sinks: {sinks}; "
          f"mqtt: {'on' if config.mqtt.enabled else 'off'}; serial ports: {len(config.serial.ports)}")
    return 0


def run(path: Path | None) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    configure(config.gateway.log_level)
    from gateway.service import Gateway, StartError  # after logging is set up

    try:
        return _run_loop(Gateway(config).run(), config.gateway.uvloop)
    except StartError as exc:
        print(f"gateway not started: {exc}", file=sys.stderr)
        return 1


def _run_loop(main: Coroutine[Any, Any, int], use_uvloop: bool) -> int:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
