"""A directory of fsync'd segment files holding reports while the database is down.

Each :meth:`FileSpool.append` writes one new segment (MessagePack of the reports) to a
temporary name, fsyncs it, renames it into place and fsyncs the directory, so a segment
is either complete or absent after a crash. Segments are named by a zero-padded counter
and replayed in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from tpas.errors import StorageUnavailable
from tpas.storage.ports import NewReport

__all__ = ["FileSpool"]

log = logging.getLogger("tpas.spool")

_SUFFIX: Final = ".spool"
_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(list[NewReport])


class FileSpool:
    """The :class:`~tpas.storage.ports.Spool` port on a local directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._counter = 0
        # Appends come from several worker threads at once (the writer keeps several
        # batches in flight): naming and writing a segment is one critical section.
        self._lock = threading.Lock()

    def _next_name(self) -> str:
        existing = self.segments()
        if existing:
            self._counter = max(self._counter, int(existing[-1].removesuffix(_SUFFIX)))
        self._counter += 1
        return f"{self._counter:020d}{_SUFFIX}"

    def append(self, reports: Sequence[NewReport]) -> None:
        """Write the reports as one segment and make it durable."""
        with self._lock:
            self._append(reports)

    def _append(self, reports: Sequence[NewReport]) -> None:
        temporary: Path | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = self._next_name()
            temporary = self.directory / f".{name}.tmp"
            data = _encoder.encode(list(reports))
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.directory / name)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            # A half-written segment would hold space on a full disk for good.
            if temporary is not None:
                with contextlib.suppress(OSError):
                    temporary.unlink(missing_ok=True)
            raise StorageUnavailable(f"spool {self.directory} cannot take reports: {exc}") from exc

    def segments(self) -> list[str]:
        """Segment names, oldest first; :class:`StorageUnavailable` if the directory
        cannot be listed (a missing directory is an empty spool)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageUnavailable(f"spool {self.directory} cannot be listed: {exc}") from exc
        return sorted(n for n in names if n.endswith(_SUFFIX) and not n.startswith("."))

    def read(self, segment: str) -> list[NewReport]:
        """Read one segment back.

        A segment that cannot be decoded is renamed ``*.corrupt`` (kept for inspection,
        logged) and reads as empty, so that it cannot stop the replay of the others.
        """
        path = self.directory / segment
        try:
            return _decoder.decode(path.read_bytes())
        except msgspec.DecodeError:
            log.error("spool segment %s cannot be decoded; kept as %s.corrupt", path, segment)
            path.replace(path.with_name(f"{segment}.corrupt"))
            return []

    def remove(self, segment: str) -> None:
        """Delete a replayed segment; :class:`StorageUnavailable` if it cannot be deleted
        (it is replayed again later, as duplicates)."""
        try:
            (self.directory / segment).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"spool segment {segment} cannot be removed: {exc}") from exc
