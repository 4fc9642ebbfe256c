"""Does this desktop have the system libraries Qt's X11 (xcb) platform plugin loads?

PySide6 wheels ship Qt but not these; on a bare Debian/Ubuntu they are missing and Qt aborts
with its own text ("could not load the Qt platform plugin xcb ..."). Checked before any Qt import
by loading each library with ctypes (the dynamic loader Qt uses), so `plot` can say which
packages to install instead. No Qt here: importable anywhere.
"""

from __future__ import annotations

import ctypes
import os
import sys

# soname -> Debian/Ubuntu package, from `ldd` of PySide6's libqxcb.so / libQt6XcbQpa.so.6
XCB_LIBS = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
}
PACKAGES = " ".join(XCB_LIBS.values())


def missing_libraries(sonames: list[str] | tuple[str, ...]) -> list[str]:
    """The sonames the dynamic loader cannot open, in the order given."""
    missing = []
    for name in sonames:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def uses_xcb(environ: dict[str, str] | None = None) -> bool:
    """Qt will pick its xcb plugin: Linux, a DISPLAY, and QT_QPA_PLATFORM unset or xcb (with a
    Wayland session and no platform forced, Qt may use Wayland instead: not judged)."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return False
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":")[0] == "xcb"
    return bool(env.get("DISPLAY")) and not env.get("WAYLAND_DISPLAY")


def xcb_problem(libs: dict[str, str] | None = None, environ: dict[str, str] | None = None) -> str | None:
    """One line naming what is missing and how to get it, or None when the window can open."""
    libs = XCB_LIBS if libs is None else libs
    if not uses_xcb(environ):
        return None
    missing = missing_libraries(tuple(libs))
    if not missing:
        return None
    packages = " ".join(dict.fromkeys(libs[m] for m in missing))
    return (f"Qt's X11 (xcb) plugin needs system libraries that are missing ({', '.join(missing)}): "
            f"sudo apt-get install {packages} (Debian/Ubuntu); or render headless with --screenshot PNG")
