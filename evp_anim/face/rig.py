"""The face rig: SFM identity + expression channels -> mesh vertices and 68 landmarks.

``vertices = mean + sum_i identity_i * identity_basis_i + sum_k weights_k * deltas_k`` (mm), with
``deltas`` stacked in :data:`~evp_anim.face.channels.RIG_CHANNELS` order: the six SFM expression
blendshapes (``sfm_*``) followed by the authored articulation channels of
:mod:`evp_anim.face.articulation`. Identity coefficients are in units of one standard deviation
of the SFM shape model (63 components); weights are nominally in [0, 1].

Tracks are per frame (the project's frame rate is set by the track, typically 25 or 30 fps);
everything here is frame-rate agnostic: pass a (T, K) weight array, get (T, ...) back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..emotions import EMOTIONS, canonical_emotion, check_intensity
from ..errors import EvpError
from .articulation import articulation_basis
from .channels import ARTICULATION_CHANNELS, RIG_CHANNELS, SFM_EMOTION_CHANNELS
from .sfm import SfmModel, load_sfm

# Rig weights of each MEAD emotion at intensity 1 (channels not listed are 0). Each mixes the
# SFM blendshape of that emotion with the articulation channels that carry its FACS action
# units, at levels that read as a strong but plausible expression:
#   angry      AU4 brow lowerer, AU5/7 glare, AU9/10 sneer, AU23/24 lip press.
#   contempt   AU14 one-sided (left) lip-corner tightener/smirk, slight brow lowering.
#   disgusted  AU9 nose wrinkle, AU10 upper-lip raiser, AU4 brows, AU15 corners down.
#   fear       AU1+2 brows up (inner more), AU5 upper lid raiser, AU20 lip stretch, AU26 jaw drop.
#   happy      AU6 cheek raiser, AU12 lip-corner puller.
#   sad        AU1 inner brow raiser, AU15 corner depressor, drooping lids.
#   surprised  AU1+2 brows up, AU5 lids wide, AU26/27 jaw drop.
EMOTION_TABLE: dict[str, dict[str, float]] = {
    "neutral": {},
    "angry": {
        "sfm_anger": 0.8, "browDownLeft": 0.9, "browDownRight": 0.9, "eyeWideLeft": 0.25,
        "eyeWideRight": 0.25, "eyeSquintLeft": 0.25, "eyeSquintRight": 0.25, "noseSneerLeft": 0.35,
        "noseSneerRight": 0.35, "mouthPressLeft": 0.5, "mouthPressRight": 0.5,
        "mouthFrownLeft": 0.25, "mouthFrownRight": 0.25,
    },
    "contempt": {
        "mouthSmirkLeft": 0.9, "browDownLeft": 0.15, "browDownRight": 0.15,
        "mouthPressRight": 0.2, "eyeSquintLeft": 0.15,
    },
    "disgusted": {
        "sfm_disgust": 0.8, "noseSneerLeft": 0.8, "noseSneerRight": 0.8, "mouthUpperUpLeft": 0.6,
        "mouthUpperUpRight": 0.6, "browDownLeft": 0.45, "browDownRight": 0.45,
        "cheekSquintLeft": 0.35, "cheekSquintRight": 0.35, "mouthFrownLeft": 0.35,
        "mouthFrownRight": 0.35, "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3,
    },
    "fear": {
        "sfm_fear": 0.7, "browInnerUp": 0.85, "browOuterUpLeft": 0.3, "browOuterUpRight": 0.3,
        "eyeWideLeft": 0.85, "eyeWideRight": 0.85, "mouthStretchLeft": 0.55,
        "mouthStretchRight": 0.55, "jawOpen": 0.15,
    },
    "happy": {
        "sfm_happiness": 0.7, "mouthSmileLeft": 0.8, "mouthSmileRight": 0.8,
        "cheekSquintLeft": 0.6, "cheekSquintRight": 0.6, "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3,
    },
    "sad": {
        "sfm_sadness": 0.8, "mouthFrownLeft": 0.7, "mouthFrownRight": 0.7, "browInnerUp": 0.8,
        "eyeBlinkLeft": 0.15, "eyeBlinkRight": 0.15, "mouthRollLower": 0.15,
    },
    "surprised": {
        "sfm_surprise": 0.6, "browInnerUp": 0.7, "browOuterUpLeft": 0.8, "browOuterUpRight": 0.8,
        "eyeWideLeft": 0.8, "eyeWideRight": 0.8, "jawOpen": 0.3,
    },
}

# Identity samples are clipped to this many standard deviations per component so that a random
# face never lands in the model's implausible tails.
IDENTITY_CLIP_STD = 2.5


def _check_table() -> None:
    for emo in EMOTIONS:
        if emo not in EMOTION_TABLE:
            raise AssertionError(f"EMOTION_TABLE lacks {emo}")
        for ch in EMOTION_TABLE[emo]:
            if ch not in RIG_CHANNELS:
                raise AssertionError(f"EMOTION_TABLE[{emo!r}] names unknown channel {ch!r}")


_check_table()


class FaceRig:
    """SFM face rig with :data:`RIG_CHANNELS` expression channels.

    Attributes (N = 3448 vertices, K = len(RIG_CHANNELS), mm throughout):
        model: the :class:`~evp_anim.face.sfm.SfmModel`.
        channels: channel names, RIG_CHANNELS order.
        mean: (N, 3) float32; identity_basis: (63, N, 3) float32 (mm per std);
        deltas: (K, N, 3) float32 per-channel deltas at weight 1.
        triangles: (F, 3) int32; landmark_vertices: (68,) vertex per iBUG point (0-based).
    """

    def __init__(self, sfm_dir: str | Path | SfmModel):
        model = sfm_dir if isinstance(sfm_dir, SfmModel) else load_sfm(sfm_dir)
        sfm_index = {name: i for i, name in enumerate(model.expression_names)}
        sfm_rows = []
        for ch in SFM_EMOTION_CHANNELS:
            name = ch[len("sfm_"):]
            if name not in sfm_index:
                raise EvpError(f"SFM blendshape file in {model.source_dir} lacks '{name}': "
                               "run `evp-anim assets download` or pass --sfm-dir")
            sfm_rows.append(model.expression_basis[sfm_index[name]])
        art = articulation_basis(model)
        assert art.shape[0] == len(ARTICULATION_CHANNELS)
        self._model = model
        self._sfm_dir = model.source_dir
        self._set_arrays(model.mean, model.identity_basis, np.concatenate([np.stack(sfm_rows), art]),
                         model.triangles, model.landmark_vertices)

    def _set_arrays(self, mean, identity_basis, deltas, triangles, landmark_vertices) -> None:
        self.channels: tuple[str, ...] = RIG_CHANNELS
        self.mean = mean
        self.identity_basis = identity_basis
        self.triangles = triangles
        self.landmark_vertices = landmark_vertices
        self.deltas = np.ascontiguousarray(deltas, dtype=np.float32)
        self.deltas.setflags(write=False)
        n = self.num_vertices
        # flattened bases for fast matrix products
        self._mean_flat = self.mean.reshape(-1).astype(np.float32)
        self._id_flat = self.identity_basis.reshape(self.num_identity, -1)
        self._delta_flat = self.deltas.reshape(self.num_channels, -1)
        lv = self.landmark_vertices
        self._lm_mean = self.mean[lv].reshape(-1).astype(np.float32)
        self._lm_id = np.ascontiguousarray(self.identity_basis[:, lv].reshape(self.num_identity, -1))
        self._lm_delta = np.ascontiguousarray(self.deltas[:, lv].reshape(self.num_channels, -1))
        assert self._mean_flat.shape == (3 * n,)

    @property
    def model(self) -> SfmModel:
        """The :class:`~evp_anim.face.sfm.SfmModel` (loaded on first use by a cached rig)."""
        if self._model is None:
            self._model = load_sfm(self._sfm_dir)
        return self._model

    @classmethod
    def cached(cls, sfm_dir: str | Path) -> "FaceRig":
        """The rig of ``sfm_dir`` from the per-user rig cache (:mod:`evp_anim.export.rigdata`),
        built and cached on first use: the same arrays without parsing the SFM files or deriving
        the articulation basis (~0.9 s and scipy's import at every command's start). The cache key
        covers the SFM files and the rig's own source code, so a change to either rebuilds it."""
        from ..export.rigdata import load_rig_data, rig_cache_path, save_rig_data
        path = rig_cache_path(sfm_dir)
        data = None
        if path.is_file():
            try:
                data = load_rig_data(path)
            except EvpError:
                data = None                      # damaged or old: rebuilt below
        if data is None or tuple(data.channels) != RIG_CHANNELS:
            rig = cls(sfm_dir)
            try:
                save_rig_data(rig, path)
            except EvpError:
                pass                             # a read-only cache only costs time
            return rig
        rig = cls.__new__(cls)
        rig._model = None
        rig._sfm_dir = Path(sfm_dir)
        rig._set_arrays(data.mean, data.identity_basis, data.deltas, data.triangles, data.landmark_vertices)
        return rig

    @classmethod
    def load(cls, sfm_dir: str | Path) -> "FaceRig":
        """Same as ``FaceRig(sfm_dir)``."""
        return cls(sfm_dir)

    # -- sizes --
    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def num_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    def channel_index(self, name: str) -> int:
        """Column of channel ``name``; EvpError for an unknown name."""
        try:
            return self.channels.index(name)
        except ValueError:
            raise EvpError(f"unknown rig channel {name!r}: see evp_anim.face.channels.RIG_CHANNELS") from None

    # -- validation --
    def _identity(self, identity) -> np.ndarray | None:
        if identity is None:
            return None
        ident = np.asarray(identity, dtype=np.float32)
        if ident.shape != (self.num_identity,):
            raise EvpError(f"identity must have shape ({self.num_identity},), got {ident.shape}")
        if not np.all(np.isfinite(ident)):
            raise EvpError("identity coefficients must be finite numbers")
        return ident

    def _weights(self, weights) -> tuple[np.ndarray | None, bool]:
        if weights is None:
            return None, True
        w = np.asarray(weights, dtype=np.float32)
        single = w.ndim == 1
        if w.ndim not in (1, 2) or w.shape[-1] != self.num_channels:
            raise EvpError(f"weights must have shape ({self.num_channels},) or (T, {self.num_channels}), "
                           f"got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise EvpError("rig weights must be finite numbers")
        return (w[None] if single else w), single

    # -- evaluation --
    def vertices(self, identity=None, weights=None) -> np.ndarray:
        """Mesh vertices in mm.

        Args:
            identity: (63,) std units or None (the mean face).
            weights: (K,) or (T, K) channel weights, or None (neutral).
        Returns:
            (N, 3) float32 for no / (K,) weights, (T, N, 3) for (T, K).
        """
        ident = self._identity(identity)
        w, single = self._weights(weights)
        base = self._mean_flat if ident is None else self._mean_flat + ident @ self._id_flat
        if w is None:
            return base.reshape(-1, 3).copy()
        out = base[None] + w @ self._delta_flat
        out = out.reshape(len(w), -1, 3)
        return out[0] if single else out

    def landmarks_3d(self, identity=None, weights=None) -> np.ndarray:
        """The 68 iBUG landmarks in mm, from the landmark rows only (fast).

        Args:
            identity: (63,) or None; weights: (T, K) (or (K,) / None).
        Returns:
            (T, 68, 3) float32 ((68, 3) for (K,) or None weights); equals ``vertices()[:, lv]``.
        """
        ident = self._identity(identity)
        w, single = self._weights(weights)
        base = self._lm_mean if ident is None else self._lm_mean + ident @ self._lm_id
        if w is None:
            return base.reshape(68, 3).copy()
        out = (base[None] + w @ self._lm_delta).reshape(len(w), 68, 3)
        return out[0] if single else out

    def sample_identity(self, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
        """(63,) float32 random identity in std units: N(0, scale^2) clipped to +-2.5 scale.

        ``rng`` is a numpy Generator (``np.random.default_rng(seed)``); ``scale`` < 1 gives faces
        closer to the mean.
        """
        s = float(scale)
        if not np.isfinite(s) or s < 0:
            raise EvpError(f"identity scale must be a number >= 0, got {scale!r}")
        z = rng.standard_normal(self.num_identity)
        return (np.clip(z, -IDENTITY_CLIP_STD, IDENTITY_CLIP_STD) * s).astype(np.float32)

    def emotion_weights(self, emotion: str, intensity: float = 1.0) -> np.ndarray:
        """(K,) float32 rig weights of ``emotion`` (a MEAD name or alias) at ``intensity`` in [0, 1].

        The weights are :data:`EMOTION_TABLE`'s row scaled linearly by ``intensity``.
        """
        emo = canonical_emotion(emotion)
        k = check_intensity(intensity)
        w = np.zeros(self.num_channels, np.float32)
        for ch, val in EMOTION_TABLE[emo].items():
            w[self.channels.index(ch)] = val * k
        return w

    def weights_from_dict(self, values: dict[str, float]) -> np.ndarray:
        """(K,) float32 weights with the named channels set (unknown names are an EvpError)."""
        w = np.zeros(self.num_channels, np.float32)
        for name, val in values.items():
            w[self.channel_index(name)] = float(val)
        return w
