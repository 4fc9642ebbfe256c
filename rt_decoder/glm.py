"""The generative model's reference: a coupled Poisson GLM (Pillow et al. 2008, Nature 454:995).

Each neuron's log-rate for the next bin is a bias plus a spike-history filter on its own past
plus coupling filters on every other neuron's past:

    eta_d(k+1) = b_d + sum_e sum_j h_de(j) x_e(k - j),    j = 0 .. L-1 (j = 0: the bin just closed)
    lambda_d(k+1) = exp(eta_d(k+1))

Every filter lives on a small raised-cosine basis in log-stretched time (Pillow's basis: fine
near the spike, coarse further back), so D*D*B weights describe D*D filters of L bins.

The likelihood follows the generative model it is compared with: "poisson" scores counts under
lambda; "bernoulli" scores whether a bin holds a spike, P = 1 - exp(-lambda), which is exactly
the Poisson GLM's probability of at least one spike (a complementary log-log link), so the two
are scored on the same binarized data as a Bernoulli retention model.

The fit (L2-regularised maximum likelihood) lives in training/glm.py; here is what the runtime
needs: the basis, the history features, the link, a numpy twin of the step graph (predict) and
the ONNX step graph itself (state "glm_hist" [1, L, D]: the last L bins, newest first, zero at
reset = no history). Sampling and log-likelihood go through the step graph like any generative
model's (generation.generate, evaluation.evaluate_decoder), so both are scored by one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .baselines import _shift_nodes
from .model_card import ModelCard, StateSpec
from .recording import Recording
from .step_graph import build_affine_state_model

ETA_MAX = 8.0          # log-rate ceiling (about 3000 spikes per bin): keeps exp() finite in float32
LIKELIHOODS = ("poisson", "bernoulli")


def raised_cosine_basis(n_bases: int = 5, n_bins: int = 20, offset: float = 1.0) -> np.ndarray:
    """(n_bins, n_bases) raised cosines, evenly spaced in log(j + offset) for lags j = 0..n_bins-1.

    The first bump peaks at lag 0 and the last at lag n_bins-1; neighbouring bumps overlap by
    half, so they sum to 1 between the first and last peak (a smooth partition of unity).
    """
    if n_bases < 1 or n_bins < 1:
        raise ValueError(f"need n_bases >= 1 and n_bins >= 1, got {n_bases}, {n_bins}")
    if n_bases == 1:
        return np.ones((n_bins, 1))
    phi = np.log(np.arange(n_bins) + offset)
    centres = np.linspace(phi[0], phi[-1], n_bases)
    spacing = centres[1] - centres[0]
    arg = np.clip((phi[:, None] - centres[None, :]) * np.pi / spacing, -np.pi, np.pi)
    return (np.cos(arg) + 1) / 2


def history_features(counts: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(T, B*D) float32: row k = the basis-projected history of bins k, k-1, ..., k-L+1 (zeros
    before the first bin), feature b*D + e = sum_j basis[j, b] x_e(k - j). Row k predicts bin k+1."""
    x = np.asarray(counts, np.float32)
    T, D = x.shape
    L, B = basis.shape
    h = np.zeros((T, B, D), np.float32)
    for j in range(min(L, T)):
        h[j:] += basis[j].astype(np.float32)[None, :, None] * x[:T - j, None, :]
    return h.reshape(T, B * D)


def link(eta: np.ndarray, likelihood: str) -> np.ndarray:
    """Log-rate -> what the step graph emits: the rate (poisson) or P(spike in the bin) (bernoulli)."""
    lam = np.exp(np.minimum(eta, ETA_MAX))
    return lam if likelihood == "poisson" else -np.expm1(-lam)


