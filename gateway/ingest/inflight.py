"""Reports a link has handed to the spool and not yet had answered: what a drain waits for."""
from __future__ import annotations

import asyncio

# A drain waits this long at most: a spool that cannot commit must not keep the gateway from stopping
# (what was not committed was not acknowledged either, so the device or the broker still has it).
DRAIN_TIMEOUT_S = 10.0


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, n: int = 1) -> None:
        self.count += n
        self._idle.clear()

    def done(self, n: int = 1) -> None:
        self.count -= n
        if not self.count:
            self._idle.set()

    async def drained(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """True once every report handed over is answered; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
