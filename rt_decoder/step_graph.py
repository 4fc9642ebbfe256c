"""Building ONNX step graphs (DESIGN §4) with onnx.helper: one bin in, one prediction out.

The retention front-end (quantize -> scatter onto the canvas -> zeta update) is built here and
only here; every retention model (a trained UNet, a linear readout) is composed behind it, so
training and runtime cannot disagree. Graph contract:

    inputs:  counts [1, D] float32, then one input per state (card.states, in order)
    outputs: prediction [1, K] float32 (physical units), then `<state>_next` per state
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .layout import channel_of_pixel
from .model_card import ModelCard, attach

OPSET = 17
IR_VERSION = 8


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name=name)


def frontend(
    n_channels: int,
    decays: Sequence[float],
    canvas: tuple[int, int],
    pixels: np.ndarray,
    quantizer: str = "binary",
    levels: int = 2,
    learned: tuple[np.ndarray, np.ndarray] | None = None,
    readin: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes: counts, zeta -> q_image [1,1,H,W], zeta_next [1,S,H,W].

    learned: (w, b) each (M-1, D) for q = sum_i sigmoid(w_i * x + b_i) / (M-1) (thesis eq. 3.1).
    readin: (A [D, P], c [P]) a session's read-in u = q A + c (training/multisession.py): the D
      recorded channels become P shared virtual channels, and `pixels` places those P. Retention
      is linear, so this is the same as an affine map of zeta; it costs one small MatMul per bin.
    """
    H, W = canvas
    S = len(decays)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    if quantizer == "binary" or (quantizer == "levels" and levels == 2):
        inits.append(_init("fe_zero", np.zeros((), np.float32)))
        nodes += [helper.make_node("Greater", ["counts", "fe_zero"], ["fe_gt"]),
                  helper.make_node("Cast", ["fe_gt"], ["q"], to=TensorProto.FLOAT)]
    elif quantizer == "levels":
        inits += [_init("fe_zero", np.zeros((), np.float32)),
                  _init("fe_top", np.array(levels - 1, np.float32))]
        nodes += [helper.make_node("Max", ["counts", "fe_zero"], ["fe_pos"]),
                  helper.make_node("Min", ["fe_pos", "fe_top"], ["fe_clip"]),
                  helper.make_node("Div", ["fe_clip", "fe_top"], ["q"])]
    elif quantizer == "learned":
        if learned is None:
            raise ValueError("the learned quantizer needs its weights (w, b)")
        w, b = (np.asarray(a, np.float32) for a in learned)
        inits += [_init("fe_w", w[None]), _init("fe_b", b[None]),
                  _init("fe_norm", np.array(w.shape[0], np.float32)), _init("fe_ax", np.array([1], np.int64))]
        nodes += [helper.make_node("Unsqueeze", ["counts", "fe_ax"], ["fe_x3"]),
                  helper.make_node("Mul", ["fe_x3", "fe_w"], ["fe_wx"]),
                  helper.make_node("Add", ["fe_wx", "fe_b"], ["fe_lin"]),
                  helper.make_node("Sigmoid", ["fe_lin"], ["fe_sig"]),
                  helper.make_node("ReduceSum", ["fe_sig", "fe_ax"], ["fe_sum"], keepdims=0),
                  helper.make_node("Div", ["fe_sum", "fe_norm"], ["q"])]
    else:
        raise ValueError(f"unknown quantizer {quantizer!r}")
    placed = "q"
    if readin is not None:
        A, c = (np.asarray(a, np.float32) for a in readin)
        if A.ndim != 2 or A.shape[0] != n_channels or c.shape != (A.shape[1],):
            raise ValueError(f"read-in must be A [{n_channels}, P] and c [P], got {A.shape} and {c.shape}")
        inits += [_init("fe_readin_A", A), _init("fe_readin_c", c[None])]
        nodes += [helper.make_node("MatMul", ["q", "fe_readin_A"], ["fe_qa"]),
                  helper.make_node("Add", ["fe_qa", "fe_readin_c"], ["fe_u"])]
        placed, n_channels = "fe_u", A.shape[1]
    inv = channel_of_pixel(pixels, canvas)
    inv = np.where(inv < 0, n_channels, inv)
    g = np.asarray(decays, np.float32).reshape(1, S, 1, 1)
    inits += [_init("fe_pad", np.zeros((1, 1), np.float32)),
              _init("fe_inv", inv.astype(np.int64)),
              _init("fe_img_shape", np.array([1, 1, H, W], np.int64)),
              _init("fe_gamma", g),
              _init("fe_one_minus_gamma", (np.float32(1) - g).astype(np.float32))]
    nodes += [helper.make_node("Concat", [placed, "fe_pad"], ["fe_qpad"], axis=1),
              helper.make_node("Gather", ["fe_qpad", "fe_inv"], ["fe_qflat"], axis=1),
              helper.make_node("Reshape", ["fe_qflat", "fe_img_shape"], ["q_image"]),
              helper.make_node("Mul", ["fe_gamma", "zeta"], ["fe_decayed"]),
              helper.make_node("Mul", ["fe_one_minus_gamma", "q_image"], ["fe_fresh"]),
              helper.make_node("Add", ["fe_decayed", "fe_fresh"], ["zeta_next"])]
    return nodes, inits


