"""Emotion keys: the TOML file of timed emotion/intensity keys (plus strength knobs) that the
Blender add-on writes and ``evp-anim animate --emotion-keys`` reads.

Format (times in seconds from the clip start; emotions are the 8 MEAD names; intensity in [0, 1])::

    [[key]]
    time = 0.0
    emotion = "happy"
    intensity = 0.8

    [[key]]
    time = 1.5
    emotion = "sad"
    intensity = 0.5

    [adjust]               # optional, Audio2Face-style knobs applied to the result
    strength = 1.0
    smoothing = 0          # frames of centred moving average (0 = none)
    [adjust.multipliers]
    jawOpen = 1.2

Written by hand (not tomli-w) so the add-on can write it inside Blender with the stdlib only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from pathlib import Path

from ..atomic import write_text_atomic
from ..emotions import canonical_emotion, check_intensity
from ..errors import EvpError


@dataclasses.dataclass
class EmotionKey:
    """One key: at ``time`` seconds the emotion is ``emotion`` at ``intensity`` in [0, 1]."""

    time: float
    emotion: str
    intensity: float


@dataclasses.dataclass
class EmotionKeys:
    """Keys sorted by time plus the adjust knobs (see :mod:`evp_anim.export.adjust`)."""

    keys: list[EmotionKey]
    strength: float = 1.0
    smoothing: int = 0
    multipliers: dict[str, float] = dataclasses.field(default_factory=dict)


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid TOML basic string


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_str(k)


def keys_to_toml(keys: EmotionKeys) -> str:
    """The TOML text of ``keys`` (validated first)."""
    lines = []
    for k in sorted(keys.keys, key=lambda k: k.time):
        lines += ["[[key]]", f"time = {float(k.time)!r}", f"emotion = {_toml_str(canonical_emotion(k.emotion))}",
                  f"intensity = {check_intensity(k.intensity)!r}", ""]
    lines += ["[adjust]", f"strength = {float(keys.strength)!r}", f"smoothing = {int(keys.smoothing)}", "",
              "[adjust.multipliers]"]
    lines += [f"{_toml_key(n)} = {float(v)!r}" for n, v in sorted(keys.multipliers.items())]
    return "\n".join(lines) + "\n"


def write_emotion_keys(keys: EmotionKeys, path: str | os.PathLike) -> Path:
    """Write ``keys`` as TOML to ``path`` atomically."""
    write_text_atomic(path, keys_to_toml(keys))
    return Path(path)


def read_emotion_keys(path: str | os.PathLike) -> EmotionKeys:
    """Read and validate an emotion-keys TOML file (EvpError with the reason on bad input)."""
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"emotion keys file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise EvpError(f"{path}: not valid TOML ({e})") from None
    raw = doc.get("key", [])
    if not isinstance(raw, list) or not raw:
        raise EvpError(f"{path}: needs at least one [[key]] table with time, emotion, intensity")
    keys = []
    for i, k in enumerate(raw):
        try:
            t = float(k["time"])
            keys.append(EmotionKey(t, canonical_emotion(k["emotion"]), check_intensity(k.get("intensity", 1.0))))
        except (KeyError, TypeError, ValueError) as e:
            raise EvpError(f"{path}: key {i + 1} lacks or mangles {e}") from None
        if t < 0:
            raise EvpError(f"{path}: key {i + 1} has a negative time {t}")
    adj = doc.get("adjust", {})
    try:
        mult = {str(n): float(v) for n, v in adj.get("multipliers", {}).items()}
        out = EmotionKeys(sorted(keys, key=lambda k: k.time), float(adj.get("strength", 1.0)),
                          int(adj.get("smoothing", 0)), mult)
    except (TypeError, ValueError, AttributeError) as e:
        raise EvpError(f"{path}: bad [adjust] table ({e})") from None
    if out.smoothing < 0 or out.strength < 0:
        raise EvpError(f"{path}: strength and smoothing must be >= 0")
    return out
