"""EVP inference in numpy, from the same model file, without importing torch.

``import torch`` takes 1.3–2.2 s on a 2-core CPU, most of a cold ``evp-anim animate`` of a short
clip (issue 17: ≤ 2.5 s for a 2 s clip). :class:`EvpArrays` reads the model file with
:func:`~evp_anim.models.torch_file.read_torch_file` and runs the networks ``animate`` needs in
numpy: the content encoders (Ep on viseme shares, Ec on MFCC windows), the identity MLP, the
LSTM and its head (:mod:`evp_anim.models.evp` has the torch modules and their shapes). What
needs training or the emotion encoder (``--emotion-audio``) stays with the torch model,
:class:`~evp_anim.models.evp.EvpModel`. Same landmarks to float rounding (tests/test_evp_numpy.py).

Arrays are time-major: (frames, channels), (rows, frames, channels) for the LSTM's rows.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EvpError
from .evp_inference import EvpConfig, EvpInference, model_config, phone_pads
from .torch_file import read_torch_file

_LN_EPS = 1e-5          # torch.nn.LayerNorm's default


def conv1d(x: np.ndarray, weight: np.ndarray, bias, pad: tuple[int, int] = (0, 0),
           stride: int = 1) -> np.ndarray:
    """torch's Conv1d on time-major input: x (..., L, Cin), weight (Cout, Cin, k), bias (Cout,),
    zero ``pad`` (before, after) frames → (..., L', Cout), L' = (L + pad - k) // stride + 1.

    One matrix product per tap on a strided view of x, summed (no copy of the k shifted inputs
    side by side: the EVP content encoder's convolutions ran ~35% faster so, 14 → 9 ms a minute)."""
    k = weight.shape[2]
    if pad != (0, 0):
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [pad, (0, 0)])
    span = (x.shape[-2] - k) // stride * stride + 1           # input rows from a tap's first to its last
    out = x[..., 0:span:stride, :] @ np.ascontiguousarray(weight[:, :, 0].T)
    for j in range(1, k):
        out += x[..., j:j + span:stride, :] @ np.ascontiguousarray(weight[:, :, j].T)
    return out + bias


def layer_norm(x: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> np.ndarray:
    """torch's LayerNorm over the last axis (biased variance, eps 1e-5), optionally affine."""
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    out = centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + _LN_EPS)
    return out if weight is None else out * weight + bias


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x)


