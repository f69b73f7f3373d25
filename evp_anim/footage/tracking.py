"""68-point iBUG landmark tracking of one chosen person through target footage, with dlib.

Film footage has shots, and shots have several people; the dub needs one person's face, and
only where it really is that person. Per frame (25 fps, from :mod:`.video`):

0. **Cut?** :class:`~.shots.CutDetector` compares the frame with the previous one (colours and
   structure of a thumbnail). At a cut everything known about *where* the face is is dropped
   (the next shot frames it elsewhere, or not at all); *who* it is is kept. A sudden change
   too small to be sure of (``suspected_cuts``: a jump cut within one set) is treated alike.
1. **Choose once.** On the first frame with faces the target is chosen: by default the largest,
   most central face (area x centrality); ``face_index`` picks one by number (faces numbered left
   to right by the centre of their box) and ``face_box`` the face that lies most inside a box
   (on the first frame where one does). Its dlib 128-D face descriptor (the ResNet of
   ``face_recognition_models``) becomes the first identity reference. A choice made in a shot
   that ends within ``STUB_SHOT_FRAMES`` frames (a clip that starts a frame before a cut, on a
   leftover of the previous shot) is undone and made again after the cut.
2. **Follow.** With the face in the previous frame, its landmarks predict this frame's face box
   (the box the detector would draw, learnt from the last detection), and only dlib's 68-point
   shape predictor runs (about a millisecond), whatever the resolution.
3. **Check.** The new shape must agree with the previous one up to a similarity transform
   (normalised residual), keep its size and stay inside the picture. Every ``verify_every``
   frames the HOG detector looks for a face in a small window around it (when HOG, a frontal
   detector, misses a turned head, the identity decides instead); every ``identity_every``
   frames the face's descriptor must lie within ``follow_distance`` of the references.
4. **Re-acquire.** When a check fails, after a cut, or while the face is absent, the HOG
   detector runs on the whole frame, downscaled so its long side is at most
   ``detect_max_side`` px (4K frames are detected on a small copy; landmarks are always
   predicted and stored at full resolution). Every detection's descriptor is compared with the
   references; only one within ``accept_distance`` is taken. Otherwise the frame is **absent**:
   never another person. Where a follow was lost in this very frame (a fast turn breaks the
   shape check), the detection at its place is also compared with the follow's last checked
   view, within the same strict distance.

Two thresholds, because the evidence differs. Re-acquiring picks a face out of several with no
other evidence than the descriptor, so it must be strict. While following, the shape predictor's
frame-to-frame continuity already says it is the same face; the descriptor only has to catch a
follow that slid off the face, and it must not break the follow when the eyes close or the head
turns, which moves one person's descriptor away from her frontal references. Measured on the
synthetic film clip (:mod:`.film_clip`, seed 0) against the lead's first frames: her other
frontal frames 0.10-0.21 (0.11-0.29 in the later shot), eyes shut 0.22-0.29, turned 40 degrees
0.51-0.60; the other person 0.61-0.69 (0.52-0.68 with less different identities). So a followed
face must stay within the looser ``follow_distance`` (0.6) and is also compared with its own view
at the previous check (``recent``): a head turning away changes its descriptor gradually, and
checked every two frames through the turn the largest distance was then 0.23.
References are added while following (up to ``max_references``), only from frames that pass
the strict test and differ from the references already held: frontal, open-eyed views of the
chosen person, which keep re-acquisition after a cut from depending on one frame.

Frames where the chosen face is absent are marked, counted per shot, filled for continuity
(interpolated within their shot; a shot without the face holds the nearest frames' values) and
explained in ``info["flags"]``: the dub must leave them untouched. The valid landmarks are
smoothed in time with a zero-phase One-Euro filter (see :mod:`.smoothing`), never across a cut
(or suspected cut), a gap, or a re-detection that jumped elsewhere (``info["jumps"]``).

Cost: a descriptor is ~0.1 s on one core (measured here; dlib's CPU build), so it is computed on
the chosen frame, every ``identity_every`` frames while following, and for each detection while
re-acquiring, where a face rejected in the previous frame at the same place keeps its verdict
for ``identity_every`` frames.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS
from .shots import CutDetector, CutOptions, shot_bounds
from .smoothing import interpolate_missing, one_euro

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
# A face chosen in a first shot shorter than this (frames) is chosen again after the cut: such a
# stub is a leftover of the previous shot, not the clip's subject.
STUB_SHOT_FRAMES = 6
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# What every per-frame flag and list in TrackingResult.info means (``evp-anim info`` prints it).
FLAGS = {
    "frames_without_face": "number of frames in which the chosen face is absent (the frames of missing_ranges)",
    "missing_ranges": "[start, stop) frame ranges where the chosen face is absent: another shot, the person "
                      "left the picture, is hidden, or is turned too far away for the detector to find and "
                      "the descriptor to recognise; also the frames before the face is first seen. Their "
                      "landmarks and pose are only filled in for continuity (interpolated within the shot, or "
                      "held from the nearest frames when the shot never shows the face): the dub must leave "
                      "these frames untouched",
    "cuts": "frames where a new shot starts (a hard cut: the frame's colours and structure differ from the "
            "previous frame's far more than within the shot); tracking restarts at each cut, and smoothing "
            "and filling never cross one",
    "suspected_cuts": "frames where the picture changed suddenly, but not enough to be sure of a cut (a jump "
                      "cut within the same set looks like the start of a fast pan): not shot boundaries, but "
                      "the face was searched anew there with the strict identity test and the smoothing restarts",
    "shots": "per shot: its frames [start, stop), how many show the chosen face (face_frames), and the "
             "[start, stop) ranges where the face is absent (as in missing_ranges)",
    "jumps": "frames where the face was found again by the detector more than a quarter face width from "
             "where it was a frame before; the smoothing restarts there",
    "target": "how the followed face was chosen: the rule (largest and most central by default, or --face "
              "by number or box), the frame it was chosen on, its box there (x0, y0, x1, y1 px), the "
              "descriptor distances of the other faces in that frame (the five largest), and "
              "(not_chosen_in) a stub shot of a few frames before a cut whose face was not taken",
    "identity": "the face-descriptor test that keeps the track on the chosen person: the distance a "
                "detection must be within to be taken as that person (accept_distance), the looser one a "
                "followed face must keep (follow_distance), the references held, descriptors computed, "
                "detections rejected as someone else, and the largest accepted / smallest rejected / "
                "largest followed distances seen",
    "detector_runs": "HOG face-detector runs (whole-frame detections and checks around the followed face)",
    "redetections": "frames where following failed a check and the detector searched the whole frame",
}


def _model_file(name: str) -> Path:
    """Path of a dlib model file inside the ``face_recognition_models`` package.

    Located with importlib (importing that package needs the removed ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EvpError("face-recognition-models is not installed: run `pip install face-recognition-models==0.3.0`")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / name
        if p.is_file():
            return p
    raise EvpError(f"{name} not found in face_recognition_models: reinstall face-recognition-models")


def predictor_path() -> Path:
    """Path of dlib's 68-point shape predictor inside the ``face_recognition_models`` package."""
    return _model_file(PREDICTOR_FILE)


def recognition_model_path() -> Path:
    """Path of dlib's face-recognition ResNet (128-D descriptors) in ``face_recognition_models``."""
    return _model_file(RECOGNITION_FILE)


_DLIB_CACHE: dict[str, object] = {}


def _dlib_models():
    try:
        import dlib
    except ImportError:
        raise EvpError("dlib is not installed: run `pip install dlib-bin`") from None
    if "pred" not in _DLIB_CACHE:
        _DLIB_CACHE["det"] = dlib.get_frontal_face_detector()
        _DLIB_CACHE["pred"] = dlib.shape_predictor(str(predictor_path()))
    return dlib, _DLIB_CACHE["det"], _DLIB_CACHE["pred"]


def _recognizer():
    dlib = _dlib_models()[0]
    if "rec" not in _DLIB_CACHE:
        _DLIB_CACHE["rec"] = dlib.face_recognition_model_v1(str(recognition_model_path()))
    return _DLIB_CACHE["rec"]


@dataclass
class TrackerOptions:
    """Tracking settings.

    detect_max_side: px, long side of the downscaled copy the HOG detector sees.
    verify_every: frames between detector checks of a followed face (0 = never).
    max_residual: similarity-aligned frame-to-frame shape change, RMS as a fraction of the face
        size, above which the followed shape is rejected and the face re-detected.
    min_inside: fraction of the 68 points that must lie inside the picture.
    smooth: apply the One-Euro filter; min_cutoff (Hz) and beta (per face size per s) tune it;
        zero_phase runs it forward and backward (offline), which removes its lag.
    max_missing: fraction of frames allowed without the chosen face before tracking fails.
    face_index: follow the face with this number (0-based, faces numbered left to right by the
        centre of their detection box) on the first frame with faces; None: the largest, most
        central face (area x centrality).
    face_box: (x0, y0, x1, y1) px in the upright frame: follow the face that lies most inside
        this box, on the first frame where one does (at least half of its detection box).
    identity: keep the track on the chosen person by dlib's face descriptor (False: follow
        whichever face the detector finds, as a single-face clip needs no more).
    accept_distance: descriptor distance (Euclidean, 128-D) within which a detection is taken as
        the chosen person when (re)acquiring her (dlib's own same-person threshold for
        photographs is 0.6; 0.4 leaves a margin on both sides on the synthetic film clip, see
        the module docstring).
    follow_distance: the looser distance a followed face must keep (turns and shut eyes).
    identity_every: frames between descriptor checks of a followed face (a descriptor costs
        ~0.1 s on one core; every 12 frames is ~8 ms per frame at 25 fps).
    max_references: descriptors of the chosen person kept as references.
    cuts: detect shot cuts (False: the clip is one shot).
    cut_options: settings of the cut detector (:class:`~.shots.CutOptions`).
    """

    detect_max_side: int = 640
    verify_every: int = 10
    max_residual: float = 0.06
    min_inside: float = 0.8
    smooth: bool = True
    min_cutoff: float = 2.0
    beta: float = 4.0
    zero_phase: bool = True
    max_missing: float = 0.5
    face_index: int | None = None
    face_box: tuple[float, float, float, float] | None = None
    identity: bool = True
    accept_distance: float = 0.4
    follow_distance: float = 0.6
    identity_every: int = 12
    max_references: int = 8
    cuts: bool = True
    cut_options: CutOptions | None = None

    def validate(self) -> None:
        """Raise :class:`EvpError` (one line) for settings that cannot work."""
        if self.face_index is not None and self.face_box is not None:
            raise EvpError("choose the face by number or by box, not both")
        if self.face_index is not None and self.face_index < 0:
            raise EvpError(f"--face number must be >= 0 (faces are numbered left to right from 0), "
                           f"got {self.face_index}")
        if self.face_box is not None:
            b = [float(v) for v in self.face_box]
            if len(b) != 4 or not all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
                raise EvpError(f"--face box must be x0,y0,x1,y1 px with x1 > x0 and y1 > y0, got {self.face_box}")
        if not 0 < self.accept_distance <= self.follow_distance:
            raise EvpError("identity distances must satisfy 0 < accept_distance <= follow_distance")
        if self.identity_every < 0 or self.max_references < 1:
            raise EvpError("identity_every must be >= 0 and max_references >= 1")
        if not 0.0 <= self.max_missing <= 1.0:
            raise EvpError(f"max_missing must be in [0, 1], got {self.max_missing}")


def parse_face_option(text: str) -> tuple[int | None, tuple[float, float, float, float] | None]:
    """``--face`` text -> (face_index, face_box): ``"1"`` -> (1, None); ``"120,40,260,200"`` -> box px."""
    t = text.strip()
    if re.fullmatch(r"\d+", t):
        return int(t), None
    parts = [p.strip() for p in t.split(",")]
    if len(parts) == 4:
        try:
            box = tuple(float(p) for p in parts)
        except ValueError:
            box = None
        if box is not None and np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]:
            return None, box  # type: ignore[return-value]
    raise EvpError(f"--face must be a face number (0, 1, ... numbered left to right) or a box x0,y0,x1,y1 "
                   f"in px with x1 > x0 and y1 > y0, got {text!r}")


