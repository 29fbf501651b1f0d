"""Numbered steps with progress, and the one way a tool fails: which step, why, what to do.

A technician at the kerbside reads the terminal, not a log: every long command (flash, selftest,
install-micropython) announces each step as it starts, prints its progress lines under it, and either
closes it with a one-line result or fails it with a `StepError`. The command line turns a StepError
into three lines (step, why, what to do) and a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import sys
from typing import TextIO


class StepError(Exception):
    """A step failed. `why` says what happened (plain words, no key ever), `fix` what to do about it."""

    def __init__(self, why: str, fix: str, step: str | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.fix = fix
        self.step = step  # filled in by Steps when the error passes through a running step

    def __str__(self) -> str:
        return self.why


class Steps:
    """Prints `[n/N] name ...` as each step begins and its result as it ends.

        steps = Steps("flash bin-0042", ["compile", "config", ...])
        with steps.step("compile") as step:
            step.progress("kerbline/app.mpy")
            step.done("41 files")
    """

    def __init__(self, title: str, names: list[str], out: TextIO | None = None) -> None:
        self.title = title
        self.names = names
        self.out = out or sys.stdout
        self.current: str | None = None
        self._width = max(len(n) for n in names)
        print(title, file=self.out, flush=True)

    def step(self, name: str) -> _Step:
        return _Step(self, name)

    def number(self, name: str) -> str:
        return f"[{self.names.index(name) + 1}/{len(self.names)}]"

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


class _Step:
    def __init__(self, steps: Steps, name: str) -> None:
        self._steps = steps
        self.name = name
        self._closed = False

    def __enter__(self) -> _Step:
        s = self._steps
        s.current = self.name
        s._print(f"{s.number(self.name)} {self.name.ljust(s._width)} ...")
        return self

    def progress(self, text: str) -> None:
        """A line under the running step, e.g. one file written."""
        self._steps._print(f"      {text}")

    def done(self, result: str = "") -> None:
        s = self._steps
        self._closed = True
        s._print(f"{s.number(self.name)} {self.name.ljust(s._width)} ok{'  ' + result if result else ''}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        s = self._steps
        if isinstance(exc, StepError) and exc.step is None:
            exc.step = f"{s.number(self.name)} '{self.name}'"
        if exc is not None:
            s._print(f"{s.number(self.name)} {self.name.ljust(s._width)} FAILED")
        elif not self._closed:
            self.done()
        s.current = None


def report_failure(command: str, error: StepError, out: TextIO | None = None) -> None:
    """The three lines a failed command ends with."""
    stream = out or sys.stderr
    where = f" at step {error.step}" if error.step else ""
    print(f"{command} failed{where}: {error.why}", file=stream)
    print(f"  what to do: {error.fix}", file=stream, flush=True)
