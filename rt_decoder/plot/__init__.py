"""Live and static views of a running decoder.

`streams` (pylsl + numpy, no Qt) attaches to LSL streams by name and keeps the last seconds in
ring buffers; `window` (pyqtgraph + PySide6) polls those buffers and draws; `report` writes a
static PNG with matplotlib for the demo. Qt is imported only by `window`, so the data side and
the report work on machines without a GUI stack.
"""
