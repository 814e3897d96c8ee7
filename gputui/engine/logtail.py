"""Follow a growing log file by offset: only new bytes are read, whole lines are returned."""

from __future__ import annotations

from pathlib import Path


class LogTail:
    def __init__(self, path: str | Path, *, from_end: bool = False, max_read: int = 1 << 20):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        self._max_read = max_read
        if from_end:
            try:
                self.offset = self.path.stat().st_size
            except OSError:
                pass

    def read_lines(self, *, flush: bool = False) -> list[str]:
        """New complete lines since the last call; `flush` also returns a final unterminated line."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self._max_read)
        except OSError:
            data = b""
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if flush and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines]
