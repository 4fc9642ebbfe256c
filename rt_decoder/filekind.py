"""What a file really is, from its first bytes, so an error can say "X is a text file, expected
a zip archive (.npz)" instead of passing on a reader's confusion (a pickle ValueError, "no model
card"). The loaders pick their reader with `kind_of`; errors describe the file with `describe`.
"""

from __future__ import annotations

from pathlib import Path

MAGIC = {b"PK\x03\x04": "npz", b"MATLAB": "mat", b"\x89HDF\r\n\x1a\n": "hdf5", b"XDF:": "xdf"}
NAMES = {"npz": "a zip archive (.npz)", "mat": "a MATLAB .mat file", "hdf5": "an HDF5 file",
         "xdf": "an XDF file"}
EXPECTED = {
    "npz": "a .npz file (a zip archive of NumPy arrays, starting 'PK')",
    "mat": "a MATLAB .mat file (v5/v7, starting 'MATLAB')",
    "hdf5": "an HDF5 file (.h5 / .nwb, starting '\\x89HDF')",
    "xdf": "an XDF file (starting 'XDF:')",
}
OTHER = {b"\x1f\x8b": "gzip-compressed data", b"\x93NUMPY": "a single NumPy array (.npy)",
         b"\x89PNG": "a PNG image", b"%PDF": "a PDF document", b"\x7fELF": "an executable (ELF)"}


def read_head(path: str | Path, n: int = 64) -> bytes:
    """The first `n` bytes (OSError propagates: the caller names the file)."""
    with open(path, "rb") as f:
        return f.read(n)


def kind_of(head: bytes) -> str | None:
    """npz | mat | hdf5 | xdf from the magic bytes, or None."""
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def _text(head: bytes) -> str | None:
    try:
        s = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:       # not merely a character cut at the end of the head
            return None
        s = head[:e.start].decode("utf-8")
    if s and all(c.isprintable() or c in "\r\n\t" for c in s):
        return s
    return None


def describe(head: bytes) -> str:
    """'an empty file (0 bytes)', 'a text file starting "t,x,y"', 'a zip archive (.npz)', ..."""
    if not head:
        return "an empty file (0 bytes)"
    kind = kind_of(head)
    if kind:
        return NAMES[kind]
    for magic, name in OTHER.items():
        if head.startswith(magic):
            return name
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    text = _text(head)
    if text is not None:
        first = text.strip().splitlines()[0] if text.strip() else ""
        first = first[:40] + ("..." if len(first) > 40 else "")
        return f"a text file starting {first!r}" if first else "a text file of blank lines"
    return "binary data starting " + head[:8].hex(" ")


def not_what_expected(path: str | Path, expected: str, head: bytes | None = None) -> str:
    """'is not <expected>: it is <what it is>' for a DataError/ModelError message."""
    return f"is not {EXPECTED.get(expected, expected)}: it is {describe_file(path, head)}"


def describe_file(path: str | Path, head: bytes | None = None) -> str:
    """describe() of the file's first bytes ('an unreadable file' when it cannot be opened)."""
    if head is None:
        try:
            head = read_head(path)
        except OSError:
            return "an unreadable file"
    return describe(head)
