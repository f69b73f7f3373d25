"""Emotion keys: the one reader and writer of the emotion-keys TOML file (stdlib + numpy-free
project modules only, so the Blender add-on can use it inside Blender).

The Blender add-on writes the file (its keyed emotion/intensity plus the Adjust panel's knobs);
``evp-anim animate --emotion-keys`` reads it and blends the keys per frame
(:func:`evp_anim.models.emotion_control.per_frame`); the add-on applies the ``[adjust]`` knobs
itself to the regenerated track (:mod:`evp_anim.export.adjust`), ``animate`` only checks them.

Format (times in seconds from the clip start, strictly increasing; emotions are the 8 MEAD names
or their aliases; intensity in [0, 1], default 1)::

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

One rule for reader and writer: keys must be in strictly increasing time order, at times >= 0
(:func:`validate_keys`); out-of-order or repeated times are refused, never re-sorted, so the
file means exactly what it says. The writer checks the same rule, so it never writes a file the
reader would refuse.

Written by hand (not tomli-w) so the add-on can write it inside Blender with the stdlib only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from pathlib import Path

from .atomic import write_text_atomic
from .emotions import canonical_emotion, check_intensity
from .errors import EvpError


@dataclasses.dataclass(frozen=True)
class EmotionKey:
    """One key: at ``time`` seconds the emotion is ``emotion`` at ``intensity`` in [0, 1]."""

    time: float
    emotion: str
    intensity: float


@dataclasses.dataclass
class EmotionKeys:
    """A keys file: keys in increasing time order plus the adjust knobs (see
    :mod:`evp_anim.export.adjust`)."""

    keys: list[EmotionKey]
    strength: float = 1.0
    smoothing: int = 0
    multipliers: dict[str, float] = dataclasses.field(default_factory=dict)


def validate_keys(keys: list[EmotionKey], duration: float | None = None, source: str = "emotion keys") -> None:
    """Keys must be in strictly increasing time order and, given ``duration``, inside [0, duration]
    (else inside [0, ∞)); EvpError naming ``source`` otherwise."""
    for a, b in zip(keys, keys[1:]):
        if not b.time > a.time:
            raise EvpError(f"{source}: keys out of order (time {b.time} s after {a.time} s); sort them by time")
    for k in keys:
        if k.time < 0 or (duration is not None and k.time > duration + 1e-6):
            limit = f"[0, {duration:.2f}] s" if duration is not None else "≥ 0 s"
            raise EvpError(f"{source}: key at {k.time} s is outside the clip ({limit})")


# ---------------------------------------------------------------------- writing
def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid TOML basic string


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_str(k)


def keys_to_toml(keys: EmotionKeys) -> str:
    """The TOML text of ``keys`` (validated first: EvpError for out-of-order keys, unknown
    emotions or intensities outside [0, 1])."""
    validate_keys(keys.keys)
    lines = []
    for k in keys.keys:
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


# ---------------------------------------------------------------------- reading
def _number(value) -> float:
    """A finite float from a TOML number (not a bool, string, table or array), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{_shown(value)} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{_shown(value)} is not a finite number")
    return v


def _shown(value, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _parse_key(path: Path, n: int, k) -> EmotionKey:
    if not isinstance(k, dict) or "time" not in k or "emotion" not in k:
        raise EvpError(f"{path}: key {n} needs at least time and emotion")
    try:
        t = _number(k["time"])
    except ValueError:
        raise EvpError(f"{path}: key {n} has a non-numeric time {_shown(k['time'])}") from None
    if not isinstance(k["emotion"], str):
        raise EvpError(f"{path}: key {n} has a non-text emotion {_shown(k['emotion'])}")
    try:
        intensity = _number(k.get("intensity", 1.0))
    except ValueError:
        raise EvpError(f"{path}: key {n} has a non-numeric intensity {_shown(k.get('intensity'))}") from None
    return EmotionKey(t, canonical_emotion(k["emotion"]), check_intensity(intensity))


def _parse_adjust(path: Path, keys: list[EmotionKey], adj) -> EmotionKeys:
    try:
        if not isinstance(adj, dict) or not isinstance(adj.get("multipliers", {}), dict):
            raise ValueError("it must be a table, with a [adjust.multipliers] table")
        mult = {str(n): _number(v) for n, v in adj.get("multipliers", {}).items()}
        smoothing = _number(adj.get("smoothing", 0))
        if smoothing != int(smoothing):
            raise ValueError(f"smoothing {_shown(adj.get('smoothing'))} is not a whole number of frames")
        out = EmotionKeys(keys, _number(adj.get("strength", 1.0)), int(smoothing), mult)
    except ValueError as e:
        raise EvpError(f"{path}: bad [adjust] table ({e})") from None
    if out.smoothing < 0 or out.strength < 0:
        raise EvpError(f"{path}: strength and smoothing must be >= 0")
    return out


def read_emotion_keys(path: str | os.PathLike) -> EmotionKeys:
    """Read and validate an emotion-keys TOML file (EvpError with the reason on bad input)."""
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"emotion keys file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise EvpError(f"{path}: not valid TOML ({reason})") from None
    raw = doc.get("key")
    if not isinstance(raw, list) or not raw:
        raise EvpError(f"{path}: no [[key]] tables (each needs time, emotion, intensity)")
    keys = [_parse_key(path, n, k) for n, k in enumerate(raw, start=1)]
    validate_keys(keys, source=str(path))
    return _parse_adjust(path, keys, doc.get("adjust", {}))
