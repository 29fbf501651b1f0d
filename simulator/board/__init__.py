"""The virtual board: a pty that the real `mpremote` flashes, run by MicroPython unix-port processes.

See `virtual_board.VirtualBoard` (and `python -m simulator.board --flash DIR`).
"""

from simulator.board.repl import Phase
from simulator.board.virtual_board import VirtualBoard

__all__ = ["Phase", "VirtualBoard"]