@dataclass
class TrackingResult:
    """Output of :func:`track_frames`.

    landmarks: (T, 68, 2) float32 px in the full-resolution frame (absent frames filled for
        continuity: interpolated within their shot, held from the nearest frames otherwise).
    valid: (T,) bool, True where the chosen face was found in that frame.
    image_size: (width, height) px.
    info: frames, absent frames and their ranges, cuts, shots, the target's choice, identity
        statistics, detector runs, and ``flags`` (each of those explained in words).
    """

    landmarks: np.ndarray
    valid: np.ndarray
    image_size: tuple[int, int]
    info: dict = field(default_factory=dict)


def _shape_to_array(shape) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


def _similarity_residual(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance between (68, 2) shapes after the best similarity of b onto a, / a's size."""
    ca, cb = a.mean(0), b.mean(0)
    a0, b0 = a - ca, b - cb
    size = np.sqrt((a0 ** 2).sum(1).mean())
    # complex-number least squares: a0 ~ z * b0
    za = a0[:, 0] + 1j * a0[:, 1]
    zb = b0[:, 0] + 1j * b0[:, 1]
    z = (np.conj(zb) @ za) / max((np.abs(zb) ** 2).sum(), 1e-12)
    r = za - z * zb
    return float(np.sqrt((np.abs(r) ** 2).mean()) / max(size, 1e-9))


def _bbox(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])


