"""Shape-key name matching for ``evp-anim retarget``: normalisation, presets, user mapping tables.

No bpy here: the add-on's :func:`blender_addon.builder.retarget` asks this module which track
channel drives which of a character's shape keys, and the rules are unit-tested without Blender.

Name normalisation
------------------
A shape-key name and a channel name match when their *keys* (:func:`name_keys`) meet. A key is
the name's core, lower-cased, without separators, plus its side::

    mouthSmile_R, MouthSmileRight, mouth_smile_r, R_mouthSmile, mouthSmileR  →  "mouthsmile|right"
    ARKit.mouthFunnel, CC_mouthFunnel, blendShape1.mouthFunnel               →  "mouthfunnel|"

* The side is a separate ``L``/``R``/``Left``/``Right`` part (``_L``, ``.R``, ``Left_``…) at the
  end or the start, else a trailing ``Left``/``Right`` word (``eyeBlinkLeft``), else a trailing
  capital ``L``/``R`` after a lower-case letter (MetaHuman's ``mouthCornerPullL``).
* Prefixes are the parts before a ``.``, ``_``, ``:``, ``|``, ``-`` or space separator: a name
  yields one key per number of leading parts dropped (``ARKit.mouthFunnel`` → ``arkitmouthfunnel``,
  then ``mouthfunnel``); the most specific key that names a channel wins.
* ARKit's own ``mouthLeft`` / ``jawRight`` (moves, not sides) come out as core ``mouth`` / ``jaw``
  with a side, on both sides of the match, so they still meet only each other (and ``Mouth_L``).

Presets
-------
:data:`PRESETS` maps each ARKit channel onto the names a rig convention gives it (prefixes left
out: normalisation drops them). Every preset also accepts the ARKit names themselves.

* ``arkit`` — Apple's 52 names (any case, any side spelling, any prefix). The default.
* ``metahuman`` — the MetaHuman face rig's ``CTRL_expressions_*`` curves / shape keys, as the
  ARKit-to-MetaHuman pose mapping pairs them (``mouthSmileLeft`` → ``mouthCornerPullL``,
  ``browInnerUp`` → ``browRaiseInL`` + ``browRaiseInR``, ``mouthFunnel`` → the four
  ``mouthFunnelUL/UR/DL/DR`` quadrants, …). One ARKit channel may drive several curves.
* ``faceit`` — the Faceit add-on's ARKit expression set, which keeps Apple's names verbatim
  (``eyeBlinkLeft`` …) on every object it generates (face, eyes, teeth, tongue); it is the ARKit
  table, named so pipelines can say what rig they expect.
* ``none`` — no automatic matching: only the user's mapping table drives shape keys.

User mapping table
------------------
:func:`read_map` reads ``source channel → target shape key`` pairs. The source is a track
channel (an ARKit name, or one of the rig's own such as ``sfm_happiness``); the target is a
shape-key name on the character, matched exactly. TOML (one key per source; the value a name or
a list of names)::

    jawOpen = "Mouth_Open"
    sfm_happiness = ["Smile_L", "Smile_R"]

or CSV (``source,target`` per line; a ``source,target`` header line and ``#`` comments are
skipped; a source may appear on several lines). A shape key named in the table receives only
the channels the table sends it (summed, clipped to 0–1); automatic matching fills the others.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import EvpError
from .arkit import ARKIT_52, arkit_name, to_arkit52

_SEPARATORS = re.compile(r"[._:|\-\s]+")
_SIDE_WORDS = {"l": "left", "left": "left", "r": "right", "right": "right"}

# ARKit channel → MetaHuman expression curve names (``CTRL_expressions_`` prefix left out).
# MetaHuman splits several ARKit shapes into left/right or four lip quadrants
# (UL/UR/DL/DR = upper/lower × left/right); each part receives the ARKit value.
_METAHUMAN: dict[str, tuple[str, ...]] = {
    "browDownLeft": ("browDownL", "browLateralL"),
    "browDownRight": ("browDownR", "browLateralR"),
    "browInnerUp": ("browRaiseInL", "browRaiseInR"),
    "browOuterUpLeft": ("browRaiseOuterL",),
    "browOuterUpRight": ("browRaiseOuterR",),
    "cheekPuff": ("mouthCheekBlowL", "mouthCheekBlowR"),
    "cheekSquintLeft": ("eyeCheekRaiseL",),
    "cheekSquintRight": ("eyeCheekRaiseR",),
    "eyeBlinkLeft": ("eyeBlinkL",),
    "eyeBlinkRight": ("eyeBlinkR",),
    "eyeLookDownLeft": ("eyeLookDownL",),
    "eyeLookDownRight": ("eyeLookDownR",),
    # "in" is towards the nose: the left eye turns to the character's right, the right eye to its left
    "eyeLookInLeft": ("eyeLookRightL",),
    "eyeLookInRight": ("eyeLookLeftR",),
    "eyeLookOutLeft": ("eyeLookLeftL",),
    "eyeLookOutRight": ("eyeLookRightR",),
    "eyeLookUpLeft": ("eyeLookUpL",),
    "eyeLookUpRight": ("eyeLookUpR",),
    "eyeSquintLeft": ("eyeSquintInnerL",),
    "eyeSquintRight": ("eyeSquintInnerR",),
    "eyeWideLeft": ("eyeWidenL",),
    "eyeWideRight": ("eyeWidenR",),
    "jawForward": ("jawFwd",),
    "jawLeft": ("jawLeft",),
    "jawOpen": ("jawOpen",),
    "jawRight": ("jawRight",),
    "mouthClose": ("mouthLipsTogetherUL", "mouthLipsTogetherUR", "mouthLipsTogetherDL", "mouthLipsTogetherDR"),
    "mouthDimpleLeft": ("mouthDimpleL",),
    "mouthDimpleRight": ("mouthDimpleR",),
    "mouthFrownLeft": ("mouthCornerDepressL",),
    "mouthFrownRight": ("mouthCornerDepressR",),
    "mouthFunnel": ("mouthFunnelUL", "mouthFunnelUR", "mouthFunnelDL", "mouthFunnelDR"),
    "mouthLeft": ("mouthLeft",),
    "mouthLowerDownLeft": ("mouthLowerLipDepressL",),
    "mouthLowerDownRight": ("mouthLowerLipDepressR",),
    "mouthPressLeft": ("mouthLipsPressL",),
    "mouthPressRight": ("mouthLipsPressR",),
    "mouthPucker": ("mouthLipsPurseUL", "mouthLipsPurseUR", "mouthLipsPurseDL", "mouthLipsPurseDR"),
    "mouthRight": ("mouthRight",),
    "mouthRollLower": ("mouthLowerLipRollInL", "mouthLowerLipRollInR"),
    "mouthRollUpper": ("mouthUpperLipRollInL", "mouthUpperLipRollInR"),
    "mouthShrugLower": ("jawChinRaiseDL", "jawChinRaiseDR"),
    "mouthShrugUpper": ("jawChinRaiseUL", "jawChinRaiseUR"),
    "mouthSmileLeft": ("mouthCornerPullL",),
    "mouthSmileRight": ("mouthCornerPullR",),
    "mouthStretchLeft": ("mouthStretchL",),
    "mouthStretchRight": ("mouthStretchR",),
    "mouthUpperUpLeft": ("mouthUpperLipRaiseL",),
    "mouthUpperUpRight": ("mouthUpperLipRaiseR",),
    "noseSneerLeft": ("noseWrinkleL",),
    "noseSneerRight": ("noseWrinkleR",),
    "tongueOut": ("tongueOut",),
}
assert set(_METAHUMAN) == set(ARKIT_52)

_ARKIT_SELF: dict[str, tuple[str, ...]] = {n: (n,) for n in ARKIT_52}

PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "arkit": _ARKIT_SELF,
    "metahuman": _METAHUMAN,
    "faceit": _ARKIT_SELF,
    "none": {},
}


def check_preset(preset: str) -> str:
    """``preset`` lower-cased if it is one of :data:`PRESETS`, else an EvpError naming them."""
    p = str(preset).strip().lower()
    if p not in PRESETS:
        raise EvpError(f"unknown retarget preset {preset!r}: expected one of {', '.join(PRESETS)}")
    return p


def split_side(name: str) -> tuple[list[str], str | None]:
    """(parts of ``name`` between separators without the side, side "left"/"right"/None)."""
    parts = [p for p in _SEPARATORS.split(str(name).strip()) if p]
    if not parts:
        return [], None
    if len(parts) > 1 and parts[-1].lower() in _SIDE_WORDS:
        return parts[:-1], _SIDE_WORDS[parts[-1].lower()]
    if len(parts) > 1 and parts[0].lower() in _SIDE_WORDS:
        return parts[1:], _SIDE_WORDS[parts[0].lower()]
    last = parts[-1]
    low = last.lower()
    for word in ("left", "right"):
        if low.endswith(word) and len(low) > len(word):
            return parts[:-1] + [last[: -len(word)]], word
    # camelCase single-letter side (mouthCornerPullL): a capital after a lower-case letter
    if len(last) > 2 and last[-1] in "LR" and last[-2].islower():
        return parts[:-1] + [last[:-1]], _SIDE_WORDS[last[-1].lower()]
    return parts, None


def name_keys(name: str) -> list[str]:
    """Match keys of ``name``, most specific first: one per number of leading parts dropped.

    >>> name_keys("ARKit.mouthSmile_R")
    ['arkitmouthsmile|right', 'mouthsmile|right']
    """
    parts, side = split_side(name)
    return [("".join(parts[i:])).lower() + "|" + (side or "") for i in range(len(parts))]


class ChannelMatcher:
    """Which ARKit channels a shape-key name stands for under one preset.

    ``match("mouthSmile_R")`` → ``("mouthSmileRight",)``; ``match("browRaiseInL")`` under
    ``metahuman`` → ``("browInnerUp",)``; a name that stands for nothing → ``()``.
    """

    def __init__(self, preset: str = "arkit"):
        self.preset = check_preset(preset)
        self._by_key: dict[str, list[str]] = {}
        table = PRESETS[self.preset]
        for channel, names in table.items():
            # every preset also knows the ARKit spelling itself (a MetaHuman export may carry both)
            for n in dict.fromkeys((channel, *names)):
                key = name_keys(n)[0]
                if channel not in self._by_key.setdefault(key, []):
                    self._by_key[key].append(channel)

    def match(self, name: str) -> tuple[str, ...]:
        for key in name_keys(name):
            if key in self._by_key:
                return tuple(self._by_key[key])
        return ()


def _parse_toml(text: str, path: Path) -> list[tuple[str, str]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EvpError(f"mapping table {path}: not valid TOML ({e})") from None
    pairs = []
    for src, val in doc.items():
        targets = [val] if isinstance(val, str) else val
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t.strip() for t in targets):
            raise EvpError(f"mapping table {path}: {src!r} must name a shape key or a list of shape keys "
                           f"(as in jawOpen = \"Mouth_Open\"), got {val!r}")
        pairs += [(src, t) for t in targets]
    return pairs


def _parse_csv(text: str, path: Path) -> list[tuple[str, str]]:
    pairs = []
    rows = csv.reader(io.StringIO(text))
    for lineno, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) != 2 or not cells[0] or not cells[1]:
            raise EvpError(f"mapping table {path}, line {lineno}: expected 'source_channel,target_shape_key', "
                           f"got {','.join(row)!r}")
        if lineno == 1 and [c.lower() for c in cells] == ["source", "target"]:
            continue
        pairs.append((cells[0], cells[1]))
    return pairs


def read_map(path: str | Path) -> dict[str, list[str]]:
    """The mapping table at ``path`` (``.toml`` or ``.csv``, see the module docstring) as
    {source channel: [target shape keys]}. Raises EvpError (one line) when the file is missing,
    unreadable, malformed or empty."""
    p = Path(path)
    if p.suffix.lower() not in (".toml", ".csv"):
        raise EvpError(f"mapping table must be .toml or .csv, got {p.name!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvpError(f"mapping table not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EvpError(f"cannot read mapping table {p}: {e}") from None
    pairs = _parse_toml(text, p) if p.suffix.lower() == ".toml" else _parse_csv(text, p)
    if not pairs:
        raise EvpError(f"mapping table {p} maps nothing: write source_channel → target_shape_key pairs")
    out: dict[str, list[str]] = {}
    for src, dst in pairs:
        if dst not in out.setdefault(src, []):
            out[src].append(dst)
    return out


def source_curves(expression: np.ndarray, names: Sequence[str],
                  gaze: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{source channel: (T,) float32 curve} a retarget can send to shape keys.

    First the ARKit channels the track reaches (in :data:`ARKIT_52` order; a channel moves or
    the track names it), as :func:`evp_anim.export.arkit.to_arkit52` gives them (splits folded
    in, clipped to 0–1; with ``gaze`` (T, 2) radians the eyeLook* channels); then the track's
    other channels (e.g. ``sfm_happiness``) raw. ``expression`` is (T, K) for the K ``names``.
    """
    expr = np.asarray(expression, np.float32)
    arkit = to_arkit52(expr, list(names), gaze=gaze)
    named = {arkit_name(n) for n in names}
    out = {n: arkit[:, j] for j, n in enumerate(ARKIT_52) if n in named or np.any(arkit[:, j] != 0)}
    for k, n in enumerate(names):
        out.setdefault(n, expr[:, k])
    return out


