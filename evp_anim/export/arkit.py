"""ARKit 52 blendshape names and the mapping from the rig's channels onto them.

The rig (:data:`evp_anim.face.channels.RIG_CHANNELS`) names most of its channels after ARKit;
``sfm_*`` channels have no ARKit counterpart (they are dropped), and ``mouthSmirkLeft`` (a one-sided
smile-and-dimple for contempt) is split onto ``mouthSmileLeft`` + ``mouthDimpleLeft``.
Values stay in the rig's units (nominally 0–1) and are clipped to [0, 1] as ARKit expects.
"""

from __future__ import annotations

import numpy as np

ARKIT_52: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
assert len(ARKIT_52) == 52

# Rig channels that are not ARKit names but map onto ARKit channels (added, then clipped).
SPLIT_CHANNELS: dict[str, tuple[str, ...]] = {
    "mouthSmirkLeft": ("mouthSmileLeft", "mouthDimpleLeft"),
}

_ARKIT_LOWER = {n.lower(): n for n in ARKIT_52}


def arkit_name(name: str) -> str | None:
    """The ARKit spelling of ``name`` matched case-insensitively, or None if it is not ARKit."""
    return _ARKIT_LOWER.get(name.lower())


def to_arkit52(expression: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
    """(T, K) named channels → (T, 52) float32 ARKit weights in :data:`ARKIT_52` order, in [0, 1].

    ARKit-named channels (any case) copy over, :data:`SPLIT_CHANNELS` add onto their targets,
    everything else (``sfm_*``) is dropped; ARKit channels the track lacks are 0.
    """
    expr = np.asarray(expression, np.float32)
    out = np.zeros((expr.shape[0], len(ARKIT_52)), np.float32)
    col = {n: i for i, n in enumerate(ARKIT_52)}
    for k, name in enumerate(names):
        target = arkit_name(name)
        if target is not None:
            out[:, col[target]] += expr[:, k]
        for t in SPLIT_CHANNELS.get(name, ()):
            out[:, col[t]] += expr[:, k]
    return np.clip(out, 0.0, 1.0)


def unmapped_channels(names) -> list[str]:
    """Track channels that do not reach any ARKit column (reported by exporters, not hidden)."""
    return [n for n in names if arkit_name(n) is None and n not in SPLIT_CHANNELS]
