"""EVP's audio side (Ji et al., CVPR 2021, Sec. 3.2–3.3) as torch modules.

Shapes (B = batch, T = frames at 25 fps):

* input: MFCC windows (B, T, 28, 12) — 280 ms of 12 MFCCs around each frame, normalised with the
  training set's per-coefficient mean and std (buffers of :class:`EvpNet`)
* content encoder Ec: (B, T, 28, 12) → (B, T, Dc) — duration-dependent, one code per frame
* emotion encoder Ee: (B, T, 28, 12) → (B, De) — duration-independent, pooled over time
* decoder D: (B, T, Dc) + (B, De) → (B, T, 28, 12) — rebuilds the windows (cross-reconstruction)
* emotion classifier Ce: (B, De) → (B, 8) logits
* phone content encoder Ep (the front end for real speech): viseme shares of recognised or
  transcript-aligned phones or the acoustic front end's frames (B, T, 15) → (B, T, Dc), codes in
  Ec's place (±3 frames of context; a live model's reads fewer frames ahead)
* viseme head (pre-training Ec on content, standing in for EVP's LRW pre-training): (B, T, Dc) → (B, T, 15)
* audio-to-landmark: identity embedding f_a = MLP(reference landmarks (B, 68, 3)), then per frame
  [Ec, Ee, f_a] → LSTM → two-layer MLP → PCA coefficients of the landmark displacement
  l_d (68×3, mm); landmarks l = l_a + l_d (Eq. 7), with l_a the speaker's neutral reference.

We predict pose-invariant **3D** landmarks (mm, SFM frame) rather than EVP's 2D ones: their
frontal projection is the aligned 2D landmarks the paper evaluates, and the 3D form is what
3D-aware keypoint alignment (Eq. 8) needs, so no separate lifting step is required.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..audio.features import MFCC_WINDOW, N_MFCC
from ..emotions import EMOTIONS, NUM_EMOTIONS, canonical_emotion, check_intensity
from ..errors import EvpError
from ..threads import torch_threads

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


class FrameEncoder(nn.Module):
    """One MFCC window (28 × 12) → a feature vector, applied to every frame: (B, T, 28, 12) → (B, T, H)."""

    def __init__(self, hidden: int):
        super().__init__()
        # Convolve along time inside the window, MFCC coefficients as channels.
        self.conv = nn.Sequential(
            nn.Conv1d(12, 64, 3, padding=1), nn.ReLU(),
            nn.Conv1d(64, 128, 3, stride=2, padding=1), nn.ReLU(),   # 28 → 14
            nn.Conv1d(128, 128, 3, stride=2, padding=1), nn.ReLU(),  # 14 → 7
        )
        self.out = nn.Sequential(nn.Linear(128 * 7, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        h = self.conv(x.reshape(b * t, 28, 12).transpose(1, 2))
        return self.out(h.reshape(b * t, -1)).reshape(b, t, -1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for inference: (B, T, 28, 12) → (B, T, H), equal to float rounding.

        A clip's windows overlap: window t is MFCC rows 4t … 4t+27 of one row sequence (the
        frame hop, 4 rows, is the two stride-2 convolutions' total stride). Then every
        convolution output that does not touch a window's zero padding is the same in every window
        that holds it, so the three convolutions run once over the row sequence; only the outputs
        at each window's two ends (the ones the padding reaches) are computed per window, and the
        linear layer over the 7 positions becomes a 5-tap convolution over the shared outputs plus
        the two ends. ~2.5× fewer multiply-adds than convolving every window (28 rows each) on
        its own. Windows that are not one sequence's (not overlapping by 24 rows) take
        :meth:`forward`.
        """
        b, t = x.shape[:2]
        if t < 2 or not torch.equal(x[:, 1:, :MFCC_WINDOW - 4], x[:, :-1, 4:]):
            return self.forward(x)
        c1, c2, c3 = self.conv[0], self.conv[2], self.conv[4]
        relu = torch.relu
        lin = nn.functional.linear
        rows = torch.cat([x[:, :, :4].reshape(b, 4 * t, N_MFCC), x[:, -1, 4:]], 1)    # (B, 4T + 24, 12)
        a1 = relu(c1(rows.transpose(1, 2)))                     # (B, 64, L): rows r, as inside a window
        a2 = relu(c2(a1))                                       # (B, 128, L/2): rows 2m
        a3 = relu(c3(a2))                                       # (B, 128, T + 6): rows 4n
        a1, a2 = a1.transpose(1, 2), a2.transpose(1, 2)         # (B, rows, channels)

        def at(seq: torch.Tensor, first: int, step: int) -> torch.Tensor:
            """(B, T, C): seq[first + step·t] for t < T."""
            return seq[:, first::step][:, :t]

        def taps(conv: nn.Conv1d, *ks: int) -> torch.Tensor:
            return torch.cat([conv.weight[:, :, k] for k in ks], 1)
        # Each window's two ends: its first and last output of each layer reads its zero padding.
        e0 = relu(lin(torch.cat([at(rows, 0, 4), at(rows, 1, 4)], -1), taps(c1, 1, 2), c1.bias))
        e27 = relu(lin(torch.cat([at(rows, 26, 4), at(rows, 27, 4)], -1), taps(c1, 0, 1), c1.bias))
        f0 = relu(lin(torch.cat([e0, at(a1, 1, 4)], -1), taps(c2, 1, 2), c2.bias))
        f13 = relu(lin(torch.cat([at(a1, 25, 4), at(a1, 26, 4), e27], -1), taps(c2, 0, 1, 2), c2.bias))
        g0 = relu(lin(torch.cat([f0, at(a2, 1, 2)], -1), taps(c3, 1, 2), c3.bias))
        g6 = relu(lin(torch.cat([at(a2, 11, 2), at(a2, 12, 2), f13], -1), taps(c3, 0, 1, 2), c3.bias))
        # The linear layer reads (channel, position) pairs: positions 1…5 are a3[t + 1 … t + 5].
        w = self.out[0].weight.reshape(-1, a3.shape[1], 7)
        mid = nn.functional.conv1d(a3, w[:, :, 1:6])[:, :, 1:t + 1].transpose(1, 2)    # (B, T, H)
        return relu(mid + lin(g0, w[:, :, 0]) + lin(g6, w[:, :, 6], self.out[0].bias))


