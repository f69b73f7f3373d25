"""3D-aware keypoint alignment (EVP Sec. 3.3, Eq. 8): new speech landmarks, target head motion.

``l_p = s_t * Pr * R_t * L3d_p + t_t``: the speech track's pose-invariant 3D landmarks ``L3d_p``
(mm) are rotated by each target frame's head rotation ``R_t``, projected scaled-orthographically
with its scale ``s_t`` (px/mm) and shifted by its translation ``t_t`` (px), using
:func:`evp_anim.face.projection.project` (y down). The result keeps the target's head motion and
carries the new mouth and expression.

Identity (``identity=``):

* ``"target"`` (default): the speech's *expression displacement* is re-expressed on the target's
  face, ``L3d = target_neutral + (speech_3d - speech_neutral)``, where the neutrals are the SFM
  landmarks of each track's identity with no expression. The jawline, eyes and nose then sit
  where the target's own are, so the sketch matches the footage's face outline (EVP Fig. 7).
* ``"speech"``: EVP's literal choice: the predicted landmarks' own geometry, ``L3d = speech_3d``.

Length (``length_policy=``), for speech of N frames and footage of M frames:

* ``loop`` — output N frames, target frame ``i mod M``.
* ``pingpong`` — output N frames, the footage played forward then backward (no jump at the seam).
* ``hold`` — output N frames, the last target frame held when the speech is longer.
* ``trim`` — output min(N, M) frames (the longer of the two is cut).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EvpError
from ..face.projection import project
from ..tracks import Track

LENGTH_POLICIES = ("loop", "pingpong", "trim", "hold")
IDENTITY_CHOICES = ("target", "speech")


def target_frame_indices(n_speech: int, n_target: int, policy: str = "loop") -> np.ndarray:
    """(L,) int64 target frame used for each output frame under ``policy`` (see module docstring)."""
    if policy not in LENGTH_POLICIES:
        raise EvpError(f"length policy must be one of {', '.join(LENGTH_POLICIES)}, got {policy!r}")
    if n_speech < 1 or n_target < 1:
        raise EvpError(f"both tracks need frames (speech {n_speech}, target {n_target})")
    i = np.arange(n_speech if policy != "trim" else min(n_speech, n_target), dtype=np.int64)
    if policy in ("loop", "trim"):
        return i % n_target
    if policy == "hold":
        return np.minimum(i, n_target - 1)
    if n_target == 1:
        return np.zeros_like(i)
    period = 2 * n_target - 2
    k = i % period
    return np.where(k < n_target, k, period - k)


def _neutral(rig, identity: np.ndarray, which: str) -> np.ndarray:
    ident = np.asarray(identity, np.float32)
    if ident.shape != (rig.num_identity,):
        raise EvpError(f"the {which} track has no SFM identity ({ident.shape[0]} coefficients, expected "
                       f"{rig.num_identity}); use --identity speech or refit it")
    return rig.landmarks_3d(ident).astype(np.float64)


def align_tracks(speech: Track, target: Track, identity: str = "target", length_policy: str = "loop",
                 sfm_dir: str | Path | None = None, rig=None) -> Track:
    """Pose the speech track's 3D landmarks with the target footage's head motion (EVP Eq. 8).

    Args:
        speech: track with ``landmarks_3d`` (T_s, 68, 3) mm (pose-invariant) and its identity.
        target: footage track with pose_rotation (T_t, 3) rad, pose_translation (T_t, 2) px,
            pose_scale (T_t,) px/mm, identity (63,) (from :mod:`.fitting`).
        identity: ``"target"`` or ``"speech"`` (see module docstring); ``"target"`` needs the SFM
            (``sfm_dir`` or ``rig``) for both neutrals.
        length_policy: ``loop``, ``pingpong``, ``trim`` or ``hold``.
    Returns:
        Track at the target's fps and image_size: landmarks_2d (L, 68, 2) px projected by Eq. 8,
        landmarks_3d the pose-invariant 3D landmarks that were posed, the target's pose, the speech's
        expression/emotion/intensity/phonemes; ``info["target_frames"]`` lists the target frame
        of each output frame.
    """
    if identity not in IDENTITY_CHOICES:
        raise EvpError(f"--identity must be 'target' or 'speech', got {identity!r}")
    if speech.landmarks_3d is None:
        raise EvpError("the speech track has no landmarks_3d: align needs pose-invariant 3D landmarks "
                       "(tracks from `evp-anim speak`, the models, or `evp-anim track`)")
    if target.n_frames < 1:
        raise EvpError("the target track has no frames")
    if speech.fps != target.fps:
        speech = speech.resample(target.fps)
    idx = target_frame_indices(speech.n_frames, target.n_frames, length_policy)
    n = len(idx)
    sp = speech.slice(0, n) if n < speech.n_frames else speech.copy()
    l3d = sp.landmarks_3d.astype(np.float64)
    if identity == "target":
        if rig is None:
            if sfm_dir is None:
                raise EvpError("identity 'target' needs the SFM: pass --sfm-dir (or use --identity speech)")
            from ..face.rig import FaceRig
            rig = FaceRig(sfm_dir)
        l3d = _neutral(rig, target.identity, "target")[None] + (l3d - _neutral(rig, sp.identity, "speech")[None])
        ident = target.identity.copy()
    else:
        ident = sp.identity.copy()
    rot = target.pose_rotation[idx]
    trans = target.pose_translation[idx]
    scale = target.pose_scale[idx]
    lm2d = project(l3d, rot, trans, scale)
    info = {"aligned": True, "identity": identity, "length_policy": length_policy,
            "target_frames": idx.tolist(), "speech_frames": int(speech.n_frames),
            "target_frames_total": int(target.n_frames)}
    for key in ("video", "audio", "text", "speaker", "emotion"):
        if key in target.info and key == "video":
            info["target_video"] = target.info["video"]
        elif key in sp.info:
            info[key] = sp.info[key]
    return Track.new(
        lm2d.astype(np.float32), fps=target.fps, image_size=target.image_size, landmarks_3d=l3d.astype(np.float32),
        pose_rotation=rot, pose_translation=trans, pose_scale=scale, identity=ident,
        expression=sp.expression, expression_names=list(sp.expression_names), emotion=sp.emotion,
        intensity=sp.intensity, phonemes=list(sp.phonemes), provenance=dict(sp.provenance), info=info,
    )
