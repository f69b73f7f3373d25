"""What inference asks of a trained EVP model, whatever runs its networks (no torch here).

Two engines run the same weights: :class:`~evp_anim.models.evp.EvpModel` (torch, the training
code's own modules) and :class:`~evp_anim.models.evp_numpy.EvpArrays` (numpy, the networks
``animate`` needs, read from the model file without importing torch). Both are an
:class:`EvpInference`: the label codes, the landmark PCA, and :meth:`EvpInference.predict_frames`
(the frames' LSTM rows, the carried state) are written once here; an engine supplies the content
codes (:meth:`EvpInference._content`) and the audio-to-landmark network over a block of frames
(:meth:`EvpInference._landmark_coeffs`).

Frames are 25 fps; landmarks (T, 68, 3) mm in the SFM frame; MFCC windows (T, 28, 12); viseme
shares (T, 15); emotion codes (De,) or (T, De).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import numpy as np

from ..emotions import EMOTIONS, canonical_emotion, check_intensity
from ..errors import EvpError

MODEL_FORMAT = "evp-anim-evp-model"
MODEL_VERSION = 2        # 2: the phone content encoder Ep (version-1 files load without it)
N_LANDMARKS = 68
PREDICT_STEP = 500       # frames per LSTM step of predict_lm3d / predict_frames
# Frames a row of the LSTM's side-by-side rows (predict_frames) runs from a zero state before its
# first output frame. The recurrence forgets where it started, about 10x per 50 frames: on 80 s of
# real speech (the six realspeech-dev recordings and the sample, end to end, four times) in four
# rows, the landmarks differed from the sequential run's by at most 0.15 / 0.008 / 0.001 /
# 0.0001 mm with 50 / 100 / 150 / 200 frames of warm-up (happy at 1.0, the worst of four emotions).
ROW_WARMUP = 200
MAX_ROWS = 4             # a 1-thread LSTM step at batch 4 costs 1.7x batch 1 here; 6 or 8 gain nothing
MIN_ROW_FRAMES = 375     # frames a row must give for its warm-up to pay (1,500 frames: 4 rows)
PHONE_SPAN = 6           # frames Ep's two convolutions (kernels 5 and 3) add up to: 4 + 2


@dataclasses.dataclass(frozen=True)
class EvpConfig:
    """Sizes of the networks."""

    content_dim: int = 64
    emotion_dim: int = 32
    frame_hidden: int = 128
    lstm_hidden: int = 256
    identity_dim: int = 64
    pca_dim: int = 40
    num_visemes: int = 15
    phone_encoder: bool = True  # Ep; False for version-1 model files, which were trained without it
    # Frames the audio-to-landmark LSTM's content input lags its output: frame t reads the content
    # code of frame t - content_delay. 0 (offline): a frame's code reads audio 202.5 ms past its
    # end (Ec's ±2 frames and the MFCC window). A live model trained with a delay d needs
    # d × 40 ms less of the future, so its frames can leave sooner (evp_anim/live).
    content_delay: int = 0
    # Frames of the future Ep reads (its two convolutions see 7 frames in all): 3 = ±3 frames
    # (offline); 0 = frames t − 6 … t only, for a live model fed the acoustic front end's frames
    # (36 ms of look-ahead of their own), so its content needs no content delay.
    phone_lookahead: int = 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def phone_pads(lookahead: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Ep's (left, right) zero padding of each of its two convolutions for ``lookahead`` frames
    of future (0 … :data:`PHONE_SPAN`): split over the two, 3 gives the symmetric (2, 2), (1, 1)
    the offline models were trained with."""
    ahead = int(lookahead)
    if not 0 <= ahead <= PHONE_SPAN:
        raise EvpError(f"phone_lookahead must be 0 to {PHONE_SPAN} frames, got {ahead}")
    r1 = min(ahead, 2)
    return (4 - r1, r1), (2 - (ahead - r1), ahead - r1)


