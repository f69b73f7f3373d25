"""Emotion control for inference: timecoded emotion keys turned into per-frame codes and weights.

EVP interpolates emotions in latent space, α·E_s + (1−α)·E_t. Keys generalise that to curves:
each key fixes (time, emotion, intensity); between two keys the emotion code and the per-frame
emotion weights cross-fade linearly, before the first key and after the last they hold.

The keys themselves (the TOML file, :class:`~evp_anim.emotion_keys.EmotionKey`, and the rule
that times strictly increase) live in :mod:`evp_anim.emotion_keys`, shared with the Blender
add-on that writes them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..emotion_keys import EmotionKey
from ..emotions import EMOTIONS, NUM_EMOTIONS


def per_frame(keys: list[EmotionKey], n_frames: int, fps: float,
              code_of: Callable[[str, float], np.ndarray],
              start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (codes (T, De), emotion weights (T, 8), intensity (T,)) from keys, for the
    ``n_frames`` frames from frame ``start`` on (0: a whole clip; a chunk of a long clip gets the
    rows the whole clip's call would give it, so animation can stream).

    ``keys`` must be valid (:func:`evp_anim.emotion_keys.validate_keys`: times strictly
    increasing). Frame i is at time (i + 0.5) / fps. ``code_of(emotion, intensity)`` gives a
    key's code.
    """
    t = (np.arange(start, start + n_frames) + 0.5) / fps
    times = np.array([k.time for k in keys])
    codes_k = np.stack([code_of(k.emotion, k.intensity) for k in keys])
    onehot = np.eye(NUM_EMOTIONS, dtype=np.float32)[[EMOTIONS.index(k.emotion) for k in keys]]
    inten_k = np.array([k.intensity if k.emotion != "neutral" else 0.0 for k in keys], np.float32)
    if len(keys) == 1:
        w = np.zeros((n_frames, 1))
        lo = np.zeros(n_frames, int)
        hi = lo
    else:
        hi = np.clip(np.searchsorted(times, t, side="right"), 1, len(keys) - 1)
        lo = hi - 1
        w = np.clip((t - times[lo]) / (times[hi] - times[lo]), 0.0, 1.0)[:, None]
    mix = lambda arr: ((1 - w) * arr[lo].reshape(n_frames, -1) + w * arr[hi].reshape(n_frames, -1))  # noqa: E731
    codes = mix(codes_k).astype(np.float32)
    weights = mix(onehot).astype(np.float32)
    intensity = mix(inten_k[:, None])[:, 0].astype(np.float32)
    return codes, weights, intensity
