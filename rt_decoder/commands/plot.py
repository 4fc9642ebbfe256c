"""Live plot of a running decoder, attached to its LSL streams by name.

Shows, for the last --window-s seconds: predicted vs true traces (one small plot per output,
matched by channel label), a 2-D cursor view of predicted vs true position with short trails,
the latency histogram with p50/p99 and deadline-miss/skip/gap counts from the DecoderStats
stream, and the live retention image ζ (or, without a Zeta stream, a spike raster from the
replay's SpikeCounts stream). Each stream shows "waiting for stream", "connected" or
"stream lost"; the plot keeps looking and reconnects when a stream (re)appears.

Stream names default to what `rt-decoder run` and `rt-decoder replay` publish:
  --decoder rt-decoder   --stats <decoder>-stats   --zeta <decoder>-zeta
  --truth <replay>-behavior   --spikes <replay>-spikes   (--replay defaults to "replay")
Pass '' to leave a stream out, e.g. --zeta ''.

A window needs Qt's X11 libraries; on Debian/Ubuntu:
  sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
       libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-randr0 libxcb-xinerama0
(plot checks and names the missing ones before opening the window).

Headless: with --screenshot the window renders offscreen for --duration seconds (default 5),
is saved to PNG, and the command exits 0. Without a display (no DISPLAY on Linux) give
--screenshot or --duration. --fps prints the frames painted per second at exit.
Try it without a decoder:  python -m rt_decoder.plot.synthetic  in one shell, rt-decoder plot
in another.

Example:
  rt-decoder replay session.npz --name replay &
  rt-decoder run model.onnx --input replay-spikes --zeta-stream &
  rt-decoder plot
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..errors import RtDecoderError, where

HELP = "live plot: predicted vs true kinematics, cursor, latency histogram and ζ from LSL streams"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder", default="rt-decoder", metavar="NAME",
                   help="decoder output stream (Kinematics) (default: rt-decoder)")
    p.add_argument("--replay", default="replay", metavar="NAME",
                   help="replay name whose <NAME>-behavior and <NAME>-spikes streams are read (default: replay)")
    p.add_argument("--truth", default=None, metavar="NAME",
                   help="ground-truth stream, same channel labels as the decoder (default: <replay>-behavior)")
    p.add_argument("--stats", default=None, metavar="NAME",
                   help="DecoderStats stream (default: <decoder>-stats)")
    p.add_argument("--zeta", default=None, metavar="NAME",
                   help="ζ snapshot stream, shown as an image (default: <decoder>-zeta)")
    p.add_argument("--spikes", default=None, metavar="NAME",
                   help="SpikeCounts stream for the raster when there is no ζ stream (default: <replay>-spikes)")
    p.add_argument("--window-s", type=float, default=10.0, metavar="S",
                   help="seconds of history shown in the traces and the raster (default: 10)")
    p.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                   help="render offscreen, save the window to this PNG after --duration seconds and exit")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="close after S seconds (default: run until closed; 5 with --screenshot)")
    p.add_argument("--fps", action="store_true", help="print the measured frames per second at exit")
    p.add_argument("--size", default="1400x860", metavar="WxH", help="window size in pixels (default: 1400x860)")


def _names(args: argparse.Namespace):
    from ..plot.window import StreamNames

    def pick(value: str | None, default: str) -> str | None:
        return default if value is None else (value or None)

    return StreamNames(
        decoder=args.decoder,
        truth=pick(args.truth, f"{args.replay}-behavior"),
        stats=pick(args.stats, f"{args.decoder}-stats"),
        zeta=pick(args.zeta, f"{args.decoder}-zeta"),
        spikes=pick(args.spikes, f"{args.replay}-spikes"),
    )


def _check(args: argparse.Namespace) -> tuple[int, int]:
    if not args.decoder:
        raise RtDecoderError("--decoder: a stream name is required")
    if not args.window_s > 0:
        raise RtDecoderError(f"--window-s: must be > 0, got {args.window_s}")
    if args.duration is not None and not args.duration > 0:
        raise RtDecoderError(f"--duration: must be > 0, got {args.duration}")
    if args.screenshot is not None:
        parent = args.screenshot.resolve().parent
        if not parent.is_dir():
            raise RtDecoderError(where(args.screenshot, f"directory {parent} does not exist"))
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
        if w < 200 or h < 150:
            raise ValueError
    except ValueError:
        raise RtDecoderError(f"--size: expected WxH of at least 200x150, got {args.size!r}") from None
    return w, h


def _headless(screenshot: bool) -> bool:
    """Offscreen rendering when asked for a screenshot or when Linux has no display."""
    no_display = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return screenshot or no_display


def run(args: argparse.Namespace) -> int:
    size = _check(args)
    duration = args.duration if args.duration is not None else (5.0 if args.screenshot else None)
    if _headless(args.screenshot is not None):
        if duration is None and "QT_QPA_PLATFORM" not in os.environ:
            raise RtDecoderError("rt-decoder plot: no display (DISPLAY is not set); use --screenshot PNG "
                                 "[--duration S] to render offscreen, or --duration S to measure --fps")
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")
    from ..plot.qt_libs import xcb_problem

    problem = xcb_problem()  # before Qt loads: its own abort text names no package
    if problem:
        raise RtDecoderError(f"rt-decoder plot: {problem}")
    try:
        from pyqtgraph.Qt import QtCore, QtWidgets

        from ..plot.window import PlotWindow, qt_problem
    except ImportError as e:
        raise RtDecoderError(f"rt-decoder plot: needs pyqtgraph and PySide6 ({e}); pip install 'rt-decoder[gui]'") from None
    problem = qt_problem()
    if problem:
        raise RtDecoderError(f"rt-decoder plot: {problem}")

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    win = PlotWindow(_names(args), window_s=args.window_s)
    win.resize(*size)
    result: dict[str, object] = {"saved": None, "fps": None}

    def finish() -> None:
        result["fps"] = win.fps()
        win.tick()
        if args.screenshot is not None:
            from ..atomic import atomic_path

            pix = win.grab()
            with atomic_path(args.screenshot) as tmp:
                result["saved"] = bool(pix.save(str(tmp)))
        win.close()
        app.quit()

    old = signal.signal(signal.SIGINT, lambda *_: finish())  # Ctrl+C closes cleanly (the timer lets Python see it)
    try:
        win.show()
        win.start()
        if duration is not None:
            QtCore.QTimer.singleShot(int(duration * 1000), finish)
        app.exec()
    finally:
        signal.signal(signal.SIGINT, old)
        win.stop()
    if args.fps:
        fps = result["fps"] if result["fps"] is not None else win.fps()
        print(f"fps: {fps:.1f} frames painted per second ({win.frames} redraws)")
    for role, w in win.watchers.items():
        n = 0 if w.buffer is None else w.buffer.total
        print(f"{role} {w.name}: {w.state}, {n} samples", file=sys.stderr)
    if args.screenshot is not None:
        if not result["saved"]:
            raise RtDecoderError(where(args.screenshot, "could not write the screenshot"))
        print(f"screenshot: {args.screenshot}")
    return 0
