"""The event log on disk: one JSON object a line in ``STATE_DIR/events.log``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO

import msgspec

from master.model import Event

log = logging.getLogger("corral.master")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


class EventLog:
    """Appends events, line-buffered so a crash loses at most the line being written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def append(self, event: Event) -> None:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
            self._file.write(_encoder.encode(event) + b"\n")
        except OSError as e:  # a full disk must not stop the control plane
            log.warning("cannot write event log %s: %s", self.path, e)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, limit: int = 1000) -> list[Event]:
        """The last ``limit`` events on disk (malformed lines skipped)."""
        try:
            lines = self.path.read_bytes().splitlines()[-limit:]
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(_decoder.decode(line))
            except msgspec.DecodeError:
                continue
        return out