def model_config(blob: dict, path) -> EvpConfig:
    """The :class:`EvpConfig` of a model file's contents (``torch.save``'d dict), checked: a
    foreign or newer file is a one-line EvpError. Version-1 files have no phone encoder."""
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise EvpError(f"{path}: not an evp-anim EVP model")
    if int(blob.get("version", 0)) > MODEL_VERSION:
        raise EvpError(f"{path}: model version {blob['version']} is newer than this evp-anim; upgrade")
    config = dict(blob.get("config") or {})
    if int(blob.get("version", 0)) < 2:
        config["phone_encoder"] = False   # version 1: no phone content encoder
    try:
        return EvpConfig(**config)
    except TypeError as e:
        raise EvpError(f"{path}: model weights do not fit the network ({str(e).splitlines()[0][:120]})") from None


def parallel_rows(n: int, most: int = MAX_ROWS) -> int:
    """Side-by-side LSTM rows for ``n`` frames: one per :data:`MIN_ROW_FRAMES`, 1 … ``most``."""
    return max(1, min(most, int(n) // MIN_ROW_FRAMES))


def row_spans(n: int, rows: int) -> tuple[int, list[tuple[int, int]]]:
    """How ``rows`` side-by-side LSTM rows share ``n`` frames: (L, [(a, b) per row]). Row r outputs
    frames [a, b) and reads the L input frames [b - L, b): row 0 from frame 0 (b = L, all its
    frames are output), each later row with at least :data:`ROW_WARMUP` frames of warm-up before
    a. The last row ends on frame n, so its final LSTM state is the state after the frames."""
    if rows == 1:
        return n, [(0, n)]
    length = -(-(n + (rows - 1) * ROW_WARMUP) // rows)                  # ceil
    ends = [min(length + i * (length - ROW_WARMUP), n) for i in range(rows - 1)] + [n]
    return length, [(0 if i == 0 else ends[i - 1], ends[i]) for i in range(rows)]


class EvpInference:
    """A trained EVP model for inference (numpy in, numpy out; CPU). Subclasses run the networks:
    :meth:`_content`, :meth:`_landmark_coeffs`, :meth:`_buffer`, :meth:`_one_thread`."""

    cfg: EvpConfig
    meta: dict[str, Any]
    kind = "evp"

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "evp"))

    @property
    def reads_phones(self) -> bool:
        """True when the model has the phone content encoder (``predict_lm3d(visemes=...)``)."""
        return bool(self.cfg.phone_encoder)

    @property
    def reads_visemes(self) -> bool:
        """Whether ``animate`` feeds it viseme shares: a phone encoder that reads the content on
        time (a live model's delayed LSTM takes the MFCC encoder)."""
        return self.reads_phones and self.cfg.content_delay == 0

    def mean_face(self) -> np.ndarray:
        """(68, 3) mm: the training speakers' mean neutral face (the default reference)."""
        return self._buffer("ref_mean").reshape(N_LANDMARKS, 3).copy()

    def label_code(self, emotion: str, intensity: float = 1.0) -> np.ndarray:
        """(De,) the emotion cluster's mean code at ``intensity`` (piecewise linear over MEAD levels)."""
        e = EMOTIONS.index(canonical_emotion(emotion))
        a = check_intensity(intensity) if e != 0 else 0.0
        codes = self._buffer("label_codes")
        pos = a * 3.0
        lo = min(int(np.floor(pos)), 2)
        frac = pos - lo
        return ((1 - frac) * codes[e, lo] + frac * codes[e, lo + 1]).astype(np.float32)

    def predict_lm3d(self, windows: np.ndarray, reference: np.ndarray, emotion_code: np.ndarray,
                     chunk: int = PREDICT_STEP, visemes: np.ndarray | None = None) -> np.ndarray:
        """Landmarks (T, 68, 3) mm for windows (T, 28, 12), a neutral reference face (68, 3) mm
        and an emotion code (De,) or per-frame codes (T, De). With ``visemes`` (T, 15) (viseme
        shares of phones, :func:`~evp_anim.audio.phones.viseme_posteriors`) the content codes come
        from the phone encoder Ep instead of Ec (the model must have it: :attr:`reads_phones`).

        Runs in chunks of ``chunk`` frames carrying the LSTM state, so the networks' activations are
        bounded by the chunk, not the clip (the per-frame codes, ~0.4 kB a frame, are kept beside
        the output landmarks, 0.8 kB a frame); the encoders' temporal context (±2 frames for Ec,
        ±3 for Ep) is given to each chunk as overlap.
        """
        w = np.asarray(windows, np.float32)
        if w.ndim != 3 or w.shape[1:] != (28, 12):
            raise EvpError(f"MFCC windows must be (T, 28, 12), got {w.shape}")
        t_total = w.shape[0]
        if visemes is not None:
            if not self.reads_phones:
                raise EvpError("this EVP model has no phone content encoder (an older model file); "
                               "retrain it or use --front-end mfcc")
            visemes = np.asarray(visemes, np.float32)
            if visemes.shape != (t_total, self.cfg.num_visemes):
                raise EvpError(f"viseme shares must be ({t_total}, {self.cfg.num_visemes}), "
                               f"got {visemes.shape}")
        code = np.asarray(emotion_code, np.float32)
        if code.ndim == 1:
            code = np.broadcast_to(code, (t_total, code.shape[0]))
        if code.shape != (t_total, self.cfg.emotion_dim):
            raise EvpError(f"emotion code must be ({self.cfg.emotion_dim},) or (T, "
                           f"{self.cfg.emotion_dim}), got {code.shape}")
        out, _ = self.predict_frames(w, 0, t_total, 0, t_total, code, reference, visemes=visemes, step=chunk)
        return out

    def context(self, visemes: np.ndarray | None) -> int:
        """Frames of content context after a frame (its look-ahead): Ec's temporal conv sees ±2,
        Ep ``cfg.phone_lookahead`` (3 unless a live model's)."""
        return 2 if visemes is None else int(self.cfg.phone_lookahead)

    def left_context(self, visemes: np.ndarray | None) -> int:
        """Frames of input a frame needs before it: the encoder's context behind it plus the
        content delay."""
        behind = 2 if visemes is None else PHONE_SPAN - int(self.cfg.phone_lookahead)
        return behind + self.cfg.content_delay

    def predict_frames(self, windows: np.ndarray, first: int, n_frames: int, start: int, stop: int,
                       codes: np.ndarray, reference: np.ndarray, state=None,
                       visemes: np.ndarray | None = None, step: int = PREDICT_STEP,
                       max_rows: int = MAX_ROWS):
        """Landmarks (stop - start, 68, 3) mm of frames [start, stop) of an ``n_frames``-frame clip,
        and the LSTM state after them, (h, c) numpy (1, 1, H) each (pass it back for the next
        frames: a clip can be animated in consecutive calls, giving what one call gives, to the
        rows' ~1e-4 mm below).

        ``windows`` are the MFCC windows of frames [first, first + len(windows)), covering
        [start - l, stop + c) within the clip (c = :meth:`context`, l = :meth:`left_context`, which
        adds the model's content delay); ``visemes`` (n_frames, 15),
        when given, replaces them as the content input (Ep); ``codes`` (stop - start, De);
        ``reference`` (68, 3) mm; ``state`` the LSTM state after frame ``start - 1`` (None at the
        clip's start). Runs ``step`` frames per LSTM call (the unit of :meth:`predict_lm3d`'s
        chunks; ``step`` per row in each encoder call).

        The LSTM runs over up to ``max_rows`` stretches of the frames side by side, as one batch
        (:func:`parallel_rows`: 1 below 750 frames, 4 from 1,500): the first stretch continues
        ``state`` exactly, each later one starts from a zero state :data:`ROW_WARMUP` frames
        before its first output frame, which is further back than the recurrence remembers
        (landmarks within ~1e-4 mm of the sequential run's, see :data:`ROW_WARMUP`).
        ``max_rows=1`` is the strictly sequential run.
        """
        n = stop - start
        if n <= 0:
            return np.empty((0, N_LANDMARKS, 3), np.float32), state
        rows = parallel_rows(n, max_rows)
        length, spans = row_spans(n, rows)
        pick = np.stack([np.arange(b - length, b) for _, b in spans])                     # (rows, L)
        h, c = (np.zeros((1, rows, self.cfg.lstm_hidden), np.float32) for _ in range(2))
        if state is not None:                      # row 0 continues the frames before ``start``
            h[:, 0], c[:, 0] = np.asarray(state[0])[:, 0], np.asarray(state[1])[:, 0]
        ref = np.asarray(reference, np.float32).reshape(N_LANDMARKS * 3)
        ref_rows = np.repeat(((ref - self._buffer("ref_mean")) / self._buffer("ref_scale"))[None], rows, 0)
        code = np.asarray(codes, np.float32)                                              # (n, De)
        coeffs = np.empty((rows, length, self.cfg.pca_dim), np.float32)
        per_call = max(1, step // rows)              # frames per LSTM call: ``step`` in all
        # One thread: the recurrence's small steps run faster on one (threads.torch_threads), and
        # so does a 500-frame call of the content encoder.
        with self._one_thread():
            content = np.concatenate([self._content(windows, first, n_frames, c0, min(c0 + step * rows, stop), visemes)
                                      for c0 in range(start, stop, step * rows)], 0)     # (n, Dc)
            for s0 in range(0, length, per_call):
                s1 = min(s0 + per_call, length)
                coeffs[:, s0:s1], (h, c) = self._landmark_coeffs(
                    content[pick[:, s0:s1]], code[pick[:, s0:s1]], ref_rows, (h, c))
        disp = coeffs @ self._buffer("pca_basis") + self._buffer("pca_mean")             # (rows, L, 204)
        out = np.empty((n, N_LANDMARKS, 3), np.float32)
        for r, (a, b) in enumerate(spans):
            out[a:b] = ref.reshape(N_LANDMARKS, 3) + disp[r, length - (b - a):].reshape(-1, N_LANDMARKS, 3)
        return out, (h[:, -1:].copy(), c[:, -1:].copy())

    def _content_span(self, n_frames: int, c0: int, c1: int, visemes: np.ndarray | None) -> tuple[int, int]:
        """The input frames [lo, hi) the content codes of frames [c0, c1) read."""
        return max(0, c0 - self.left_context(visemes)), min(n_frames, c1 + self.context(visemes))

    def _delayed(self, content: np.ndarray, lo: int, c0: int, c1: int) -> np.ndarray:
        """Codes (c1 - c0, Dc) as the LSTM reads them from codes of frames [lo, ...): frame f reads
        the code of frame f - delay (frame 0's before the clip's start)."""
        return content[np.maximum(np.arange(c0, c1) - self.cfg.content_delay, 0) - lo]

    # -- what an engine supplies ---------------------------------------------------------------
    def _content(self, windows: np.ndarray, first: int, n_frames: int, c0: int, c1: int,
                 visemes: np.ndarray | None) -> np.ndarray:
        """Content codes (c1 - c0, Dc) of frames [c0, c1) as the LSTM reads them (Ec on the MFCC
        windows, or Ep on the viseme shares; the content delay applied: :meth:`_delayed`)."""
        raise NotImplementedError

    def _landmark_coeffs(self, content: np.ndarray, code: np.ndarray, ref_rows: np.ndarray, state):
        """The audio-to-landmark network over a block: content (R, S, Dc), codes (R, S, De),
        normalised references (R, 204), state (h, c) (1, R, H) → PCA coefficients (R, S, P) and
        the state after the block."""
        raise NotImplementedError

    def _buffer(self, name: str) -> np.ndarray:
        """A stored array: mfcc_mean, mfcc_std, pca_mean, pca_basis, ref_mean, ref_scale, label_codes."""
        raise NotImplementedError

    def _one_thread(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()
