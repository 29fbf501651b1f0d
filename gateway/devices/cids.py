"""Command ids: increasing per device for the device's whole life, across gateway restarts.

A device applies a command only if its cid is above every cid it has applied (its replay guard, kept
in its flash), so the gateway must never hand out a cid twice or go back. The serial link spends one
cid per `ack`, so writing every cid to disk would cost a write per report. Instead cids are reserved in
blocks: the file records, per device, a cid not yet handed out, `BLOCK` above the last one reserved;
after a crash the gateway starts from there, skipping at most a block (a device only needs cids to
increase, not to be consecutive). The file is replaced atomically (temp file, fsync, rename).
Back it up with the spool: a gateway that lost it would start at 1 again and every device would refuse
its commands as replays until the numbers caught up.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

BLOCK = 1024


class CidStore:
    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self.path = path
        self.block = block
        self._next: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self.writes = 0
        if path.exists():
            data = json.loads(path.read_text("utf-8"))
            if not isinstance(data, dict) or not all(type(v) is int and v >= 1 for v in data.values()):
                raise ValueError(f"{path}: not a map of device id -> next cid")
            self._next = dict(data)
            self._reserved = dict(data)

    def next(self, device: str) -> int:
        """A cid above every cid handed out for `device` before, in this process or an earlier one."""
        cid = self._next.get(device, 1)
        self._next[device] = cid + 1
        if cid >= self._reserved.get(device, 1):
            self._reserved[device] = cid + self.block
            self._save()
        return cid

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._reserved, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.writes += 1