def _finish(nodes, inits, inputs, outputs, card: ModelCard, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="rt-decoder", ir_version=IR_VERSION)
    attach(model, card)
    onnx.checker.check_model(model)
    return model


def _io(card: ModelCard) -> tuple[list, list]:
    D, K = card.n_channels, card.n_outputs
    inputs = [helper.make_tensor_value_info("counts", TensorProto.FLOAT, [1, D])]
    outputs = [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [1, K])]
    for s in card.states:
        inputs.append(helper.make_tensor_value_info(s.name, TensorProto.FLOAT, s.shape))
        outputs.append(helper.make_tensor_value_info(s.name + "_next", TensorProto.FLOAT, s.shape))
    return inputs, outputs


def retention_features_name(lag_bins: int) -> str:
    """Which zeta feeds the network: lag 0 -> zeta after this bin, lag 1 -> zeta before it."""
    if lag_bins not in (0, 1):
        raise ValueError(f"retention step graphs support lag_bins 0 or 1, got {lag_bins}")
    return "zeta_next" if lag_bins == 0 else "zeta"


def build_retention_model(
    card: ModelCard,
    network: onnx.ModelProto | None = None,
    linear: tuple[np.ndarray, np.ndarray] | None = None,
    out_mean: np.ndarray | None = None,
    out_std: np.ndarray | None = None,
    learned: tuple[np.ndarray, np.ndarray] | None = None,
    readin: tuple[np.ndarray, np.ndarray] | None = None,
    base: tuple[list, list, str, list[str]] | None = None,
) -> onnx.ModelProto:
    """Front-end + a readout of the zeta image + de-normalization, with the card attached.

    network: an ONNX model with one input (the zeta image [1,S,H,W]) and one output, either
      [1,K] normalized kinematics (decoder) or [1,1,H,W] / [1,H,W] per-pixel logits (generative).
      A network with its own recurrent state (model.stack, training/stacked.py) takes each state
      after zeta in card.states as a further input and returns its next value as a further output.
    linear: (W [S*H*W, K], b [K]) for a ridge readout of the flattened zeta image (no network).
    readin: a session's (A, c), when the card's layout has a "readin" (see `frontend`).
    base: (nodes, inits, eta, states) of a generative base model (the fitted GLM: rt_decoder.glm
      GLMParams.eta_nodes) whose log-rate `eta` [1, D] is added to the network's logit at each
      channel; its states (in card.states, after zeta) are its own, not the network's.
    Decoder: prediction = out * out_std + out_mean. Generative: prediction = sigmoid (Bernoulli)
    or exp (Poisson) of the logits at each channel's pixel: the next bin's spike probability/rate.
    """
    H, W = card.canvas
    S = len(card.decays)
    pixels = np.asarray(card.layout["pixels"], np.int64)
    if (readin is not None) != ("readin" in card.layout):
        raise ValueError("give the read-in weights exactly when the card's layout declares a read-in")
    nodes, inits = frontend(card.n_channels, card.decays, (H, W), pixels, card.quantizer, card.levels, learned, readin)
    feat = retention_features_name(card.lag_bins)
    if (network is None) == (linear is None):
        raise ValueError("give exactly one of network or linear")
    if linear is not None:
        Wl, bl = linear
        inits += [_init("ro_flat", np.array([1, S * H * W], np.int64)),
                  _init("ro_W", np.asarray(Wl, np.float32)), _init("ro_b", np.asarray(bl, np.float32).reshape(1, -1))]
        nodes += [helper.make_node("Reshape", [feat, "ro_flat"], ["ro_x"]),
                  helper.make_node("MatMul", ["ro_x", "ro_W"], ["ro_xw"]),
                  helper.make_node("Add", ["ro_xw", "ro_b"], ["net_out"])]
    else:
        net = onnx.compose.add_prefix(network, "net/")  # "/" keeps its names apart from ours
        g = net.graph
        own = set(base[3]) if base is not None else set()
        carried = [s.name for s in card.states[1:] if s.name not in own]     # the network's own states, after zeta
        if len(g.input) != 1 + len(carried) or len(g.output) != 1 + len(carried):
            raise ValueError(f"the network graph must have {1 + len(carried)} inputs and outputs "
                             f"(the zeta image{', ' + ', '.join(carried) if carried else ''}), "
                             f"got {len(g.input)} and {len(g.output)}")
        nodes.append(helper.make_node("Identity", [feat], [g.input[0].name]))
        nodes += [helper.make_node("Identity", [name], [inp.name]) for name, inp in zip(carried, g.input[1:])]
        nodes += list(g.node)
        inits += list(g.initializer)
        nodes.append(helper.make_node("Identity", [g.output[0].name], ["net_out"]))
        nodes += [helper.make_node("Identity", [out.name], [name + "_next"]) for name, out in zip(carried, g.output[1:])]
    if card.kind == "decoder":
        mean = np.zeros(card.n_outputs) if out_mean is None else out_mean
        std = np.ones(card.n_outputs) if out_std is None else out_std
        inits += [_init("dn_mean", np.asarray(mean, np.float32).reshape(1, -1)),
                  _init("dn_std", np.asarray(std, np.float32).reshape(1, -1)),
                  _init("dn_shape", np.array([1, card.n_outputs], np.int64))]
        nodes += [helper.make_node("Reshape", ["net_out", "dn_shape"], ["dn_flat"]),
                  helper.make_node("Mul", ["dn_flat", "dn_std"], ["dn_scaled"]),
                  helper.make_node("Add", ["dn_scaled", "dn_mean"], ["prediction"])]
    else:
        inits += [_init("gen_flat", np.array([1, H * W], np.int64)), _init("gen_pix", pixels)]
        nodes += [helper.make_node("Reshape", ["net_out", "gen_flat"], ["gen_logits"]),
                  helper.make_node("Gather", ["gen_logits", "gen_pix"], ["gen_ch"], axis=1)]
        logit = "gen_ch"
        if base is not None:
            nodes += list(base[0]) + [helper.make_node("Add", ["gen_ch", base[2]], ["gen_ch_base"])]
            inits += list(base[1])
            logit = "gen_ch_base"
        link = "Exp" if card.likelihood == "poisson" else "Sigmoid"
        nodes.append(helper.make_node(link, [logit], ["prediction"]))
    inputs, outputs = _io(card)
    return _finish(nodes, inits, inputs, outputs, card, f"rt_decoder_{card.model_type}")


def build_affine_state_model(
    card: ModelCard,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
) -> onnx.ModelProto:
    """Wrap hand-built nodes (baselines: Wiener, Kalman) that read `counts` and the card's states
    and write `prediction` and `<state>_next`, with the card attached and the graph checked."""
    inputs, outputs = _io(card)
    return _finish(list(nodes), list(inits), inputs, outputs, card, f"rt_decoder_{card.model_type}")


def save(model: onnx.ModelProto, path) -> None:
    """Write the model atomically (rt_decoder.atomic): a reader never sees half a graph."""
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