class _NormLstm:
    """torch's LayerNorm over the LSTM's input, then its one-layer LSTM (batch first), step by step
    in numpy.

    The input is [content (Dc), emotion code (De), identity features (Di)] per frame. The norm is
    folded into the input weights: with ``W'`` = W_ih · diag(norm weight) and μ, σ the frame's
    input mean and deviation, ``W_ih · LN(x) = (W' x − μ W' 1) / σ + W_ih · norm bias``, and
    ``W' x`` splits into one product for content and code (with −μ as one more input column, so
    the same product subtracts μ W' 1) and one per row for the identity features, which are
    constant along a row: ~40% fewer multiply-adds than the product of the normed input and no
    temporary of the gates' size. 500 row-frames: 1.25 ms against 3.0–3.3 ms for the norm then
    the product (~7 ms less a minute of speech).

    The gates are stored reordered (i, f, o, g) with the i, f, o rows halved, so one tanh over all
    four gives tanh(x/2) for i, f, o (σ(x) = (1 + tanh(x/2)) / 2) and tanh(x) for g: 14 numpy calls
    a step, four of them the recurrent product (one per gate, :meth:`__call__`)."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray,
                 norm_weight: np.ndarray, norm_bias: np.ndarray, frame_dim: int):
        h = w_hh.shape[1]
        order = np.r_[0:2 * h, 3 * h:4 * h, 2 * h:3 * h]                  # i f g o → i f o g
        scale = np.r_[np.full(3 * h, 0.5), np.ones(h)]
        self.hidden = h
        w = w_ih[order].astype(np.float64) * scale[:, None]                     # (4H, In)
        w_normed = w * norm_weight.astype(np.float64)[None, :]
        # W'ᵀ's frame rows (content and code) with W' 1 below them, (Df + 1, 4H), and its identity
        # rows, (Dr, 4H): computed in float64.
        self.frame_dim, self.in_dim = frame_dim, w.shape[1]
        w_frame = np.vstack([w_normed.T[:frame_dim], w_normed.sum(1)[None]])          # (Df + 1, 4H)
        self.w_frame = [np.ascontiguousarray(w_frame[:, k * h:(k + 1) * h], np.float32) for k in range(4)]
        self.w_row = np.ascontiguousarray(w_normed.T[frame_dim:], np.float32)
        self._buffers = threading.local()
        self.bias = (w @ norm_bias.astype(np.float64) + (b_ih + b_hh)[order] * scale).astype(np.float32)
        w_hh_t = (w_hh[order] * scale[:, None].astype(np.float32)).T                # (H, 4H)
        # One (H, H) block per gate (see __call__).
        self.w_hh_gates = [np.ascontiguousarray(w_hh_t[:, k * h:(k + 1) * h]) for k in range(4)]

    def gates_in(self, parts: tuple[np.ndarray, ...], row_part: np.ndarray) -> np.ndarray:
        """The input's share of the gates, (4, S, R, H) gate-major (i, f, o, g; then time-major;
        a buffer this thread's next call overwrites),
        for the per-frame ``parts`` ((R, S, Dc) content and (R, S, De) code: Df = ``frame_dim``
        in all) and ``row_part`` (R, Dr), the identity features of each row (Df + Dr = In)."""
        rows, steps = parts[0].shape[:2]
        d_f, hid = self.frame_dim, self.hidden
        # [content, code, -μ] per frame, time-major, so that one product gives W'x − μ W'1. A buffer
        # kept between calls (per thread): a new one of a call's ~200 kB each time fragmented
        # glibc's heap (an hour of speech peaked 2.6 MB higher).
        x = getattr(self._buffers, "x", None)
        if x is None or x.shape != (steps, rows, d_f + 1):
            x = self._buffers.x = np.empty((steps, rows, d_f + 1), np.float32)
        at = 0
        for p in parts:
            x[..., at:at + p.shape[-1]] = p.transpose(1, 0, 2)
            at += p.shape[-1]
        frame = x[..., :d_f]
        mean = (frame.sum(-1) + row_part.sum(-1)) / self.in_dim                       # (S, R)
        squares = np.einsum("srd,srd->sr", frame, frame) + np.einsum("rd,rd->r", row_part, row_part)
        x[..., d_f] = -mean
        # E[x²] − μ² (float32; the inputs are unit-scale, so it does not cancel to rounding), never below 0
        inv_std = 1.0 / np.sqrt(np.maximum(squares / self.in_dim - mean * mean, 0.0) + _LN_EPS)
        gates = getattr(self._buffers, "gates", None)           # kept too (2 MB a 500-frame call)
        if gates is None or gates.shape != (4, steps, rows, hid):
            gates = self._buffers.gates = np.empty((4, steps, rows, hid), np.float32)
        for k in range(4):
            np.matmul(x, self.w_frame[k], out=gates[k])                             # (S, R, H)
        gates += (row_part @ self.w_row).reshape(rows, 4, hid).transpose(1, 0, 2)[:, None]   # the identity, per row
        gates *= inv_std[None, :, :, None]
        gates += self.bias.reshape(4, 1, 1, hid)
        return gates

    def __call__(self, parts: tuple[np.ndarray, ...], row_part: np.ndarray, state: tuple[np.ndarray, np.ndarray]):
        """parts ((R, S, Dc) content, (R, S, De) code), row_part (R, Dr) (:meth:`gates_in`), state
        (h, c) (1, R, H) → outputs (R, S, H), state after the S steps."""
        hid = self.hidden
        rows, steps = parts[0].shape[:2]
        gates_in = self.gates_in(parts, row_part)                                 # (4, S, R, H)
        out = np.empty((steps, rows, hid), np.float32)
        h, c = state[0][0].copy(), state[1][0].copy()
        # Gate-major: each gate's (R, H) block is contiguous, so every call below runs over
        # contiguous memory (the σ gates' scale and shift on a strided slice of (R, 4H) cost 4 µs
        # each, on contiguous memory 1.3), and the recurrent product is one (R, H) @ (H, H) per
        # gate: 4 × 4.3 µs at R = 4 where OpenBLAS takes 2 × 11.6 µs for two halves of the gates
        # and 124 µs for all four at once (Xeon, SkylakeX kernels).
        g = np.empty((4, rows, hid), np.float32)
        th, tmp = np.empty_like(c), np.empty_like(c)
        # Views made once: a step is a dozen small calls, and each slice would cost ~0.3 µs more.
        w_i, w_f, w_o, w_g = self.w_hh_gates
        gi, gf, go, gg = g
        ifo = g[:3]
        matmul, add, tanh, multiply = np.matmul, np.add, np.tanh, np.multiply
        for t in range(steps):
            matmul(h, w_i, out=gi)
            matmul(h, w_f, out=gf)
            matmul(h, w_o, out=go)
            matmul(h, w_g, out=gg)
            add(g, gates_in[:, t], out=g)
            tanh(g, out=g)
            multiply(ifo, 0.5, out=ifo)                 # σ = (1 + tanh(x/2)) / 2 for i, f, o
            add(ifo, 0.5, out=ifo)
            multiply(c, gf, out=c)
            multiply(gi, gg, out=tmp)
            add(c, tmp, out=c)
            tanh(c, out=th)
            h = out[t]                                  # written in place: the next step reads it
            multiply(go, th, out=h)
        return np.ascontiguousarray(out.transpose(1, 0, 2)), (h[None].copy(), c[None].copy())


class EvpArrays(EvpInference):
    """A trained EVP model run by numpy (see the module's docstring): ``animate`` without torch."""

    def __init__(self, cfg: EvpConfig, state: dict[str, np.ndarray], meta: dict[str, Any]):
        self.cfg, self.meta = cfg, meta
        self._w = {k: np.asarray(v, np.float32) for k, v in state.items()}
        self._phone_pads = phone_pads(cfg.phone_lookahead)
        w = self._w
        self._lstm = _NormLstm(w["a2l.lstm.weight_ih_l0"], w["a2l.lstm.weight_hh_l0"],
                               w["a2l.lstm.bias_ih_l0"], w["a2l.lstm.bias_hh_l0"],
                               w["a2l.norm.weight"], w["a2l.norm.bias"], cfg.content_dim + cfg.emotion_dim)

    @classmethod
    def load(cls, path: str | Path) -> "EvpArrays":
        """Load a model file (as :meth:`EvpModel.load <evp_anim.models.evp.EvpModel.load>` does,
        the same one-line errors) without torch."""
        path = Path(path)
        if not path.is_file():
            raise EvpError(f"model file not found: {path} (train one with `evp-anim train`)")
        return cls.from_contents(read_torch_file(path), path)

    @classmethod
    def from_contents(cls, blob: dict, path) -> "EvpArrays":
        """The model from a model file's contents (:func:`read_torch_file`)."""
        cfg = model_config(blob, path)
        state = blob.get("state")
        needed = ["a2l.lstm.weight_ih_l0", "a2l.identity.0.weight", "a2l.head.2.weight", "content.temporal.weight",
                  "label_codes", "pca_basis"] + (["phones.net.2.weight"] if cfg.phone_encoder else [])
        missing = [k for k in needed if not isinstance(state, dict) or k not in state]
        if missing:
            raise EvpError(f"{path}: model weights do not fit the network (missing {missing[0]})")
        return cls(cfg, state, dict(blob.get("meta", {})))

    # -- the engine (EvpInference) -------------------------------------------------------------
    def _buffer(self, name: str) -> np.ndarray:
        return self._w[name]

    def _one_thread(self):
        from ..threads import one_blas_thread
        return one_blas_thread()

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self._w[f"{name}.weight"].T + self._w[f"{name}.bias"]

    def _conv(self, x: np.ndarray, name: str, pad=(0, 0), stride: int = 1) -> np.ndarray:
        return conv1d(x, self._w[f"{name}.weight"], self._w[f"{name}.bias"], pad, stride)

    def _content(self, windows: np.ndarray, first: int, n_frames: int, c0: int, c1: int,
                 visemes: np.ndarray | None) -> np.ndarray:
        lo, hi = self._content_span(n_frames, c0, c1, visemes)
        if visemes is None:
            codes = self._mfcc_codes(np.asarray(windows[lo - first:hi - first], np.float32))
        else:
            pad1, pad2 = self._phone_pads
            x = relu(self._conv(np.asarray(visemes[lo:hi], np.float32), "phones.net.0", pad1))
            codes = layer_norm(self._conv(x, "phones.net.2", pad2))
        return self._delayed(codes, lo, c0, c1)

    def _mfcc_codes(self, windows: np.ndarray) -> np.ndarray:
        """Ec: MFCC windows (T, 28, 12) → content codes (T, Dc): each window's three convolutions
        along its 28 rows (MFCC coefficients as channels) and the linear layer (the frame
        encoding, :meth:`_frame_encoding`), then the ±2-frame temporal convolution and the
        unit-scale norm."""
        x = (windows - self._w["mfcc_mean"]) / self._w["mfcc_std"]
        return layer_norm(self._conv(self._frame_encoding(x), "content.temporal", (2, 2)))

    def _frame_encoding(self, x: np.ndarray) -> np.ndarray:
        """Ec's frame encoder on normalised windows (T, 28, 12) → (T, H). A clip's windows overlap
        (window t is rows 4t … 4t+27 of one row sequence), so the convolutions run once over the
        sequence and only each window's two ends, which its zero padding reaches, are computed
        per window; the linear layer over the 7 positions is then a 5-tap convolution plus the
        two ends (:meth:`FrameEncoder.encode <evp_anim.models.evp.FrameEncoder.encode>`, the
        same scheme in torch: ~2.5× fewer multiply-adds). Other windows: one at a time."""
        w = self._w
        t = len(x)
        c1, c2, c3 = (w[f"content.frame.conv.{i}.weight"] for i in (0, 2, 4))
        b1, b2, b3 = (w[f"content.frame.conv.{i}.bias"] for i in (0, 2, 4))
        out_w = w["content.frame.out.0.weight"].reshape(-1, c3.shape[0], 7)        # (H, 128, 7)
        if t < 2 or not np.array_equal(x[1:, :24], x[:-1, 4:]):
            h = relu(conv1d(relu(conv1d(relu(conv1d(x, c1, b1, (1, 1))), c2, b2, (1, 1), 2)), c3, b3, (1, 1), 2))
            return relu(self._linear(h.transpose(0, 2, 1).reshape(t, -1), "content.frame.out.0"))   # channel-major

        def at(seq: np.ndarray, first: int, step: int) -> np.ndarray:
            return seq[first::step][:t]                    # (T, C): seq[first + step·t]

        def taps(conv: np.ndarray, *ks: int) -> np.ndarray:
            return np.concatenate([conv[:, :, k] for k in ks], 1)

        def lin(parts: list[np.ndarray], weight: np.ndarray, bias) -> np.ndarray:
            return np.concatenate(parts, -1) @ weight.T + bias

        rows = np.concatenate([x[:, :4].reshape(4 * t, -1), x[-1, 4:]], 0)       # (4T + 24, 12)
        a1 = relu(conv1d(rows, c1, b1, (1, 1)))                                   # rows r
        a2 = relu(conv1d(a1, c2, b2, (1, 1), 2))                                   # rows 2m
        a3 = relu(conv1d(a2, c3, b3, (1, 1), 2))                                   # rows 4n: (T + 6, 128)
        e0 = relu(lin([at(rows, 0, 4), at(rows, 1, 4)], taps(c1, 1, 2), b1))
        e27 = relu(lin([at(rows, 26, 4), at(rows, 27, 4)], taps(c1, 0, 1), b1))
        f0 = relu(lin([e0, at(a1, 1, 4)], taps(c2, 1, 2), b2))
        f13 = relu(lin([at(a1, 25, 4), at(a1, 26, 4), e27], taps(c2, 0, 1, 2), b2))
        g0 = relu(lin([f0, at(a2, 1, 2)], taps(c3, 1, 2), b3))
        g6 = relu(lin([at(a2, 11, 2), at(a2, 12, 2), f13], taps(c3, 0, 1, 2), b3))
        mid = conv1d(a3, out_w[:, :, 1:6], 0.0)[1:t + 1]                            # positions 1 … 5
        # (contiguous copies: numpy multiplies a strided matrix without BLAS, ~10x slower)
        ends = [np.ascontiguousarray(out_w[:, :, k].T) for k in (0, 6)]
        return relu(mid + g0 @ ends[0] + g6 @ ends[1] + w["content.frame.out.0.bias"])

    def _landmark_coeffs(self, content: np.ndarray, code: np.ndarray, ref_rows: np.ndarray, state):
        f_a = relu(self._linear(relu(self._linear(ref_rows, "a2l.identity.0")), "a2l.identity.2"))   # (R, Di)
        h, state = self._lstm((content, code), f_a, state)
        return self._linear(relu(self._linear(h, "a2l.head.0")), "a2l.head.2"), state
