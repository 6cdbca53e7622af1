"""Incremental decoder of the backend's server-sent events: ``data: <payload>`` lines, blank line between."""

from __future__ import annotations

import codecs


class SseDecoder:
    """Feed raw body chunks, get the ``data`` of every completed event; ``ValueError`` on anything else."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._buffer = ""

    def feed(self, chunk: bytes) -> list[str]:
        """The payloads of the events this chunk completes (possibly none)."""
        try:
            self._buffer += self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise ValueError(f"stream is not UTF-8: {exc.reason}") from exc
        self._buffer = self._buffer.replace("\r\n", "\n")
        *blocks, self._buffer = self._buffer.split("\n\n")
        return [payload for block in blocks if (payload := _event_data(block)) is not None]

    def finish(self) -> None:
        """Check the stream ended on an event boundary (a partial event means the body was cut)."""
        try:
            self._buffer += self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ValueError(f"stream ends inside a UTF-8 character: {exc.reason}") from exc
        if self._buffer.strip("\n"):
            raise ValueError(f"stream ends inside an event: {self._buffer[:80]!r}")


def _event_data(block: str) -> str | None:
    """The data of one event block; ``None`` for a block of comments only."""
    data: list[str] = []
    for line in block.split("\n"):
        if line.startswith(":") or (not line and not data):
            continue
        field, colon, value = line.partition(":")
        if field != "data" or not colon:
            raise ValueError(f"unexpected stream line {line[:80]!r} (only 'data:' lines are sent)")
        data.append(value.removeprefix(" "))
    return "\n".join(data) if data else None
