"""The eight MEAD emotions and the intensity convention (numpy-only, usable inside Blender).

Intensity is a float in [0, 1]; MEAD's levels 1/2/3 map to 1/3, 2/3 and 1. Emotion may vary per
frame, so tracks carry per-frame emotion weights of shape (T, 8) in :data:`EMOTIONS` order.
"""

from __future__ import annotations

import numpy as np

from .errors import EvpError

EMOTIONS: tuple[str, ...] = (
    "neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised",
)
NUM_EMOTIONS = len(EMOTIONS)
LEVELS: tuple[int, ...] = (1, 2, 3)

# Names other corpora and users use for the same categories.
_ALIASES = {
    "neutral": "neutral", "neu": "neutral",
    "angry": "angry", "anger": "angry", "ang": "angry",
    "contempt": "contempt", "con": "contempt",
    "disgusted": "disgusted", "disgust": "disgusted", "dis": "disgusted",
    "fear": "fear", "fearful": "fear", "fea": "fear",
    "happy": "happy", "happiness": "happy", "hap": "happy",
    "sad": "sad", "sadness": "sad",
    "surprised": "surprised", "surprise": "surprised", "sur": "surprised",
}


def canonical_emotion(name: str) -> str:
    """Return the MEAD name for ``name`` (case-insensitive, common aliases accepted).

    Raises :class:`EvpError` naming the valid choices for an unknown emotion.
    """
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise EvpError(f"unknown emotion {name!r}: expected one of {', '.join(EMOTIONS)}")
    return _ALIASES[key]


def emotion_index(name: str) -> int:
    """Index of ``name`` in :data:`EMOTIONS`."""
    return EMOTIONS.index(canonical_emotion(name))


def check_intensity(value: float) -> float:
    """Return ``value`` as float if it lies in [0, 1], else raise :class:`EvpError`."""
    v = float(value)
    if not np.isfinite(v) or v < 0.0 or v > 1.0:
        raise EvpError(f"intensity {value!r} is outside [0, 1]: use a value from 0 (none) to 1 (full)")
    return v


def level_to_intensity(level: int) -> float:
    """MEAD level 1/2/3 → intensity 1/3, 2/3, 1."""
    if int(level) not in LEVELS:
        raise EvpError(f"unknown MEAD level {level!r}: expected 1, 2 or 3")
    return int(level) / 3.0


def one_hot(name: str, n_frames: int) -> np.ndarray:
    """(n_frames, 8) float32 weights with 1 in ``name``'s column."""
    w = np.zeros((n_frames, NUM_EMOTIONS), np.float32)
    w[:, emotion_index(name)] = 1.0
    return w
