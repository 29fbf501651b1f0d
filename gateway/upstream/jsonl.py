"""JSON Lines file sink, the demo's default: one reading per line, size-based rotation keeping N files.

`readings.jsonl` is the file being written; at `max_bytes` it becomes `readings.jsonl.1` (the older
ones shift to .2, .3, ... and the one past `keep` is deleted). A batch is written, flushed and fsynced
before the cursor moves, so a crash can repeat a batch's lines (with the same device, boot, seq) but
not lose them. Writing happens in a worker thread, so a slow disk does not stall the event loop.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.spool import ReadMode
from gateway.upstream.batch import Batch
from gateway.upstream.sink import SendResult


@dataclass(frozen=True)
class JsonlSinkConfig:
    """`max_bytes`: size at which the file rotates; `keep`: rotated files kept besides the live one."""

    name: str
    path: Path
    max_bytes: int = 64 * 1024 * 1024
    keep: int = 5
    fsync: bool = True

    def __post_init__(self) -> None:
        if self.max_bytes < 1024 or self.keep < 0:
            raise ValueError(f"jsonl sink {self.name}: max_bytes >= 1024 and keep >= 0 needed")


class JsonlSink:
    def __init__(self, config: JsonlSinkConfig) -> None:
        self.name = config.name
        self.config = config
        self.reads = ReadMode.LINES
        self.rotations = 0

    async def start(self) -> None:
        self.config.path.parent.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        """Nothing stays open between batches."""

    async def send(self, batch: Batch) -> SendResult:
        text = (batch.objects_text() + "\n").encode()
        try:
            await asyncio.to_thread(self._write, text)
        except OSError as exc:
            return SendResult.retry(f"cannot write {self.config.path}: {exc}")
        return SendResult.ok()

    def _write(self, data: bytes) -> None:
        path = self.config.path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > self.config.max_bytes:
            self._rotate()
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            if self.config.fsync:
                os.fsync(f.fileno())

    def _rotate(self) -> None:
        path, keep = self.config.path, self.config.keep
        if keep == 0:
            path.unlink(missing_ok=True)
        else:
            Path(f"{path}.{keep}").unlink(missing_ok=True)
            for i in range(keep - 1, 0, -1):
                older = Path(f"{path}.{i}")
                if older.exists():
                    older.rename(f"{path}.{i + 1}")
            path.rename(f"{path}.1")
        self.rotations += 1
