"""The fleet's board: the firmware's own `sim` board, with the sensor server answered in-process.

A faithful device's board (`kerbline.board.sim.Board`) turns every hardware access into one request line
to the sensor server over TCP (`ask(fmt, *args)`), and the server answers from the device's `Hardware`.
In the fleet, thousands of devices share one process, so `FleetBoard` subclasses that board and replaces
only the transport: `ask` hands the same request line to the same server's request handler directly. So
the sensor methods (`ultrasonic_echo_us`, `i2c_*`, `adc_mv`, `temp_16`, `pin_value`, `set_relay`,
`set_pwm`) are the firmware's code, and the raw values are the sensor server's: a fleet device reads what
a faithful device on the same hardware reads, byte for byte (tests/simulator/test_fleet_faithful.py).

What cannot be the firmware's here is everything tied to a process of its own: time, flash and power.
- Time is virtual: `ticks_ms()` is the device's own millisecond counter, advanced by `sleep_ms()` (a
  sonar's 60 ms between pings takes no wall time) and by the fleet when it moves the device to its next
  wake; `rtc_ms()` follows it. `unix_time()` is None until a `time` command sets it, then that time plus
  the virtual milliseconds since (`clock_ms`, which the fleet sets at each wake from simulated time).
- RTC memory is a bytes attribute; the watchdog is a no-op (nothing can hang between two awaits here);
  deep sleep and reset are the fleet's scheduling, not process exits, so they raise `FleetBoard.Exit`.

The request handler is `SensorServer._handle`, reached with the line the board would send. The requests
a device makes at every sample go to the handler's own per-request parts instead, with the board's
arguments as they are, which skips printing the numbers only to parse them back (ask() is the fleet's
innermost loop: about ten of them per report): requests whose arguments are all integers to `_op`, an I2C
write to `_i2c_write` (the hex the board wrote, decoded as `_handle` decodes it). Anything those parts
refuse is asked again as a line through `_handle`, which counts and answers the refusal. `_op` is a
coroutine that completes without suspending for every request except `sleep` (which the fleet never
sends), so one `send(None)` drives it.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Sequence

from kerbline.board import DEEPSLEEP, POWER, SOFT
from kerbline.board.sim import Board
from simulator.devices.sensor_server import NoReading, SensorServer


_OP = 0  # served by the handler's per-op part (integer arguments)
_I2C_WRITE = 1  # served by its I2C write part
_LINE = 2  # served as a request line
_DIRECT = {"echo": _OP, "i2cr": _OP, "adc": _OP, "temp": _OP, "pin": _OP, "relay": _OP, "pwm": _OP,
           "i2cw": _I2C_WRITE}
_ROUTE: dict[str, tuple[str, int]] = {}  # request format -> (its op, how it is served); the board has a handful


def _route(fmt: str) -> tuple[str, int]:
    op = fmt.split(" ", 1)[0]
    return op, _DIRECT.get(op, _LINE)


class _Watchdog:
    def feed(self) -> None:
        """Nothing to do: a fleet device cannot stall without stalling the whole fleet."""


class FleetBoard(Board):
    """One device's board inside the fleet process."""

    class Exit(Exception):
        """The firmware ended its run (deep sleep or reset); `cause` says which."""

        def __init__(self, cause: str, sleep_ms: int = 0) -> None:
            super().__init__(cause)
            self.cause = cause
            self.sleep_ms = sleep_ms

    def __init__(self, server: SensorServer, device_id: str) -> None:  # no super().__init__: no process, no files
        self._server = server
        self._device = server.devices[device_id]
        # the handler's parts, bound once; `_op` only indexes its argument list, so the board's tuple does
        self._op: Callable[[Any, str, Sequence[int]], Coroutine[Any, Any, str]] = server._op  # type: ignore[assignment]
        self._i2c_write = server._i2c_write
        self._cause = POWER
        self._wake: str | None = None
        self._dog = _Watchdog()
        self.ms = 0  # virtual ticks
        self.clock_ms = 0  # simulated unix ms at the current wake, minus self.ms then (set by the fleet)
        self.clock_offset_s: int | None = None  # device clock minus simulated time, once a `time` command set it
        self.rtc: bytes | None = None

    # --- the sensor server, in-process
    def ask(self, fmt: str, *args: Any) -> bytes:
        route = _ROUTE.get(fmt)
        if route is None:
            route = _ROUTE[fmt] = _route(fmt)
        op, how = route
        if how == _OP:
            coro = self._op(self._device, op, args)
            try:
                coro.send(None)
            except StopIteration as done:
                return done.value.encode()  # type: ignore[no-any-return]
            except NoReading:
                return b"nack" if op == "i2cr" else b"none"
            except Exception:  # noqa: BLE001  refused: asked again as a line, which the handler counts
                pass
            else:
                coro.close()
                raise OSError(5)  # a request that would wait (sleep) is not served in-process
        elif how == _I2C_WRITE:
            try:
                data = bytes.fromhex(args[1])
            except (IndexError, TypeError, ValueError):  # refused: asked again as a line
                pass
            else:
                return self._i2c_write(self._device, args[0], data).encode()
        return self._ask_line(fmt % args)

    def _ask_line(self, line: str) -> bytes:
        """The request as the line the board sends, through the handler as the TCP server runs it."""
        coro = self._server._handle(self._device, line.split())
        try:
            coro.send(None)
        except StopIteration as done:
            reply: str = done.value
        else:
            coro.close()
            raise OSError(5)
        if reply.startswith("err"):
            raise OSError(5)
        return reply.encode()

    # --- time
    def ticks_ms(self) -> int:
        return self.ms

    def ticks_diff(self, a: int, b: int) -> int:
        return a - b

    def sleep_ms(self, ms: int) -> None:
        self.ms += ms

    def rtc_ms(self) -> int:
        return self.clock_ms + self.ms

    def unix_time(self) -> int | None:
        if self.clock_offset_s is None:
            return None
        return (self.clock_ms + self.ms) // 1000 + self.clock_offset_s

    def set_unix_time(self, t: int) -> None:
        self.clock_offset_s = t - (self.clock_ms + self.ms) // 1000

    # --- power, resets, memory
    def watchdog(self, timeout_ms: int) -> _Watchdog:
        return self._dog

    def deep_sleep(self, ms: int, wake_pins: list[int]) -> None:
        self._cause = DEEPSLEEP
        raise FleetBoard.Exit(DEEPSLEEP, ms)

    def reset(self) -> None:
        self._cause = SOFT
        raise FleetBoard.Exit(SOFT)

    def power_cut(self) -> None:
        """RTC memory and the clock are lost; the next boot is a power-on."""
        self._cause = POWER
        self.rtc = None
        self.clock_offset_s = None

    def persist_read(self) -> bytes | None:
        return self.rtc

    def persist_write(self, data: bytes) -> None:
        self.rtc = bytes(data)

    def network_up(self, timeout_ms: int) -> bool:
        return True

    def heap_free(self) -> int:
        return 0
