"""Serial ingest at full line rate: 64 devices, each a pseudo-terminal fed at 115200 baud, into one gateway.

Budget (architecture): 64 serial devices at full line rate on one gateway under 30% of one core. Each
device's pty gets sealed bin reports framed as on the wire (about 90 bytes per frame, so about 128
frames/s at 115200 baud 8N1), a chunk every 100 ms (`--tick`); the gateway (`python -m gateway run`,
the JSON Lines sink) opens the other ends with pyserial, verifies, commits, acks. The figure is the
gateway process's CPU time over the feeding window divided by the window (also per report, and the
event-loop thread's share), against a baseline in the same run: a bare reader that only splits the
same 64 streams at 0x00.

    PYTHONPATH=. .venv/bin/python bench/gateway_serial.py [--devices 64] [--seconds 20] [--tick 0.1]
                                                          [--profile DIR]

`--tick S` writes each line every S seconds. At the default 100 ms a port read holds about 12 frames;
real USB serial adapters hand over what they have every 1 to 16 ms, so a read holds a frame or two and
the per-read costs (the read itself, the hand-over to the spool, the ack) weigh more: `--tick 0.02` and
`--tick 0.005` show how much.

`--profile DIR` records the gateway during the feeding window with py-spy (a dev tool) into
DIR/gateway_serial.txt: collapsed stacks, one line each, of whichever thread holds the GIL (the Python
work; SQLite's own work runs with the GIL released and shows only in the CPU per report).
"""
from __future__ import annotations

import argparse
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import tty
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kerbline.wire import cose, frame, report  # noqa: E402
from tests.gateway.rig import config_text, fleet_key  # noqa: E402
from tests.harness.mosquitto import free_port  # noqa: E402

BAUD = 115_200
BYTES_PER_S = BAUD // 10  # 8N1: ten bits a byte
TICK_S = 0.1  # the default write period per line


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """CPU time of the process, or of one of its threads (`task`: its tid; the main thread's is the pid)."""
    path = f"/proc/{pid}/task/{task}/stat" if task is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_frames(device: str, count: int) -> list[bytes]:
    """Sealed bin reports, seq 1 to `count`, framed, with the first sent twice.

    The repeat is what a real device does after it connects: the gateway's first frames from it are
    untrusted (bytes may have been lost before them), so it acks nothing until the device resends its
    oldest unacknowledged report (gateway/ingest/serial_ack.py); from there on every commit is acked.
    Without it the gateway would never ack, and the bench would leave out the per-read `ack`."""
    sealer = cose.Sealer(device, bytes.fromhex(fleet_key(device)))
    now = int(time.time())
    frames = [frame.encode(sealer.seal(report.encode(1, seq, [("fill", seq % 100), ("dist", 900), ("temp", 21.5),
                                                              ("batt", 3700)], now)))
              for seq in range(1, count + 1)]
    return frames[:1] + frames


def open_ptys(n: int) -> list[tuple[int, str]]:
    pairs = []
    for _ in range(n):
        master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        pairs.append((master, path))
    return pairs


def feed(masters: list[int], streams: list[list[bytes]], seconds: float, tick_s: float) -> tuple[int, int]:
    """Write each stream at line rate for `seconds`, a chunk every `tick_s`; read what comes back;
    (bytes written, frames back)."""
    per_tick = int(BYTES_PER_S * tick_s)
    pending = [b"".join(s) for s in streams]
    offsets = [0] * len(masters)
    written = back = 0
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        tick += 1
        for i, fd in enumerate(masters):
            chunk = pending[i][offsets[i]: offsets[i] + per_tick]
            if chunk:
                try:
                    n = os.write(fd, chunk)
                except BlockingIOError:
                    n = 0
                offsets[i] += n
                written += n
        readable, _, _ = select.select(masters, [], [], 0)
        for fd in readable:
            try:
                back += os.read(fd, 65536).count(0)
            except OSError:
                pass
        time.sleep(max(0.0, start + tick * tick_s - time.monotonic()))
    return written, back


