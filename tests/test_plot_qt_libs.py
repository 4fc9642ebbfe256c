"""`plot` names the missing X11 libraries (and the packages to install) before Qt can abort.

The probe is the real dynamic loader (ctypes): a library that does not exist on this machine is
reported missing, one that does (libc) is not. No Qt is imported by the check."""

from __future__ import annotations

import sys

import pytest

from rt_decoder.cli import main as cli_main
from rt_decoder.plot import qt_libs

NOT_HERE = "librt-decoder-no-such-library.so.7"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb plugin is Linux's")


def test_loader_probe_tells_present_from_missing():
    assert qt_libs.missing_libraries(["libc.so.6", NOT_HERE]) == [NOT_HERE]


def test_problem_names_the_missing_library_and_its_package():
    libs = {"libc.so.6": "libc6", NOT_HERE: "rt-decoder-fake-pkg0"}
    msg = qt_libs.xcb_problem(libs, environ={"DISPLAY": ":0"})
    assert msg is not None and NOT_HERE in msg and "apt-get install rt-decoder-fake-pkg0" in msg
    assert "libc6" not in msg and "--screenshot" in msg and "\n" not in msg
    assert qt_libs.xcb_problem({"libc.so.6": "libc6"}, environ={"DISPLAY": ":0"}) is None


@pytest.mark.parametrize("env, xcb", [
    ({"DISPLAY": ":0"}, True),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, False),  # --screenshot / headless
    ({"QT_QPA_PLATFORM": "xcb"}, True),
    ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, False),
    ({}, False),
])
def test_only_an_xcb_session_is_checked(env, xcb):
    assert qt_libs.uses_xcb(env) is xcb
    assert (qt_libs.xcb_problem({NOT_HERE: "pkg"}, environ=env) is not None) is xcb


def test_cli_plot_stops_with_one_line_naming_the_packages(monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":0")  # no X server needed: the check runs before the window
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    # only the fake library: the line must not depend on which xcb libraries this machine has
    monkeypatch.setattr(qt_libs, "XCB_LIBS", {NOT_HERE: "rt-decoder-fake-pkg0"})
    assert cli_main(["plot", "--decoder", "nobody", "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "apt-get install rt-decoder-fake-pkg0" in err[0] and "--screenshot" in err[0] and NOT_HERE in err[0]
