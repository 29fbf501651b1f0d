"""`kerbline device ...`: the technician's commands (docs/technician.md is the field guide).

    kerbline device ports                                   serial ports with their USB ids
    kerbline device add DEVICE --kind bin|light [...]       register a device with a fresh key
    kerbline device flash DEVICE --port PORT [...]          firmware + config onto a board, verified
    kerbline device install-micropython --port P --image F  erase the chip and write MicroPython
    kerbline device selftest DEVICE --port PORT             each sensor read once, the link checked
    kerbline device monitor DEVICE [--port P | --broker H]  the device's reports, decoded and verified
    kerbline device broker-config --out-dir DIR             mosquitto password and ACL files

The registry is `--registry FILE`, else $KERBLINE_REGISTRY, else the one the gateway's config names
(`--gateway-config FILE`, else $KERBLINE_GATEWAY_CONFIG, else /etc/kerbline/gateway.toml when it exists,
else the gateway's default). Exit status: 0 done, 1 a step failed (the message says which, why and what
to do), 2 a wrong command line, 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.tools.steps import StepError, report_failure

SYSTEM_GATEWAY_CONFIG = Path("/etc/kerbline/gateway.toml")
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kerbline" / "firmware"


def _gateway_config_path(args: argparse.Namespace) -> Path | None:
    if args.gateway_config:
        return Path(args.gateway_config)
    if os.environ.get("KERBLINE_GATEWAY_CONFIG"):
        return Path(os.environ["KERBLINE_GATEWAY_CONFIG"])
    return SYSTEM_GATEWAY_CONFIG if SYSTEM_GATEWAY_CONFIG.exists() else None


def _gateway_config(args: argparse.Namespace) -> Any:
    from gateway.config import ConfigError, load_config

    path = _gateway_config_path(args)
    try:
        return load_config(path)
    except ConfigError as exc:
        raise StepError(f"the gateway config {path} is not valid: {exc}",
                        "fix it (python -m gateway check-config --config FILE says more), or give --registry") from None


def registry_path(args: argparse.Namespace) -> Path:
    if args.registry:
        return Path(args.registry)
    if os.environ.get("KERBLINE_REGISTRY"):
        return Path(os.environ["KERBLINE_REGISTRY"])
    return Path(_gateway_config(args).gateway.registry)


def _mqtt_login(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The user name and password for watching the broker: the options, else the gateway's own."""
    password = Path(args.mqtt_password_file).read_text().strip() if args.mqtt_password_file else None
    if args.mqtt_user:
        return args.mqtt_user, password
    mqtt = _gateway_config(args).mqtt
    return mqtt.username, mqtt.password


# ------------------------------------------------------------------------------------------ commands


def cmd_ports(args: argparse.Namespace) -> int:
    from gateway.tools.ports import format_ports, list_ports

    print(format_ports(list_ports()))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from gateway.tools.provision import add_device

    registry = registry_path(args)
    settings = add_device(registry, args.device, args.kind, args.link, args.site, args.lat, args.lon,
                          args.broker, args.tls, args.ssid)
    print(f"added {args.device} ({args.kind}, {args.link} link) to {registry} with a new key")
    print(f"its settings (link, pins, calibration): {settings}")
    if args.link == "mqtt":
        print("its broker login: run `kerbline device broker-config` where the broker's files are kept")
    print(f"next: kerbline device flash {args.device} --port PORT")
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from gateway.tools.flash import FlashOptions, flash

    opts = FlashOptions(device_id=args.device, port=args.port, registry=registry_path(args),
                        build_dir=Path(args.build_dir) if args.build_dir else _cache_dir(),
                        link_port=args.link_port, broker=args.broker, mqtt_login=lambda: _mqtt_login(args),
                        rotate_key=args.rotate_key, replace=args.replace, wait=not args.no_wait, wait_s=args.wait_s,
                        board_timeout=args.board_timeout)
    result = flash(opts)
    rom = {"written": "ROM image written, ", "unchanged": "ROM image unchanged, ", "none": ""}[result.rom]
    print(f"flash {args.device}: done ({rom}{len(result.copied)} files written, {result.unchanged} unchanged, "
          f"{len(result.removed)} removed)")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from gateway.tools.install_micropython import install

    install(args.port, Path(args.image), baud=args.baud, connect_attempts=args.connect_attempts)
    print(f"MicroPython is on the board; next: kerbline device flash DEVICE --port {args.port}")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from gateway.tools.selftest import print_table, selftest

    results = selftest(args.device, args.port, registry_path(args), timeout=args.timeout)
    print_table(results)
    failed = [r for r in results if r.status == "FAIL"]
    if failed:
        raise StepError(f"{len(failed)} of {len(results)} checks failed: {', '.join(r.name for r in failed)}",
                        "see each failed check's meaning in docs/technician.md (self-test table)")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from gateway.tools.monitor import monitor

    user, password = _mqtt_login(args) if args.broker else (None, None)
    monitor(args.device, registry_path(args), port=args.port, console=args.console, broker=args.broker,
            username=user, password=password, count=args.count, seconds=args.seconds)
    return 0


