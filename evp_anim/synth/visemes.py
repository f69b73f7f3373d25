"""Phonemes → mouth-shape curves: espeak-ng phoneme mnemonics, viseme classes, coarticulation.

Each espeak-ng phoneme maps to one viseme class (diphthongs to a sequence of two or three), each
class has a target pose over :data:`~evp_anim.face.channels.SPEECH_CHANNELS` and a dominance.
:func:`articulation_curves` blends the targets of all segments with a Cohen–Massaro style
dominance model:

    D_s,k(t) = α_s · g_s,k · exp(-max(0, |t - c_s| - p_s) / τ_s±)
    F_k(t)   = Σ_s D_s,k(t) T_s,k / Σ_s D_s,k(t)

with c_s the segment centre, p_s a plateau (a fraction of its half-length, so long vowels hold
their target), τ_s− (anticipation, before the centre) a little longer than τ_s+ (carry-over),
α_s the class's overall dominance and g_s,k per-channel-group gains — bilabials and
labiodentals dominate the lip channels (the lips must close for /p b m/ whatever the vowels
around them), vowels dominate the jaw, alveolars and velars are weak on the lips (their
articulation is inside the mouth, so the lips take their neighbours' rounding or spreading) but
strong on the jaw, which they hold high, /h/ is nearly transparent. The jaw targets follow the
phonetic openness of each class (open vowels widest, coronals and sibilants nearly closed); with
the earlier, weaker consonant jaw the mouth on /t d n l s/ opened almost as wide as on the vowels
around them, and a real speaker's mouth does not (measured against a per-phone openness scale:
:data:`evp_anim.eval.lipsync.PHONE_OPENNESS`).
Curves are evaluated at frame centres ``(i + 0.5) / fps`` and are smooth by construction.

The espeak-ng inventory covered here is every mnemonic in espeak-ng 1.51's phoneme tables
``base1``, ``en``, ``en-us``, ``en-us-nyc``, ``en-sc``, ``en-rp``, ``en-n``, ``en-wi``, ``en-wm``
(the tables behind the English voices), read from ``espeak-ng-data/phontab``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import EvpError
from ..face.channels import SPEECH_CHANNELS
from ..tracks import DEFAULT_FPS

K = len(SPEECH_CHANNELS)
_IDX = {name: i for i, name in enumerate(SPEECH_CHANNELS)}

# Viseme classes, in a fixed order (index = class id).
VISEMES: tuple[str, ...] = (
    "sil",   # silence / pause: mouth at rest
    "PP",    # bilabial p b m
    "FF",    # labiodental f v
    "TH",    # dental θ ð (and dental t/d)
    "DD",    # alveolar t d n l, flap
    "SS",    # alveolar sibilants s z
    "CH",    # postalveolar ʃ ʒ tʃ dʒ
    "KK",    # velar/palatal/uvular k g ŋ
    "RR",    # r
    "WW",    # w and close rounded vowels u: ʊ ("oo")
    "AA",    # open vowels a æ ɑ ʌ ɒ
    "EH",    # mid vowels ɛ e ə ɜ (schwa, er)
    "IY",    # close front vowels i: ɪ, glide j
    "OW",    # open/mid rounded back vowels ɔ o
    "HH",    # glottal h ʔ and markers: neutral, almost no dominance
)
NUM_VISEMES = len(VISEMES)
SILENCE_SYMBOL = "_"
FALLBACK_VISEME = "EH"     # for unknown symbols: a neutral, half-open schwa shape


def _pose(**w: float) -> np.ndarray:
    """Target vector over SPEECH_CHANNELS; ``press``/``stretch``/``upperUp``/``lowerDown`` set both sides."""
    v = np.zeros(K, np.float32)
    for key, val in w.items():
        if key in ("press", "stretch", "upperUp", "lowerDown"):
            base = {"press": "mouthPress", "stretch": "mouthStretch", "upperUp": "mouthUpperUp",
                    "lowerDown": "mouthLowerDown"}[key]
            v[_IDX[base + "Left"]] = v[_IDX[base + "Right"]] = val
        else:
            v[_IDX[key]] = val
    return v


# Target poses (ARKit semantics: mouthClose closes the lips against whatever the jaw does).
TARGETS: dict[str, np.ndarray] = {
    "sil": _pose(),
    "PP": _pose(jawOpen=0.06, mouthClose=0.62, mouthPucker=0.05, mouthRollLower=0.2,
                mouthRollUpper=0.12, press=0.45),
    # /f v/: the lower lip tucks under the upper teeth, a narrow gap at most.
    "FF": _pose(jawOpen=0.08, mouthClose=0.10, mouthRollLower=0.55, press=0.10, upperUp=0.20,
                stretch=0.05),
    # Coronals and velars hold the jaw high (the tongue tip or body needs it): the mouth is far
    # less open than on the vowels around them, as in real speech, but the lips stay apart
    # (teeth showing: about a quarter of an open vowel's gap, not shut).
    "TH": _pose(jawOpen=0.14, upperUp=0.10, lowerDown=0.14, stretch=0.10),
    "DD": _pose(jawOpen=0.12, upperUp=0.14, lowerDown=0.14, stretch=0.12),
    "SS": _pose(jawOpen=0.08, stretch=0.30, upperUp=0.22, lowerDown=0.18),
    "CH": _pose(jawOpen=0.10, mouthFunnel=0.45, mouthPucker=0.25, upperUp=0.18, lowerDown=0.12),
    "KK": _pose(jawOpen=0.16, lowerDown=0.12, stretch=0.10, upperUp=0.08),
    "RR": _pose(jawOpen=0.12, mouthFunnel=0.30, mouthPucker=0.30, upperUp=0.06),
    "WW": _pose(jawOpen=0.18, mouthFunnel=0.35, mouthPucker=0.75),
    # Vowels open by their height: open > mid > close.
    "AA": _pose(jawOpen=0.90, lowerDown=0.50, upperUp=0.15, stretch=0.05),
    "EH": _pose(jawOpen=0.62, lowerDown=0.36, upperUp=0.10, stretch=0.08),
    "IY": _pose(jawOpen=0.30, stretch=0.40, upperUp=0.12, lowerDown=0.14),
    "OW": _pose(jawOpen=0.60, mouthFunnel=0.50, mouthPucker=0.30, lowerDown=0.14),
    "HH": _pose(jawOpen=0.22, lowerDown=0.08),
}

# Channel groups for per-group dominance gains.
_GROUPS = {
    "lips": ("mouthClose", "mouthRollLower", "mouthRollUpper", "mouthPressLeft", "mouthPressRight"),
    "round": ("mouthFunnel", "mouthPucker"),
    "spread": ("mouthStretchLeft", "mouthStretchRight"),
    "open": ("jawOpen", "mouthUpperUpLeft", "mouthUpperUpRight", "mouthLowerDownLeft",
             "mouthLowerDownRight"),
}

# (alpha, {group: gain}, tau_s (carry-over; anticipation is 1.3×), plateau fraction of half-length)
# The time constants are short enough (14–32 ms; rounding 50 ms: it spreads over consonants) that a 60–80 ms vowel reaches most of its
# opening between consonants; at 1.43× these values the mouth of espeak-paced speech hardly
# opened on short vowels (the phones' openness correlated 0.58 with it instead of 0.65).
_DOMINANCE: dict[str, tuple[float, dict[str, float], float, float]] = {
    "sil": (1.0, {}, 0.032, 0.5),     # the mouth sets for the first phone well before it
    "PP": (1.5, {"lips": 2.0, "open": 1.2}, 0.018, 0.3),
    "FF": (1.3, {"lips": 1.8, "open": 1.0}, 0.018, 0.3),
    # Weak overall (the lips take the neighbours' rounding or spreading) but strong on the jaw.
    "TH": (0.9, {"open": 3.0}, 0.021, 0.3),
    "DD": (0.45, {"open": 3.0}, 0.021, 0.3),
    "SS": (0.9, {"open": 3.9, "spread": 1.2}, 0.021, 0.3),
    "CH": (1.2, {"round": 1.6, "open": 3.0}, 0.028, 0.3),
    "KK": (0.45, {"open": 3.0}, 0.021, 0.3),
    "RR": (0.9, {"round": 1.3, "open": 3.0}, 0.028, 0.3),
    "WW": (1.2, {"round": 1.8, "lips": 0.8}, 0.050, 0.4),   # rounding is anticipated early
    "AA": (1.0, {"open": 1.4}, 0.021, 0.5),
    "EH": (1.0, {"lips": 1.2}, 0.021, 0.5),
    "IY": (1.0, {"spread": 1.4}, 0.021, 0.5),
    "OW": (1.0, {"round": 1.5}, 0.021, 0.5),
    "HH": (0.12, {}, 0.014, 0.0),
}
_ANTICIPATION = 1.3


def _gains(alpha: float, groups: dict[str, float]) -> np.ndarray:
    g = np.full(K, alpha, np.float64)
    for grp, gain in groups.items():
        for ch in _GROUPS[grp]:
            g[_IDX[ch]] = alpha * gain
    return g


_ALPHA = {v: _gains(a, grp) for v, (a, grp, _, _) in _DOMINANCE.items()}

# ---- espeak-ng mnemonic → viseme class(es) ---------------------------------------------------
# A tuple is a sequence (diphthongs/triphthongs) sharing the segment: the first element covers
# the first part, etc. (see _SPLITS for the proportions).

_SIL = ("_", "_:", "_!", "_|", "_::", "_;_", "_^_", "_X1", "||")
_MARKERS = (":", "-", "@-", "#X1")          # length marks / syllable boundaries: transparent

PHONEME_VISEMES: dict[str, str | tuple[str, ...]] = {}


def _add(visemes: str | tuple[str, ...], *symbols: str) -> None:
    for s in symbols:
        PHONEME_VISEMES[s] = visemes


_add("sil", *_SIL)
_add("HH", *_MARKERS, "h", "?", "X1")
# consonants (base1 + English tables)
_add("PP", "p", "b", "m", "m-", "B")
_add("FF", "f", "v", "v#")
_add("TH", "T", "D", "t[", "d[")
_add("DD", "t", "d", "n", "l", "t#", "t2", "d#", "n-", "l-", "L", "l/", "l/2", "l/3", "l^", "l.", "L/",
     "n.", "n^", "l#", "*", "@L", "R", "R2", "R3")
_add("SS", "s", "z", "z#", "z/2", "s.", "z.", "s;", "z;", "C")
_add("CH", "S", "Z", "tS", "dZ", "tS;", "dZ;", "S;", "Z;", "J^")
_add("KK", "k", "g", "N", "N-", "c", "J", "q", "Q", "Q^", 'Q"', "x", "X")
_add("RR", "r", "r-", "r/", 'r"', "r.", "**", "IR", "VR")
_add("WW", "w", "w#", "u:", "U", "u", "#u")
_add("IY", "j", ";", "i", "i:", "I", "I#", "I2", "I2#", "#i")
# vowels
_add("AA", "a", "aa", "a2", "a/", "A:", "A@", "A#", "A~", "V", "0", "0#", "02", "#a")
_add("EH", "E", "E#", "E2", "e", "e:", "e#", "e@", "@", "@2", "@5", "@#", "#@", "3", "3:", "a#", "a#2", "#e")
_add("OW", "O", "O:", "O2", "O@", "o", "o:", "o@", "O~", "#o")
# diphthongs and triphthongs
_add(("AA", "IY"), "aI")
_add(("EH", "IY"), "aI2", "eI")
_add(("AA", "WW"), "aU")
_add(("OW", "WW"), "oU", "oU#")
_add(("OW", "IY"), "OI")
_add(("IY", "EH"), "i@", "i@3")
_add(("WW", "EH"), "U@")
_add(("AA", "IY", "EH"), "aI@", "aI3")
_add(("AA", "WW", "EH"), "aU@")

_SPLITS = {1: (1.0,), 2: (0.5, 0.5), 3: (0.4, 0.35, 0.25)}


def viseme_of(symbol: str, strict: bool = False) -> tuple[str, ...]:
    """Viseme class sequence for an espeak-ng phoneme mnemonic (``"aI"`` → ``("AA", "IY")``).

    Unknown symbols give ``(FALLBACK_VISEME,)`` — or raise :class:`EvpError` with ``strict``.
    """
    sym = symbol.strip()
    v = PHONEME_VISEMES.get(sym)
    if v is None and sym.startswith("_"):
        v = "sil"
    if v is None:
        # Stress or length marks glued to a known symbol (e.g. "'a", "i::").
        core = sym.lstrip("'\",%=").rstrip(":") if len(sym) > 1 else sym
        v = PHONEME_VISEMES.get(core) or PHONEME_VISEMES.get(core + ":")
    if v is None:
        if strict:
            raise EvpError(f"no viseme for phoneme {symbol!r}: add it to PHONEME_VISEMES")
        return (FALLBACK_VISEME,)
    return (v,) if isinstance(v, str) else tuple(v)


def is_mapped(symbol: str) -> bool:
    """True if ``symbol`` has an explicit viseme mapping (no fallback)."""
    try:
        viseme_of(symbol, strict=True)
        return True
    except EvpError:
        return False


def _expand(phonemes) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Phoneme segments → viseme sub-segments (starts, ends, classes)."""
    starts, ends, classes = [], [], []
    unknown = set()
    for seg in phonemes:
        s, e, sym = float(seg[0]), float(seg[1]), str(seg[2])
        if not e > s:
            continue
        if not is_mapped(sym):
            unknown.add(sym)
        seq = viseme_of(sym)
        t = s
        for cls, frac in zip(seq, _SPLITS[len(seq)]):
            nxt = t + frac * (e - s)
            starts.append(t)
            ends.append(nxt)
            classes.append(cls)
            t = nxt
    if unknown:
        warnings.warn(f"phonemes without a viseme mapping (shown as {FALLBACK_VISEME}): "
                      f"{' '.join(sorted(unknown))}", stacklevel=3)
    return np.asarray(starts, np.float64), np.asarray(ends, np.float64), classes


