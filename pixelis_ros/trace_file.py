"""A CoTA trace file (``--trace``, the node's ``trace`` parameter) read as text, or a clear error.

``Path.read_text()`` decodes with the locale's encoding, reads a file of any size whole, and
fails with Python's ``UnicodeDecodeError`` wording. A trace is a script a person wrote or a run
saved: it is UTF-8 and small, so ``read_trace`` says so in our words when it is not, before
``ScriptedPolicy`` (which caps a script at ``MAX_SCRIPT_CHARS``) ever sees it.
"""

from __future__ import annotations

from pathlib import Path

from pixelis_ros.policy.scripted import MAX_SCRIPT_CHARS

MAX_TRACE_BYTES = 4 * MAX_SCRIPT_CHARS
"""Largest trace file read: a script at the character cap, every character 4 UTF-8 bytes."""


class TraceFileError(ValueError):
    """A trace file that cannot be read as a UTF-8 script; the message names the file."""


def read_trace(path: str | Path) -> str:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise TraceFileError(f"{path}: {size} bytes, more than a trace may hold ({MAX_TRACE_BYTES} bytes)")
        data = path.read_bytes()
    except OSError as e:
        raise TraceFileError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TraceFileError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                             "save the trace as UTF-8") from None
