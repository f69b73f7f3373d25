"""A film-like synthetic clip with exact ground truth: two people, hard cuts, a blink held shut,
a 40° head turn and a second face in the background.

Real film footage breaks a tracker in ways the single-head footage of :mod:`.synthetic` does not:
the lead closes her eyes and turns while an extra stands in the background (the tracker jumps to
the extra), and shots cut hard from one framing or person to another. This clip has all of that,
drawn with the same pieces as :mod:`.synthetic` (the SFM head rendered by
:class:`~evp_anim.face.raster.FaceRenderer` over black and white for an exact coverage alpha,
:func:`~.synthetic.draw_background`, :func:`~.synthetic.draw_body`, :func:`~.synthetic.synthetic_motion`),
so every frame's truth is known exactly.

Shot layout (frame counts from ``FilmClipConfig.shot_frames``, default 80 + 35 + 35 = 150 frames,
6 s at 25 fps; times below are the defaults, in seconds from the shot's start):

1. **Lead in the foreground, second person in the background.** The lead (light skin, long
   blonde hair, red shirt) stands left of centre, jaw ``lead_face_px`` wide; the second person
   (darker skin, short black hair, blue shirt) stands right, further back: a face
   ``background_ratio`` (0.4) of the lead's size, higher in the frame, the whole background
   plate (wall, second person) slightly blurred (``background_blur_px``, depth of field). Both
   talk (a ~4 Hz jaw rhythm) and move a little. The lead's eyes shut at 0.8 s and stay (at least
   half) shut for ``eyes_closed_s`` = 0.5 s (rig channels eyeBlinkLeft/Right); from 1.1 s she
   turns to ``turn_deg`` = +40° yaw (nose toward the image's right, toward the second person)
   and back over ``turn_s`` = 1.4 s (40 % turning, 20 % held, 40 % turning back), so the
   turn starts while the eyes are still shut.
2. **Cut. The second person in close-up**, centred, jaw 1.1 x ``lead_face_px``; the lead absent;
   a greenish wall.
3. **Cut. The lead again, other framing**: right of centre, 0.7 x ``lead_face_px``, a blue wall
   mirrored left-right; no other face. One natural blink in the middle of the shot (it counts in
   ``eyes_closed`` too, for 2-3 frames; the second person also blinks once per shot).

The two faces are different SFM identities (``sample_identity`` at ``identity_scale`` 1.3, the
second's coefficients then flipped to the other side of the mean from the lead's) with different
skin, hair and shirt: dlib's face descriptor (dlib_face_recognition_resnet_model_v1) puts them
0.62-0.80 apart at the defaults, two frames of one person 0.15-0.31 apart (up to 0.41 for the
small, blurred background face). Heads turn about the top of the neck, not about the SFM
origin (the nose tip), and hair, neck and shoulders keep their shape while a head turns.

Ground truth (:class:`FilmClipTruth`): the lead's :class:`~evp_anim.tracks.Track` over all T
frames (landmarks_2d px, landmarks_3d mm, pose radians / px / px-per-mm, identity, rig weights in
``RIG_CHANNELS``; in frames without the lead every field holds the nearest frame with her), her
presence, eyes-closed and yaw per frame, the cuts, and the second person's (T, 68, 2) px
landmarks (NaN where absent). All landmarks are the rig's landmark vertices projected with
:func:`~evp_anim.face.projection.project`, as in :mod:`.synthetic`.

Files (:func:`make_film_clip`): the video (25 fps H.264); the truth as a track file (``.npz``,
:func:`~evp_anim.tracks.save_track`) whose ``info`` holds ``lead_present_ranges``,
``eyes_closed_ranges`` (half-open [start, stop) frame ranges), ``cuts``, ``lead_yaw_deg`` and
``others_file``; the second person's landmarks in ``<truth stem>_others.npz`` beside it
(``np.savez``: ``landmarks`` (P, T, 68, 2) float32, NaN where absent). :func:`load_film_truth`
reads both back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS, Track, load_track, save_track
from .synthetic import (SyntheticFootageConfig, draw_background, draw_body, face_layer, face_renderers,
                        synthetic_motion, write_rendered_frames)

# The two people's looks (0-255 BGR). Skin tone, hair colour and shape, shirt and face shape
# (identity) all differ, so a face-recognition descriptor tells them apart, as in a real film.
LEAD_LOOK = {"skin": (153, 181, 227), "hair": (95, 160, 205), "hair_style": "long", "shirt": (45, 40, 150)}
OTHER_LOOK = {"skin": (70, 100, 140), "hair": (18, 18, 22), "hair_style": "cap", "shirt": (120, 85, 50)}
# Wall colours of shots 1-3: warm grey, green, blue (each jittered by draw_background).
SHOT_WALLS = ((150, 160, 165), (105, 145, 110), (175, 140, 105))
_BLINK_RAMP_S = 0.12     # eyelid travel time; eyes count as closed from half shut
_TURN_RAMP = 0.4         # fraction of turn_s spent turning out (and again back)
# The SFM model's origin is at the nose tip; a head turns about the neck, behind the face. Poses
# are moved so the head rotates about this point (mm, model frame), roughly the top of the neck.
_PIVOT_MM = np.array([0.0, -40.0, -95.0])


@dataclass
class FilmClipConfig:
    """Options for :func:`render_film_frames` / :func:`make_film_clip` (see the module docstring).

    width, height: px (even, >= 64). fps: frame rate (25). shot_frames: frames in shots 1, 2, 3.
    lead_face_px: the lead's jaw width (iBUG 1..17 span, frontal) in px in shot 1.
    background_ratio: the second person's face size in shot 1 relative to the lead's.
    background_blur_px: Gaussian sigma (px) blurring shot 1's background plate (wall and
        second person); 0 for none.
    eyes_closed_at_s, eyes_closed_s: when in shot 1 the lead's eyes are half shut (closing) and
        how long they stay at least half shut (s).
    turn_at_s, turn_s, turn_deg: the lead's head turn in shot 1: start (s), duration out and back
        (s), peak yaw (degrees; positive turns the nose toward the image's right).
    identity_scale: spread of the two sampled SFM identities (std units, as ``sample_identity``;
        1.3: distinct faces that still look natural).
    seed: identities and motion.
    """

    width: int = 480
    height: int = 320
    fps: float = DEFAULT_FPS
    shot_frames: tuple[int, int, int] = (80, 35, 35)
    lead_face_px: float = 150.0
    background_ratio: float = 0.4
    background_blur_px: float = 1.0
    eyes_closed_at_s: float = 0.8
    eyes_closed_s: float = 0.5
    turn_at_s: float = 1.1
    turn_s: float = 1.4
    turn_deg: float = 40.0
    identity_scale: float = 1.3
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`EvpError` (one line) on a value the layout cannot draw."""
        for name in ("fps", "lead_face_px", "background_ratio", "background_blur_px", "eyes_closed_at_s",
                     "eyes_closed_s", "turn_at_s", "turn_s", "turn_deg", "identity_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise EvpError(f"{name} must be a finite number, got {value!r}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 64:
            raise EvpError(f"video size must be even and >= 64 px, got {self.width}x{self.height}")
        if not 1.0 <= self.fps <= 240.0:
            raise EvpError(f"fps must be in [1, 240], got {self.fps}")
        shots = tuple(self.shot_frames)
        if len(shots) != 3 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in shots):
            raise EvpError(f"shot_frames must be 3 frame counts >= 1, got {self.shot_frames!r}")
        if not 40 <= self.lead_face_px <= 0.6 * min(self.width, self.height):
            raise EvpError(f"lead_face_px must be in [40, 0.6 * min(width, height)], got {self.lead_face_px}")
        if not 0.15 <= self.background_ratio <= 0.6:
            raise EvpError(f"background_ratio must be in [0.15, 0.6], got {self.background_ratio}")
        if not 0 <= self.background_blur_px <= 5:
            raise EvpError(f"background_blur_px must be in [0, 5], got {self.background_blur_px}")
        if not -80 <= self.turn_deg <= 80:
            raise EvpError(f"turn_deg must be in [-80, 80], got {self.turn_deg}")
        if not 0 <= self.identity_scale <= 2.5:
            raise EvpError(f"identity_scale must be in [0, 2.5], got {self.identity_scale}")
        shot1_s = shots[0] / self.fps
        if self.eyes_closed_s < 1.0 / self.fps or self.eyes_closed_at_s < _BLINK_RAMP_S / 2 \
                or self.eyes_closed_at_s + self.eyes_closed_s + _BLINK_RAMP_S / 2 > shot1_s:
            raise EvpError(f"the eye closure ({self.eyes_closed_at_s} s + {self.eyes_closed_s} s) must lie "
                           f"inside shot 1 ({shot1_s:.2f} s) and last at least one frame")
        if self.turn_s * self.fps < 10 or self.turn_at_s < 0 or self.turn_at_s + self.turn_s > shot1_s:
            raise EvpError(f"the head turn ({self.turn_at_s} s + {self.turn_s} s) must lie inside shot 1 "
                           f"({shot1_s:.2f} s) and last at least 10 frames")

    @property
    def n_frames(self) -> int:
        """Total frames T."""
        return int(sum(self.shot_frames))

    @property
    def cuts(self) -> list[int]:
        """Frames where shots 2 and 3 start."""
        n1, n2, _ = self.shot_frames
        return [int(n1), int(n1 + n2)]


@dataclass
class FilmClipTruth:
    """Ground truth of a film clip of T frames.

    lead: the lead's Track (T frames; where she is absent every field holds the nearest frame
        with her). lead_present: (T,) bool, the lead is in the frame.
    cuts: frame indices where a new shot starts (never 0), ascending.
    others: per other person, (T, 68, 2) float32 px landmarks, NaN where that person is absent.
    eyes_closed: (T,) bool, the lead is present with her eyes at least half shut (mean eyeBlink
        weight >= 0.5). lead_yaw_deg: (T,) float32 the lead's yaw in degrees (the Track's
        pose_rotation[:, 1], held likewise where she is absent).
    """

    lead: Track
    lead_present: np.ndarray
    cuts: list[int]
    others: list[np.ndarray]
    eyes_closed: np.ndarray
    lead_yaw_deg: np.ndarray


@dataclass
class _Person:
    identity: np.ndarray      # (63,) SFM identity
    neutral: np.ndarray       # (68, 3) mm landmarks of the neutral face
    jaw_mm: float             # its frontal jaw width (face_px / jaw_mm = px per mm)
    look: dict
    renderers: tuple          # (over black, over white), this person's skin tone


def _person(rig, identity: np.ndarray, look: dict) -> _Person:
    neutral = rig.landmarks_3d(identity)
    renderers = face_renderers(rig, look["skin"])
    return _Person(identity, neutral, float(neutral[:17, 0].max() - neutral[:17, 0].min()), look, renderers)


def _eyes_closed_profile(t: np.ndarray, start: float, dur: float) -> np.ndarray:
    """(T,) eyeBlink weight: shut for ``dur`` s from ``start`` with smooth ramps of _BLINK_RAMP_S
    centred on both edges, so the weight is >= 0.5 exactly inside [start, start + dur]."""
    def ramp(x):
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3.0 - 2.0 * x)
    return ramp((t - start) / _BLINK_RAMP_S + 0.5) * ramp((start + dur - t) / _BLINK_RAMP_S + 0.5)