def resolve_map_sources(user_map: Mapping[str, Sequence[str]], channels: Iterable[str]) -> dict[str, list[str]]:
    """``user_map`` with each source spelled as in ``channels`` (the track's channels and the ARKit
    channels it reaches; matched exactly, then case-insensitively). EvpError listing the sources
    that name no such channel."""
    chans = list(channels)
    lower: dict[str, str] = {}
    for c in chans:
        lower.setdefault(c.lower(), c)
    out: dict[str, list[str]] = {}
    unknown = []
    for src, targets in user_map.items():
        name = src if src in chans else lower.get(src.lower())
        if name is None:
            unknown.append(src)
            continue
        for t in targets:
            if t not in out.setdefault(name, []):
                out[name].append(t)
    if unknown:
        raise EvpError(f"mapping table names channels the track does not have: {', '.join(unknown)} "
                       f"(its channels: {', '.join(chans[:12])}{'…' if len(chans) > 12 else ''})")
    return out


def plan_links(shape_keys: Sequence[str], sources: Iterable[str], preset: str = "arkit",
               user_map: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """{shape key: [source channels that drive it]} for one mesh.

    ``sources`` are the channels that carry motion (ARKit names and the track's own); a shape
    key named as a target in ``user_map`` (already resolved, see :func:`resolve_map_sources`)
    takes exactly its mapped sources, every other key the ARKit channels its name stands for
    under ``preset`` that are in ``sources``. Keys that nothing drives are left out.
    """
    available = set(sources)
    matcher = ChannelMatcher(preset)
    mapped: dict[str, list[str]] = {}
    for src, targets in (user_map or {}).items():
        for t in targets:
            mapped.setdefault(t, []).append(src)
    links: dict[str, list[str]] = {}
    for key in shape_keys:
        if key in mapped:
            links[key] = list(mapped[key])
            continue
        hits = [c for c in matcher.match(key) if c in available]
        if hits:
            links[key] = hits
    return links


__all__ = ["PRESETS", "ChannelMatcher", "check_preset", "name_keys", "plan_links", "read_map",
           "resolve_map_sources", "source_curves", "split_side"]
