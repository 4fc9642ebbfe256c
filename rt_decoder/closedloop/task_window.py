"""The task's window (pyqtgraph): what the participant sees, and the mouse for `--intent mouse`.

Draws the workspace square, the target (amber while reaching, green while holding; the grid's
cells with the cued one filled), the cursor, and a status line with the trial counter and the
running success rate. The task loop runs in its own thread (TaskRunner.run); a ~60 Hz QTimer
draws its latest Snapshot, so drawing never delays a task update. The mouse position over the
workspace, in workspace cm, is published as `<t>-pointer` at 100 Hz (CLOSEDLOOP.md).
Closing the window ends the block (files are still written); the window closes itself a moment
after the block ends.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from ..errors import RtDecoderError
from . import streams as S
from .task import Snapshot, TaskRunner, cell_of

REACH_COLOR = (230, 160, 40)
HOLD_COLOR = (60, 200, 80)
CURSOR_COLOR = (250, 250, 250)
HELD_COLOR = (90, 110, 160, 200)  # grid: a held cell that is not the cued one
CURSOR_RADIUS_CM = 0.45
OUTCOME_COLOR = {"success": "#50d060", "timeout": "#ff6060", "wrong": "#ff6060"}


class TaskWindow(QtWidgets.QWidget):
    """Workspace, target, cursor and status; `show_snapshot` draws one Snapshot."""

    def __init__(self, workspace: float, grid: int = 0, name: str = S.DEFAULT_TASK_NAME, pointer: bool = True,
                 title: str = "rt-decoder task") -> None:
        super().__init__()
        self.setWindowTitle(title)
        self.workspace = workspace
        self.grid = grid
        self.pointer_cm = (0.0, 0.0)
        self.runner: TaskRunner | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._drawn: Snapshot | None = None

        self.setStyleSheet("TaskWindow { background: #0f0f14; } QLabel { color: #e6e6e6; }")
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 10)
        self.status = QtWidgets.QLabel("waiting for the block to start")
        self.status.setTextFormat(QtCore.Qt.TextFormat.RichText)
        font = self.status.font()
        font.setPointSize(13)
        self.status.setFont(font)
        self.info = QtWidgets.QLabel("")
        self.info.setStyleSheet("color: #9a9aa6;")
        self.info.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.status, 1)
        top.addWidget(self.info)
        layout.addLayout(top)
        self.view = pg.PlotWidget()
        self.view.setBackground((15, 15, 20))
        self.plot = self.view.getPlotItem()
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        vb = self.plot.getViewBox()
        vb.setAspectLocked(True)
        pad = workspace * 0.04
        vb.setRange(xRange=(-workspace - pad, workspace + pad), yRange=(-workspace - pad, workspace + pad), padding=0)
        layout.addWidget(self.view, 1)

        w = workspace
        frame = QtWidgets.QGraphicsRectItem(-w, -w, 2 * w, 2 * w)
        frame.setPen(pg.mkPen((120, 120, 130), width=2, cosmetic=True))
        frame.setBrush(pg.mkBrush(28, 28, 34))
        self.plot.addItem(frame)
        if grid:
            cw = 2 * w / grid
            for i in range(1, grid):
                for line in (QtWidgets.QGraphicsLineItem(-w + i * cw, -w, -w + i * cw, w),
                             QtWidgets.QGraphicsLineItem(-w, -w + i * cw, w, -w + i * cw)):
                    line.setPen(pg.mkPen((70, 70, 80), width=1, cosmetic=True))
                    self.plot.addItem(line)
            self.target = QtWidgets.QGraphicsRectItem(0, 0, 1, 1)
            # a hold in a cell that is not the cued one (it would select the wrong cell)
            self.held = QtWidgets.QGraphicsRectItem(0, 0, cw, cw)
            self.held.setPen(pg.mkPen(None))
            self.held.setBrush(pg.mkBrush(*HELD_COLOR))
            self.held.setVisible(False)
            self.plot.addItem(self.held)
        else:
            self.target = QtWidgets.QGraphicsEllipseItem(0, 0, 1, 1)
        self.target.setPen(pg.mkPen(None))
        self.target.setVisible(False)
        self.plot.addItem(self.target)
        r = CURSOR_RADIUS_CM
        self.cursor = QtWidgets.QGraphicsEllipseItem(-r, -r, 2 * r, 2 * r)
        self.cursor.setPen(pg.mkPen((20, 20, 20), width=1, cosmetic=True))
        self.cursor.setBrush(pg.mkBrush(*CURSOR_COLOR))
        self.cursor.setZValue(10)
        self.plot.addItem(self.cursor)

        self.view.scene().sigMouseMoved.connect(self._mouse_moved)
        self.pointer_out: Any = None
        if pointer:
            from ..runtime import lsl as L

            self.pointer_out = L.make_outlet(S.pointer_name(name), S.POINTER_TYPE, S.POINTER_LABELS, S.POINTER_RATE_HZ,
                                             units=S.POINTER_UNITS, source_id=f"rt-decoder-task:{name}-pointer",
                                             extra={"workspace": workspace})
            self._pointer_timer = QtCore.QTimer(self)
            self._pointer_timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
            self._pointer_timer.timeout.connect(self._push_pointer)
            self._pointer_timer.start(int(1000 / S.POINTER_RATE_HZ))
        self._draw_timer = QtCore.QTimer(self)
        self._draw_timer.timeout.connect(self._poll)
        self.resize(720, 760)

    # ---- pointer -------------------------------------------------------------------------------
    def _mouse_moved(self, scene_pos: QtCore.QPointF) -> None:
        p = self.plot.getViewBox().mapSceneToView(scene_pos)
        w = self.workspace
        self.pointer_cm = (float(np.clip(p.x(), -w, w)), float(np.clip(p.y(), -w, w)))

    def _push_pointer(self) -> None:
        if self.pointer_out is not None:
            self.pointer_out.push_sample(list(self.pointer_cm))

    # ---- drawing -------------------------------------------------------------------------------
    def show_snapshot(self, s: Snapshot) -> None:
        """Draw the task as the snapshot says (skips work when nothing changed)."""
        if s is self._drawn:
            return
        self._drawn = s
        self.cursor.setPos(s.cursor[0], s.cursor[1])
        tg = s.target
        shown = tg is not None and s.state in (S.STATE_REACH, S.STATE_HOLD)
        self.target.setVisible(shown)
        held_elsewhere = False
        if shown:
            r = tg.radius
            self.target.setRect(tg.x - r, tg.y - r, 2 * r, 2 * r)
            in_target = abs(s.cursor[0] - tg.x) <= r and abs(s.cursor[1] - tg.y) <= r if tg.square else True
            held_elsewhere = s.state == S.STATE_HOLD and not in_target
            color = HOLD_COLOR if s.state == S.STATE_HOLD and in_target else REACH_COLOR
            self.target.setBrush(pg.mkBrush(*color, 220))
        if self.grid:
            self.held.setVisible(held_elsewhere)
            if held_elsewhere:
                cw = 2 * self.workspace / self.grid
                row, col = divmod(cell_of(s.cursor, self.workspace, self.grid), self.grid)
                self.held.setPos(-self.workspace + col * cw, self.workspace - (row + 1) * cw)
        if s.trial == 0 and s.state != S.STATE_DONE:
            self.status.setText("<b>get ready</b> &nbsp; the block starts in a moment")
            return
        rate = f"{100.0 * s.successes / s.done:.0f}%" if s.done else "–"
        state = {S.STATE_ITI: "", S.STATE_REACH: "reach", S.STATE_HOLD: "hold", S.STATE_DONE: "block done"}[s.state]
        last = (f' &nbsp; last: <span style="color:{OUTCOME_COLOR.get(s.last_outcome, "#ccc")}">{s.last_outcome}</span>'
                if s.last_outcome else "")
        self.status.setText(f"<b>trial {s.trial}</b> &nbsp; success {s.successes}/{s.done} ({rate})"
                            f"{last} &nbsp; <i>{state}</i>")

    def _poll(self) -> None:
        if self.runner is not None:
            self.show_snapshot(self.runner.snapshot)
            c, r = self.runner.cfg, self.runner
            info = f"{c.task} · {c.mode}" + (f" · {r.set.decoder} ({r.control or 'waiting'})" if c.mode == "closed" else "")
            if info != self.info.text():
                self.info.setText(info)
        if self._thread is not None and not self._thread.is_alive():
            self._draw_timer.stop()
            if self.runner is not None:
                self.show_snapshot(self.runner.snapshot)
            QtCore.QTimer.singleShot(1500, self.close)

    # ---- the task --------------------------------------------------------------------------------
    def attach(self, runner: TaskRunner) -> None:
        """Run the block in a thread and draw it; an error in the task ends up in self.error."""
        self.runner = runner

        def work() -> None:
            try:
                runner.run()
            except BaseException as e:  # re-raised by run_with_window in the GUI thread
                self.error = e

        self._thread = threading.Thread(target=work, name="task-loop", daemon=True)
        self._thread.start()
        self._draw_timer.start(16)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def finish(self, timeout: float = 10.0) -> None:
        """Stop the block (if running) and wait for the task thread."""
        if self.runner is not None:
            self.runner.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.pointer_out is not None:
            self._pointer_timer.stop()

    def closeEvent(self, ev: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.finish()
        super().closeEvent(ev)


def run_with_window(runner: TaskRunner) -> dict:
    """Open the window, run the block in it, return the summary (the window closes at the end)."""
    if (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        raise RtDecoderError("no display for the task window (DISPLAY is not set): run with --headless, or under xvfb-run")
    from ..plot.window import qt_problem

    problem = qt_problem()
    if problem:
        raise RtDecoderError(f"task window: {problem}; or run with --headless")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    cfg = runner.cfg
    win = TaskWindow(cfg.workspace, cfg.grid if cfg.task == "grid" else 0, runner.set.name,
                     title=f"rt-decoder task — {cfg.task} ({cfg.mode})")
    win.show()
    win.attach(runner)
    import signal

    signal.signal(signal.SIGINT, lambda *_: win.close())
    tick = QtCore.QTimer()  # lets Python see Ctrl-C while Qt's loop runs
    tick.timeout.connect(lambda: None)
    tick.start(200)
    app.exec()
    win.finish()
    if win.error is not None:
        raise win.error
    if runner.summary is None:
        raise RtDecoderError("the task ended before its block started")
    return runner.summary
