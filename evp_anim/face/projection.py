"""Head pose and scaled-orthographic projection of SFM points to image pixels.

Conventions
-----------
* Model space: the SFM's millimetres, x to the viewer's right (the subject's left), y up, z toward
  the viewer.
* Euler angles are radians ``[pitch, yaw, roll]`` about the model's x, y and z axes, and the
  rotation is ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (pitch applied first, roll last).
  A positive pitch (``Rx(+a)``) turns +y toward +z: the forehead comes toward the camera, the
  face looks down. A positive yaw turns +z toward +x: the nose moves to the image's right (the
  subject turns to their left). A positive roll turns +x toward +y: the head turns
  counter-clockwise as seen in the image (the crown moves toward the image's left).
* Image space: pixels, u to the right, v DOWN (OpenCV), origin at the top-left pixel's centre.

The projection is EVP's Eq. 8 (scaled orthographic): ``l = s * Pr * R * L + t`` with ``Pr`` the
first two rows of the identity; we flip y so the result is in image coordinates:
``u = s * (R p)_x + t_x``, ``v = t_y - s * (R p)_y``.
"""

from __future__ import annotations

import numpy as np

from ..errors import EvpError


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """(..., 3) radians ``[pitch, yaw, roll]`` -> (..., 3, 3) ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``."""
    e = np.asarray(euler, dtype=np.float64)
    if e.shape[-1:] != (3,):
        raise EvpError(f"euler angles must have a last axis of 3 (pitch, yaw, roll), got shape {e.shape}")
    cx, cy, cz = np.cos(e[..., 0]), np.cos(e[..., 1]), np.cos(e[..., 2])
    sx, sy, sz = np.sin(e[..., 0]), np.sin(e[..., 1]), np.sin(e[..., 2])
    r = np.empty(e.shape[:-1] + (3, 3), np.float64)
    # product written out: rows of Rz @ Ry @ Rx
    r[..., 0, 0] = cz * cy
    r[..., 0, 1] = cz * sy * sx - sz * cx
    r[..., 0, 2] = cz * sy * cx + sz * sx
    r[..., 1, 0] = sz * cy
    r[..., 1, 1] = sz * sy * sx + cz * cx
    r[..., 1, 2] = sz * sy * cx - cz * sx
    r[..., 2, 0] = -sy
    r[..., 2, 1] = cy * sx
    r[..., 2, 2] = cy * cx
    return r


def matrix_to_euler(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation -> (..., 3) radians ``[pitch, yaw, roll]``, inverse of :func:`euler_to_matrix`.

    Yaw is returned in [-pi/2, pi/2]. At gimbal lock (|yaw| = pi/2) roll is set to 0 and the
    remaining rotation is given to pitch.
    """
    r = np.asarray(matrix, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise EvpError(f"rotation matrices must have shape (..., 3, 3), got {r.shape}")
    sy = np.clip(-r[..., 2, 0], -1.0, 1.0)
    yaw = np.arcsin(sy)
    cy = np.sqrt(r[..., 2, 1] ** 2 + r[..., 2, 2] ** 2)
    regular = cy > 1e-6
    pitch = np.where(regular, np.arctan2(r[..., 2, 1], r[..., 2, 2]), np.arctan2(-r[..., 1, 2], r[..., 1, 1]))
    roll = np.where(regular, np.arctan2(r[..., 1, 0], r[..., 0, 0]), 0.0)
    return np.stack([pitch, yaw, roll], axis=-1)


def rotate(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate (T, P, 3) points by (T, 3) euler angles (or one (3,) for all frames) -> (T, P, 3) float64."""
    p = np.asarray(points, dtype=np.float64)
    rmat = euler_to_matrix(rotation)
    if rmat.ndim == 2:
        return p @ rmat.T
    return np.einsum("tij,tpj->tpi", rmat, p)


def project(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, scale: np.ndarray,
            ) -> np.ndarray:
    """Scaled-orthographic projection (EVP Eq. 8) to pixels with y down.

    Args:
        points: (T, P, 3) mm in model space (or (P, 3) for one frame).
        rotation: (T, 3) radians [pitch, yaw, roll] (or (3,)).
        translation: (T, 2) pixels, where the model origin lands (or (2,)).
        scale: (T,) pixels per mm (or a scalar).
    Returns:
        (T, P, 2) float64 pixel coordinates ``u = s (R p)_x + t_x``, ``v = t_y - s (R p)_y``
        ((P, 2) when ``points`` was (P, 3)).
    """
    p = np.asarray(points, dtype=np.float64)
    single = p.ndim == 2
    if single:
        p = p[None]
    if p.ndim != 3 or p.shape[-1] != 3:
        raise EvpError(f"points must have shape (T, P, 3), got {np.shape(points)}")
    t_frames = p.shape[0]
    rot = np.broadcast_to(np.asarray(rotation, np.float64), (t_frames, 3))
    trans = np.broadcast_to(np.asarray(translation, np.float64), (t_frames, 2))
    s = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (t_frames,))
    rp = rotate(p, rot)
    out = np.empty(p.shape[:2] + (2,), np.float64)
    out[..., 0] = s[:, None] * rp[..., 0] + trans[:, None, 0]
    out[..., 1] = trans[:, None, 1] - s[:, None] * rp[..., 1]
    return out[0] if single else out


