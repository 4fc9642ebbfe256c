"""Advance a step model's state without computing its prediction (catch-up when behind).

DESIGN §6: when the loop is behind, zeta still absorbs every bin; only predictions for stale
bins are skipped. The state update is the same ONNX nodes as in the full graph (extracted with
onnx.utils.Extractor, run with the same session options), so it is exact, and for retention
models it skips the network entirely. Graphs whose state depends on the whole graph (Kalman)
extract to the whole graph: still exact, just not cheaper.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..step_model import StepModel, choose_providers


class StateAdvancer:
    """`advance(model, counts)`: model.state <- next state for one bin, no prediction."""

    def __init__(self, model: StepModel, threads: int = 1) -> None:
        import onnx
        import onnxruntime as ort
        from onnx.utils import Extractor

        self.names = [s.name for s in model.card.states]
        self.session: Any = None
        if not self.names:
            return
        proto = onnx.load(str(model.path))
        sub = Extractor(proto).extract_model(["counts", *self.names], [n + "_next" for n in self.names])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        prov = [p for p in model.providers if p in choose_providers("auto")] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(sub.SerializeToString(), sess_options=opts, providers=prov)
        self._outs = [n + "_next" for n in self.names]
        self._x = np.zeros((1, model.n_channels), np.float32)
        for _ in range(5):
            self.session.run(self._outs, {"counts": self._x, **model.state})

    def advance(self, model: StepModel, counts: np.ndarray) -> None:
        if self.session is None:
            return
        self._x[0] = counts
        out = self.session.run(self._outs, {"counts": self._x, **model.state})
        for name, value in zip(self.names, out):
            model.state[name] = value
