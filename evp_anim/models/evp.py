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

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..audio.features import MFCC_WINDOW, N_MFCC
from ..emotions import NUM_EMOTIONS
from ..errors import EvpError
from ..threads import torch_threads
from .evp_inference import (MODEL_FORMAT, MODEL_VERSION, N_LANDMARKS, PHONE_SPAN, EvpConfig, EvpInference,
                            model_config, phone_pads)


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

    SPAN = PHONE_SPAN

    def __init__(self, cfg: EvpConfig):
        super().__init__()
        self._pads = phone_pads(cfg.phone_lookahead)
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


# ---------------------------------------------------------------------- inference wrapper
class EvpModel(EvpInference):
    """A trained EVP model for inference on torch (numpy in, numpy out; CPU): the training code's
    own modules. :class:`~evp_anim.models.evp_numpy.EvpArrays` runs the same file without torch."""

    def __init__(self, net: EvpNet, meta: dict[str, Any]):
        self.net = net.eval()
        self.meta = meta

    @property
    def cfg(self) -> EvpConfig:
        return self.net.cfg

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
        cfg = model_config(blob, path)
        try:
            net = EvpNet(cfg)
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

    @torch.no_grad()
    def emotion_probs(self, code: np.ndarray) -> np.ndarray:
        """(De,) emotion code → (8,) the emotion classifier's probabilities."""
        logits = self.net.classifier(torch.from_numpy(np.asarray(code, np.float32))[None]).numpy()[0]
        probs = np.exp(logits - logits.max())
        return (probs / probs.sum()).astype(np.float32)

    # -- the engine (EvpInference) -------------------------------------------------------------
    def _buffer(self, name: str) -> np.ndarray:
        return self.net.get_buffer(name).numpy()

    def _one_thread(self):
        return torch_threads(1)

    @torch.no_grad()
    def _content(self, windows: np.ndarray, first: int, n_frames: int, c0: int, c1: int,
                 visemes: np.ndarray | None) -> np.ndarray:
        net = self.net
        lo, hi = self._content_span(n_frames, c0, c1, visemes)
        if visemes is None:
            content = net.content.encode(net.normalise(torch.from_numpy(windows[lo - first:hi - first])[None]))
        else:
            content = net.phones(torch.from_numpy(visemes[lo:hi])[None])
        return self._delayed(content[0].numpy(), lo, c0, c1)

    @torch.no_grad()
    def _landmark_coeffs(self, content: np.ndarray, code: np.ndarray, ref_rows: np.ndarray, state):
        coeffs, (h, c) = self.net.a2l(torch.from_numpy(content), torch.from_numpy(code),
                                      torch.from_numpy(ref_rows), tuple(torch.from_numpy(s) for s in state))
        return coeffs.numpy(), (h.numpy(), c.numpy())