def cmd_broker_config(args: argparse.Namespace) -> int:
    from gateway.tools.broker_config import write_broker_files

    mqtt = _gateway_config(args).mqtt
    user = args.gateway_user or mqtt.username
    password = Path(args.gateway_password_file).read_text().strip() if args.gateway_password_file else mqtt.password
    paths = write_broker_files(registry_path(args), Path(args.out_dir), user, password)
    print(f"wrote {paths.password_file} and {paths.acl_file} ({paths.devices} devices)")
    print("add to mosquitto's config (e.g. /etc/mosquitto/conf.d/kerbline.conf), then reload mosquitto:")
    print(f"  per_listener_settings false\n  allow_anonymous false\n  password_file {paths.password_file}\n"
          f"  acl_file {paths.acl_file}")
    return 0


# ------------------------------------------------------------------------------------------ parser


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", help="the device registry file (TOML or JSON)")
    common.add_argument("--gateway-config", help="the gateway's config, to find the registry and MQTT login")
    mqtt = argparse.ArgumentParser(add_help=False)
    mqtt.add_argument("--mqtt-user", help="broker user for watching (default: the gateway config's)")
    mqtt.add_argument("--mqtt-password-file", help="file holding that user's password")

    top = argparse.ArgumentParser(prog="kerbline", description="Kerbline technician's tools.")
    groups = top.add_subparsers(dest="group", required=True)
    device = groups.add_parser("device", help="provision, flash, check and watch devices")
    sub = device.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ports", help="list serial ports with their USB ids")
    p.set_defaults(run=cmd_ports)

    p = sub.add_parser("add", parents=[common], help="register a new device with a fresh key")
    p.add_argument("device", help="device id: 1 to 32 of a-z, 0-9, '-' (e.g. bin-0042)")
    p.add_argument("--kind", required=True, choices=["bin", "light"])
    p.add_argument("--link", default="serial", choices=["serial", "mqtt"])
    p.add_argument("--site", help="where it stands, e.g. 'Market St 4'")
    p.add_argument("--lat", type=float, help="degrees north")
    p.add_argument("--lon", type=float, help="degrees east")
    p.add_argument("--broker", help="MQTT devices: the broker as the device reaches it, HOST[:PORT]")
    p.add_argument("--tls", action="store_true", help="MQTT devices: TLS to the broker (default port 8883)")
    p.add_argument("--ssid", help="MQTT devices: the WLAN to join (its password goes in the settings file)")
    p.set_defaults(run=cmd_add)

    p = sub.add_parser("flash", parents=[common, mqtt], help="write firmware and config to a board, verify, reset")
    p.add_argument("device")
    p.add_argument("--port", required=True, help="the board's USB serial port (see `kerbline device ports`)")
    p.add_argument("--link-port", help="serial devices: the port wired to the link UART, to see the first report")
    p.add_argument("--broker", help="MQTT devices: reach the broker at HOST:PORT (default: the device's own)")
    p.add_argument("--rotate-key", action="store_true", help="give the device a new key (registry updated too)")
    p.add_argument("--replace", action="store_true", help="the board was another device's: wipe its state")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the first report")
    p.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for the first report (s)")
    p.add_argument("--build-dir", help="where the compiled firmware is kept (default: ~/.cache/kerbline/firmware)")
    p.add_argument("--board-timeout", type=float, default=30.0, help="how long one exchange with the board may take (s)")
    p.set_defaults(run=cmd_flash)

    p = sub.add_parser("install-micropython", help="erase the chip and write a MicroPython image (esptool)")
    p.add_argument("--port", required=True)
    p.add_argument("--image", required=True, help="the MicroPython .bin for the board (nothing is downloaded)")
    p.add_argument("--baud", type=int, default=460800)
    p.add_argument("--connect-attempts", type=int, default=7, help="esptool's attempts to reach the bootloader")
    p.set_defaults(run=cmd_install)

    p = sub.add_parser("selftest", parents=[common], help="read each sensor once and check the link, on the board")
    p.add_argument("device")
    p.add_argument("--port", required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(run=cmd_selftest)

    p = sub.add_parser("monitor", parents=[common, mqtt], help="print the device's reports live, verified")
    p.add_argument("device")
    p.add_argument("--port", help="the serial link port (frames and text)")
    p.add_argument("--console", help="also the board's USB console (text)")
    p.add_argument("--broker", help="watch the broker instead, HOST:PORT")
    p.add_argument("--count", type=int, help="stop after this many verified reports")
    p.add_argument("--seconds", type=float, help="stop after this long")
    p.set_defaults(run=cmd_monitor)

    p = sub.add_parser("broker-config", parents=[common], help="mosquitto password and ACL files from the registry")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--gateway-user", help="the gateway's broker user (default: the gateway config's mqtt.username)")
    p.add_argument("--gateway-password-file", help="file holding its password (default: the gateway config's)")
    p.set_defaults(run=cmd_broker_config)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = f"{args.command} {getattr(args, 'device', '') or ''}".strip()
    try:
        return int(args.run(args))
    except StepError as exc:
        report_failure(command, exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\n{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
