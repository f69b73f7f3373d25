"""Names of the face rig's expression channels (numpy-free constants; the one list every stage uses).

A track's expression coefficients are a (T, K) array whose columns are named; these are the
names the rig provides. Two families:

* ``sfm_*`` — the six expression blendshapes shipped with the Surrey Face Model
  (anger, disgust, fear, happiness, sadness, surprise).
* ARKit-named articulation and face channels authored on the SFM mesh by this project, so tracks
  can drive ARKit-rigged characters. "Left"/"Right" are the *subject's* left and right, as in ARKit.
  ``mouthSmirkLeft`` is the one non-ARKit channel: a one-sided smile-and-dimple for contempt
  (exporters map it to mouthSmileLeft + mouthDimpleLeft).

Weights are nominally in [0, 1] (1 = a full expression of that shape).
"""

SFM_EMOTION_CHANNELS: tuple[str, ...] = (
    "sfm_anger", "sfm_disgust", "sfm_fear", "sfm_happiness", "sfm_sadness", "sfm_surprise",
)

ARTICULATION_CHANNELS: tuple[str, ...] = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthRollLower", "mouthRollUpper",
    "mouthPressLeft", "mouthPressRight",
    "mouthStretchLeft", "mouthStretchRight",
    "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "mouthLowerDownLeft", "mouthLowerDownRight",
    "noseSneerLeft", "noseSneerRight",
    "cheekSquintLeft", "cheekSquintRight",
    "browInnerUp", "browDownLeft", "browDownRight", "browOuterUpLeft", "browOuterUpRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight", "eyeSquintLeft", "eyeSquintRight",
    "mouthSmirkLeft",
)

RIG_CHANNELS: tuple[str, ...] = SFM_EMOTION_CHANNELS + ARTICULATION_CHANNELS
NUM_RIG_CHANNELS = len(RIG_CHANNELS)

# Channels that speech drives (the lower face); the rest carry emotion, blinks and brows.
SPEECH_CHANNELS: tuple[str, ...] = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper",
    "mouthPressLeft", "mouthPressRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "mouthLowerDownLeft", "mouthLowerDownRight",
)


def channel_index(name: str) -> int:
    """Column of ``name`` in :data:`RIG_CHANNELS` (exact, case-sensitive)."""
    return RIG_CHANNELS.index(name)


# Apple ARKit's 52 face blendshapes, in ARKit's (alphabetical) order: the names exports and
# retargeting speak (evp_anim.export.arkit maps the rig's channels onto them).
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

_ARKIT_LOWER = {n.lower(): n for n in ARKIT_52}


def arkit_name(name: str) -> str | None:
    """The ARKit spelling of ``name`` matched case-insensitively, or None if it is not ARKit."""
    return _ARKIT_LOWER.get(name.lower())
