"""`python -m simulator.board --flash DIR [--heap 128k]`: run one virtual board until Ctrl-C or SIGTERM.

Prints the port path on the first line of stdout (for `mpremote connect <path> ...`), then waits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from simulator.board.virtual_board import DEFAULT_HEAP, VirtualBoard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.board", description=__doc__.splitlines()[0])
    parser.add_argument("--flash", required=True, type=Path, help="the board's flash directory (its '/')")
    parser.add_argument("--heap", default=DEFAULT_HEAP, help="MicroPython heap size, e.g. 128k (default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.flash.is_dir():
        parser.error(f"--flash {args.flash}: not a directory")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with VirtualBoard(args.flash, heap=args.heap) as board:
        print(board.port, flush=True)
        stop.wait()
        print(f"virtual board stopped; counters: {board.stats}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
