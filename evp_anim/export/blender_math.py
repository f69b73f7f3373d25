"""The Blender scene's conventions as bpy-free math: what :mod:`blender_addon.builder` computes
before it touches bpy, kept here so it is testable without Blender (numpy only, so the add-on
imports it inside a stock Blender from the bundled evp_anim wheel).

Conventions
-----------
* **Axes and units.** The SFM's model space (mm; x to the viewer's right, y up, z toward the
  viewer) maps to Blender (metres; Z up, the face looking down -Y, toward a front-view camera) by
  ``(X, Y, Z) = 0.001 * (x, -z, y)``: a proper rotation of +90° about X, so the face keeps its
  handedness and ARKit "Left" stays the subject's left (Blender +X).
* **Head pose.** The track's ``R = Rz(roll) Ry(yaw) Rx(pitch)`` about the SFM axes
  (:func:`evp_anim.face.projection.euler_to_matrix`) becomes, in Blender's axes,
  ``R_Y(-roll) R_Z(yaw) R_X(pitch)``; that is exactly Blender's Euler mode ``'XZY'`` (X applied
  first, then Z, then Y) with ``rotation_euler = (pitch, -roll, yaw)``. So pose keys are exact
  (no re-fitting) and read back as ``pitch = X, yaw = Z, roll = -Y``.
* **Time.** Track frame ``i`` sits on scene frame ``frame_start + i``; the scene's fps is an
  integer ``render.fps`` and a ``fps_base`` (25 → 25 / 1; 29.97 → 30 / 1.001).
* **Emotion keys.** On the head, emotion is a CONSTANT-interpolated curve of the emotion's
  index in :data:`evp_anim.emotions.EMOTIONS`, keyed at frame 0 and where the dominant emotion
  changes; intensity a linear curve keyed on the same frames.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ..emotion_keys import EmotionKey
from ..emotions import EMOTIONS
from ..tracks import Track

MM = 0.001  # Blender metres per SFM millimetre
# 68-point sketch edges: the iBUG parts (evp_anim.face.sketch.IBUG_PARTS lives in a cv2 module,
# which Blender lacks, so the same parts are restated here; a test checks they agree).
IBUG_PARTS_LOCAL: tuple[tuple[int, int, bool], ...] = (
    (0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (30, 36, False),
    (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True),
)


def ibug_edges() -> np.ndarray:
    """(E, 2) int vertex pairs of the 68-point sketch (0-based iBUG indices)."""
    edges = []
    for a, b, closed in IBUG_PARTS_LOCAL:
        idx = list(range(a, b))
        edges += list(zip(idx[:-1], idx[1:]))
        if closed:
            edges.append((idx[-1], idx[0]))
    return np.array(edges, np.int32)


def sfm_to_blender(points_mm: np.ndarray) -> np.ndarray:
    """(..., 3) SFM mm (x right, y up, z to viewer) → (..., 3) Blender metres (X, -z, y)."""
    p = np.asarray(points_mm, np.float32)
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1) * MM


def pose_to_euler_xzy(rotation: np.ndarray) -> np.ndarray:
    """(T, 3) [pitch, yaw, roll] → (T, 3) Blender ``rotation_euler`` for mode 'XZY'."""
    r = np.asarray(rotation, np.float32)
    return np.stack([r[:, 0], -r[:, 2], r[:, 1]], axis=1)


def euler_xzy_to_pose(euler: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pose_to_euler_xzy`."""
    e = np.asarray(euler, np.float32)
    return np.stack([e[:, 0], e[:, 2], -e[:, 1]], axis=1)


def landmark_points(track: Track) -> tuple[np.ndarray, bool]:
    """((T, 68, 3) Blender metres, parented): pose-invariant 3D landmarks when present, else the
    2D landmarks as a flat sketch (x right, y down → X, -Z; per-frame ``pose_scale`` to mm)."""
    if track.landmarks_3d is not None:
        return sfm_to_blender(track.landmarks_3d), True
    lm = track.landmarks_2d
    w, h = track.image_size
    s = track.pose_scale[:, None]
    x = (lm[..., 0] - w / 2) / s
    z = -(lm[..., 1] - h / 2) / s
    pts = np.stack([x + 200.0, np.zeros_like(x), z], axis=-1) * MM  # 20 cm to the head's right
    return pts.astype(np.float32), False


def scene_fps_settings(fps: float) -> tuple[int, float]:
    """(``render.fps``, ``render.fps_base``) for a track's fps: integer rates exact
    (25 → (25, 1.0)), others as the next integer over a base (29.97 → (30, 1.001))."""
    if abs(fps - round(fps)) < 1e-6:
        return int(round(fps)), 1.0
    whole = int(np.ceil(fps))
    return whole, whole / fps


def emotion_keys_from_track(track: Track) -> list[tuple[int, int, float]]:
    """(frame index, emotion index, intensity) keys at frame 0 and where the dominant emotion
    changes: a sparse, editable version of the per-frame emotion weights."""
    dom = track.emotion.argmax(1)
    frames = [0] + [i for i in range(1, track.n_frames) if dom[i] != dom[i - 1]]
    return [(i, int(dom[i]), float(track.intensity[i])) for i in frames]


def emotion_of_curve_value(value: float) -> str:
    """The emotion an ``evp.emotion`` curve value stands for (nearest index, clipped to EMOTIONS)."""
    return EMOTIONS[int(np.clip(round(value), 0, len(EMOTIONS) - 1))]


def emotion_keys_at(frames: Iterable[float], frame_start: float, fps: float,
                    emotion_at: Callable[[float], str], intensity_at: Callable[[float], float]) -> list[EmotionKey]:
    """Emotion keys (times in seconds from track frame 0) at the keyed scene ``frames`` (any
    order, repeats allowed); ``emotion_at(f)`` / ``intensity_at(f)`` give the values at frame f.

    Keys before the clip collapse into one key at 0 s holding the value there, so the times are
    >= 0 and strictly increasing (a valid keys file, :func:`evp_anim.emotion_keys.validate_keys`).
    """
    fs = sorted({float(f) for f in frames})
    if fs and fs[0] < frame_start:
        fs = [float(frame_start)] + [f for f in fs if f > frame_start]
    return [EmotionKey((f - frame_start) / fps, emotion_at(f), intensity_at(f)) for f in fs]
