"""Running an ONNX step graph bin by bin: the one place that owns an onnxruntime session.

Offline evaluation, the streaming runtime, generation and the benchmarks all advance models
through `StepModel`, so what `evaluate` reports is what a streaming user sees.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import ModelError, where
from .model_card import ModelCard, read_card


def choose_providers(prefer: str = "auto") -> list[str]:
    """CUDA when present (and asked for or auto), else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if prefer == "cpu":
        return ["CPUExecutionProvider"]
    if prefer in ("auto", "cuda") and "CUDAExecutionProvider" in available and _cuda_usable():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if prefer == "cuda":
        raise ModelError("CUDA was requested but onnxruntime has no usable CUDA provider here")
    return ["CPUExecutionProvider"]


def _cuda_usable() -> bool:
    """onnxruntime-gpu lists CUDA even without a GPU; only claim it when a device answers."""
    try:
        import ctypes

        lib = ctypes.CDLL("libcuda.so.1")
        n = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value > 0
    except OSError:
        return False


def session_options(threads: int = 1):
    """The runtime's onnxruntime settings: pinned threads, sequential, full graph optimization."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class StepModel:
    """An ONNX step graph plus its model card and recurrent state.

    threads: intra-op threads (1 by default: on small machines extra threads lower the median
    and blow up the tail). The session is warmed up on construction, then the state is reset.
    """

    def __init__(self, path: str | Path, threads: int = 1, providers: str = "auto", warmup: int = 20):
        import onnxruntime as ort

        self.path = Path(path)
        self.card: ModelCard = read_card(self.path)
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options(threads),
                                                providers=choose_providers(providers))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelError(where(self.path, f"onnxruntime cannot load the graph ({str(e).splitlines()[0][:200]})")) from None
        self.providers = self.session.get_providers()
        self._check_graph()
        self._state_names = [s.name for s in self.card.states]
        self._output_names = ["prediction"] + [n + "_next" for n in self._state_names]
        self._x = np.zeros((1, self.card.n_channels), np.float32)
        self._state_session = None
        self.reset()
        for _ in range(warmup):
            self.step(self._x[0])
        self.reset()

    @property
    def n_channels(self) -> int:
        return self.card.n_channels

    @property
    def n_outputs(self) -> int:
        return self.card.n_outputs

    def _check_graph(self) -> None:
        """The graph's inputs and outputs must be exactly what the card says."""
        ins = {i.name: i.shape for i in self.session.get_inputs()}
        outs = {o.name: o.shape for o in self.session.get_outputs()}
        want_in = {"counts": [1, self.card.n_channels]} | {s.name: s.shape for s in self.card.states}
        want_out = {"prediction": [1, self.card.n_outputs]} | {s.name + "_next": s.shape for s in self.card.states}
        for kind, have, want in (("input", ins, want_in), ("output", outs, want_out)):
            if set(have) != set(want):
                raise ModelError(where(self.path, f"graph {kind}s {sorted(have)} do not match the model card's {sorted(want)}"))
            for name, shape in want.items():
                if [d if isinstance(d, int) else -1 for d in have[name]] != list(shape):
                    raise ModelError(where(self.path, f"graph {kind} {name!r} has shape {have[name]}, the model card says {shape}"))

    def reset(self) -> None:
        """Zero state: the start of a session (zeta_0 = 0)."""
        self.state = {s.name: np.zeros(s.shape, np.float32) for s in self.card.states}

    def step(self, counts: np.ndarray) -> np.ndarray:
        """Advance one bin; returns the prediction (K,) float32 and keeps the new state."""
        self._x[0] = counts
        feeds = {"counts": self._x, **self.state}
        out = self.session.run(self._output_names, feeds)
        for name, value in zip(self._state_names, out[1:]):
            self.state[name] = value
        return out[0][0]

    def advance(self, counts: np.ndarray) -> None:
        """Advance the state one bin without computing the prediction (catch-up when behind).

        DESIGN §6: when the loop is behind, zeta still absorbs every bin; only stale predictions
        are skipped. The state update runs the same ONNX nodes as the full graph (cut out with
        onnx.utils.Extractor, same session options), so it is exact; for retention models it
        skips the network. Graphs whose state needs the whole graph (Kalman) extract whole.
        """
        if not self._state_names:
            return
        if self._state_session is None:
            self.prepare_advance()
        self._x[0] = counts
        out = self._state_session.run(self._output_names[1:], {"counts": self._x, **self.state})
        for name, value in zip(self._state_names, out):
            self.state[name] = value

    def prepare_advance(self) -> None:
        """Build and warm the state-only session now, so the first catch-up is not slow."""
        if self._state_names and self._state_session is None:
            self._state_session = self._make_state_session()

    def _make_state_session(self):
        import onnx
        import onnxruntime as ort
        from onnx.utils import Extractor

        proto = onnx.load(str(self.path))
        sub = Extractor(proto).extract_model(["counts", *self._state_names], self._output_names[1:])
        sess = ort.InferenceSession(sub.SerializeToString(), sess_options=session_options(self.threads),
                                    providers=self.providers)
        zeros = {"counts": np.zeros((1, self.n_channels), np.float32),
                 **{s.name: np.zeros(s.shape, np.float32) for s in self.card.states}}
        for _ in range(5):
            sess.run(self._output_names[1:], zeros)
        return sess

    def run(self, counts: np.ndarray, progress: bool = False) -> np.ndarray:
        """Every bin of (T, D) counts in order from the current state -> (T, K) predictions."""
        counts = np.asarray(counts, dtype=np.float32)
        if counts.ndim != 2 or counts.shape[1] != self.n_channels:
            raise ModelError(where(self.path, f"model expects {self.n_channels} channels, data has shape {counts.shape}"))
        out = np.empty((counts.shape[0], self.n_outputs), np.float32)
        it = range(counts.shape[0])
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"stepping {self.path.name}", unit="bin", leave=False)
        for k in it:
            out[k] = self.step(counts[k])
        return out

    def time_steps(self, n: int = 1000) -> np.ndarray:
        """Per-step wall time in seconds for n steps on zero input (for benchmarks)."""
        t = np.empty(n)
        for i in range(n):
            t0 = time.perf_counter()
            self.step(self._x[0])
            t[i] = time.perf_counter() - t0
        self.reset()
        return t