@dataclass
class GLMParams:
    """bias (D,), weights (B*D, D) from history feature b*D + e to neuron d, basis (L, B)."""

    bias: np.ndarray
    weights: np.ndarray
    basis: np.ndarray
    likelihood: str = "poisson"
    info: dict = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return int(self.bias.size)

    def filters(self) -> np.ndarray:
        """(L, D_from, D_to) history/coupling filters in log-rate per spike; [:, d, d] is d's own history."""
        L, B = self.basis.shape
        D = self.n_channels
        return np.einsum("lb,bed->led", self.basis, self.weights.reshape(B, D, D))

    def predict(self, counts: np.ndarray) -> np.ndarray:
        """The numpy twin of the step graph, from reset: (T, D) counts -> (T, D) predictions for the next bin."""
        return link(self.eta(counts), self.likelihood)

    def eta_nodes(self) -> tuple[list, list]:
        """ONNX nodes from `counts` [1, D] and the state `glm_hist` [1, L, D] to the log-rate
        `glm_eta` [1, D] and `glm_hist_next`: the GLM's one home in a graph, used by its own step
        graph (to_onnx) and by a retention model built on it (training: model.glm_base)."""
        L, B = self.basis.shape
        D = self.n_channels

        def f32(name: str, a) -> onnx.TensorProto:
            return numpy_helper.from_array(np.asarray(a, np.float32), name=name)

        inits = [f32("glm_basis_t", self.basis.T[None]), f32("glm_W", self.weights), f32("glm_b", self.bias[None]),
                 f32("glm_eta_max", np.array(ETA_MAX)), numpy_helper.from_array(np.array([1, B * D], np.int64), "glm_flat")]
        nodes, si = _shift_nodes("glm", "counts", "glm_hist", "glm_hist_next", L)
        inits += si
        nodes += [helper.make_node("MatMul", ["glm_basis_t", "glm_hist_next"], ["glm_proj"]),   # (1, B, D)
                  helper.make_node("Reshape", ["glm_proj", "glm_flat"], ["glm_feat"]),
                  helper.make_node("MatMul", ["glm_feat", "glm_W"], ["glm_xw"]),
                  helper.make_node("Add", ["glm_xw", "glm_b"], ["glm_eta_raw"]),
                  helper.make_node("Min", ["glm_eta_raw", "glm_eta_max"], ["glm_eta"])]
        return nodes, inits

    def eta(self, counts: np.ndarray) -> np.ndarray:
        """(T, D) counts -> (T, D) float64 log-rates for the next bin, from reset (the graph's glm_eta)."""
        eta = history_features(counts, self.basis).astype(np.float64) @ self.weights + self.bias
        return np.minimum(eta, ETA_MAX)

    def state_spec(self) -> StateSpec:
        return StateSpec("glm_hist", [1, self.basis.shape[0], self.n_channels])

    def to_onnx(self, card: ModelCard) -> onnx.ModelProto:
        nodes, inits = self.eta_nodes()
        if self.likelihood == "poisson":
            nodes.append(helper.make_node("Exp", ["glm_eta"], ["prediction"]))
        else:                                  # 1 - exp(-exp(eta))
            inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "glm_one"))
            nodes += [helper.make_node("Exp", ["glm_eta"], ["glm_lam"]),
                      helper.make_node("Neg", ["glm_lam"], ["glm_nlam"]),
                      helper.make_node("Exp", ["glm_nlam"], ["glm_p0"]),
                      helper.make_node("Sub", ["glm_one", "glm_p0"], ["prediction"])]
        return build_affine_state_model(card, nodes, inits)


def glm_card(rec: Recording, params: GLMParams, origin: dict | None = None) -> ModelCard:
    """A generative card for the GLM: same channels and likelihood as the model it is the reference of."""
    origin = origin or {}
    extra = {"baseline": "glm", **params.info} | {k: origin[k] for k in ("split", "run_id") if origin.get(k)}
    unit = "count/bin" if params.likelihood == "poisson" else "probability"
    return ModelCard(kind="generative", model_type="glm", bin_s=float(rec.bin_s),
                     channel_names=list(rec.channel_names), outputs=list(rec.channel_names),
                     units=[unit] * rec.n_channels, states=[params.state_spec()],
                     likelihood=params.likelihood, data_sha256=origin.get("data_sha256") or rec.fingerprint(),
                     extra=extra)