def _turn_profile(t: np.ndarray, start: float, dur: float) -> np.ndarray:
    """(T,) in [0, 1]: raised-cosine turn out over _TURN_RAMP of ``dur``, held, and back."""
    u = np.clip((t - start) / dur, 0.0, 1.0)
    up = 0.5 - 0.5 * np.cos(np.pi * np.clip(u / _TURN_RAMP, 0.0, 1.0))
    down = 0.5 - 0.5 * np.cos(np.pi * np.clip((1.0 - u) / _TURN_RAMP, 0.0, 1.0))
    return np.minimum(up, down)


def _shot_motion(cfg: FilmClipConfig, n: int, person: _Person, face_px: float, centre: tuple[float, float],
                 seed: int, yaw_deg: float) -> dict[str, np.ndarray]:
    """Smooth motion of one person over one shot, from :func:`synthetic_motion` (small head motion,
    a ~4 Hz jaw, a smile and one blink mid-shot), moved so the head sits at ``centre`` (px)."""
    from ..face.channels import RIG_CHANNELS

    scfg = SyntheticFootageConfig(n_frames=n, width=cfg.width, height=cfg.height, fps=cfg.fps, face_px=face_px,
                                  yaw_deg=yaw_deg, pitch_deg=5.0, roll_deg=4.0, move_px=0.04 * face_px,
                                  scale_var=0.03, expressions=True, expression_style="simple", seed=seed)
    m = synthetic_motion(scfg, RIG_CHANNELS, person.jaw_mm)
    # synthetic_motion centres the head at (W/2, 0.46 H)
    m["translation"] = m["translation"] + (np.asarray(centre) - np.array([cfg.width / 2.0, cfg.height * 0.46]))
    return m