def articulation_curves(phonemes, n_frames: int, fps: float = DEFAULT_FPS, strength: float = 1.0) -> np.ndarray:
    """(n_frames, len(SPEECH_CHANNELS)) float32 mouth curves in [0, 1] for timed phonemes.

    ``phonemes``: iterable of ``(start_s, end_s, symbol)`` (seconds; espeak-ng mnemonics, ``"_"``
    for silence), e.g. :attr:`Utterance.phonemes`. Frame ``i`` is evaluated at time
    ``(i + 0.5) / fps``. Frames outside every segment blend towards the nearest ones and, far
    from speech, rest at 0. ``strength`` scales the whole articulation (1 = full).
    Columns follow :data:`SPEECH_CHANNELS`.
    """
    n_frames = int(n_frames)
    if n_frames < 0:
        raise EvpError(f"n_frames must be ≥ 0, got {n_frames}")
    if not fps > 0:
        raise EvpError(f"fps must be positive, got {fps}")
    out = np.zeros((n_frames, K), np.float32)
    starts, ends, classes = _expand(phonemes)
    if n_frames == 0 or len(classes) == 0:
        return out
    centre = 0.5 * (starts + ends)
    half = 0.5 * (ends - starts)
    target = np.stack([TARGETS[c] for c in classes]).astype(np.float64)          # (S, K)
    alpha = np.stack([_ALPHA[c] for c in classes])                               # (S, K)
    tau_after = np.array([_DOMINANCE[c][2] for c in classes])
    tau_before = tau_after * _ANTICIPATION
    plateau = np.array([_DOMINANCE[c][3] for c in classes]) * half
    # A very weak "rest" pose everywhere keeps the blend defined far from all segments.
    rest_w = 1e-6

    times = (np.arange(n_frames) + 0.5) / float(fps)
    chunk = 512
    for a in range(0, n_frames, chunk):
        t = times[a:a + chunk, None]                                             # (F, 1)
        dt = t - centre[None, :]                                                 # (F, S)
        dist = np.maximum(np.abs(dt) - plateau[None, :], 0.0)
        tau = np.where(dt < 0, tau_before[None, :], tau_after[None, :])
        w = np.exp(-dist / tau)                                                  # (F, S)
        num = w @ (alpha * target)                                               # (F, K)
        den = w @ alpha + rest_w
        out[a:a + chunk] = (num / den).astype(np.float32)
    if strength != 1.0:
        out *= float(strength)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def frames_for(duration_s: float, fps: float = DEFAULT_FPS) -> int:
    """Number of whole frames covering ``duration_s`` at ``fps`` (rounded to nearest)."""
    return int(math.floor(duration_s * fps + 0.5))


def viseme_sequence(phonemes) -> list[tuple[float, float, str]]:
    """[(start_s, end_s, viseme)] — the class sequence behind the curves (diphthongs split)."""
    s, e, c = _expand(phonemes)
    return [(float(a), float(b), k) for a, b, k in zip(s, e, c)]
