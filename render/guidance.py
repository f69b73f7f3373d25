"""Guidance maps for the edge-to-video renderer (EVP Sec. 3.3, "Edge-to-Video Translation").

For each output frame the renderer sees a face crop of ``size`` x ``size`` px (256 by default,
512 optional) holding:

* channel 0 — Canny edges of the target frame *outside* the face region. The face region is the
  convex hull of the target's own landmarks and of the aligned landmarks, dilated, so the old
  mouth/jaw edges are gone and nothing of the new face is hidden.
* channels 1..9 — the face sketch of the aligned landmarks: one anti-aliased polyline per iBUG
  part (``evp_anim.face.sketch.IBUG_PARTS`` order: jaw, right brow, left brow, nose bridge,
  lower nose, right eye, left eye, outer lips, inner lips).

All channels are uint8 (0 or 255, anti-aliased lines in between): a map is (size, size, 10).

The crop is a similarity transform (uniform scale + translation, no rotation: rotating with the
head would make the background edges swim) centred on the face, ``crop_margin`` times the face's
size, smoothed over time so it does not jitter with the landmarks. Where the crop reaches past
the frame's edge the crop repeats the border pixels and the edge channel is left empty there. :class:`CropTransforms` gives
the (2, 3) matrices frame->crop and crop->frame, and :func:`paste_back` uses the inverse to put
a rendered face crop back into the full frame with a feathered mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from evp_anim.errors import EvpError
from evp_anim.face.sketch import IBUG_PARTS, draw_sketch
from evp_anim.tracks import DEFAULT_FPS

DEFAULT_SIZE = 256
NUM_CHANNELS = 1 + len(IBUG_PARTS)
EDGE_CHANNEL = 0
# Canny hysteresis thresholds on a lightly blurred grey crop (8-bit intensities)
CANNY_LOW, CANNY_HIGH = 60, 140


@dataclass
class CropTransforms:
    """Per-frame crop transforms.

    centre: (T, 2) px face centre in the frame; side: (T,) px crop side in the frame;
    size: crop side in px (the renderer's resolution).
    """

    centre: np.ndarray
    side: np.ndarray
    size: int

    def matrix(self, i: int) -> np.ndarray:
        """(2, 3) float64 affine taking frame px of frame ``i`` to crop px."""
        a = self.size / float(self.side[i])
        cx, cy = self.centre[i]
        # pixel centres: frame point centre -> crop (size - 1) / 2
        return np.array([[a, 0.0, (self.size - 1) / 2.0 - a * cx], [0.0, a, (self.size - 1) / 2.0 - a * cy]])

    def inverse(self, i: int) -> np.ndarray:
        """(2, 3) float64 affine taking crop px back to frame px of frame ``i``."""
        return cv2.invertAffineTransform(self.matrix(i))

    def to_crop(self, points: np.ndarray, i: int) -> np.ndarray:
        """(..., 2) frame px -> crop px for frame ``i``."""
        m = self.matrix(i)
        p = np.asarray(points, np.float64)
        return p @ m[:, :2].T + m[:, 2]


def crop_transforms(landmarks: np.ndarray, size: int = DEFAULT_SIZE, crop_margin: float = 1.9,
                    fps: float = DEFAULT_FPS, smooth_hz: float = 0.8, cuts=None) -> CropTransforms:
    """Stable face crops from (T, 68, 2) px landmarks (the target footage's own track).

    The face size is the larger side of the landmark bounding box; the crop side is
    ``crop_margin`` times that, centred on the box centre moved up by 10% of the face size (to
    keep some forehead). Centre and side are low-pass filtered (One-Euro, cut-off ``smooth_hz``,
    no speed term), so small landmark jitter does not shake the crop. ``cuts``: frame indices
    where a new shot starts (the track's ``info["cuts"]``): the filter restarts there, so the
    crop jumps with the cut instead of trailing across it.
    """
    from evp_anim.footage.smoothing import one_euro

    if size not in (256, 512) and not 32 <= size <= 2048:
        raise EvpError(f"guidance size must be 256, 512 or another size in [32, 2048], got {size}")
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise EvpError(f"landmarks must have shape (T, 68, 2), got {lm.shape}")
    lo, hi = lm.min(1), lm.max(1)
    face = (hi - lo).max(1)
    centre = 0.5 * (lo + hi) - np.stack([np.zeros_like(face), 0.10 * face], 1)
    side = crop_margin * face
    bounds = [0] + sorted({int(c) for c in (cuts or []) if 0 < int(c) < len(lm)}) + [len(lm)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a > 1:
            centre[a:b] = one_euro(centre[a:b], fps, min_cutoff=smooth_hz, beta=0.0)
            side[a:b] = one_euro(side[a:b], fps, min_cutoff=smooth_hz, beta=0.0)
    return CropTransforms(centre, side, int(size))


def footage_crops(target_landmarks: np.ndarray, indices: np.ndarray, size: int = DEFAULT_SIZE,
                  crop_margin: float = 1.9, fps: float = DEFAULT_FPS, cuts=None) -> CropTransforms:
    """Crops for output frames that show footage frames ``indices`` (T,): the footage's own smoothed
    crops (:func:`crop_transforms` over its (M, 68, 2) landmarks in footage order), picked per
    output frame. A looped or ping-ponged clip thus gets exactly the crops training saw, and the
    crop jumps with the footage at a loop seam (or a shot cut, ``cuts``) instead of lagging behind it."""
    full = crop_transforms(target_landmarks, size, crop_margin, fps=fps, cuts=cuts)
    idx = np.asarray(indices, np.int64)
    return CropTransforms(full.centre[idx], full.side[idx], full.size)


def face_mask(points: np.ndarray, size: int, dilate_px: int | None = None) -> np.ndarray:
    """(size, size) uint8 mask (255 inside) of the convex hull of (N, 2) crop-px points, dilated."""
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(points, np.float64) * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_8, 4)
    d = max(1, size // 32) if dilate_px is None else int(dilate_px)
    if d > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1)))
    return mask


def guidance_map(frame_bgr: np.ndarray, aligned_landmarks: np.ndarray, target_landmarks: np.ndarray,
                 crops: CropTransforms, i: int, thickness: int | None = None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One guidance map and the matching crop of the frame.

    Args:
        frame_bgr: (H, W, 3) uint8 target frame.
        aligned_landmarks: (68, 2) px in the frame, the new face (from alignment).
        target_landmarks: (68, 2) px in the frame, the footage's own face (its region is erased).
        crops: from :func:`crop_transforms`; ``i`` the frame's index in it.
        thickness: sketch line width in crop px (default 1 at 256, 2 at 512).
    Returns:
        guidance (size, size, 10) uint8 (channel 0 edges, 1..9 sketch parts) and
        crop (size, size, 3) uint8 BGR of the frame (the renderer's target image in training).
    """
    crop = crop_frame(frame_bgr, crops, i)
    out = guidance_from_crop(crop, crops.to_crop(aligned_landmarks, i), crops.to_crop(target_landmarks, i),
                             thickness, inside=frame_coverage(frame_bgr.shape, crops, i))
    return out, crop


def frame_coverage(frame_shape, crops: CropTransforms, i: int) -> np.ndarray:
    """(size, size) bool: crop pixels that lie inside the frame (the rest is replicated border)."""
    h, w = frame_shape[:2]
    m = crops.matrix(i)
    ones = np.full((h, w), 255, np.uint8)
    return cv2.warpAffine(ones, m, (crops.size, crops.size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0


def crop_frame(frame_bgr: np.ndarray, crops: CropTransforms, i: int) -> np.ndarray:
    """(size, size, 3) uint8 face crop of an (H, W, 3) frame with crop transform ``i``."""
    m = crops.matrix(i)
    return cv2.warpAffine(frame_bgr, m, (crops.size, crops.size),
                          flags=cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def guidance_from_crop(crop: np.ndarray, aligned_crop: np.ndarray, target_crop: np.ndarray,
                       thickness: int | None = None, inside: np.ndarray | None = None) -> np.ndarray:
    """Guidance map from a face crop and both landmark sets already in crop px ((68, 2) each).

    ``inside`` (size, size) bool marks crop pixels inside the frame: edges elsewhere (streaks of
    the replicated border when the face nears the frame's edge) are dropped.
    Returns (size, size, 10) uint8: channel 0 Canny edges outside the face, 1..9 sketch parts.
    """
    size = crop.shape[0]
    gray = cv2.GaussianBlur(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (3, 3), 0)
    edges = cv2.Canny(gray, CANNY_LOW, CANNY_HIGH)
    edges[face_mask(np.concatenate([aligned_crop, target_crop]), size) > 0] = 0
    if inside is not None:
        # erode by 2 px: the frame's own border is an edge of the crop, not of the scene
        edges[cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0] = 0
    th = thickness if thickness is not None else max(1, size // 256)
    sketch = draw_sketch(aligned_crop, size, th, per_part_channels=True)
    return np.concatenate([edges[..., None], sketch], axis=2)


def guidance_preview(guidance: np.ndarray) -> np.ndarray:
    """(size, size, 3) uint8 BGR picture of a guidance map: grey edges, coloured sketch parts."""
    from evp_anim.face.sketch import PART_COLORS

    img = np.repeat(guidance[..., :1] // 2, 3, axis=2).astype(np.float32)
    for p, color in enumerate(PART_COLORS):
        a = guidance[..., 1 + p:2 + p].astype(np.float32) / 255.0
        img = img * (1 - a) + np.asarray(color, np.float32) * a
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def paste_back(frame_bgr: np.ndarray, face_crop: np.ndarray, crops: CropTransforms, i: int,
               landmarks: np.ndarray, feather_px: int | None = None) -> np.ndarray:
    """Put a rendered (size, size, 3) face crop back into the (H, W, 3) frame.

    Only the face region (hull of ``landmarks`` (68, 2) frame px, dilated) is replaced, with a
    feathered edge; returns a new uint8 frame.
    """
    h, w = frame_bgr.shape[:2]
    size = crops.size
    inv = crops.inverse(i)
    mask = face_mask(crops.to_crop(landmarks, i), size).astype(np.float32) / 255.0
    f = max(1, size // 32) if feather_px is None else int(feather_px)
    mask = cv2.GaussianBlur(mask, (0, 0), f)
    warped = cv2.warpAffine(face_crop, inv, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, inv, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    out = frame_bgr.astype(np.float32) * (1 - alpha) + warped.astype(np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def iter_guidance(aligned, target, video, size: int = DEFAULT_SIZE, crop_margin: float = 1.9):
    """Guidance maps for a whole aligned clip.

    Args:
        aligned: aligned :class:`~evp_anim.tracks.Track` (from ``evp-anim align``); its
            ``info["target_frames"]`` says which footage frame each output frame uses.
        target: the footage's Track (from ``evp-anim track``), same image size.
        video: the footage file.
    Yields:
        (i, guidance (size, size, 10) uint8, crop (size, size, 3) uint8 BGR, crops, target_index)
        for each output frame i at the aligned track's fps; ``crops`` is the clip's
        :class:`CropTransforms` (indexed by output frame), for :func:`paste_back`.
    """
    from evp_anim.footage.video import iter_footage

    if tuple(aligned.image_size) != tuple(target.image_size):
        raise EvpError(f"aligned track is for {aligned.image_size} images but the target track for "
                       f"{target.image_size}: align against this footage's track")
    idx = np.asarray(aligned.info.get("target_frames", np.arange(aligned.n_frames)), np.int64)
    if idx.max() >= target.n_frames:
        raise EvpError(f"aligned track uses footage frame {int(idx.max())} but the target track has {target.n_frames}")
    crops = footage_crops(target.landmarks_2d, idx, size, crop_margin, fps=target.fps, cuts=target.info.get("cuts"))
    # frames are streamed (looped / ping-ponged clips revisit footage frames: see FrameSource)
    for i, j, frame in iter_footage(video, target.fps, idx, target.image_size):
        crop = crop_frame(frame, crops, i)
        inside = frame_coverage(frame.shape, crops, i)
        g = guidance_from_crop(crop, crops.to_crop(aligned.landmarks_2d[i], i),
                               crops.to_crop(target.landmarks_2d[j], i), inside=None if inside.all() else inside)
        yield i, g, crop, crops, j
