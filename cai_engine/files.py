"""Reading files that users hand us: bounded in size, strictly UTF-8, errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

from cai_engine.errors import CaiError

MAX_INPUT_BYTES = 10 * 1024 * 1024  # constitutions and prompt files larger than this are refused


class InputFileError(CaiError):
    """A user-supplied file that cannot be read as text."""


def read_user_bytes(path: str | os.PathLike, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """Read `path` whole, refusing files over `max_bytes` before reading them."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    if p.is_dir():
        raise InputFileError(f"{p}: is a folder, expected a file")
    size = p.stat().st_size
    if size > max_bytes:
        raise InputFileError(
            f"{p}: the file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB"
        )
    return p.read_bytes()


def decode_user_bytes(data: bytes, label: str, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """Decode `data` as UTF-8 (a leading BOM is dropped); `label` names the source in errors."""
    if len(data) > max_bytes:
        raise InputFileError(
            f"{label}: the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB"
        )
    if not data.strip():
        raise InputFileError(f"{label}: the file is empty")
    if b"\x00" in data[:8192]:
        raise InputFileError(f"{label}: this looks like a binary file, expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputFileError(
            f"{label}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8 and try again"
        ) from None


def read_user_text(path: str | os.PathLike, max_bytes: int = MAX_INPUT_BYTES) -> str:
    return decode_user_bytes(read_user_bytes(path, max_bytes), str(path), max_bytes)
