"""68-point landmark sketches: the line drawings EVP's renderer is conditioned on.

Points are the iBUG 68 in 0-based order, pixels with x right and y down. Each face part is drawn
as an anti-aliased polyline; :data:`IBUG_PARTS` says which points a part joins and whether the
line closes on itself.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import EvpError

# (name, 0-based point indices, closed)
IBUG_PARTS: tuple[tuple[str, tuple[int, ...], bool], ...] = (
    ("jaw", tuple(range(0, 17)), False),
    ("right_brow", tuple(range(17, 22)), False),
    ("left_brow", tuple(range(22, 27)), False),
    ("nose_bridge", tuple(range(27, 31)), False),
    ("lower_nose", tuple(range(30, 36)), False),
    ("right_eye", tuple(range(36, 42)), True),
    ("left_eye", tuple(range(42, 48)), True),
    ("outer_lips", tuple(range(48, 60)), True),
    ("inner_lips", tuple(range(60, 68)), True),
)
NUM_PARTS = len(IBUG_PARTS)

# BGR colour per part for the colour sketch (distinct hues; "right"/"left" are the subject's).
PART_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),  # jaw
    (80, 200, 255),   # right brow
    (255, 200, 80),   # left brow
    (120, 255, 120),  # nose bridge
    (60, 220, 60),    # lower nose
    (60, 160, 255),   # right eye
    (255, 140, 60),   # left eye
    (90, 90, 255),    # outer lips
    (200, 90, 255),   # inner lips
)

_SHIFT = 4  # sub-pixel bits for cv2 drawing


def _polyline(img: np.ndarray, pts: np.ndarray, closed: bool, color, thickness: int) -> None:
    fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [fixed], closed, color, int(thickness), cv2.LINE_AA, _SHIFT)


def draw_sketch(landmarks: np.ndarray, size: tuple[int, int] | int, thickness: int = 1,
                per_part_channels: bool = False, colored: bool = False) -> np.ndarray:
    """Draw a landmark sketch on black.

    Args:
        landmarks: (68, 2) pixels (x right, y down).
        size: (H, W) or one int for a square image.
        thickness: line width in pixels.
        per_part_channels: return (H, W, P) uint8, one channel per :data:`IBUG_PARTS` entry
            (white lines), instead of a BGR image.
        colored: with a BGR image, draw each part in its :data:`PART_COLORS` colour instead of white.
    Returns:
        (H, W, 3) uint8 BGR, or (H, W, P) uint8 with ``per_part_channels``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise EvpError(f"landmarks must have shape (68, 2), got {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise EvpError("landmarks contain NaN or infinite values")
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0:
        raise EvpError(f"sketch size must be positive, got {size}")
    if int(thickness) < 1:
        raise EvpError(f"thickness must be >= 1 pixel, got {thickness}")
    if per_part_channels:
        out = np.zeros((h, w, NUM_PARTS), np.uint8)
        for p, (_, idx, closed) in enumerate(IBUG_PARTS):
            chan = np.zeros((h, w), np.uint8)
            _polyline(chan, lm[list(idx)], closed, 255, thickness)
            out[..., p] = chan
        return out
    img = np.zeros((h, w, 3), np.uint8)
    for p, (_, idx, closed) in enumerate(IBUG_PARTS):
        color = PART_COLORS[p] if colored else (255, 255, 255)
        _polyline(img, lm[list(idx)], closed, color, thickness)
    return img


def overlay_sketch(image: np.ndarray, landmarks: np.ndarray, thickness: int = 1, alpha: float = 0.8,
                   colored: bool = True) -> np.ndarray:
    """Blend the sketch of ``landmarks`` over a BGR ``image`` (returns a new uint8 image)."""
    img = np.asarray(image)
    sk = draw_sketch(landmarks, img.shape[:2], thickness, colored=colored).astype(np.float32)
    cover = sk.max(axis=2, keepdims=True) / 255.0          # anti-aliased line coverage
    color = sk / np.maximum(cover, 1e-6)                    # full-strength line colour
    a = cover * float(alpha)
    out = img.astype(np.float32) * (1.0 - a) + color * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
