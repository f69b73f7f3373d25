"""Emotion control for inference: a label, a reference clip, or timecoded keys, per frame.

EVP interpolates emotions in latent space, α·E_s + (1−α)·E_t. Keys generalise that to curves:
each key fixes (time, emotion, intensity); between two keys the emotion code and the per-frame
emotion weights cross-fade linearly, before the first key and after the last they hold.

Keys file (TOML)::

    [[key]]
    time = 0.0          # seconds from the start of the audio
    emotion = "happy"
    intensity = 0.8     # [0, 1]

    [[key]]
    time = 2.5
    emotion = "sad"
    intensity = 1.0
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Callable

import numpy as np

from ..emotions import EMOTIONS, NUM_EMOTIONS, canonical_emotion, check_intensity
from ..errors import EvpError


@dataclasses.dataclass(frozen=True)
class EmotionKey:
    """One key: at ``time`` seconds, ``emotion`` at ``intensity``."""

    time: float
    emotion: str
    intensity: float


def read_keys(path: str | Path) -> list[EmotionKey]:
    """Parse and validate a keys TOML file (times strictly increasing, known emotions, intensity in [0, 1])."""
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"emotion keys file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EvpError(f"{path}: not valid TOML ({e})") from None
    raw = data.get("key")
    if not isinstance(raw, list) or not raw:
        raise EvpError(f"{path}: no [[key]] tables (each needs time, emotion, intensity)")
    keys = []
    for n, k in enumerate(raw, start=1):
        if not isinstance(k, dict) or "time" not in k or "emotion" not in k:
            raise EvpError(f"{path}: key {n} needs at least time and emotion")
        try:
            t = float(k["time"])
        except (TypeError, ValueError):
            raise EvpError(f"{path}: key {n} has a non-numeric time {k['time']!r}") from None
        keys.append(EmotionKey(t, canonical_emotion(k["emotion"]), check_intensity(k.get("intensity", 1.0))))
    validate_keys(keys, source=str(path))
    return keys


def validate_keys(keys: list[EmotionKey], duration: float | None = None, source: str = "emotion keys") -> None:
    """Keys must be in strictly increasing time order and, given ``duration``, inside [0, duration]."""
    for a, b in zip(keys, keys[1:]):
        if not b.time > a.time:
            raise EvpError(f"{source}: keys out of order (time {b.time} s after {a.time} s); sort them by time")
    for k in keys:
        if k.time < 0 or (duration is not None and k.time > duration + 1e-6):
            limit = f"[0, {duration:.2f}] s" if duration is not None else "≥ 0 s"
            raise EvpError(f"{source}: key at {k.time} s is outside the clip ({limit})")


def per_frame(keys: list[EmotionKey], n_frames: int, fps: float,
              code_of: Callable[[str, float], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (codes (T, De), emotion weights (T, 8), intensity (T,)) from keys.

    Frame i is at time (i + 0.5) / fps. ``code_of(emotion, intensity)`` gives a key's code.
    """
    t = (np.arange(n_frames) + 0.5) / fps
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