# Fraction of the crop's width spanned by the jawline (iBUG points 1..17) in a frontal view,
# and the height (as a fraction of the crop) at which the landmarks' bounding-box centre sits.
# 0.65 and 0.52 resemble common aligned face crops (face filling most of the frame, chin above
# the bottom edge, some forehead visible).
CROP_FACE_FRACTION = 0.65
CROP_CENTRE_Y = 0.52


def aligned_crop_transform(size: int = 256, mean_landmarks: np.ndarray | None = None,
                           ) -> tuple[float, np.ndarray]:
    """(scale px/mm, translation (2,) px) placing a frontal SFM mean face centred in a size x size crop.

    The jawline (points 1..17) spans :data:`CROP_FACE_FRACTION` of the width and the landmarks'
    bounding box is centred horizontally, its centre at :data:`CROP_CENTRE_Y` of the height.
    ``mean_landmarks`` (68, 3) mm defaults to the SFM mean face's landmarks (the numbers below
    were measured from it, so the default needs no model files).
    """
    if int(size) <= 0:
        raise EvpError(f"crop size must be a positive number of pixels, got {size}")
    lm = _SFM_MEAN_LANDMARK_BOX if mean_landmarks is None else _box(np.asarray(mean_landmarks, np.float64))
    jaw_width, cx, cy = lm
    scale = CROP_FACE_FRACTION * size / jaw_width
    # u = s x + tx = size/2 at x = cx;  v = ty - s y = CROP_CENTRE_Y*size at y = cy
    tx = size / 2.0 - scale * cx
    ty = CROP_CENTRE_Y * size + scale * cy
    return float(scale), np.array([tx, ty], np.float64)


def _box(lm: np.ndarray) -> tuple[float, float, float]:
    """(jaw width, bbox centre x, bbox centre y) in mm of (68, 3) frontal landmarks."""
    jaw_width = float(lm[:17, 0].max() - lm[:17, 0].min())
    cx = 0.5 * float(lm[:, 0].max() + lm[:, 0].min())
    cy = 0.5 * float(lm[:, 1].max() + lm[:, 1].min())
    return jaw_width, cx, cy


# Measured on the SFM 3448 mean with evp_anim.face.sfm's landmark definition (see tests).
_SFM_MEAN_LANDMARK_BOX = (148.57, -0.22, -11.95)


def aligned_landmarks(landmarks_3d: np.ndarray, size: int = 256) -> np.ndarray:
    """Frontal projection of (T, 68, 3) mm landmarks into the aligned size x size crop -> (T, 68, 2) px."""
    lm = np.asarray(landmarks_3d, dtype=np.float64)
    if lm.ndim not in (2, 3) or lm.shape[-1] != 3:
        raise EvpError(f"points must have shape (T, P, 3), got {np.shape(landmarks_3d)}")
    scale, trans = aligned_crop_transform(size)
    # project() with no rotation, without its (T, P, 3) @ identity product: the same float64
    # operations on x and y (u = s x + tx, v = ty - s y), so the same pixels to the bit.
    out = np.empty(lm.shape[:-1] + (2,), np.float64)
    np.multiply(lm[..., 0], scale, out=out[..., 0])
    out[..., 0] += trans[0]
    np.multiply(lm[..., 1], -scale, out=out[..., 1])
    out[..., 1] += trans[1]
    return out