def _area(b: np.ndarray) -> float:
    return float(max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0))


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    return _area(np.array([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    i = _intersection(a, b)
    return i / max(_area(a) + _area(b) - i, 1e-9)


def face_descriptor(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-D face descriptor of the face with ``landmarks`` in ``frame``.

    The face is cut out around its landmarks, aligned to dlib's 150 x 150 chip (as
    ``dlib.get_face_chip``) and run through dlib's face-recognition ResNet (~0.1 s on one core).
    Two photographs of one person lie within 0.6 (Euclidean) in dlib's tests (LFW).

    Args:
        frame: (H, W, 3) BGR or (H, W) grey uint8, any resolution (only a crop is converted).
        landmarks: (68, 2) px.
    Returns:
        (128,) float64.
    """
    dlib = _dlib_models()[0]
    h, w = frame.shape[:2]
    b = _bbox(landmarks)
    m = 0.6 * max(b[2] - b[0], b[3] - b[1], 1.0)  # the chip's padding (0.25) fits inside
    x0, y0 = int(max(0, np.floor(b[0] - m))), int(max(0, np.floor(b[1] - m)))
    x1, y1 = int(min(w, np.ceil(b[2] + m))), int(min(h, np.ceil(b[3] + m)))
    crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
    rgb = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB if crop.ndim == 2 else cv2.COLOR_BGR2RGB)
    pts = dlib.points([dlib.point(int(round(x - x0)), int(round(y - y0))) for x, y in landmarks])
    rect = dlib.rectangle(int(b[0] - x0), int(b[1] - y0), int(b[2] - x0), int(b[3] - y0))
    chip = dlib.get_face_chip(rgb, dlib.full_object_detection(rect, pts), 150, 0.25)
    return np.asarray(_recognizer().compute_face_descriptor(chip), np.float64)


class FaceTracker:
    """Frame-by-frame dlib landmark tracker of whichever face is there; feed (H, W) uint8 grey
    frames to :meth:`step`. :class:`TargetTracker` follows one chosen person."""

    def __init__(self, options: TrackerOptions | None = None):
        self.opt = options or TrackerOptions()
        self.dlib, self.detector, self.predictor = _dlib_models()
        self.prev: np.ndarray | None = None
        # detector box relative to the landmarks' bbox: (dx0, dy0, dx1, dy1) in bbox sizes
        self.box_rel = np.array([0.0, 0.12, 0.0, 0.0])
        self.n_detect = 0
        self.n_redetect = 0
        self.since_verify = 0
        self.fresh = False  # the last step's landmarks came from a new detection

    def _rect(self, box) -> object:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        return self.dlib.rectangle(x0, y0, x1, y1)

    def _predict(self, gray: np.ndarray, box) -> np.ndarray:
        return _shape_to_array(self.predictor(gray, self._rect(box)))

    def _box_from_landmarks(self, lm: np.ndarray) -> np.ndarray:
        b = _bbox(lm)
        w, h = b[2] - b[0], b[3] - b[1]
        return b + self.box_rel * np.array([w, h, w, h])

    def _detect_all(self, gray: np.ndarray, small_faces: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Whole-frame HOG detection on a downscaled copy -> boxes (N, 4) px (x0, y0, x1, y1), scores (N,).

        Faces under ~80 px on the downscaled copy are searched (one pyramid level up, 4x the
        cost) when no larger face is found, or always with ``small_faces``.
        """
        h, w = gray.shape
        f = min(1.0, self.opt.detect_max_side / max(h, w))
        small = cv2.resize(gray, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA) if f < 1 else gray
        self.n_detect += 1
        up = small_faces and max(small.shape) <= 800
        rects, scores, _ = self.detector.run(small, int(up), 0.0)
        if len(rects) == 0 and not up and max(small.shape) <= 800:
            rects, scores, _ = self.detector.run(small, 1, 0.0)  # small faces: one pyramid level up
        if len(rects) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64) / f
        return boxes, np.asarray(scores, np.float64)

    def _detect(self, gray: np.ndarray, near: np.ndarray | None = None) -> np.ndarray | None:
        """Full-frame HOG detection on a downscaled copy -> box (x0, y0, x1, y1) px or None."""
        boxes, scores = self._detect_all(gray)
        if len(boxes) == 0:
            return None
        if near is not None:  # the face we were following, among the confident detections
            c = 0.5 * (near[:2] + near[2:])
            ok = np.flatnonzero(scores >= 0.5 * scores.max())
            k = int(ok[np.argmin(np.linalg.norm(0.5 * (boxes[ok, :2] + boxes[ok, 2:]) - c, axis=1))])
        else:
            # the most face-like detection (a round badge or a poster can also fire, weakly)
            k = int(np.argmax(scores))
        return boxes[k]

    def _verify(self, gray: np.ndarray, box: np.ndarray) -> bool:
        """Is there a detectable face in a window around ``box``? (HOG on a small crop.)"""
        h, w = gray.shape
        bw, bh = box[2] - box[0], box[3] - box[1]
        x0, y0 = int(max(0, box[0] - bw)), int(max(0, box[1] - bh))
        x1, y1 = int(min(w, box[2] + bw)), int(min(h, box[3] + bh))
        if x1 - x0 < 20 or y1 - y0 < 20:
            return False
        crop = gray[y0:y1, x0:x1]
        # scale so the face is ~100 px wide: the HOG window is 80 px
        f = min(1.0, 100.0 / max(bw, 1.0)) if bw > 100 else 100.0 / max(bw, 1.0)
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * f)), max(1, int(crop.shape[0] * f))))
        self.n_detect += 1
        return len(self.detector(np.ascontiguousarray(crop), 0)) > 0

    def _inside(self, lm: np.ndarray, shape) -> bool:
        h, w = shape
        ok = (lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)
        return ok.mean() >= self.opt.min_inside

    def _learn_box(self, box: np.ndarray, lm: np.ndarray) -> None:
        """Learn where the detector puts its box relative to the landmarks, for following."""
        b = _bbox(lm)
        w, h = max(b[2] - b[0], 1.0), max(b[3] - b[1], 1.0)
        self.box_rel = 0.7 * self.box_rel + 0.3 * ((box - b) / np.array([w, h, w, h]))

    def _from_detection(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        lm = self._predict(gray, box)
        self._learn_box(box, lm)
        return lm

    def _follow_shape(self, gray: np.ndarray) -> np.ndarray | None:
        """The shape predicted from the previous frame's, if it passes the shape checks."""
        box = self._box_from_landmarks(self.prev)
        cand = self._predict(gray, box)
        size_ratio = np.ptp(cand[:, 0]) / max(np.ptp(self.prev[:, 0]), 1e-6)
        ok = (_similarity_residual(self.prev, cand) <= self.opt.max_residual
              and 0.75 <= size_ratio <= 1.33 and self._inside(cand, gray.shape))
        return cand if ok else None

    def step(self, gray: np.ndarray) -> np.ndarray | None:
        """Landmarks (68, 2) float64 px of the face in ``gray`` (H, W) uint8, or None if none."""
        gray = np.ascontiguousarray(gray)
        lm = None
        self.fresh = False
        if self.prev is not None:
            cand = self._follow_shape(gray)
            self.since_verify += 1
            ok = cand is not None
            if ok and self.opt.verify_every and self.since_verify >= self.opt.verify_every:
                self.since_verify = 0
                ok = self._verify(gray, self._box_from_landmarks(cand))
            if ok:
                lm = cand
        if lm is None:
            near = self._box_from_landmarks(self.prev) if self.prev is not None else None
            if self.prev is not None:
                self.n_redetect += 1
            box = self._detect(gray, near)
            if box is not None:
                cand = self._from_detection(gray, box)
                if self._inside(cand, gray.shape):
                    lm = cand
                    self.fresh = True
            self.since_verify = 0
        self.prev = lm
        return lm


class TargetTracker(FaceTracker):
    """Follows one chosen person through a clip (see the module docstring).

    Feed frames in order to :meth:`step` ((H, W, 3) BGR uint8; (H, W) grey also works, the
    descriptor then sees grey) and call :meth:`new_shot` before the first frame of each new shot.
    ``target`` says how the face was chosen (None until it is); ``stats`` counts descriptor work.
    """

    def __init__(self, options: TrackerOptions | None = None, source: str = "video"):
        super().__init__(options)
        self.opt.validate()
        self.source = source
        self.index = -1                       # frame index of the last step
        self.target: dict | None = None
        self.refs: list[np.ndarray] = []      # (128,) descriptors of the chosen person
        self.since_identity = 0
        # detections rejected in the previous frame: (box, distance, frame its descriptor is from)
        self._rejected: list[tuple[np.ndarray, float, int]] = []
        self.frames_with_faces = 0            # frames where the detector found any face (before the choice)
        self.small_target = False             # the chosen face was seen under ~100 px on the detector's copy
        self.recent: np.ndarray | None = None  # descriptor of the followed face at its last check
        self.discarded_choice: str | None = None  # where a choice made in a stub shot was undone
        self.stats = {"descriptors": 0, "rejected_detections": 0, "accepted_max": None, "rejected_min": None,
                      "followed_max": None}

    # ------------------------------------------------------------------ identity
    def _distance(self, frame: np.ndarray, lm: np.ndarray) -> tuple[float, np.ndarray]:
        d = face_descriptor(frame, lm)
        self.stats["descriptors"] += 1
        return float(min(np.linalg.norm(d - r) for r in self.refs)), d

    def _note(self, key: str, d: float, larger: bool) -> None:
        old = self.stats[key]
        self.stats[key] = round(d, 3) if old is None else (max(old, round(d, 3)) if larger else min(old, round(d, 3)))

    def _maybe_add_reference(self, desc: np.ndarray, d: float) -> None:
        # only views that pass the strict test (frontal, open-eyed: the ones near her first frames)
        # and add something (not a near copy of a reference already held)
        if d <= self.opt.accept_distance and d >= 0.05 and len(self.refs) < self.opt.max_references:
            self.refs.append(desc)

    # ------------------------------------------------------------------ steps
    def new_shot(self) -> None:
        """A cut: forget where the face was (the next shot frames it anew); keep who it is."""
        self.prev = None
        self.recent = None
        self._rejected = []
        self.since_verify = 0
        self.since_identity = 0

    def forget_choice(self, where: str) -> None:
        """Undo the choice of the target (made in a stub shot, ``where``); the next face found is chosen anew."""
        self.target, self.refs, self.recent, self.small_target = None, [], None, False
        self.frames_with_faces = 0
        self.discarded_choice = where

    def step(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks (68, 2) float64 px of the chosen face in ``frame``, or None where it is absent."""
        self.index += 1
        frame = np.ascontiguousarray(frame)
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        self.fresh = False
        lm = lost_at = None
        if self.prev is not None:
            lm = self._follow(frame, gray)
            if lm is None:
                self.n_redetect += 1
                lost_at = self._box_from_landmarks(self.prev)
            else:
                self._rejected = []  # the rejection cache is for consecutive absent frames only
        if lm is None:
            lm = self._acquire(frame, gray, lost_at)
            if lm is None:
                self.recent = None
        self.prev = lm
        return lm

    def _follow(self, frame: np.ndarray, gray: np.ndarray) -> np.ndarray | None:
        cand = self._follow_shape(gray)
        if cand is None:
            return None
        self.since_verify += 1
        self.since_identity += 1
        opt = self.opt
        check = opt.identity and opt.identity_every and self.since_identity >= opt.identity_every
        if opt.verify_every and self.since_verify >= opt.verify_every:
            self.since_verify = 0
            if not self._verify(gray, self._box_from_landmarks(cand)):
                if not opt.identity:
                    return None
                check = True  # HOG (frontal) misses turned heads: the identity decides
        if check:
            self.since_identity = 0
            d, desc = self._distance(frame, cand)
            # also against this follow's last checked view: a head turning away changes its
            # descriptor gradually, so the view half a second ago is nearer than the frontal ones
            d_follow = d if self.recent is None else min(d, float(np.linalg.norm(desc - self.recent)))
            if d_follow > opt.follow_distance:
                return None
            self.recent = desc
            self._note("followed_max", d_follow, True)
            self._maybe_add_reference(desc, d)
        return cand

    def _candidates(self, gray: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Whole-frame detections as (box, landmarks, HOG score), those inside the picture.

        Small faces are searched too (4x the cost) while choosing (every face in the picture
        counts, e.g. for ``--face 1``) and when the chosen face was ever small: a larger face of
        someone else must not hide her from the detector.
        """
        boxes, scores = self._detect_all(gray, small_faces=self.target is None or self.small_target)
        out = []
        for box, s in zip(boxes, scores):
            lm = self._predict(gray, box)
            if self._inside(lm, gray.shape):
                out.append((box, lm, float(s)))
        return out

    def _acquire(self, frame: np.ndarray, gray: np.ndarray, lost_at: np.ndarray | None = None) -> np.ndarray | None:
        """Find the chosen face among the whole frame's detections (None: absent).

        ``lost_at``: the box where the face was followed until this frame's shape check failed
        (a fast turn or shutting eyes can break it). A detection there may be compared with the
        follow's last checked view as well as with the references; anywhere else only with the
        references. Either way within the strict ``accept_distance``.
        """
        cands = self._candidates(gray)
        self.since_verify = 0
        self.since_identity = 0
        if not cands:
            self._rejected = []
            return None
        if self.target is None:
            return self._choose(frame, gray, cands)
        if not self.opt.identity:
            near = self._box_from_landmarks(self.prev) if self.prev is not None else None
            box = self._detect_pick(cands, near)
            self._learn_box(box[0], box[1])
            self.fresh = True
            return box[1]
        best, rejected = None, []
        # the face where the follow was lost first, then the largest; a face rejected in the previous
        # frame at the same place is the same face: its distance is reused until it is
        # ``identity_every`` frames old (a descriptor costs ~0.1 s)
        overlap = (lambda b: _iou(b, lost_at)) if lost_at is not None else (lambda b: 0.0)
        for box, lm, _s in sorted(cands, key=lambda c: (-overlap(c[0]), -_area(c[0]))):
            cached = next((r for r in self._rejected if _iou(r[0], box) > 0.5), None)
            if cached is not None and self.index - cached[2] < max(self.opt.identity_every, 1):
                rejected.append((box, cached[1], cached[2]))
                continue
            d, desc = self._distance(frame, lm)
            still = lost_at is not None and self.recent is not None and _iou(box, lost_at) >= 0.5
            if still:
                # strict, but against the follow's last view too: a turning head is near its view
                # of a few frames ago (0.09-0.22 through the film clip's turn) while far from its
                # frontal references; someone else at that place (a missed cut) is near neither
                d_follow = min(d, float(np.linalg.norm(desc - self.recent)))
                ok = d_follow <= self.opt.accept_distance
                if ok:
                    self._note("followed_max", d_follow, True)
            else:
                ok = d <= self.opt.accept_distance
            if ok:
                best = best if best is not None and best[2] <= d else (box, lm, d, desc, still)
                if still:
                    break  # the followed face is there: no need to look at the others
            else:
                rejected.append((box, d, self.index))
                self.stats["rejected_detections"] += 1
                self._note("rejected_min", d, False)
        self._rejected = rejected
        if best is None:
            return None
        box, lm, d, desc, still = best
        self.recent = desc
        self._note_size(box, gray.shape)
        if not still:
            self._note("accepted_max", d, True)
        self._learn_box(box, lm)
        self.fresh = True
        return lm

    def _note_size(self, box: np.ndarray, shape) -> None:
        f = min(1.0, self.opt.detect_max_side / max(shape))
        if (box[2] - box[0]) * f < 100:
            self.small_target = True

    @staticmethod
    def _detect_pick(cands, near):
        if near is None:
            return max(cands, key=lambda c: c[2])[:2]
        c = 0.5 * (near[:2] + near[2:])
        return min(cands, key=lambda k: np.linalg.norm(0.5 * (k[0][:2] + k[0][2:]) - c))[:2]

    def _choose(self, frame: np.ndarray, gray: np.ndarray, cands) -> np.ndarray | None:
        """Choose the target among this frame's detections (the first frame with faces)."""
        opt = self.opt
        h, w = gray.shape
        n = len(cands)
        self.frames_with_faces += 1
        if opt.face_index is not None:
            order = sorted(range(n), key=lambda k: cands[k][0][0] + cands[k][0][2])
            if opt.face_index >= n:
                raise EvpError(f"{self.source}: the first frame with faces (frame {self.index}) shows {n} "
                               f"face{'s' if n != 1 else ''}; --face must be 0..{n - 1} (numbered left to right) "
                               "or a box x0,y0,x1,y1")
            k = order[opt.face_index]
            how = f"--face {opt.face_index}: face {opt.face_index} of {n}, numbered left to right"
        elif opt.face_box is not None:
            ub = np.asarray(opt.face_box, np.float64)
            if _intersection(ub, np.array([0.0, 0.0, w, h])) <= 0:
                raise EvpError(f"{self.source}: the --face box {_fmt_box(ub)} lies outside the {w}x{h} picture")
            cover = [_intersection(c[0], ub) / max(_area(c[0]), 1e-9) for c in cands]
            k = int(np.argmax(cover))
            if cover[k] < 0.5:
                return None  # no face in the box yet: wait for one
            how = f"--face {_fmt_box(ub)}: the face most inside that box"
        else:
            centre = np.array([w / 2.0, h / 2.0])
            half_diag = 0.5 * np.hypot(w, h)

            def score(c):
                off = np.linalg.norm(0.5 * (c[0][:2] + c[0][2:]) - centre) / half_diag
                return _area(c[0]) * max(0.05, 1.0 - off)
            k = int(np.argmax([score(c) for c in cands]))
            how = "largest and most central face (area x centrality)"
        box, lm, _s = cands[k]
        desc = face_descriptor(frame, lm)
        self.stats["descriptors"] += 1
        self.refs = [desc]
        self.recent = desc
        # how far the other people in the frame are from the chosen one (the margin the thresholds
        # have); the five largest, a crowd would cost ~0.1 s a face
        others = []
        rest = sorted((j for j in range(n) if j != k), key=lambda j: -_area(cands[j][0]))[:5]
        for j, (_b, olm, _) in enumerate(cands):
            if j in rest:
                others.append(round(float(np.linalg.norm(face_descriptor(frame, olm) - desc)), 3))
                self.stats["descriptors"] += 1
        self._note_size(box, gray.shape)
        self.target = {"chosen_by": how, "frame": self.index, "box": [round(float(v), 1) for v in _bbox(lm)],
                       "faces_in_frame": n, "other_face_distances": others}
        if self.discarded_choice:
            self.target["not_chosen_in"] = (f"{self.discarded_choice}: too short to be the clip's subject, "
                                            "taken for a leftover of the previous shot (its frames are absent)")
        self._learn_box(box, lm)
        self.fresh = True
        return lm


def _fmt_box(b) -> str:
    return ",".join(f"{float(v):g}" for v in b)


def _ranges(mask: np.ndarray) -> list[list[int]]:
    """[[start, stop), ...] runs of True in a (T,) bool array."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def _shots_info(valid: np.ndarray, cuts: list[int]) -> list[dict]:
    out = []
    for a, b in shot_bounds(cuts, len(valid)):
        out.append({"start": int(a), "stop": int(b), "face_frames": int(valid[a:b].sum()),
                    "absent": [[a + r0, a + r1] for r0, r1 in _ranges(~valid[a:b])]})
    return out


def describe_absence(shots: list[dict], limit: int = 6) -> str:
    """Words for the shots that lack the chosen face: 'shot 2 (frames 80-114): all 35 frames; ...'."""
    parts = []
    for k, s in enumerate(shots):
        n = s["stop"] - s["start"]
        miss = n - s["face_frames"]
        if miss:
            parts.append(f"shot {k + 1} (frames {s['start']}-{s['stop'] - 1}): "
                         + (f"all {n} frames" if miss == n else f"{miss} of {n} frames"))
    if len(parts) > limit:
        parts = parts[:limit] + [f"and {len(parts) - limit} more shots"]
    return "; ".join(parts)


def track_frames(frames, fps: float = DEFAULT_FPS, options: TrackerOptions | None = None,
                 progress: Callable[[int], None] | None = None, source: str = "video") -> TrackingResult:
    """Track the chosen face's 68 landmarks through an iterable of frames.

    Args:
        frames: (H, W, 3) BGR (or (H, W) grey) uint8 frames at ``fps``, in order; consumed once.
        fps: frames per second (the One-Euro filter's time step).
        options: :class:`TrackerOptions` (which face, thresholds, smoothing).
        progress: called with the number of frames done.
        source: name used in error messages.
    Raises:
        :class:`EvpError` when no frame has a face, when ``face_index`` is out of range on the
        first frame with faces, when no face ever lies in ``face_box``, or when the chosen face is
        absent from more than ``max_missing`` of the frames (the message names the shots).
    """
    opt = options or TrackerOptions()
    opt.validate()
    tracker = TargetTracker(opt, source)
    cutter = CutDetector(opt.cut_options) if opt.cuts else None
    lms, valid, jumps, cuts, suspected = [], [], [], [], []
    size = None
    for i, frame in enumerate(frames):
        if frame.ndim not in (2, 3):
            raise EvpError(f"{source}: frame {i} has shape {frame.shape}; expected (H, W) or (H, W, 3) uint8")
        if size is None:
            size = (int(frame.shape[1]), int(frame.shape[0]))
        if cutter is not None and cutter.step(frame):
            start = cuts[-1] if cuts else 0
            cuts.append(i)
            tracker.new_shot()
            if tracker.target is not None and tracker.target["frame"] >= start and i - start < STUB_SHOT_FRAMES:
                # the face was chosen in a shot of a few frames at the clip's start: a leftover of
                # the previous shot (a clip cut a frame late), whose face may be someone else's.
                # Choose again in this shot; the stub's frames are absent.
                tracker.forget_choice(f"frames {start}-{i - 1}, a shot of {i - start} frame(s)")
                valid[start:i] = [False] * (i - start)
        elif cutter is not None and cutter.suspect:
            # perhaps a cut (a jump cut within the same set): search the face anew, strictly,
            # as after a cut, rather than follow it into what may be another shot
            suspected.append(i)
            tracker.new_shot()
        prev = tracker.prev
        lm = tracker.step(frame)
        if lm is not None and prev is not None and tracker.fresh:
            # a re-detection that lands elsewhere (after a lost follow): do not smooth across it
            if np.linalg.norm(lm.mean(0) - prev.mean(0)) > 0.25 * np.ptp(prev[:, 0]):
                jumps.append(i)
        valid.append(lm is not None)
        lms.append(lm if lm is not None else np.zeros((68, 2)))
        if progress is not None:
            progress(i + 1)
    if not lms:
        raise EvpError(f"{source}: no frames to track")
    valid_a = np.array(valid, bool)
    n = len(valid_a)
    if tracker.target is None:
        if opt.face_box is not None and tracker.frames_with_faces:
            raise EvpError(f"{source}: no face lies inside the --face box {_fmt_box(opt.face_box)} in any of its "
                           f"{n} frames (faces show elsewhere in {tracker.frames_with_faces}); give a box "
                           "around the face as it appears in the video (x0,y0,x1,y1 px)")
        raise EvpError(f"{source}: no face found in any of its {n} frames; give footage that shows a face "
                       "(frontal to three-quarter view, at least ~80 px wide)")
    shots = _shots_info(valid_a, cuts)
    missing = int((~valid_a).sum())
    if missing > opt.max_missing * n:
        raise EvpError(f"{source}: no face in {missing} of {n} frames (more than {opt.max_missing:.0%}): the "
                       f"chosen face is absent from {describe_absence(shots)}; trim the clip to the shots "
                       "with the face, choose another face with --face, or raise --max-missing")
    lm = np.stack(lms)
    if opt.smooth:
        sizes = np.array([np.ptp(l[:, 0]) for l in lm])
        for a0, b0 in _ranges(valid_a):
            # valid runs never span a cut (the tracker restarts there), but a re-detection may
            bounds = [a0] + [c for c in sorted(set(jumps) | set(cuts) | set(suspected)) if a0 < c < b0] + [b0]
            for a, b in zip(bounds[:-1], bounds[1:]):
                lm[a:b] = one_euro(lm[a:b], fps, opt.min_cutoff, opt.beta, scale=sizes[a:b], zero_phase=opt.zero_phase)
    lm = interpolate_missing(lm, valid_a, cuts=cuts)
    st = tracker.stats
    info = {"frames": n, "frames_without_face": missing, "missing_ranges": _ranges(~valid_a),
            "cuts": [int(c) for c in cuts], "suspected_cuts": suspected, "shots": shots, "target": tracker.target,
            "identity": {"on": bool(opt.identity), "accept_distance": opt.accept_distance,
                         "follow_distance": opt.follow_distance, "references": len(tracker.refs), **st},
            "detector_runs": tracker.n_detect, "redetections": tracker.n_redetect, "jumps": jumps,
            "tracker": "dlib-hog+shape_predictor_68+face_recognition_resnet",
            "smoothing": "one-euro" if opt.smooth else "none", "flags": dict(FLAGS)}
    return TrackingResult(lm.astype(np.float32), valid_a, size, info)


def track_video(path: str | Path, fps: float = DEFAULT_FPS, options: TrackerOptions | None = None,
                progress: Callable[[int], None] | None = None) -> TrackingResult:
    """Decode ``path`` at ``fps`` (BGR, see :mod:`.video`) and track it (see :func:`track_frames`)."""
    from .video import iter_frames

    (options or TrackerOptions()).validate()  # bad settings fail before decoding
    return track_frames(iter_frames(path, fps, fmt="bgr24"), fps, options, progress, source=str(path))
