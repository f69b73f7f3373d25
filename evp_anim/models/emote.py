"""EMOTE on the SFM rig (Danecek et al., SIGGRAPH Asia 2023), as torch modules.

Speech + an emotion condition → per-frame rig coefficients (the 42 channels of
:data:`~evp_anim.face.channels.RIG_CHANNELS`: six SFM emotion blendshapes + 36 ARKit-named
articulation channels) at 25 fps. Pieces (B = batch, T = frames at 25 fps, T' = T / r,
r = ``EmoteConfig.rate`` frames per latent, 2 by default):

* **motion prior** (:class:`MotionPrior`, FLINT-like temporal VAE): rig coefficients (B, T, 42)
  → strided 1-D convolutions → posterior N(mu, sigma) over latents (B, T', Dz) at 12.5 Hz →
  transposed convolutions → coefficients (B, T, 42). Trained alone (reconstruction + KL), then
  frozen: the generator only chooses latents, the decoder keeps the motion natural.
* **content encoder** (:class:`ContentEncoder`): MFCC windows (B, T, 28, 12) (the EVP features)
  → per-frame viseme logits (B, T, 15), 360 ms of context; trained alone on the corpus's visemes,
  then frozen. Only its viseme probabilities go on: a content bottleneck, as EVP's content encoder.
* **generator** (:class:`Generator`): viseme probabilities plus the condition — emotion weights
  (B, T, 8) (a blend is a weighted mix), intensity (B, T) in [0, 1] and a speaker style id
  (0 = unknown) — downsampled ×r to latents (B, T', Dz) → the frozen prior decoder.
  Without the prior (the ablation), a per-frame head regresses the coefficients directly.
* **perceptual networks** (trained first, then frozen, see train/emote_trainer.py):
  :class:`LipReader` — per-frame viseme classes (15) from the lip vertices of the rig output
  (coefficients → lip-vertex displacements through the rig's linear basis, in torch, so the
  loss is differentiable) — and :class:`SequenceEmotionClassifier` — one emotion (8) per
  rig-coefficient sequence.

The rig is linear, so vertex displacements depend on the coefficients only (not the identity);
everything here works on displacements from the neutral face, in mm.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..audio.features import MFCC_WINDOW, N_MFCC
from ..emotions import EMOTIONS, NUM_EMOTIONS
from ..errors import EvpError
from ..tracks import MOUTH

MODEL_FORMAT = "evp-anim-emote-model"
MODEL_VERSION = 2        # 2: content bottleneck + latent rate in the config (1: not readable any more)
RATE = 4                 # the coarsest latent step (frames); crops and chunks align to it
NUM_CHANNELS = 42
NUM_VISEMES = 15
LIP_MARGIN_MM = 3.0      # lip vertices: inside the outer lip contour or within this of it


# ---------------------------------------------------------------------- rig geometry
def lip_vertices(rig) -> np.ndarray:
    """(L,) int64 SFM vertex indices of the lips: vertices whose frontal (x, y) position on the mean
    face lies inside the outer lip contour (iBUG 49–60) or within ``LIP_MARGIN_MM`` of it, on
    the front of the face. About 200 of the 3448 vertices; the vertex set LVE measures."""
    from matplotlib.path import Path as Polygon
    mean = rig.mean
    lm = mean[rig.landmark_vertices]
    contour = lm[48:60, :2].astype(np.float64)
    xy = mean[:, :2].astype(np.float64)
    inside = Polygon(contour).contains_points(xy)
    a, b = contour, np.roll(contour, -1, axis=0)
    ab = b - a
    t = np.clip(((xy[:, None] - a[None]) * ab[None]).sum(-1) / (ab ** 2).sum(-1)[None], 0.0, 1.0)
    dist = np.linalg.norm(xy[:, None] - (a[None] + t[..., None] * ab[None]), axis=-1).min(1)
    front = mean[:, 2] > lm[48:60, 2].min() - 20.0
    return np.where((inside | (dist <= LIP_MARGIN_MM)) & front)[0].astype(np.int64)


def rig_bases(rig) -> dict[str, np.ndarray]:
    """The linear pieces the networks and losses need, all float32 mm per unit weight:

    * ``lip_deltas`` (42, L*3): displacement of the lip vertices per channel;
    * ``mouth_lm_deltas`` (42, 20*3): displacement of the mouth landmarks (iBUG 49–68);
    * ``gram_face`` (42, 42): D D^T / N over all vertices — the mean squared vertex error of a
      coefficient error e is e^T G e (mm²);
    * ``gram_lip`` (42, 42): the same over the lip vertices.
    """
    lips = lip_vertices(rig)
    d = rig.deltas.astype(np.float64)                       # (42, N, 3)
    lip = d[:, lips].reshape(d.shape[0], -1)
    face = d.reshape(d.shape[0], -1)
    mouth = d[:, rig.landmark_vertices[MOUTH]].reshape(d.shape[0], -1)
    return {
        "lip_vertices": lips,
        "lip_deltas": lip.astype(np.float32),
        "mouth_lm_deltas": mouth.astype(np.float32),
        "gram_face": (face @ face.T / rig.num_vertices).astype(np.float32),
        "gram_lip": (lip @ lip.T / len(lips)).astype(np.float32),
    }


# ---------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class EmoteConfig:
    """Sizes of the networks (stored in the model file)."""

    channels: int = NUM_CHANNELS
    latent_dim: int = 32
    prior_hidden: int = 128
    audio_hidden: int = 128
    cond_dim: int = 64
    n_speakers: int = 0           # known speaker style ids 1..n; id 0 = unknown
    lip_vertices: int = 0         # L (set from the rig)
    reader_hidden: int = 128
    emotion_hidden: int = 64
    direct: bool = False          # True: no motion prior (ablation): per-frame regression head
    rate: int = 2                 # frames per prior latent: 2 → 12.5 Hz (4 → 6.25 Hz lost lip detail)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int]:
    """Pad (B, C, T) at the end (edge values) to a multiple of ``multiple``; returns (x, T)."""
    t = x.shape[-1]
    extra = (-t) % multiple
    if extra:
        x = F.pad(x, (0, extra), mode="replicate")
    return x, t


# ---------------------------------------------------------------------- motion prior
class MotionPrior(nn.Module):
    """Temporal VAE over rig coefficients. With r = ``cfg.rate`` frames per latent, ``encode``:
    (B, T, 42) → mu, logvar (B, T/r, Dz); ``decode``: (B, T', Dz) → (B, r T', 42). Coefficients
    are normalised with the training set's per-channel mean and std (buffers)."""

    def __init__(self, cfg: EmoteConfig):
        super().__init__()
        h, c, z = cfg.prior_hidden, cfg.channels, cfg.latent_dim
        halvings = {1: 0, 2: 1, 4: 2}.get(cfg.rate)     # stride-2 layers per side
        if halvings is None:
            raise EvpError(f"latent rate must be 1, 2 or 4 frames, got {cfg.rate}")
        self.rate = cfg.rate
        self.register_buffer("w_mean", torch.zeros(c))
        self.register_buffer("w_std", torch.ones(c))
        down = [m for _ in range(halvings) for m in (nn.Conv1d(h, h, 4, stride=2, padding=1), nn.GELU())]
        up = [m for _ in range(halvings) for m in (nn.ConvTranspose1d(h, h, 4, stride=2, padding=1), nn.GELU())]
        self.encoder = nn.Sequential(
            nn.Conv1d(c, h, 5, padding=2), nn.GELU(), *down,
            nn.Conv1d(h, h, 3, padding=1), nn.GELU(),
            nn.Conv1d(h, 2 * z, 1))
        self.decoder = nn.Sequential(
            nn.Conv1d(z, h, 3, padding=1), nn.GELU(), *up,
            nn.Conv1d(h, h, 5, padding=2), nn.GELU(),
            nn.Conv1d(h, c, 1))

    def encode(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = ((w - self.w_mean) / self.w_std).transpose(1, 2)
        x, _ = _pad_to(x, self.rate)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu.transpose(1, 2), logvar.clamp(-10, 5).transpose(1, 2)

    def decode(self, z: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        y = self.decoder(z.transpose(1, 2)).transpose(1, 2)
        if n_frames is not None:
            y = y[:, :n_frames]
        return y * self.w_std + self.w_mean

    def forward(self, w: torch.Tensor, sample: bool = True):
        """(B, T, 42) → (reconstruction (B, T, 42), mu, logvar)."""
        mu, logvar = self.encode(w)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode(z, w.shape[1]), mu, logvar


# ---------------------------------------------------------------------- generator
class _Block(nn.Module):
    """Residual dilated temporal convolution on (B, C, T)."""

    def __init__(self, ch: int, dilation: int, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.norm = nn.GroupNorm(1, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.norm(self.conv(x)))


class ContentEncoder(nn.Module):
    """The audio side: per-frame viseme logits (B, T, 15) from raw MFCC windows (B, T, 28, 12).

    Each 280 ms window goes through a linear layer, then two temporal convolutions of ±1 frame, so
    a frame sees 360 ms of audio in all. Trained alone on the corpus's viseme labels (stage
    "content"), then frozen: the generator sees only its viseme probabilities, a content
    bottleneck like EVP's pre-trained content encoder. The short context is deliberate: with four
    dilated blocks (±14 frames) the encoder read visemes on unseen sentences at 69% against 77%
    with these two, because a long context learns the training sentences instead of the sounds.
    """

    def __init__(self, cfg: EmoteConfig):
        super().__init__()
        h = cfg.audio_hidden
        self.register_buffer("mfcc_mean", torch.zeros(12))
        self.register_buffer("mfcc_std", torch.ones(12))
        self.frame = nn.Sequential(nn.Linear(MFCC_WINDOW * N_MFCC, h), nn.GELU())
        self.temporal = nn.Sequential(_Block(h, 1, kernel=3), _Block(h, 1, kernel=3))
        self.out = nn.Conv1d(h, NUM_VISEMES, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, T, 28, 12) → viseme logits (B, T, 15)."""
        b, t = windows.shape[:2]
        x = ((windows - self.mfcc_mean) / self.mfcc_std).reshape(b, t, MFCC_WINDOW * N_MFCC)
        return self.out(self.temporal(self.frame(x).transpose(1, 2))).transpose(1, 2)


class Generator(nn.Module):
    """Viseme probabilities + condition → prior latents (B, T', Dz), or (direct) coefficients (B, T, 42).

    Content: per-frame viseme probabilities (B, T, 15) from the frozen :class:`ContentEncoder`.
    Condition per frame: emotion weights (B, T, 8) summing to 1, intensity (B, T) in [0, 1], and a
    speaker style id (B,) (0 = unknown; ids above ``n_speakers`` are an error upstream).
    """

    def __init__(self, cfg: EmoteConfig):
        super().__init__()
        h, cd = cfg.audio_hidden, cfg.cond_dim
        self.cfg = cfg
        self.visemes = nn.Sequential(nn.Conv1d(NUM_VISEMES, h, 3, padding=1), nn.GELU(), _Block(h, 1))
        self.cond = nn.Sequential(nn.Linear(2 * NUM_EMOTIONS + 1, cd), nn.GELU(), nn.Linear(cd, cd))
        self.speaker = nn.Embedding(cfg.n_speakers + 1, cd)
        self.fuse = nn.Conv1d(h + cd, h, 1)
        if cfg.direct:
            self.body = nn.Sequential(*[_Block(h, d) for d in (1, 2)])
            self.head = nn.Conv1d(h, cfg.channels, 1)
        else:
            self.down = nn.Conv1d(h, h, cfg.rate, stride=cfg.rate)
            self.body = nn.Sequential(*[_Block(h, d, kernel=3) for d in (1, 2, 1)])
            self.head = nn.Conv1d(h, cfg.latent_dim, 1)

    def condition(self, emotion: torch.Tensor, intensity: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """(B, T, 8), (B, T), (B,) → (B, T, cond_dim)."""
        inten = intensity[..., None]
        c = self.cond(torch.cat([emotion, emotion * inten, inten], -1))
        return c + self.speaker(speaker)[:, None, :]

    def forward(self, visemes: torch.Tensor, emotion: torch.Tensor, intensity: torch.Tensor,
                speaker: torch.Tensor) -> torch.Tensor:
        """visemes (B, T, 15) probabilities → latents (B, ceil(T/r), Dz), or coefficients (B, T, 42)
        when ``direct``."""
        a = self.visemes(visemes.transpose(1, 2))
        c = self.condition(emotion, intensity, speaker).transpose(1, 2)
        x = self.fuse(torch.cat([a, c], 1))
        if self.cfg.direct:
            return self.head(self.body(x)).transpose(1, 2)
        x, _ = _pad_to(x, self.cfg.rate)
        return self.head(self.body(self.down(x))).transpose(1, 2)


# ---------------------------------------------------------------------- perceptual networks
class LipReader(nn.Module):
    """Per-frame viseme logits (B, T, 15) from rig coefficients (B, T, 42), through the lip
    vertices' displacements (the rig's linear basis, buffer ``basis`` (42, 3 L), mm)."""

    def __init__(self, cfg: EmoteConfig, basis_dim: int | None = None):
        super().__init__()
        n = basis_dim if basis_dim is not None else 3 * cfg.lip_vertices
        h = cfg.reader_hidden
        self.register_buffer("basis", torch.zeros(cfg.channels, n))
        self.register_buffer("scale", torch.ones(()))
        self.proj = nn.Linear(n, h)
        self.temporal = nn.Sequential(
            nn.Conv1d(h, h, 5, padding=2), nn.GELU(),
            nn.Conv1d(h, h, 5, padding=2), nn.GELU())
        self.out = nn.Linear(h, NUM_VISEMES)

    def features(self, w: torch.Tensor) -> torch.Tensor:
        disp = (w @ self.basis) / self.scale
        h = F.gelu(self.proj(disp)).transpose(1, 2)
        return self.temporal(h).transpose(1, 2)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(w))


class SequenceEmotionClassifier(nn.Module):
    """One emotion (logits (B, 8)) per rig-coefficient sequence (B, T, 42), pooled over time."""

    def __init__(self, cfg: EmoteConfig):
        super().__init__()
        h = cfg.emotion_hidden
        self.register_buffer("w_mean", torch.zeros(cfg.channels))
        self.register_buffer("w_std", torch.ones(cfg.channels))
        self.conv = nn.Sequential(
            nn.Conv1d(cfg.channels, h, 5, padding=2), nn.GELU(),
            nn.Conv1d(h, h, 5, padding=2, stride=2), nn.GELU())
        self.out = nn.Linear(2 * h, NUM_EMOTIONS)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(((w - self.w_mean) / self.w_std).transpose(1, 2))
        return self.out(torch.cat([x.mean(-1), x.amax(-1)], 1))


class EmoteNet(nn.Module):
    """All EMOTE networks: prior, content encoder, generator, lip reader, emotion classifier."""

    def __init__(self, cfg: EmoteConfig):
        super().__init__()
        self.cfg = cfg
        self.prior = MotionPrior(cfg)
        self.content = ContentEncoder(cfg)
        self.generator = Generator(cfg)
        self.lip_reader = LipReader(cfg)
        self.emotion_classifier = SequenceEmotionClassifier(cfg)

    def viseme_probs(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, T, 28, 12) MFCC windows → (B, T, 15) viseme probabilities of the content encoder."""
        return torch.softmax(self.content(windows), -1)

    def generate(self, windows, emotion, intensity, speaker, visemes=None) -> torch.Tensor:
        """→ rig coefficients (B, T, 42) (through the prior decoder unless ``cfg.direct``).
        ``visemes`` (from :meth:`viseme_probs`) skips the content encoder (the exchange reuses it)."""
        v = self.viseme_probs(windows) if visemes is None else visemes
        out = self.generator(v, emotion, intensity, speaker)
        if self.cfg.direct:
            return out
        return self.prior.decode(out, v.shape[1])


# ---------------------------------------------------------------------- inference wrapper
class EmoteModel:
    """A trained EMOTE model for inference (numpy in, numpy out; CPU)."""

    kind = "emote"
    reads_visemes = True          # ``animate`` feeds it the phones' viseme shares when it has them

    def __init__(self, net: EmoteNet, meta: dict[str, Any]):
        self.net = net.eval()
        self.meta = meta

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "emote"))

    @property
    def channels(self) -> list[str]:
        from ..face.channels import RIG_CHANNELS
        return list(self.meta.get("channels", RIG_CHANNELS))

    @property
    def speakers(self) -> list[str]:
        """Known speaker style names; style id i + 1 is speakers[i] (0 = unknown)."""
        return list(self.meta.get("speakers", []))

    def speaker_id(self, speaker: str | None) -> int:
        """Style id of a training speaker name (0 = unknown for None or an unseen speaker)."""
        if speaker is None:
            return 0
        try:
            return self.speakers.index(str(speaker)) + 1
        except ValueError:
            return 0

    def save(self, path: str | Path) -> Path:
        """Write the inference weights atomically (config, state, meta)."""
        from ..atomic import atomic_path
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save({"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": self.net.cfg.to_dict(),
                        # float16 on disk halves the file; inference runs in float32
                        "state": {k: v.half() if v.is_floating_point() and "mean" not in k and "std" not in k
                                  else v for k, v in self.net.state_dict().items()},
                        "meta": self.meta}, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EmoteModel":
        """Load a model file; a missing, corrupt or foreign file is a one-line :class:`EvpError`."""
        path = Path(path)
        if not path.is_file():
            raise EvpError(f"EMOTE model file not found: {path} (train one with `evp-anim train-emote`)")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for truncated/corrupt files
            raise EvpError(f"{path}: not a readable model file ({type(e).__name__})") from None
        if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
            what = "an EVP model" if isinstance(blob, dict) and blob.get("format") == "evp-anim-evp-model" \
                else "not an evp-anim EMOTE model"
            raise EvpError(f"{path}: {what}, expected an EMOTE model (`evp-anim train-emote`)")
        version = int(blob.get("version", 0))
        if version > MODEL_VERSION:
            raise EvpError(f"{path}: EMOTE model version {version} is newer than this evp-anim; upgrade")
        if version < MODEL_VERSION:
            raise EvpError(f"{path}: EMOTE model version {version} is from an older evp-anim (other networks); "
                           f"retrain it with `evp-anim train-emote`")
        try:
            net = EmoteNet(EmoteConfig(**blob["config"]))
            net.load_state_dict(blob["state"])
        except (TypeError, RuntimeError, KeyError) as e:
            raise EvpError(f"{path}: model weights do not fit the network ({str(e).splitlines()[0][:120]})") from None
        return cls(net, dict(blob.get("meta", {})))

    @torch.no_grad()
    def predict(self, windows: np.ndarray, emotion: np.ndarray, intensity: np.ndarray,
                speaker: int = 0, chunk: int = 3000, visemes: np.ndarray | None = None) -> np.ndarray:
        """Rig coefficients (T, 42) for MFCC windows (T, 28, 12), per-frame emotion weights (T, 8)
        (or (8,)), intensity (T,) (or a number) and a style id.

        ``visemes`` (T, 15) viseme probabilities (e.g. from recognised or aligned phones,
        :func:`~evp_anim.audio.phones.viseme_posteriors`) replace the content encoder's.

        Long inputs run in chunks of ``chunk`` frames with 64 frames of overlap on each side (the
        networks' receptive field is under 2 s), so memory is bounded by the chunk."""
        w = np.asarray(windows, np.float32)
        if w.ndim != 3 or w.shape[1:] != (28, 12):
            raise EvpError(f"MFCC windows must be (T, 28, 12), got {w.shape}")
        t = w.shape[0]
        if t == 0:
            raise EvpError("cannot animate 0 frames of audio")
        emo = np.asarray(emotion, np.float32)
        emo = np.broadcast_to(emo, (t, NUM_EMOTIONS)) if emo.ndim == 1 else emo
        inten = np.broadcast_to(np.asarray(intensity, np.float32), (t,))
        if emo.shape != (t, NUM_EMOTIONS) or inten.shape != (t,):
            raise EvpError(f"emotion must be (8,) or ({t}, 8) and intensity a number or ({t},)")
        vis = None if visemes is None else np.asarray(visemes, np.float32)
        if vis is not None and vis.shape != (t, NUM_VISEMES):
            raise EvpError(f"visemes must be ({t}, {NUM_VISEMES}), got {vis.shape}")
        spk = int(speaker)
        if not 0 <= spk <= self.net.cfg.n_speakers:
            raise EvpError(f"speaker style id must be in 0..{self.net.cfg.n_speakers}, got {spk}")
        out = np.empty((t, self.net.cfg.channels), np.float32)
        pad = 64
        for a in range(0, t, chunk):
            b = min(a + chunk, t)
            lo, hi = max(0, a - pad), min(t, b + pad)
            lo -= lo % RATE   # keep the latent grid aligned with the chunk
            tt = lambda x: torch.from_numpy(np.array(x[lo:hi], np.float32))[None]  # noqa: E731
            y = self.net.generate(tt(w), tt(emo), tt(inten), torch.tensor([spk]),
                                  visemes=None if vis is None else tt(vis))[0].numpy()
            out[a:b] = y[a - lo: a - lo + (b - a)]
        return np.clip(out, 0.0, 1.0)

    @torch.no_grad()
    def lip_logits(self, weights: np.ndarray) -> np.ndarray:
        """(T, 15) viseme logits of the model's own lip reader for (T, 42) coefficients."""
        return self.net.lip_reader(torch.from_numpy(np.asarray(weights, np.float32))[None])[0].numpy()


def label_condition(emotion: str, intensity: float) -> tuple[np.ndarray, float]:
    """(8,) one-hot emotion weights and the intensity (0 for neutral) of a label."""
    from ..emotions import canonical_emotion, check_intensity
    emo = canonical_emotion(emotion)
    e = np.zeros(NUM_EMOTIONS, np.float32)
    e[EMOTIONS.index(emo)] = 1.0
    return e, (0.0 if emo == "neutral" else check_intensity(intensity))
