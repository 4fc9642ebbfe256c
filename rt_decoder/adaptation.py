"""Unsupervised input alignment across days (DESIGN §10): the one home of its math.

Neural recordings drift between days (rates halve, channels fall silent); the network behind
the read-in was trained on particular input statistics. Without any behaviour, each input
channel u_p of the network (the read-in's output, or the quantized counts of a plain model) is
mapped by v = u * gain + offset so its mean and standard deviation match the training days'
(`ref_mean`, `ref_std`, stored in the model card's extra["adapt_ref"]).

Robustness (z-scoring a few minutes blows up channels that happen to be nearly silent in them):
  - a channel whose std is below STD_FLOOR of its reference std (or ABS_FLOOR) is treated as
    silent: gain 0, offset ref_mean, i.e. the network sees its training average;
  - a channel silent in training (ref_std < ABS_FLOOR) is always held at its training average;
  - the gain is clipped to GAIN_RANGE.

Two forms, one formula (`align`):
  batch   `calibrate --unsupervised`: statistics of the new day's first minutes, folded into the
          read-in (exact: the read-in is affine);
  online  `run --adapt`: exponential running moments with time constant tau, updated causally from
          the stream alone, as an extra state tensor "adapt" [1, 2, P] inside the step graph
          (`with_online_adaptation`). The state starts at the reference (zeros = no deviation),
          so a re-run of a session log through the same graph is exact by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ModelError, where
from .model_card import CARD_KEY, ModelCard, StateSpec, attach

GAIN_RANGE = (0.25, 4.0)
STD_FLOOR = 0.1      # below this fraction of the reference std a channel counts as silent
ABS_FLOOR = 1e-3     # reference std below this: a channel silent in training
BIG = np.float32(1e30)
STATE = "adapt"


def _floor(ref_std: np.ndarray) -> np.ndarray:
    ref_std = np.asarray(ref_std, np.float64)
    return np.where(ref_std < ABS_FLOOR, BIG, np.maximum(STD_FLOOR * ref_std, ABS_FLOOR))


def align(mean: np.ndarray, std: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gain, offset) per channel so that u * gain + offset has the reference mean and std."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    ref_mean, ref_std = np.asarray(ref_mean, np.float64), np.asarray(ref_std, np.float64)
    floor = _floor(ref_std)
    silent = std < floor
    gain = np.where(silent, 0.0, np.clip(ref_std / np.maximum(std, floor), *GAIN_RANGE))
    return gain, ref_mean - mean * gain


def online_align(u: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray, alpha: float) -> np.ndarray:
    """The numpy twin of the online graph over (T, P) inputs from the reference state -> (T, P) aligned."""
    u = np.asarray(u, np.float64)
    ref_mean, ref_std = np.asarray(ref_mean, np.float64), np.asarray(ref_std, np.float64)
    ref_sq = ref_std**2 + ref_mean**2
    dm, ds = np.zeros(u.shape[1]), np.zeros(u.shape[1])
    out = np.empty_like(u)
    for k in range(u.shape[0]):
        dm = (1 - alpha) * dm + alpha * (u[k] - ref_mean)
        ds = (1 - alpha) * ds + alpha * (u[k] ** 2 - ref_sq)
        m = ref_mean + dm
        s = np.sqrt(np.maximum(ref_sq + ds - m * m, 0.0))
        gain, offset = align(m, s, ref_mean, ref_std)
        out[k] = u[k] * gain + offset
    return out


def state_gain(state: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gain, offset) that an online state [1, 2, P] applies now (for logs and plots)."""
    ref_mean, ref_std = np.asarray(ref_mean, np.float64), np.asarray(ref_std, np.float64)
    st = np.asarray(state, np.float64).reshape(2, -1)
    m = ref_mean + st[0]
    s = np.sqrt(np.maximum(ref_std**2 + ref_mean**2 + st[1] - m * m, 0.0))
    return align(m, s, ref_mean, ref_std)


def reference(card: ModelCard, source: str = "<model>") -> tuple[np.ndarray, np.ndarray]:
    """The training days' (mean, std) of the network's input channels, from the card."""
    ref = (card.extra or {}).get("adapt_ref")
    if not ref or "mean" not in ref or "std" not in ref:
        raise ModelError(where(source, "has no input statistics of its training days (extra.adapt_ref); "
                                       "adaptation needs a model trained by `rt-decoder train` on several sessions "
                                       "or written by `rt-decoder calibrate`"))
    return np.asarray(ref["mean"], np.float64), np.asarray(ref["std"], np.float64)


def alpha_for(tau_s: float, bin_s: float) -> float:
    """Per-bin weight of an exponential average with time constant tau_s."""
    if not (tau_s > 0):
        raise ModelError(f"--adapt time constant must be positive, got {tau_s}")
    return float(1.0 - np.exp(-bin_s / tau_s))


def _c(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, np.float32), name=name)


