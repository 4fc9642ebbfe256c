"""Every file rt-decoder writes appears whole or not at all, and unwritable places are found early.

A writer puts the bytes in a temporary file in the destination's own folder, fsyncs it and
renames it over the destination (os.replace is atomic within a filesystem), so a crash, Ctrl-C
or a full disk leaves the previous file (or none) and never a truncated one; the temporary file
is removed on any failure. `check_output` / `check_output_dir` run before long work starts
(training, sampling, fitting), so a bad --out costs a second, not an hour.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError, where

_UMASK = os.umask(0o022)   # read once at import (umask can only be read by setting it)
os.umask(_UMASK)


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _nearest_existing(folder: Path) -> Path:
    a = folder
    while not a.exists() and a != a.parent:
        a = a.parent
    return a


def _prepare_dir(folder: Path, named: Path, what: str) -> None:
    """Create `folder` when missing and create + remove a probe file in it; errors name `named`."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(where(named, f"cannot write the {what}: {folder} is a file, not a folder"))
    base = _nearest_existing(folder)
    if base.exists() and not base.is_dir():
        raise OutputError(where(named, f"cannot write the {what}: {base} is a file, not a folder"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(where(named, f"cannot create the folder {folder} for the {what} ({_reason(e)})")) from None
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".rt-decoder-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(where(named, f"cannot write the {what} in {folder} ({_reason(e)})")) from None


def check_output_dir(folder: str | Path, what: str = "output folder") -> Path:
    """Create `folder` (and missing parents) and prove a file can be created in it; OutputError if not."""
    folder = Path(folder)
    _prepare_dir(folder, folder, what)
    return folder


def check_output(path: str | Path, what: str = "output") -> Path:
    """An output file path is usable: not a folder, its folder exists and accepts a new file.
    A missing folder is refused, not created: a mistyped path must not grow directories from
    the root (output *folders*, check_output_dir, are created). Run it before long work; the
    write itself is atomic_path's."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(where(path, f"the {what} is a folder; give a file name"))
    folder = path.parent if str(path.parent) else Path(".")
    base = _nearest_existing(folder)
    if base.exists() and not base.is_dir():
        raise OutputError(where(path, f"cannot write the {what}: {base} is a file, not a folder"))
    if not folder.exists():
        raise OutputError(where(path, f"cannot write the {what}: the folder {folder} does not exist (create it first)"))
    _prepare_dir(folder, path, what)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that look at it still work);
    on success fsync it and rename it to `path`; on any failure remove it. OSError -> OutputError."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        os.chmod(tmp_name, 0o666 & ~_UMASK)   # mkstemp makes 0600; the result should be like any new file
    except OSError as e:
        raise OutputError(where(path, f"cannot write ({_reason(e)})")) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(where(path, f"cannot write ({_reason(e)}); nothing was written")) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    with contextlib.suppress(OSError):   # the rename itself reaches the disk with the folder
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    """JSON (indent 2 unless given) with a trailing newline, atomically."""
    kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **kwargs) + "\n")
