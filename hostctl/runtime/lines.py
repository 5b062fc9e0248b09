"""Turning a byte stream of arbitrary chunks into lines: per stream, incremental UTF-8, `\r` as status."""

from __future__ import annotations

import codecs
from collections.abc import Callable


class LineSplitter:
    """Feed write() chunks in any split; complete lines go to on_line, `\r`-overwritten text to on_status."""

    def __init__(self, on_line: Callable[[str], None], on_status: Callable[[str], None] | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._on_line = on_line
        self._on_status = on_status or (lambda _text: None)

    def feed(self, chunk: bytes) -> None:
        self._buffer += self._decoder.decode(chunk)
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit(line)

    def close(self) -> None:
        """Flush what is left: the decoder's pending bytes and a last line without a newline."""
        self._buffer += self._decoder.decode(b"", final=True)
        if self._buffer:
            self._emit(self._buffer)
        self._buffer = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        if "\r" in line:
            *updates, line = line.split("\r")
            for update in updates:
                if update:
                    self._on_status(update)
        self._on_line(line)