def with_online_adaptation(model: onnx.ModelProto, tau_s: float, source: str = "<model>") -> onnx.ModelProto:
    """A copy of a retention step graph whose network input is aligned online (see the module doc).

    The aligner sits where the quantized counts (or the read-in's output) are placed on the canvas,
    so zeta and everything after it see aligned inputs; its state is one more graph state.
    """
    props = {p.key: p.value for p in model.metadata_props}
    if CARD_KEY not in props:
        raise ModelError(where(source, "ONNX model has no model card"))
    card = ModelCard.from_json(props[CARD_KEY], source)
    if not card.model_type.startswith("retention"):
        raise ModelError(where(source, f"online adaptation needs a retention model, this is {card.model_type!r}"))
    if any(s.name == STATE for s in card.states):
        raise ModelError(where(source, "the model already adapts online"))
    ref_mean, ref_std = reference(card, source)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    at = next((i for i, n in enumerate(g.node) if n.op_type == "Concat" and list(n.input)[1:] == ["fe_pad"]), None)
    if at is None:
        raise ModelError(where(source, "cannot find the retention front-end's canvas placement in the graph"))
    x = g.node[at].input[0]
    P = ref_mean.size
    alpha = alpha_for(tau_s, card.bin_s)
    ref_sq = ref_std**2 + ref_mean**2
    inits = [_c("ad_ref_mean", ref_mean[None]), _c("ad_ref_std", ref_std[None]), _c("ad_ref_sq", ref_sq[None]),
             _c("ad_floor", _floor(ref_std)[None]), _c("ad_alpha", alpha), _c("ad_beta", np.float32(1) - np.float32(alpha)),
             _c("ad_zero", 0.0), _c("ad_lo", GAIN_RANGE[0]), _c("ad_hi", GAIN_RANGE[1]),
             numpy_helper.from_array(np.array(0, np.int64), "ad_i0"), numpy_helper.from_array(np.array(1, np.int64), "ad_i1"),
             numpy_helper.from_array(np.array([1], np.int64), "ad_ax1")]
    n = helper.make_node
    nodes = [
        n("Gather", [STATE, "ad_i0"], ["ad_dm"], axis=1), n("Gather", [STATE, "ad_i1"], ["ad_ds"], axis=1),
        n("Sub", [x, "ad_ref_mean"], ["ad_xc"]), n("Mul", ["ad_beta", "ad_dm"], ["ad_dm_b"]),
        n("Mul", ["ad_alpha", "ad_xc"], ["ad_xc_a"]), n("Add", ["ad_dm_b", "ad_xc_a"], ["ad_dm1"]),
        n("Mul", [x, x], ["ad_x2"]), n("Sub", ["ad_x2", "ad_ref_sq"], ["ad_x2c"]),
        n("Mul", ["ad_beta", "ad_ds"], ["ad_ds_b"]), n("Mul", ["ad_alpha", "ad_x2c"], ["ad_x2c_a"]),
        n("Add", ["ad_ds_b", "ad_x2c_a"], ["ad_ds1"]),
        n("Add", ["ad_ref_mean", "ad_dm1"], ["ad_m"]), n("Add", ["ad_ref_sq", "ad_ds1"], ["ad_sq"]),
        n("Mul", ["ad_m", "ad_m"], ["ad_m2"]), n("Sub", ["ad_sq", "ad_m2"], ["ad_var"]),
        n("Max", ["ad_var", "ad_zero"], ["ad_var0"]), n("Sqrt", ["ad_var0"], ["ad_s"]),
        n("Less", ["ad_s", "ad_floor"], ["ad_silent"]), n("Max", ["ad_s", "ad_floor"], ["ad_sf"]),
        n("Div", ["ad_ref_std", "ad_sf"], ["ad_g0"]), n("Clip", ["ad_g0", "ad_lo", "ad_hi"], ["ad_g1"]),
        n("Where", ["ad_silent", "ad_zero", "ad_g1"], ["ad_gain"]),
        n("Sub", [x, "ad_m"], ["ad_xm"]), n("Mul", ["ad_xm", "ad_gain"], ["ad_xg"]),
        n("Add", ["ad_xg", "ad_ref_mean"], ["ad_v"]),
        n("Unsqueeze", ["ad_dm1", "ad_ax1"], ["ad_dm3"]), n("Unsqueeze", ["ad_ds1", "ad_ax1"], ["ad_ds3"]),
        n("Concat", ["ad_dm3", "ad_ds3"], [STATE + "_next"], axis=1),
    ]
    g.node[at].input[0] = "ad_v"
    for k, node in enumerate(nodes):
        g.node.insert(at + k, node)
    g.initializer.extend(inits)
    g.input.append(helper.make_tensor_value_info(STATE, TensorProto.FLOAT, [1, 2, P]))
    g.output.append(helper.make_tensor_value_info(STATE + "_next", TensorProto.FLOAT, [1, 2, P]))
    card.states = list(card.states) + [StateSpec(STATE, [1, 2, P])]
    card.extra = dict(card.extra or {}) | {"online_adaptation": {"tau_s": float(tau_s), "alpha": alpha}}
    attach(m, card)
    onnx.checker.check_model(m)
    return m


def write_adapted(model_path: str | Path, tau_s: float, out_path: str | Path) -> Path:
    """`with_online_adaptation` of a model file, written to out_path (what `run --adapt` loads)."""
    from .model_card import read_card

    read_card(model_path)  # a clear error for a missing file or card first
    from .step_graph import save

    out = Path(out_path)
    save(with_online_adaptation(onnx.load(str(model_path)), tau_s, str(model_path)), out)
    return out