def _turn_about_neck(m: dict[str, np.ndarray]) -> None:
    """Shift ``m``'s translation (in place) so every rotation pivots about _PIVOT_MM, which then
    projects where it would unrotated (the model's own pivot is the nose tip)."""
    from ..face.projection import project

    pivot = np.broadcast_to(_PIVOT_MM, (len(m["scale"]), 1, 3))
    rotated = project(pivot, m["rotation"], m["translation"], m["scale"])[:, 0]
    unrotated = m["translation"] + m["scale"][:, None] * np.array([_PIVOT_MM[0], -_PIVOT_MM[1]])
    m["translation"] = m["translation"] + (unrotated - rotated)


def _nearest_present(present: np.ndarray) -> np.ndarray:
    """(T,) index of the nearest frame where ``present`` is True (ties: the earlier one)."""
    idx = np.flatnonzero(present)
    frames = np.arange(len(present))
    pos = np.clip(np.searchsorted(idx, frames), 1, max(len(idx) - 1, 1))
    before = idx[np.clip(pos - 1, 0, len(idx) - 1)]
    after = idx[np.clip(pos, 0, len(idx) - 1)]
    return np.where(np.abs(frames - before) <= np.abs(after - frames), before, after)


def _composite(plate: np.ndarray, layer: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    colour, alpha = layer
    return np.clip(plate.astype(np.float32) * (1.0 - alpha) + colour + 0.5, 0, 255).astype(np.uint8)


def _ranges(mask: np.ndarray) -> list[list[int]]:
    """Half-open [start, stop) frame ranges where the (T,) bool ``mask`` is True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def _from_ranges(ranges, n: int) -> np.ndarray:
    out = np.zeros(n, bool)
    for a, b in ranges:
        out[int(a):int(b)] = True
    return out


def render_film_frames(cfg: FilmClipConfig, sfm_dir: str | Path):
    """Yield (frame (H, W, 3) uint8 BGR, index) for the T = sum(shot_frames) frames of the clip
    (``cfg.fps`` frames per second), and finally return its :class:`FilmClipTruth`.

    Use :func:`make_film_clip` to write a video; this generator is for in-memory tests.
    """
    from ..face.channels import RIG_CHANNELS
    from ..face.projection import project
    from ..face.rig import FaceRig

    cfg.validate()
    rig = FaceRig(sfm_dir)
    rng = np.random.default_rng(cfg.seed + 101)
    lead_id = rig.sample_identity(rng, cfg.identity_scale)
    # the second face is sampled too, with every shape coefficient then put on the other side of
    # the mean face from the lead's: two independent samples are often close enough for dlib's
    # face descriptor to take them for one person (distance < 0.5); this way it is ~0.6-0.75
    other_id = (-np.sign(lead_id) * np.abs(rig.sample_identity(rng, cfg.identity_scale))).astype(np.float32)
    lead = _person(rig, lead_id, LEAD_LOOK)
    other = _person(rig, other_id, OTHER_LOOK)
    n1, n2, n3 = (int(n) for n in cfg.shot_frames)
    w, h, s0 = cfg.width, cfg.height, cfg.seed * 10

    # shot 1: the lead left of centre, the other person right and further back (higher, smaller)
    lead1 = _shot_motion(cfg, n1, lead, cfg.lead_face_px, (0.36 * w, 0.52 * h), s0 + 1, 5.0)
    t1 = np.arange(n1) / cfg.fps
    turn = _turn_profile(t1, cfg.turn_at_s, cfg.turn_s)
    # the wiggle fades out while turning, so the peak is exactly turn_deg
    lead1["rotation"][:, 1] = np.radians(cfg.turn_deg) * turn + lead1["rotation"][:, 1] * (1.0 - turn)
    shut = _eyes_closed_profile(t1, cfg.eyes_closed_at_s, cfg.eyes_closed_s)
    for ch in ("eyeBlinkLeft", "eyeBlinkRight"):
        lead1["weights"][:, RIG_CHANNELS.index(ch)] = shut   # replaces synthetic_motion's blink
    back_px = cfg.background_ratio * cfg.lead_face_px
    other1 = _shot_motion(cfg, n1, other, back_px, (0.8 * w, 0.36 * h), s0 + 2, 15.0)
    # shot 2: the other person in close-up; shot 3: the lead, smaller and right of centre
    other2 = _shot_motion(cfg, n2, other, 1.1 * cfg.lead_face_px, (0.5 * w, 0.5 * h), s0 + 3, 15.0)
    lead3 = _shot_motion(cfg, n3, lead, 0.7 * cfg.lead_face_px, (0.6 * w, 0.5 * h), s0 + 4, 10.0)
    for m in (lead1, other1, other2, lead3):
        _turn_about_neck(m)

    def landmarks(person, m):
        lm3 = rig.landmarks_3d(person.identity, m["weights"].astype(np.float32))
        return lm3, project(lm3, m["rotation"], m["translation"], m["scale"])

    # per shot, its people back to front: (person, motion, behind the lead?)
    shots = [(1, [(other, other1, True), (lead, lead1, False)]), (2, [(other, other2, False)]),
             (3, [(lead, lead3, False)])]
    i = 0
    for k, people in shots:
        plate = draw_background(w, h, np.random.default_rng(cfg.seed + 200 + k), SHOT_WALLS[k - 1])
        if k == 3:
            plate = np.ascontiguousarray(plate[:, ::-1])   # another corner of the room
        for j in range(len(people[0][1]["scale"])):
            frame = plate.copy()
            for person, m, far in people:
                # hair, neck and shoulders from the neutral face posed about the pivot without yaw:
                # they follow the head's position, size, nod and tilt, but neither the jaw (the body
                # would bob with speech) nor the turn (a skull's silhouette keeps its width)
                rot = m["rotation"][j] * np.array([1.0, 0.0, 1.0])
                pivot = project(_PIVOT_MM[None], m["rotation"][j], m["translation"][j], m["scale"][j])[0]
                body_lm = project(person.neutral - _PIVOT_MM, rot, pivot, m["scale"][j])
                shoulders = body_lm[8, 1] + 0.7 * float(m["scale"][j]) * person.jaw_mm
                draw_body(frame, body_lm, person.look["skin"], person.look["hair"], person.look["shirt"],
                          person.look["hair_style"], shoulders_y=min(float(shoulders), h))
                frame = _composite(frame, face_layer(
                    person.renderers, w, h, identity=person.identity, weights=m["weights"][j].astype(np.float32),
                    rotation=m["rotation"][j], scale=float(m["scale"][j]), translation=m["translation"][j]))
                if far and cfg.background_blur_px > 0:
                    # depth of field: the wall and the person behind the lead are slightly soft
                    frame = cv2.GaussianBlur(frame, (0, 0), cfg.background_blur_px)
            yield frame, i
            i += 1

    # ground truth: the lead's frames from shots 1 and 3, held over shot 2
    t_all = cfg.n_frames
    present = np.zeros(t_all, bool)
    present[:n1] = True
    present[n1 + n2:] = True
    cat = {key: np.concatenate([lead1[key], lead3[key]]) for key in ("rotation", "translation", "scale", "weights")}
    src = np.searchsorted(np.flatnonzero(present), _nearest_present(present))   # row in `cat` per frame
    lead_m = {key: v[src] for key, v in cat.items()}
    lm3d, lm2d = landmarks(lead, lead_m)
    others = np.full((t_all, 68, 2), np.nan, np.float32)
    others[:n1] = landmarks(other, other1)[1]
    others[n1:n1 + n2] = landmarks(other, other2)[1]
    blink = lead_m["weights"][:, [RIG_CHANNELS.index("eyeBlinkLeft"), RIG_CHANNELS.index("eyeBlinkRight")]]
    eyes_closed = present & (blink.mean(1) >= 0.5)
    track = Track.new(
        lm2d.astype(np.float32), fps=cfg.fps, image_size=(w, h), landmarks_3d=lm3d.astype(np.float32),
        pose_rotation=lead_m["rotation"].astype(np.float32),
        pose_translation=lead_m["translation"].astype(np.float32), pose_scale=lead_m["scale"].astype(np.float32),
        identity=lead.identity, expression=lead_m["weights"].astype(np.float32),
        expression_names=list(RIG_CHANNELS),
        info={"film_clip": True, "seed": cfg.seed, "lead_face_px": cfg.lead_face_px,
              "shot_frames": [n1, n2, n3]},
        provenance={"model": "synthetic-film-clip"},
    )
    return FilmClipTruth(lead=track, lead_present=present, cuts=cfg.cuts, others=[others],
                         eyes_closed=eyes_closed,
                         lead_yaw_deg=np.degrees(track.pose_rotation[:, 1]).astype(np.float32))


def _others_path(truth_path: Path) -> Path:
    return truth_path.with_name(truth_path.stem + "_others.npz")


def save_film_truth(truth: FilmClipTruth, path: str | Path) -> Path:
    """Write ``truth`` as the lead's track file ``path`` (.npz) plus ``<stem>_others.npz`` beside it
    (see the module docstring); returns ``path``."""
    from ..atomic import atomic_path

    path = Path(path)
    tr = truth.lead.copy()
    tr.info.update({
        "lead_present_ranges": _ranges(truth.lead_present),
        "cuts": [int(c) for c in truth.cuts],
        "eyes_closed_ranges": _ranges(truth.eyes_closed),
        "lead_yaw_deg": [round(float(y), 3) for y in truth.lead_yaw_deg],
        "others_file": _others_path(path).name,
    })
    save_track(tr, path)
    with atomic_path(_others_path(path)) as tmp:
        np.savez(tmp, landmarks=np.stack(truth.others).astype(np.float32) if truth.others
                 else np.zeros((0, tr.n_frames, 68, 2), np.float32))
    return path


def load_film_truth(path: str | Path) -> FilmClipTruth:
    """Read a truth written by :func:`make_film_clip` (the track file and its ``_others.npz``)."""
    path = Path(path)
    tr = load_track(path)
    info = tr.info
    if not info.get("film_clip") or "lead_present_ranges" not in info:
        raise EvpError(f"{path}: not a film clip's ground truth (no lead_present_ranges in its info)")
    others_file = path.with_name(str(info.get("others_file", _others_path(path).name)))
    if not others_file.is_file():
        raise EvpError(f"{path}: the other people's landmarks {others_file.name} are missing beside it")
    with np.load(others_file, allow_pickle=False) as z:
        others = np.asarray(z["landmarks"], np.float32)
    if others.ndim != 4 or others.shape[1:] != (tr.n_frames, 68, 2):
        raise EvpError(f"{others_file}: landmarks have shape {others.shape}, expected (P, {tr.n_frames}, 68, 2)")
    n = tr.n_frames
    return FilmClipTruth(lead=tr, lead_present=_from_ranges(info["lead_present_ranges"], n),
                         cuts=[int(c) for c in info.get("cuts", [])], others=list(others),
                         eyes_closed=_from_ranges(info.get("eyes_closed_ranges", []), n),
                         lead_yaw_deg=np.degrees(tr.pose_rotation[:, 1]).astype(np.float32))


def make_film_clip(video_path: str | Path, sfm_dir: str | Path, cfg: FilmClipConfig | None = None,
                   truth_path: str | Path | None = None, progress=None) -> FilmClipTruth:
    """Render the film clip to ``video_path`` (.mp4, ``cfg.fps`` (25) fps H.264, crf 16) and return
    its truth, also saved to ``truth_path`` (.npz, plus ``<stem>_others.npz``) when given.
    ``progress(done)`` is called after each frame."""
    cfg = cfg or FilmClipConfig()
    if truth_path is not None and Path(truth_path).suffix != ".npz":
        raise EvpError(f"the film clip's truth file must end in .npz, got {Path(truth_path).name!r}")
    truth = write_rendered_frames(render_film_frames(cfg, sfm_dir), video_path, cfg.fps, (cfg.width, cfg.height),
                                  progress)
    truth.lead.info["video"] = Path(video_path).name
    if truth_path is not None:
        save_film_truth(truth, truth_path)
    return truth