class ContentEncoder(nn.Module):
    """Ec: per-frame content codes (B, T, Dc), with a little temporal context (±2 frames)."""

    def __init__(self, cfg: EvpConfig):
        super().__init__()
        self.frame = FrameEncoder(cfg.frame_hidden)
        self.temporal = nn.Conv1d(cfg.frame_hidden, cfg.content_dim, 5, padding=2)
        # Unit-scale codes: without this, L_con (an L1 distance between codes) is minimised by
        # shrinking every code to zero, which erases the content (observed: L_con → 0 while the
        # reconstruction losses stayed at the data variance).
        self.norm = nn.LayerNorm(cfg.content_dim, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.codes(self.frame(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for inference (a clip's overlapping windows: :meth:`FrameEncoder.encode`)."""
        return self.codes(self.frame.encode(x))

    def codes(self, h: torch.Tensor) -> torch.Tensor:
        """Frame encodings (B, T, H) → content codes (B, T, Dc): the temporal convolution and the norm."""
        return self.norm(self.temporal(h.transpose(1, 2)).transpose(1, 2))


class PhoneContentEncoder(nn.Module):
    """Ep: viseme shares per frame (B, T, 15) → content codes (B, T, Dc) in Ec's place.

    The shares come from phones (pocketsphinx's recogniser or a forced-aligned transcript) or the
    acoustic front end's frames, both learnt from real voices; our synthetic voices' MFCCs do not
    transfer to real speech. Two small convolutions (kernels 5 and 3) see 7 frames: ±3 by default,
    or ``cfg.phone_lookahead`` frames ahead and the rest behind (bounded look-ahead, streamable);
    the same unit-scale normalisation as Ec, so the audio-to-landmark LSTM reads either.
    """

    SPAN = 6                                   # frames either kernel adds up to: 4 + 2

    def __init__(self, cfg: EvpConfig):
        super().__init__()
        ahead = int(cfg.phone_lookahead)
        if not 0 <= ahead <= self.SPAN:
            raise EvpError(f"phone_lookahead must be 0 to {self.SPAN} frames, got {ahead}")
        # Look-ahead split over the two convolutions: (left, right) zero padding of each. With 3
        # this is the symmetric padding (2, 2), (1, 1) the offline models were trained with.
        r1 = min(ahead, 2)
        self._pads = ((4 - r1, r1), (2 - (ahead - r1), ahead - r1))
        self.net = nn.Sequential(
            nn.Conv1d(cfg.num_visemes, cfg.frame_hidden, 5), nn.ReLU(),
            nn.Conv1d(cfg.frame_hidden, cfg.content_dim, 3))
        self.norm = nn.LayerNorm(cfg.content_dim, elementwise_affine=False)

    def forward(self, shares: torch.Tensor) -> torch.Tensor:
        pad = nn.functional.pad
        x = self.net[1](self.net[0](pad(shares.transpose(1, 2), self._pads[0])))
        return self.norm(self.net[2](pad(x, self._pads[1])).transpose(1, 2))


class EmotionEncoder(nn.Module):
    """Ee: one emotion code per clip (B, De), mean-pooled over time so length does not matter."""

    def __init__(self, cfg: EvpConfig):
        super().__init__()
        self.frame = FrameEncoder(cfg.frame_hidden)
        self.proj = nn.Linear(cfg.frame_hidden, cfg.emotion_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.frame(x).mean(dim=1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for inference (a clip's overlapping windows: :meth:`FrameEncoder.encode`)."""
        return self.proj(self.frame.encode(x).mean(dim=1))


class Decoder(nn.Module):
    """D: (content (B, T, Dc), emotion (B, De) or (B, T, De)) → MFCC windows (B, T, 28, 12)."""

    def __init__(self, cfg: EvpConfig):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(cfg.content_dim + cfg.emotion_dim, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, MFCC_WINDOW * N_MFCC))

    def forward(self, content: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        if emotion.dim() == 2:
            emotion = emotion[:, None, :].expand(-1, content.shape[1], -1)
        b, t = content.shape[:2]
        return self.mlp(torch.cat([content, emotion], -1)).reshape(b, t, 28, 12)


class AudioToLandmark(nn.Module):
    """Identity MLP + LSTM + two-layer MLP → landmark displacement PCA coefficients (B, T, P)."""

    def __init__(self, cfg: EvpConfig):
        super().__init__()
        self.identity = nn.Sequential(nn.Linear(N_LANDMARKS * 3, 128), nn.ReLU(),
                                      nn.Linear(128, cfg.identity_dim), nn.ReLU())
        n_in = cfg.content_dim + cfg.emotion_dim + cfg.identity_dim
        # The encoders' codes come at whatever scale their own training left them; normalising the
        # LSTM input keeps stage 3 from depending on it.
        self.norm = nn.LayerNorm(n_in)
        self.lstm = nn.LSTM(n_in, cfg.lstm_hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(cfg.lstm_hidden, 256), nn.ReLU(), nn.Linear(256, cfg.pca_dim))

    def forward(self, content: torch.Tensor, emotion: torch.Tensor, reference: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """content (B,T,Dc); emotion (B,De) or (B,T,De); reference (B,68,3) normalised → (coeffs, state)."""
        b, t = content.shape[:2]
        if emotion.dim() == 2:
            emotion = emotion[:, None, :].expand(-1, t, -1)
        f_a = self.identity(reference.reshape(b, -1))[:, None, :].expand(-1, t, -1)
        h, state = self.lstm(self.norm(torch.cat([content, emotion, f_a], -1)), state)
        return self.head(h), state


class EvpNet(nn.Module):
    """All EVP networks plus the normalisation statistics and the landmark PCA basis (buffers)."""

    def __init__(self, cfg: EvpConfig):
        super().__init__()
        self.cfg = cfg
        self.content = ContentEncoder(cfg)
        self.emotion = EmotionEncoder(cfg)
        self.decoder = Decoder(cfg)
        self.classifier = nn.Linear(cfg.emotion_dim, NUM_EMOTIONS)
        self.viseme_head = nn.Linear(cfg.content_dim, cfg.num_visemes)
        self.phones = PhoneContentEncoder(cfg) if cfg.phone_encoder else None
        self.a2l = AudioToLandmark(cfg)
        self.register_buffer("mfcc_mean", torch.zeros(12))
        self.register_buffer("mfcc_std", torch.ones(12))
        self.register_buffer("pca_mean", torch.zeros(N_LANDMARKS * 3))
        self.register_buffer("pca_basis", torch.zeros(cfg.pca_dim, N_LANDMARKS * 3))
        self.register_buffer("ref_mean", torch.zeros(N_LANDMARKS * 3))
        self.register_buffer("ref_scale", torch.ones(()))
        # Label control: mean emotion code per emotion at intensity 0 (neutral), 1/3, 2/3, 1.
        self.register_buffer("label_codes", torch.zeros(NUM_EMOTIONS, 4, cfg.emotion_dim))

    def normalise(self, windows: torch.Tensor) -> torch.Tensor:
        return (windows - self.mfcc_mean) / self.mfcc_std

    def delay(self, content: torch.Tensor) -> torch.Tensor:
        """Content codes (B, T, Dc) as the LSTM reads them: shifted ``cfg.content_delay`` frames
        later, the first code repeated before the start (training crops; a clip's start)."""
        d = self.cfg.content_delay
        if d == 0 or content.shape[1] == 0:
            return content
        head = content[:, :1].expand(-1, min(d, content.shape[1]), -1)
        return torch.cat([head, content[:, :-d]], 1)[:, :content.shape[1]]

    def normalise_reference(self, reference: torch.Tensor) -> torch.Tensor:
        return (reference.reshape(reference.shape[0], -1) - self.ref_mean) / self.ref_scale

    def landmarks(self, coeffs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """PCA coefficients (B, T, P) + reference (B, 68, 3) → landmarks (B, T, 68, 3) mm."""
        disp = self.pca_mean + coeffs @ self.pca_basis
        return reference[:, None] + disp.reshape(*coeffs.shape[:2], N_LANDMARKS, 3)


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


# ---------------------------------------------------------------------- inference wrapper
class EvpModel:
    """A trained EVP model for inference (numpy in, numpy out; CPU)."""

    def __init__(self, net: EvpNet, meta: dict[str, Any]):
        self.net = net.eval()
        self.meta = meta

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "evp"))

    @property
    def reads_phones(self) -> bool:
        """True when the model has the phone content encoder (``predict_lm3d(visemes=...)``)."""
        return self.net.phones is not None

    # -- files ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the inference weights (atomic): a torch file with config, buffers and meta."""
        from ..atomic import atomic_path
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save({"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": self.net.cfg.to_dict(),
                        "state": self.net.state_dict(), "meta": self.meta}, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EvpModel":
        """Load a model file; a missing, corrupt or foreign file is a one-line :class:`EvpError`."""
        path = Path(path)
        if not path.is_file():
            raise EvpError(f"model file not found: {path} (train one with `evp-anim train`)")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for truncated/corrupt files
            raise EvpError(f"{path}: not a readable model file ({type(e).__name__})") from None
        if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
            raise EvpError(f"{path}: not an evp-anim EVP model")
        if int(blob.get("version", 0)) > MODEL_VERSION:
            raise EvpError(f"{path}: model version {blob['version']} is newer than this evp-anim; upgrade")
        config = dict(blob.get("config") or {})
        if int(blob.get("version", 0)) < 2:
            config["phone_encoder"] = False   # version 1: no phone content encoder
        try:
            net = EvpNet(EvpConfig(**config))
            net.load_state_dict(blob["state"])
        except (TypeError, RuntimeError, KeyError) as e:
            raise EvpError(f"{path}: model weights do not fit the network ({str(e).splitlines()[0][:120]})") from None
        return cls(net, dict(blob.get("meta", {})))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "EvpModel":
        """The networks of a training checkpoint (e.g. ``<run>/stage1.pt``: encoders after
        pre-training only), for inspecting codes; label codes and later stages may be untrained."""
        path = Path(path)
        try:
            # weights_only: a checkpoint is a pickle; never run code from one (issue 15).
            blob = torch.load(path, map_location="cpu", weights_only=True)
            net = EvpNet(EvpConfig())
            net.load_state_dict(blob["net"])
        except Exception as e:
            raise EvpError(f"{path}: not a readable training checkpoint ({type(e).__name__})") from None
        return cls(net, {"name": f"checkpoint {path.name}", "stage": blob.get("stage"), "step": blob.get("step")})

    # -- encoders ------------------------------------------------------------------
    def _t(self, windows: np.ndarray) -> torch.Tensor:
        w = np.asarray(windows, np.float32)
        if w.ndim != 3 or w.shape[1:] != (28, 12):
            raise EvpError(f"MFCC windows must be (T, 28, 12), got {w.shape}")
        return self.net.normalise(torch.from_numpy(w)[None])

    @torch.no_grad()
    def content_codes(self, windows: np.ndarray) -> np.ndarray:
        """(T, 28, 12) windows → (T, Dc) content codes."""
        return self.net.content.encode(self._t(windows))[0].numpy()

    @torch.no_grad()
    def emotion_code(self, windows: np.ndarray) -> np.ndarray:
        """(T, 28, 12) windows → (De,) emotion code of the whole clip."""
        return self.net.emotion.encode(self._t(windows))[0].numpy()

    def label_code(self, emotion: str, intensity: float = 1.0) -> np.ndarray:
        """(De,) the emotion cluster's mean code at ``intensity`` (piecewise linear over MEAD levels)."""
        e = EMOTIONS.index(canonical_emotion(emotion))
        a = check_intensity(intensity) if e != 0 else 0.0
        codes = self.net.label_codes.numpy()
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
        t_total = w.shape[0]
        if visemes is not None:
            if not self.reads_phones:
                raise EvpError("this EVP model has no phone content encoder (an older model file); "
                               "retrain it or use --front-end mfcc")
            visemes = np.asarray(visemes, np.float32)
            if visemes.shape != (t_total, self.net.cfg.num_visemes):
                raise EvpError(f"viseme shares must be ({t_total}, {self.net.cfg.num_visemes}), "
                               f"got {visemes.shape}")
        code = np.asarray(emotion_code, np.float32)
        if code.ndim == 1:
            code = np.broadcast_to(code, (t_total, code.shape[0]))
        if code.shape != (t_total, self.net.cfg.emotion_dim):
            raise EvpError(f"emotion code must be ({self.net.cfg.emotion_dim},) or (T, "
                           f"{self.net.cfg.emotion_dim}), got {code.shape}")
        out, _ = self.predict_frames(w, 0, t_total, 0, t_total, code, reference, visemes=visemes, step=chunk)
        return out

    def context(self, visemes: np.ndarray | None) -> int:
        """Frames of content context after a frame (its look-ahead): Ec's temporal conv sees ±2,
        Ep ``cfg.phone_lookahead`` (3 unless a live model's)."""
        return 2 if visemes is None else int(self.net.cfg.phone_lookahead)

    def left_context(self, visemes: np.ndarray | None) -> int:
        """Frames of input a frame needs before it: the encoder's context behind it plus the
        content delay."""
        behind = 2 if visemes is None else PhoneContentEncoder.SPAN - int(self.net.cfg.phone_lookahead)
        return behind + self.net.cfg.content_delay

    @torch.no_grad()
    def predict_frames(self, windows: np.ndarray, first: int, n_frames: int, start: int, stop: int,
                       codes: np.ndarray, reference: np.ndarray, state=None,
                       visemes: np.ndarray | None = None, step: int = PREDICT_STEP,
                       max_rows: int = MAX_ROWS):
        """Landmarks (stop - start, 68, 3) mm of frames [start, stop) of an ``n_frames``-frame clip,
        and the LSTM state after them (pass it back for the next frames: a clip can be animated in
        consecutive calls, giving what one call gives, to the rows' ~1e-4 mm below).

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
        net = self.net
        ref = torch.from_numpy(np.asarray(reference, np.float32).reshape(1, N_LANDMARKS, 3))
        n = stop - start
        if n <= 0:
            return np.empty((0, N_LANDMARKS, 3), np.float32), state
        rows = parallel_rows(n, max_rows)
        length, spans = row_spans(n, rows)
        pick = torch.stack([torch.arange(b - length, b) for _, b in spans])               # (rows, L)
        batch_state = tuple(torch.zeros(1, rows, net.cfg.lstm_hidden) for _ in range(2))
        if state is not None:                      # row 0 continues the frames before ``start``
            for mine, given in zip(batch_state, state):
                mine[:, 0] = given[:, 0]
        ref_rows = net.normalise_reference(ref).expand(rows, -1)
        coeffs = []
        per_call = max(1, step // rows)              # frames per LSTM call: ``step`` in all
        # One torch thread: the recurrence's small steps run faster on one (threads.torch_threads),
        # and so does a 500-frame call of the content encoder (6.0 ms against 8.6 on two threads
        # here; at 1,500 frames in one call two threads were no faster inside animate either).
        with torch_threads(1):
            content = torch.cat([self._content(windows, first, n_frames, c0, min(c0 + step * rows, stop), visemes)
                                 for c0 in range(start, stop, step * rows)], 1)[0]       # (n, Dc)
            code = torch.from_numpy(np.array(codes, np.float32))   # (n, De), a copy: codes may be read-only
            for s0 in range(0, length, per_call):
                s1 = min(s0 + per_call, length)
                part, batch_state = net.a2l(content[pick[:, s0:s1]], code[pick[:, s0:s1]], ref_rows, batch_state)
                coeffs.append(part)
        coeffs = torch.cat(coeffs, 1)                                                    # (rows, L, P)
        out = np.empty((n, N_LANDMARKS, 3), np.float32)
        for r, (a, b) in enumerate(spans):
            out[a:b] = net.landmarks(coeffs[r:r + 1, length - (b - a):], ref)[0].numpy()
        return out, (batch_state[0][:, -1:].contiguous(), batch_state[1][:, -1:].contiguous())

    def _content(self, windows: np.ndarray, first: int, n_frames: int, c0: int, c1: int,
                 visemes: np.ndarray | None) -> torch.Tensor:
        """Content codes (1, c1 - c0, Dc) of frames [c0, c1) as the LSTM reads them (Ec on the MFCC
        windows, or Ep on the viseme shares; the model's content delay applied)."""
        net = self.net
        lo, hi = max(0, c0 - self.left_context(visemes)), min(n_frames, c1 + self.context(visemes))
        if visemes is None:
            content = net.content.encode(net.normalise(torch.from_numpy(windows[lo - first:hi - first])[None]))
        else:
            content = net.phones(torch.from_numpy(visemes[lo:hi])[None])
        # Frame f reads the code of frame f - delay (frame 0's before the clip's start).
        return content[:, np.maximum(np.arange(c0, c1) - net.cfg.content_delay, 0) - lo]
