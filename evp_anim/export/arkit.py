"""ARKit 52 blendshape names and the mapping from the rig's channels onto them.

The rig (:data:`evp_anim.face.channels.RIG_CHANNELS`) names most of its channels after ARKit; the
others reach ARKit through :data:`CHANNEL_TO_ARKIT`:

* ``mouthSmirkLeft`` (a one-sided smile-and-dimple for contempt) → ``mouthSmileLeft`` +
  ``mouthDimpleLeft`` (1 each);
* the six SFM emotion blendshapes ``sfm_*`` → the ARKit shapes fitted to their geometry in
  :mod:`evp_anim.export.emotion_arkit` (e.g. ``sfm_happiness`` → mouthSmile 1, cheekSquint 1, …),
  so an ARKit character shows the emotion the track carries in them.

Each ARKit value is its own channel plus Σ (other channel × its mapping weight), clipped to [0, 1]
as ARKit expects; values are otherwise in the rig's units (nominally 0–1).

ARKit channels the project never produces (0 in every export), and why:

* ``cheekPuff`` — the rig has no air-filled-cheek shape; speech and emotion never call for one.
* ``tongueOut`` — the rig (the SFM mesh) has no tongue.
* ``jawForward``, ``jawLeft``, ``jawRight``, ``mouthLeft``, ``mouthRight`` — the rig's jaw only
  opens (hinge + glide); no model or solve produces sideways or forward jaw / mouth shifts.
* ``mouthShrugLower``, ``mouthShrugUpper`` — no chin-raiser (AU17) shape in the rig.

The eye-look channels (``eyeLook{Up,Down,In,Out}{Left,Right}``) are not rig channels either; the
exporters make them from a track's ``gaze`` (:func:`gaze_to_arkit`).
"""

from __future__ import annotations

import numpy as np

from ..face.channels import ARKIT_52, arkit_name
from .emotion_arkit import SFM_TO_ARKIT


# Rig channels that are not ARKit names but map onto ARKit channels (added, then clipped).
SPLIT_CHANNELS: dict[str, tuple[str, ...]] = {
    "mouthSmirkLeft": ("mouthSmileLeft", "mouthDimpleLeft"),
}

# Every non-ARKit channel that reaches ARKit: {channel: {ARKit channel: weight per unit}}.
CHANNEL_TO_ARKIT: dict[str, dict[str, float]] = {
    **{ch: {t: 1.0 for t in targets} for ch, targets in SPLIT_CHANNELS.items()},
    **SFM_TO_ARKIT,
}

# ARKit channels no rig channel, mapping or gaze ever moves (see the module docstring for why).
NEVER_PRODUCED: tuple[str, ...] = ("cheekPuff", "jawForward", "jawLeft", "jawRight", "mouthLeft", "mouthRight",
                                   "mouthShrugLower", "mouthShrugUpper", "tongueOut")

# Full-range gaze angles: ARKit's eyeLook* weight is the eye's rotation over this angle (1 = as far
# as the eye turns). About the human oculomotor range people use without turning the head
# (~30° sideways, ~25° up/down); ARKit itself does not publish the angle of weight 1.
EYE_LOOK_HORIZONTAL_DEG = 30.0
EYE_LOOK_VERTICAL_DEG = 25.0

_COL = {n: i for i, n in enumerate(ARKIT_52)}


def to_arkit52(expression: np.ndarray, names: list[str] | tuple[str, ...],
               gaze: np.ndarray | None = None) -> np.ndarray:
    """(T, K) named channels → (T, 52) float32 ARKit weights in :data:`ARKIT_52` order, in [0, 1].

    ARKit-named channels (any case) copy over; :data:`CHANNEL_TO_ARKIT` channels (the smirk, the
    ``sfm_*`` emotions) add their weight × mapping onto their targets; anything else is dropped;
    ARKit channels the track lacks are 0. ``gaze`` ((T, 2) radians [pitch, yaw], a Track's) fills
    the eye-look channels (:func:`gaze_to_arkit`); without it they stay 0.
    """
    expr = np.asarray(expression, np.float32)
    out = np.zeros((expr.shape[0], len(ARKIT_52)), np.float32)
    for k, name in enumerate(names):
        target = arkit_name(name)
        if target is not None:
            out[:, _COL[target]] += expr[:, k]
        for t, weight in CHANNEL_TO_ARKIT.get(name, {}).items():
            out[:, _COL[t]] += weight * expr[:, k]
    if gaze is not None:
        out += gaze_to_arkit(gaze)
    return np.clip(out, 0.0, 1.0)


def gaze_to_arkit(gaze: np.ndarray) -> np.ndarray:
    """(T, 2) gaze [pitch, yaw] radians → (T, 52) float32 with only the eight eyeLook* columns set.

    Axes as a Track's pose (:mod:`evp_anim.face.projection`): positive pitch turns the eyes down,
    positive yaw turns them toward +x, the subject's left. Looking down by ``a`` gives
    eyeLookDown{Left,Right} = a / :data:`EYE_LOOK_VERTICAL_DEG`; looking to the subject's left by
    ``a`` gives eyeLookOutLeft = eyeLookInRight = a / :data:`EYE_LOOK_HORIZONTAL_DEG` (the left
    eye turns away from the nose, the right eye toward it); values clipped to [0, 1].
    """
    g = np.degrees(np.asarray(gaze, np.float64))
    down = np.clip(g[:, 0] / EYE_LOOK_VERTICAL_DEG, 0.0, 1.0)
    up = np.clip(-g[:, 0] / EYE_LOOK_VERTICAL_DEG, 0.0, 1.0)
    to_left = np.clip(g[:, 1] / EYE_LOOK_HORIZONTAL_DEG, 0.0, 1.0)    # subject's left
    to_right = np.clip(-g[:, 1] / EYE_LOOK_HORIZONTAL_DEG, 0.0, 1.0)
    out = np.zeros((g.shape[0], len(ARKIT_52)), np.float32)
    for name, v in (("eyeLookDownLeft", down), ("eyeLookDownRight", down), ("eyeLookUpLeft", up),
                    ("eyeLookUpRight", up), ("eyeLookOutLeft", to_left), ("eyeLookInRight", to_left),
                    ("eyeLookInLeft", to_right), ("eyeLookOutRight", to_right)):
        out[:, _COL[name]] = v
    return out


def unmapped_channels(names) -> list[str]:
    """Track channels that do not reach any ARKit column (reported by exporters, not hidden)."""
    return [n for n in names if arkit_name(n) is None and n not in CHANNEL_TO_ARKIT]
