"""Shot-cut detection on decoded frames: one streaming pass, constant memory.

Per frame (any rate; the project decodes at 25 fps) the frame is reduced to a small thumbnail
(long side ``thumb_side`` px) and compared with the previous frame's in two ways:

* **structure**: the thumbnails in grey, each normalised to zero mean and unit variance (so a
  change of brightness or contrast, a light switched on, is no change), their mean absolute
  difference at the best of the small shifts up to ``max_shift`` thumbnail px (so a pan or a
  moving head, which shifts the picture, is no change either), divided by 2/sqrt(pi) = 1.128
  (the value for two unrelated pictures). About 0.0-0.3 inside a shot, 0.6-1.0 across a cut.
* **colour**: the Bhattacharyya distance (0..1) between the frames' hue x saturation histograms
  (neither moves when the light gets brighter or dimmer). Small inside a shot; a cut to
  another place, another character or another framing changes the colours' proportions.

A frame starts a new shot when the sum of the two distances is at least ``threshold`` and at
least ``ratio`` times the median of the sums of the last ``window`` frames of the current shot
(adaptive: continuous fast motion raises that median, so a whip pan or a shaking camera is not
cut into pieces), and the structure alone changed by at least ``min_structure`` (a change of
colours alone, a coloured light, is not a cut). Frame 0 is never a cut: a clip starts with a
shot. Measured (64 px thumbnails): inside shots the sum stays below 0.9 (a pan of 14 % of the
picture per frame starting from rest: 0.88; camera shake 0.53; head turns and blinks 0.1;
brightness -15 %/+10 %: 0.05); across cuts it is 1.2-1.9 (the synthetic film clip's cuts
1.73-1.88 while its shots stay below 0.11; a close-up of the same photograph 1.37; two
synthetic-footage shots of the same layout 1.21). A reframing of one person in one set is the
weak case: 1.5x closer sums 1.00 (a cut), 1.3x closer 0.90 (only suspected, below).

A change that passes the adaptive test with a sum of at least ``suspect`` but below
``threshold`` is a *suspected* cut (``CutDetector.suspect``): a jump cut within the same set
(the same person reframed 70 px sideways: structure 0.65, colour 0.06) looks like the first frame
of a whip pan. It is not reported as a cut; the tracker searches the face anew there.

Limits: dissolves and fades spread the change over many frames and are not found (they are
rare inside the dialogue scenes this is for); a one-frame flash changes brightness only and is
ignored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from ..errors import EvpError

# E|X - Y| for independent standard normal X, Y: the structural distance of unrelated pictures
_UNRELATED = 2.0 / np.sqrt(np.pi)


@dataclass
class CutOptions:
    """Cut detection settings.

    thumb_side: px, long side of the thumbnail the frames are compared on.
    max_shift: thumbnail px; the structural distance is the best over shifts up to this (a pan of
        up to ``max_shift / thumb_side`` of the picture's width per frame costs nothing).
    threshold: minimum of structure + colour distance (0..2) of a cut. Grey frames have no
        colour distance: their structural distance alone is compared with ``threshold / 2 + 0.2``.
    ratio: a cut's distance is at least this many times the median of the shot's recent ones.
    window: frames of past distances (of the current shot) in the local median.
    min_structure: minimum structural distance (0..1) of a cut.
    suspect: minimum sum of a suspected cut (below ``threshold``).
    """

    thumb_side: int = 64
    max_shift: int = 3
    threshold: float = 1.0
    ratio: float = 3.0
    window: int = 12
    min_structure: float = 0.3
    suspect: float = 0.6

    def validate(self) -> None:
        if self.thumb_side < 16 or self.max_shift < 0 or self.max_shift * 4 > self.thumb_side:
            raise EvpError("cut detection: thumb_side must be >= 16 and max_shift in [0, thumb_side / 4]")
        if not 0 < self.threshold <= 2 or self.ratio < 1 or self.window < 1 or not 0 <= self.min_structure <= 1:
            raise EvpError("cut detection: need 0 < threshold <= 2, ratio >= 1, window >= 1, 0 <= min_structure <= 1")
        if not 0 < self.suspect <= self.threshold:
            raise EvpError("cut detection: need 0 < suspect <= threshold")


def _thumbnail(frame: np.ndarray, side: int) -> np.ndarray:
    """(h, w) or (h, w, 3) uint8 thumbnail with long side ``side`` (cheap for 4K frames)."""
    h, w = frame.shape[:2]
    # stride first (a 4K frame's INTER_AREA is slow), then an area average to the thumbnail
    step = max(1, int(max(h, w) // (4 * side)))
    if step > 1:
        frame = frame[::step, ::step]
        h, w = frame.shape[:2]
    f = side / max(h, w)
    size = (max(8, int(round(w * f))), max(8, int(round(h * f))))
    return cv2.resize(np.ascontiguousarray(frame), size, interpolation=cv2.INTER_AREA)


def _normalised_grey(thumb: np.ndarray) -> np.ndarray:
    g = thumb if thumb.ndim == 2 else cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY)
    g = g.astype(np.float32)
    return (g - g.mean()) / max(float(g.std()), 2.0)  # a flat picture stays flat, not noise blown up


def _colour_hist(thumb: np.ndarray) -> np.ndarray | None:
    if thumb.ndim == 2:
        return None
    hsv = cv2.cvtColor(thumb, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [18, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, None, 1.0, 0.0, cv2.NORM_L1)


def structure_distance(a: np.ndarray, b: np.ndarray, max_shift: int) -> float:
    """Best-shift mean |a - b| of two normalised (h, w) thumbnails, / 1.128 (0 same, ~1 unrelated)."""
    if a.shape != b.shape:
        return 1.0
    s = max_shift
    h, w = a.shape
    core = a[s:h - s, s:w - s]
    best = np.inf
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            d = float(np.abs(core - b[s + dy:h - s + dy, s + dx:w - s + dx]).mean())
            best = min(best, d)
    return best / _UNRELATED


class CutDetector:
    """Streaming shot-cut detector: call :meth:`step` once per frame, in order.

    Keeps the previous thumbnail and the last ``window`` distances: constant memory for any
    length. ``distances`` and ``colour_distances`` of the last step are kept for diagnostics.
    """

    def __init__(self, options: CutOptions | None = None):
        self.opt = options or CutOptions()
        self.opt.validate()
        self._prev: tuple[np.ndarray, np.ndarray | None] | None = None
        self._recent: deque[float] = deque(maxlen=self.opt.window)
        self.index = -1
        self.cuts: list[int] = []
        self.last_distance = 0.0
        self.last_colour = 0.0
        self.suspect = False  # the last frame changed suddenly, but not enough to call a cut

    def step(self, frame: np.ndarray) -> bool:
        """True when ``frame`` ((H, W) grey or (H, W, 3) BGR uint8) starts a new shot (never frame 0)."""
        if frame.ndim not in (2, 3):
            raise EvpError(f"cut detection needs (H, W) or (H, W, 3) frames, got shape {frame.shape}")
        self.index += 1
        self.suspect = False
        thumb = _thumbnail(frame, self.opt.thumb_side)
        cur = (_normalised_grey(thumb), _colour_hist(thumb))
        prev, self._prev = self._prev, cur
        if prev is None:
            return False
        opt = self.opt
        d = structure_distance(cur[0], prev[0], opt.max_shift)
        if cur[1] is not None and prev[1] is not None:
            c = float(cv2.compareHist(cur[1], prev[1], cv2.HISTCMP_BHATTACHARYYA))
            total, threshold = d + c, opt.threshold
        else:  # grey footage: structure only, on a comparable scale
            c, total, threshold = 0.0, d, 0.5 * opt.threshold + 0.2
        self.last_distance, self.last_colour = d, c
        med = float(np.median(self._recent)) if self._recent else 0.0
        sudden = total >= opt.ratio * med and d >= opt.min_structure
        cut = sudden and total >= threshold
        self.suspect = sudden and not cut and total >= threshold * opt.suspect / opt.threshold
        if cut:
            self.cuts.append(self.index)
            self._recent.clear()  # the new shot's motion is measured afresh
        else:
            self._recent.append(total)
        return cut


def detect_cuts(frames: Iterable[np.ndarray], options: CutOptions | None = None) -> list[int]:
    """Indices of the frames that start a new shot (never 0), in one streaming pass.

    Args:
        frames: iterable of (H, W) grey or (H, W, 3) BGR uint8 frames, in order (any frame rate;
            a generator is consumed once and never held in memory).
    Returns:
        sorted frame indices where a new shot starts.
    """
    det = CutDetector(options)
    for f in frames:
        det.step(f)
    return list(det.cuts)


def shot_bounds(cuts: Iterable[int], n_frames: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] half-open frame ranges of the shots of an ``n_frames`` clip."""
    edges = [0] + sorted(c for c in set(cuts) if 0 < c < n_frames) + [n_frames]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:])]
