"""68-point iBUG landmark tracking of target footage with dlib.

Per frame (25 fps, from :mod:`.video`):

1. **Follow.** With a face in the previous frame, its landmarks predict this frame's face box
   (the box the detector would draw, learnt from the last detection), and only dlib's 68-point
   shape predictor runs (about a millisecond), whatever the resolution.
2. **Check.** The new shape must agree with the previous one up to a similarity transform
   (normalised residual), keep its size, and stay inside the picture. Every ``verify_every``
   frames the HOG detector also looks for a face in a small window around the tracked box.
3. **Re-detect.** When a check fails (or there is no face yet) the HOG frontal detector runs on
   the whole frame, downscaled so its long side is at most ``detect_max_side`` px (4K frames are
   detected on a small copy; landmarks are always predicted and stored at full resolution).

Frames where no face is found are marked, interpolated from their neighbours and counted. The
valid landmarks are smoothed in time with a zero-phase One-Euro filter (see :mod:`.smoothing`),
never across a gap or a re-detection that jumped elsewhere (``info["jumps"]``). With several
detections the most confident wins (HOG also fires, weakly, on round badges and posters).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS
from .smoothing import interpolate_missing, one_euro

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


def predictor_path() -> Path:
    """Path of dlib's 68-point shape predictor inside the ``face_recognition_models`` package.

    Located with importlib (importing that package needs the removed ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EvpError("face-recognition-models is not installed: run `pip install face-recognition-models==0.3.0`")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / PREDICTOR_FILE
        if p.is_file():
            return p
    raise EvpError(f"{PREDICTOR_FILE} not found in face_recognition_models: reinstall face-recognition-models")


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
    max_missing: fraction of frames allowed without a face before tracking fails.
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


@dataclass
class TrackingResult:
    """Output of :func:`track_frames`.

    landmarks: (T, 68, 2) float32 px in the full-resolution frame (missing frames interpolated).
    valid: (T,) bool, True where a face was found in that frame.
    image_size: (width, height) px.
    info: counts for the Track's info (frames, missing frames and their ranges, detector runs).
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


class FaceTracker:
    """Frame-by-frame dlib landmark tracker; feed (H, W) uint8 grey frames to :meth:`step`."""

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

    def _detect(self, gray: np.ndarray, near: np.ndarray | None = None) -> np.ndarray | None:
        """Full-frame HOG detection on a downscaled copy -> box (x0, y0, x1, y1) px or None."""
        h, w = gray.shape
        f = min(1.0, self.opt.detect_max_side / max(h, w))
        small = cv2.resize(gray, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA) if f < 1 else gray
        self.n_detect += 1
        rects, scores, _ = self.detector.run(small, 0, 0.0)
        if len(rects) == 0 and max(small.shape) <= 800:
            rects, scores, _ = self.detector.run(small, 1, 0.0)  # small faces: one pyramid level up
        if len(rects) == 0:
            return None
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64) / f
        scores = np.asarray(scores, np.float64)
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

    def _from_detection(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        lm = self._predict(gray, box)
        # learn where the detector puts its box relative to the landmarks, for following
        b = _bbox(lm)
        w, h = max(b[2] - b[0], 1.0), max(b[3] - b[1], 1.0)
        self.box_rel = 0.7 * self.box_rel + 0.3 * ((box - b) / np.array([w, h, w, h]))
        return lm

    def step(self, gray: np.ndarray) -> np.ndarray | None:
        """Landmarks (68, 2) float64 px of the face in ``gray`` (H, W) uint8, or None if none."""
        gray = np.ascontiguousarray(gray)
        lm = None
        self.fresh = False
        if self.prev is not None:
            box = self._box_from_landmarks(self.prev)
            cand = self._predict(gray, box)
            size_ratio = np.ptp(cand[:, 0]) / max(np.ptp(self.prev[:, 0]), 1e-6)
            ok = (_similarity_residual(self.prev, cand) <= self.opt.max_residual
                  and 0.75 <= size_ratio <= 1.33 and self._inside(cand, gray.shape))
            self.since_verify += 1
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


def _ranges(mask: np.ndarray) -> list[list[int]]:
    """[[start, stop), ...] runs of True in a (T,) bool array."""
    out, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append([start, i])
            start = None
    if start is not None:
        out.append([start, len(mask)])
    return out


def track_frames(frames, fps: float = DEFAULT_FPS, options: TrackerOptions | None = None,
                 progress: Callable[[int], None] | None = None, source: str = "video") -> TrackingResult:
    """Track 68 landmarks through an iterable of frames ((H, W) grey or (H, W, 3) BGR uint8).

    Raises :class:`EvpError` when no frame has a face, or when more than ``max_missing`` of the
    frames have none (the face left the picture for most of the clip).
    """
    opt = options or TrackerOptions()
    tracker = FaceTracker(opt)
    lms, valid, cuts = [], [], []
    size = None
    for i, frame in enumerate(frames):
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if size is None:
            size = (int(gray.shape[1]), int(gray.shape[0]))
        prev = tracker.prev
        lm = tracker.step(gray)
        if lm is not None and prev is not None and tracker.fresh:
            # a re-detection that lands elsewhere (another face, or the right one after a wrong
            # lock): do not smooth across it
            if np.linalg.norm(lm.mean(0) - prev.mean(0)) > 0.25 * np.ptp(prev[:, 0]):
                cuts.append(i)
        valid.append(lm is not None)
        lms.append(lm if lm is not None else np.zeros((68, 2)))
        if progress is not None:
            progress(i + 1)
    if not lms:
        raise EvpError(f"{source}: no frames to track")
    valid_a = np.array(valid, bool)
    n = len(valid_a)
    if not valid_a.any():
        raise EvpError(f"{source}: no face found in any of its {n} frames; give footage that shows a face "
                       "(frontal to three-quarter view, at least ~80 px wide)")
    missing = int((~valid_a).sum())
    if missing > opt.max_missing * n:
        raise EvpError(f"{source}: no face in {missing} of {n} frames (more than {opt.max_missing:.0%}); "
                       "the face leaves the picture or is too small/turned away; trim the clip")
    lm = np.stack(lms)
    if opt.smooth:
        sizes = np.array([np.ptp(l[:, 0]) for l in lm])
        for a0, b0 in _ranges(valid_a):
            bounds = [a0] + [c for c in cuts if a0 < c < b0] + [b0]
            for a, b in zip(bounds[:-1], bounds[1:]):
                lm[a:b] = one_euro(lm[a:b], fps, opt.min_cutoff, opt.beta, scale=sizes[a:b], zero_phase=opt.zero_phase)
    lm = interpolate_missing(lm, valid_a)
    info = {"frames": n, "frames_without_face": missing, "missing_ranges": _ranges(~valid_a),
            "detector_runs": tracker.n_detect, "redetections": tracker.n_redetect, "jumps": cuts,
            "tracker": "dlib-hog+shape_predictor_68", "smoothing": "one-euro" if opt.smooth else "none"}
    return TrackingResult(lm.astype(np.float32), valid_a, size, info)


def track_video(path: str | Path, fps: float = DEFAULT_FPS, options: TrackerOptions | None = None,
                progress: Callable[[int], None] | None = None) -> TrackingResult:
    """Decode ``path`` at ``fps`` (see :mod:`.video`) and track it (see :func:`track_frames`)."""
    from .video import iter_frames

    return track_frames(iter_frames(path, fps, fmt="gray"), fps, options, progress, source=str(path))
