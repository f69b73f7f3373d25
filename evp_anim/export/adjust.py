"""Audio2Face-style adjustments of a track's expression channels (numpy-only).

``value' = clip(strength * multiplier[channel] * smooth(value), 0, 1)`` per frame, where
``smooth`` is a centred moving average over ``smoothing`` frames (edges use the available
frames). Channel names match case-insensitively. Emotion, pose and landmarks are untouched.
"""

from __future__ import annotations

import numpy as np

from ..errors import EvpError
from ..tracks import Track


def smooth_frames(x: np.ndarray, frames: int) -> np.ndarray:
    """(T, ...) centred moving average over ``frames`` frames (0 or 1 = unchanged)."""
    frames = int(frames)
    if frames <= 1:
        return x.copy()
    x = np.asarray(x, np.float64)
    half = frames // 2
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), x]), axis=0)
    t = x.shape[0]
    lo = np.clip(np.arange(t) - half, 0, t)
    hi = np.clip(np.arange(t) - half + frames, 0, t)
    n = (hi - lo).reshape((-1,) + (1,) * (x.ndim - 1))
    return ((c[hi] - c[lo]) / n).astype(np.float32)


def adjust_track(track: Track, strength: float = 1.0, multipliers: dict[str, float] | None = None,
                 smoothing: int = 0) -> tuple[Track, list[str]]:
    """A copy of ``track`` with strength, per-channel multipliers and smoothing applied.

    Returns (track, unknown) where ``unknown`` lists multiplier names the track lacks (reported
    to the user rather than dropped silently).
    """
    if not np.isfinite(strength) or strength < 0:
        raise EvpError(f"strength must be a number >= 0, got {strength!r}")
    out = track.copy()
    expr = smooth_frames(out.expression, smoothing) * float(strength)
    lower = {n.lower(): i for i, n in enumerate(out.expression_names)}
    unknown = []
    for name, m in (multipliers or {}).items():
        i = lower.get(name.lower())
        if i is None:
            unknown.append(name)
            continue
        expr[:, i] *= float(m)
    out.expression = np.clip(expr, 0.0, 1.0).astype(np.float32)
    return out.validate(), unknown