def baseline(pairs: list[tuple[int, str]], streams: list[list[bytes]], seconds: float,
             tick_s: float) -> tuple[float, int]:
    """A bare reader process splitting the same streams at 0x00: its CPU share and the frames it saw."""
    code = ("import os,sys,time,select\n"
            "fds=[os.open(p, os.O_RDWR|os.O_NOCTTY|os.O_NONBLOCK) for p in sys.argv[2:]]\n"
            "end=time.monotonic()+float(sys.argv[1]); frames=0; bufs={f: b'' for f in fds}\n"
            "while time.monotonic()<end:\n"
            "    r,_,_=select.select(fds,[],[],0.05)\n"
            "    for f in r:\n"
            "        parts=(bufs[f]+os.read(f,65536)).split(b'\\0'); bufs[f]=parts.pop(); frames+=len(parts)\n"
            "print(frames)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(seconds + 1.0), *[p for _, p in pairs]],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    before = cpu_seconds(proc.pid)
    t0 = time.monotonic()
    feed([m for m, _ in pairs], streams, seconds, tick_s)
    used = cpu_seconds(proc.pid) - before
    share = used / (time.monotonic() - t0)
    out, _ = proc.communicate(timeout=30)
    return share, int(out.strip() or 0)


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the gateway's GIL holder until SIGINT, thread named, one line per stack."""
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "250", "--threads", "--gil", "--format", "raw",
                             "--output", str(out / "gateway_serial.txt")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def metric(port: int, pattern: str) -> int:
    """The value of the gateway metric whose name and labels match `pattern` (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def stored_serial(port: int) -> int:
    return metric(port, r'kerbline_reports_stored_total\{link="serial"\}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tick", type=float, default=TICK_S,
                        help="seconds between writes to a line (USB serial adapters deliver every 1 to 16 ms)")
    parser.add_argument("--profile", type=Path, help="py-spy the gateway while it is fed, into this directory")
    args = parser.parse_args()
    devices = [f"bin-{i:04d}" for i in range(1, args.devices + 1)]
    frames_needed = int(args.seconds * BYTES_PER_S / 90) + 50
    t0 = time.monotonic()
    streams = [make_frames(d, frames_needed) for d in devices]
    frame_len = sum(len(f) for f in streams[0]) / len(streams[0])
    print(f"gateway serial: {args.devices} devices at {BAUD} baud ({BYTES_PER_S / frame_len:.0f} frames/s each,"
          f" {frame_len:.0f}-byte frames, written every {args.tick * 1000:g} ms), {args.seconds:.0f} s; load built in "
          f"{time.monotonic() - t0:.1f} s")

    pairs = open_ptys(args.devices)
    base_share, base_frames = baseline(pairs, streams, args.seconds, args.tick)
    print(f"  baseline (bare reader splitting at 0x00): {base_share * 100:.1f}% of one core, {base_frames} frames")

    pairs = open_ptys(args.devices)  # fresh lines for the gateway
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "registry.toml").write_text("".join(
            f'[devices.{d}]\nkind = "bin"\nkey = "{fleet_key(d)}"\n' for d in devices))
        http_port = free_port()
        (work / "gateway.toml").write_text(config_text(work, serial=[p for _, p in pairs], http_port=http_port))
        log = (work / "gateway.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(work / "gateway.toml")],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    stored_serial(http_port)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("gateway did not start:\n" + (work / "gateway.log").read_text()[-2000:])
                    time.sleep(0.2)
            time.sleep(1.0)  # the ports open
            spy = py_spy(proc.pid, args.profile) if args.profile is not None else None
            before, main_before = cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid)
            commits_before = metric(http_port, "kerbline_spool_commits_total")
            t_start = time.monotonic()
            written, back = feed([m for m, _ in pairs], streams, args.seconds, args.tick)
            used = cpu_seconds(proc.pid) - before
            main_used = cpu_seconds(proc.pid, proc.pid) - main_before
            window = time.monotonic() - t_start
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(60)
            time.sleep(2.0)
            stored = stored_serial(http_port)
            commits = metric(http_port, "kerbline_spool_commits_total") - commits_before
        finally:
            proc.terminate()
            proc.wait(30)
    share = used / window
    sent_frames = written / frame_len
    print(f"  GATEWAY: {share * 100:.1f}% of one core for {sent_frames / window:,.0f} frames/s offered "
          f"({written / window / args.devices:,.0f} bytes/s per line), {stored:,} reports stored "
          f"({stored / sent_frames * 100:.0f}% of those sent; each line's first report is sent twice)")
    print(f"  {back / window:,.0f} frames/s back to the devices (acks, and one time command per device)")
    print(f"  {used / sent_frames * 1e6:.1f} us CPU per report ({main_used / sent_frames * 1e6:.1f} in the event loop "
          f"thread, the rest in the spool's SQLite thread and helpers); {commits:,} group commits")
    print(f"  gateway / baseline CPU = {share / base_share:.1f}")
    print(f"  budget: {args.devices} devices at full line rate under 30% of one core: "
          f"{'met' if share < 0.30 and args.devices >= 64 else 'NOT met'}")


if __name__ == "__main__":
    main()
