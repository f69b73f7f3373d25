"""The no-training dubbing path: the actor's own mouth, chosen from the footage and warped.

No network and no training: every output frame's lower face is built from the target's own
footage, so skin, lips, teeth and mouth interior are the actor's (the EVP paper's GAN renderer,
:mod:`render.inference`, needs a per-target training that a laptop cannot give).

For each output frame ``i`` (25 fps, the aligned track's rate) showing footage frame ``j``:

1. **Choose.** A footage frame ``s`` whose mouth best matches the wanted landmarks: features are
   the 20 lip points and the lower jaw in a pose-free frame (a similarity fitted on the eye
   corners and the nose, which speech does not move), plus the head's yaw and pitch (a turned
   face's texture cannot be warped onto a frontal one). The choice is smoothed in time by a
   Viterbi pass over the ``candidates`` best frames per output frame: staying on the footage's
   own next frame is free, any other jump costs ``switch_cost`` (in feature units), so the
   teeth and the lighting inside the mouth do not flicker from frame to frame.
2. **Warp.** The lower face of ``s`` (jaw 3..15, under the nose, with two rings of points around
   it that carry the surroundings along) is warped onto the wanted landmarks by a piecewise
   affine map over a fixed triangulation (one affine per triangle, all pixels in one
   ``cv2.remap``).
3. **Blend.** Its mean colour is matched to frame ``j`` on a band of skin just inside the
   region's edge, and it is blended in with a feathered mask (:func:`blend_outline`: inside the
   face's own silhouette at the cheeks, past the lower of the two chins; edge softened over ~4%
   of the face width).

Frames where the target's face is absent (``target.info["missing_ranges"]``, e.g. another
shot) are written untouched. A still-photo target (no footage of the mouth moving: the lip gap
varies by less than 2% of the face width) falls back to warping the photo itself with a
synthesised mouth interior (dark cavity, a band of upper teeth in the colour of the photo's own
teeth when it shows them), and says so in ``WarpDubber.mode``.

The library keeps each footage frame's region as a JPEG (quality 95) in memory: at most
``max_library`` frames and ``max_pixels`` pixels of regions (spread evenly over the footage), so
memory stays bounded for any length or resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from evp_anim.errors import EvpError

# iBUG-68 (0-based): the warped region's outline, jaw 2..14 then under the nose 35..31
REGION_OUTLINE = list(range(2, 15)) + [35, 34, 33, 32, 31]
LIPS = list(range(48, 68))
# points speech does not move: eye corners, nose bridge and base
STABLE = [27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45]
# rings around the region (scale about its centre): the inner one is where the blend ends, the
# outer one pins the warp to the surroundings
RING_SCALES = (1.25, 1.55)
GAP_WEIGHT = 1.0       # cost per face width of lip-gap difference (choose_frames)
SEALED_GAP = 0.02      # lip gap / face width under which lips are painted shut (seal_lips)
STILL_OPENING = 0.02   # lip-gap range (5-95%, / face width) below which the mouth never moves


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity taking (N, 2) ``src`` onto ``dst`` (complex-number fit)."""
    cs, cd = src.mean(0), dst.mean(0)
    zs = (src[:, 0] - cs[0]) + 1j * (src[:, 1] - cs[1])
    zd = (dst[:, 0] - cd[0]) + 1j * (dst[:, 1] - cd[1])
    z = (np.conj(zs) @ zd) / max(float((np.abs(zs) ** 2).sum()), 1e-12)
    a, b = z.real, z.imag
    return np.array([[a, -b, cd[0] - (a * cs[0] - b * cs[1])], [b, a, cd[1] - (b * cs[0] + a * cs[1])]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def face_width(lm: np.ndarray) -> np.ndarray:
    """(...,) px jaw width (iBUG 1..17 span) of (..., 68, 2) landmarks."""
    return np.linalg.norm(lm[..., 16, :] - lm[..., 0, :], axis=-1)


def lip_gap(lm: np.ndarray) -> np.ndarray:
    """(...,) inner-lip gap (mean of iBUG 62-68, 63-67, 64-66) / face width."""
    gap = np.linalg.norm(lm[..., [61, 62, 63], :] - lm[..., [67, 66, 65], :], axis=-1).mean(-1)
    return gap / np.maximum(face_width(lm), 1e-6)


def control_points(lm: np.ndarray) -> np.ndarray:
    """(58, 2) warp control points of (68, 2) landmarks: outline (18), lips (20), two rings (2 x 18)."""
    outline = lm[REGION_OUTLINE]
    c = outline.mean(0)
    rings = [c + s * (outline - c) for s in RING_SCALES]
    return np.concatenate([outline, lm[LIPS]] + rings)


def _triangulation(reference: np.ndarray) -> np.ndarray:
    """(K, 3) triangles over :func:`control_points` of a reference face with the mouth open (so
    that the inner lips are never collinear and the triangles stay the same for every shape)."""
    from scipy.spatial import Delaunay

    ref = np.asarray(reference, np.float64).copy()
    w = float(face_width(ref))
    ref[[65, 66, 67]] += [0.0, 0.08 * w]      # open the inner lips
    ref[[55, 56, 57, 58, 59]] += [0.0, 0.08 * w]
    pts = control_points(ref)
    tri = Delaunay(pts).simplices
    # keep only triangles inside the outer ring (Delaunay fills the convex hull; the outer ring
    # is convex enough that nothing is lost) and drop slivers
    a = pts[tri]
    area = 0.5 * np.abs((a[:, 1, 0] - a[:, 0, 0]) * (a[:, 2, 1] - a[:, 0, 1])
                        - (a[:, 2, 0] - a[:, 0, 0]) * (a[:, 1, 1] - a[:, 0, 1]))
    return tri[area > 1e-6 * w * w].astype(np.int32)


def piecewise_affine_maps(dst_pts: np.ndarray, src_pts: np.ndarray, triangles: np.ndarray,
                          box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel source coordinates for the destination pixels of ``box`` (x0, y0, x1, y1).

    Each triangle of ``dst_pts`` (N, 2) maps affinely onto the same triangle of ``src_pts``.
    Returns map_x, map_y (h, w) float32 source px and inside (h, w) bool (pixel covered by a
    triangle). Pixels outside every triangle map to themselves.
    """
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    ids = np.zeros((h, w), np.int32)
    d = dst_pts - np.array([x0, y0], np.float64)
    for k, t in enumerate(triangles):
        cv2.fillConvexPoly(ids, np.round(d[t] * 16).astype(np.int32), k + 1, cv2.LINE_8, 4)
    # affine per triangle: [sx, sy] = A @ [dx, dy, 1]
    dt = np.concatenate([dst_pts[triangles], np.ones((len(triangles), 3, 1))], axis=2)   # (K, 3, 3)
    st = src_pts[triangles]                                                               # (K, 3, 2)
    ok = np.abs(np.linalg.det(dt)) > 1e-9
    a = np.zeros((len(triangles), 3, 2))
    a[ok] = np.linalg.solve(dt[ok], st[ok])
    a[~ok] = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    a = np.concatenate([np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]), a])      # id 0: identity
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    am = a[ids]                                                                     # (h, w, 3, 2)
    mx = xx * am[..., 0, 0] + yy * am[..., 1, 0] + am[..., 2, 0]
    my = xx * am[..., 0, 1] + yy * am[..., 1, 1] + am[..., 2, 1]
    return mx.astype(np.float32), my.astype(np.float32), ids > 0


def _poly_mask(points: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    hull = cv2.convexHull(np.round((points - [x0, y0]) * 16).astype(np.int32))
    cv2.fillConvexPoly(m, hull, 255, cv2.LINE_AA, 4)
    return m


def blend_outline(wanted: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(18, 2) px polygon where the warped lower face replaces the frame's own.

    The cheeks' edge (jaw 3..5 and 13..15) is pulled 8% of the face width inwards, so the face's
    silhouette against the background stays the frame's own (a warped cheek edge would bring
    another frame's background with it); along the chin (jaw 6..12) the polygon reaches the
    lower of the wanted and the frame's own jaw, grown by 6%, so a chin that rises never leaves
    the old one showing beneath it.
    """
    out = _grown(wanted[REGION_OUTLINE], 1.0)
    c = wanted[REGION_OUTLINE].mean(0)
    fw = float(face_width(wanted))
    for k in (0, 1, 2, 10, 11, 12):                 # jaw 2..4, 12..14 (REGION_OUTLINE rows)
        d = c - out[k]
        out[k] += 0.08 * fw * d / max(float(np.linalg.norm(d)), 1e-6)
    for k in range(3, 10):                          # jaw 5..11
        j = REGION_OUTLINE[k]
        lower = own[j] if own[j, 1] > wanted[j, 1] else wanted[j]
        d = lower - c
        out[k] = lower + 0.06 * fw * d / max(float(np.linalg.norm(d)), 1e-6)
    return out


def _grown(outline: np.ndarray, s: float) -> np.ndarray:
    c = outline.mean(0)
    return c + s * (outline - c)


@dataclass
class MouthLibrary:
    """Footage frames to take mouths from.

    frames: (N,) footage frame indices; landmarks: (N, 68, 2) px in those frames; pose: (N, 2)
    yaw, pitch radians; features: (N, F) pose-free mouth shape; patches: JPEG bytes of each frame's
    region box; boxes: (N, 4) int (x0, y0, x1, y1) px of the patches; reference: (68, 2) the
    pose-free mean face (the features' frame); still: the mouth never moves (a photo).
    """

    frames: np.ndarray
    landmarks: np.ndarray
    pose: np.ndarray
    features: np.ndarray
    patches: list[bytes]
    boxes: np.ndarray
    reference: np.ndarray
    still: bool
    image_size: tuple[int, int]

    @staticmethod
    def region_box(lm: np.ndarray, image_size: tuple[int, int], margin: float = 4.0) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) int px around the outer ring of ``lm`` (68, 2), clipped to the image."""
        ring = _grown(lm[REGION_OUTLINE], RING_SCALES[-1])
        w, h = image_size
        x0, y0 = np.floor(ring.min(0) - margin).astype(int)
        x1, y1 = np.ceil(ring.max(0) + margin).astype(int)
        return max(0, x0), max(0, y0), min(w, max(x1, x0 + 2)), min(h, max(y1, y0 + 2))

    @classmethod
    def build(cls, video: str | Path, target, allowed: np.ndarray | None = None, max_library: int = 1500,
              max_pixels: float = 3e8, progress: Callable[[int], None] | None = None) -> "MouthLibrary":
        """Decode ``video`` (the footage of ``target``, a Track from ``evp-anim track``) once and keep
        the region of every allowed frame (default: frames with the face, see ``missing_ranges``).

        At most ``max_library`` frames whose regions hold at most ``max_pixels`` pixels in all
        (kept as JPEG, quality 95: ~1 byte per 10 pixels, so ~30 MB at the default), spread
        evenly over the footage: a 4K close-up keeps fewer frames than a 720p one."""
        from evp_anim.footage.video import iter_frames

        n = target.n_frames
        ok = np.ones(n, bool) if allowed is None else np.asarray(allowed, bool).copy()
        ok &= present_frames(target)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            raise EvpError("the target's face is in none of the footage frames it may take mouths from")
        boxes_all = np.array([cls.region_box(target.landmarks_2d[j], target.image_size) for j in idx])
        area = float(np.mean((boxes_all[:, 2] - boxes_all[:, 0]) * (boxes_all[:, 3] - boxes_all[:, 1])))
        keep = int(min(max_library, max(1, max_pixels // max(area, 1.0))))
        if len(idx) > keep:
            idx = idx[np.unique(np.linspace(0, len(idx) - 1, keep).round().astype(int))]
        lm = target.landmarks_2d[idx].astype(np.float64)
        ref = _pose_free_reference(lm)
        feats = np.stack([mouth_features(l, ref) for l in lm])
        pose = target.pose_rotation[idx][:, [1, 0]].astype(np.float64)
        want = set(idx.tolist())
        patches, boxes = [], []
        j = -1
        for j, frame in enumerate(iter_frames(video, target.fps, "bgr24")):
            if j >= n:
                break
            if j in want:
                b = cls.region_box(target.landmarks_2d[j], target.image_size)
                patches.append(cv2.imencode(".jpg", frame[b[1]:b[3], b[0]:b[2]], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
                boxes.append(b)
            if progress is not None:
                progress(j + 1)
        if len(patches) != len(idx):
            raise EvpError(f"{video} has {j + 1} frames but its track {n}: give the track of this footage")
        gaps = lip_gap(lm)
        still = bool(np.percentile(gaps, 95) - np.percentile(gaps, 5) < STILL_OPENING)
        return cls(idx, lm, pose, feats, patches, np.asarray(boxes, np.int64), ref, still, tuple(target.image_size))

    def patch(self, k: int) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(self.patches[k], np.uint8), cv2.IMREAD_COLOR)


def present_frames(target) -> np.ndarray:
    """(T,) bool: footage frames where the target's face was tracked (not in ``missing_ranges``)."""
    ok = np.ones(target.n_frames, bool)
    for a, b in target.info.get("missing_ranges", []) or []:
        ok[int(a):int(b)] = False
    return ok


def _pose_free_reference(lm: np.ndarray) -> np.ndarray:
    """(68, 2) mean face of (N, 68, 2) shapes after aligning each on its STABLE points (two passes)."""
    ref = lm[0]
    for _ in range(2):
        al = np.stack([_apply(_similarity(l[STABLE], ref[STABLE]), l) for l in lm])
        ref = al.mean(0)
    return ref


def mouth_features(lm: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(F,) mouth shape of (68, 2) ``lm`` in the reference's pose-free frame, in face widths:
    20 lip points and jaw 5..11, relative to the nose base (iBUG 34)."""
    m = _similarity(lm[STABLE], reference[STABLE])
    p = _apply(m, lm)
    w = float(face_width(reference))
    pts = np.concatenate([p[LIPS], p[4:13]]) - p[33]
    return (pts / w).ravel()


def choose_frames(library: MouthLibrary, wanted: np.ndarray, pose: np.ndarray, candidates: int = 24,
                  switch_cost: float = 0.02, pose_weight: float = 0.5) -> np.ndarray:
    """(T,) library rows for (T, 68, 2) wanted landmarks seen at (T, 2) yaw/pitch (radians).

    Frame cost: RMS distance of the mouth features (face widths) + ``pose_weight`` x the pose
    difference (radians) + :data:`GAP_WEIGHT` x the inner-lip gap difference (face widths: the
    gap is 3 of the 29 points, so the RMS alone lets an open mouth stand in for a closed one,
    which the warp then has to squeeze). Transition: free from row r to the next footage frame (or r itself),
    else ``switch_cost``. Viterbi over each frame's ``candidates`` cheapest rows.
    """
    t = len(wanted)
    if t == 0:
        return np.zeros(0, np.int64)
    f = np.stack([mouth_features(w, library.reference) for w in wanted])
    nf = f.shape[1] / 2
    k = min(candidates, len(library.frames))
    gap_w, gap_l = lip_gap(np.asarray(wanted, np.float64)), lip_gap(library.landmarks)
    cost_all = (np.sqrt(((f[:, None, :] - library.features[None]) ** 2).sum(-1) / nf)
                + pose_weight * np.linalg.norm(pose[:, None, :] - library.pose[None], axis=-1)
                + GAP_WEIGHT * np.abs(gap_w[:, None] - gap_l[None]))   # (T, N)
    cand = np.argsort(cost_all, axis=1)[:, :k]
    unary = np.take_along_axis(cost_all, cand, 1)
    frames = library.frames
    acc = unary[0].copy()
    back = np.zeros((t, k), np.int64)
    for i in range(1, t):
        prev_f = frames[cand[i - 1]][:, None]
        cur_f = frames[cand[i]][None, :]
        trans = np.where((cur_f == prev_f + 1) | (cur_f == prev_f), 0.0, switch_cost)   # (k_prev, k_cur)
        tot = acc[:, None] + trans
        back[i] = np.argmin(tot, 0)
        acc = tot[back[i], np.arange(k)] + unary[i]
    path = np.zeros(t, np.int64)
    path[-1] = int(np.argmin(acc))
    for i in range(t - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return cand[np.arange(t), path]


def teeth_colour(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(3,) float32 BGR of the teeth a frame shows between its inner lips (``lm`` (68, 2) px): the
    mean of the brightest third of those pixels, or a neutral off-white when the lips are shut."""
    gap = float(lip_gap(lm) * face_width(lm))
    default = np.array([195.0, 205.0, 212.0], np.float32)
    if gap < 2.0:
        return default
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lm[60:68] * 16).astype(np.int32)], 255, cv2.LINE_8, 4)
    px = frame[mask > 0].astype(np.float32)
    if len(px) < 6:
        return default
    bright = px[np.argsort(px.sum(1))[-max(2, len(px) // 3):]]
    return bright.mean(0)


def synthesise_interior(img: np.ndarray, lm: np.ndarray, box: tuple[int, int, int, int],
                        teeth_bgr: np.ndarray, own_gap_px: float = 0.0) -> None:
    """Paint a mouth interior inside the inner lips of ``lm`` (68, 2) px (in place; ``img`` is the
    ``box`` region of the frame): a dark cavity with a band of upper teeth (``teeth_bgr``) under
    the upper lip. Only where the wanted lip gap exceeds the photo's own (``own_gap_px``): a
    still photo's footage never shows the mouth open wider than it is."""
    x0, y0 = box[:2]
    inner = lm[60:68] - [x0, y0]
    fw = float(face_width(lm))
    gap = float(lip_gap(lm)) * fw
    if gap < own_gap_px + 1.0:
        return
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(inner * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    cavity = np.empty_like(img, dtype=np.float32)
    cavity[:] = (38, 34, 62)
    teeth = np.zeros((h, w), np.uint8)
    top = inner[[0, 1, 2, 3, 4]]
    band = np.concatenate([top, top[::-1] + [0.0, min(0.4 * gap, 0.07 * fw)]])
    cv2.fillPoly(teeth, [np.round(band * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    t = cv2.GaussianBlur(teeth.astype(np.float32) / 255.0, (0, 0), 0.7)[..., None]
    cavity = cavity * (1 - t) + np.asarray(teeth_bgr, np.float32) * t
    cavity = cv2.GaussianBlur(cavity, (0, 0), max(0.6, gap / 14))
    # fade in with the extra opening, so a barely parted mouth is not painted black
    strength = min(1.0, (gap - own_gap_px) / max(0.5 * gap, 1.0))
    a = strength * cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.8)[..., None]
    img[:] = np.clip(img * (1 - a) + cavity * a + 0.5, 0, 255).astype(np.uint8)


def seal_lips(img: np.ndarray, wanted: np.ndarray, source: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Where the wanted lips are closer together than the source frame's, paint the squeezed
    interior between them with the lips' own colour (in place; ``img`` is the ``box`` region).

    Warping an open mouth shut collapses its interior to a thin dark line that still reads as a
    parted mouth (and dlib reads it as a gap); a real closed mouth shows lip against lip. The
    band between the wanted inner lips, grown by ~1.5% of the face width, takes the median
    colour of the lips (between the outer and inner contours), faded in with how much the
    mouth closes relative to the source and with how nearly shut the wanted lips are (none at a
    gap of :data:`SEALED_GAP` face widths or more, or when the source is no wider)."""
    fw = float(face_width(wanted))
    gap_w = float(lip_gap(wanted)) * fw
    gap_s = float(lip_gap(source)) * float(face_width(source))
    if gap_s <= 1.0 or gap_w >= gap_s or gap_w >= SEALED_GAP * fw:
        return
    # only lips (nearly) shut: a parted mouth's dark line is real
    strength = min(1.0, (gap_s - gap_w) / gap_s) * (1.0 - gap_w / (SEALED_GAP * fw))
    x0, y0 = box[:2]
    h, w = img.shape[:2]
    inner = np.round((wanted[60:68] - [x0, y0]) * 16).astype(np.int32)
    outer = np.round((wanted[48:60] - [x0, y0]) * 16).astype(np.int32)
    band = np.zeros((h, w), np.uint8)
    cv2.fillPoly(band, [inner], 255, cv2.LINE_AA, 4)
    grow = max(1, int(round(0.015 * fw)))
    band = cv2.dilate(band, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    cv2.polylines(band, [inner], True, 255, max(1, grow), cv2.LINE_AA, 4)
    lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(lips, [outer], 255, cv2.LINE_8, 4)
    lips[band > 0] = 0
    if lips.sum() < 255 * 10:
        return
    colour = np.median(img[lips > 0].reshape(-1, 3).astype(np.float32), axis=0)
    a = strength * cv2.GaussianBlur(band.astype(np.float32) / 255.0, (0, 0), max(0.7, grow / 2))[..., None]
    img[:] = np.clip(img * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)


class WarpDubber:
    """Builds output frames from a :class:`MouthLibrary` (see the module docstring)."""

    def __init__(self, library: MouthLibrary, switch_cost: float = 0.02, pose_weight: float = 0.5):
        self.lib = library
        self.switch_cost = switch_cost
        self.pose_weight = pose_weight
        ref = library.reference
        self.triangles = _triangulation(ref)
        self.mode = ("photo: the footage never shows the mouth moving, so the photo itself is warped and "
                     "the mouth interior is synthesised" if library.still else
                     "footage: mouths chosen from the actor's own frames and warped")

    def plan(self, wanted: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """(T,) library rows for the wanted landmarks (T, 68, 2) at poses (T, 2) yaw, pitch."""
        return choose_frames(self.lib, wanted, pose, switch_cost=self.switch_cost, pose_weight=self.pose_weight)

    def compose(self, frame: np.ndarray, wanted: np.ndarray, row: int | None,
                own: np.ndarray | None = None) -> np.ndarray:
        """Frame (H, W, 3) uint8 with its lower face replaced by library row ``row`` warped onto
        ``wanted`` (68, 2) px. ``own``: the frame's own landmarks (photo mode warps the frame itself
        from them; default ``wanted``). Returns a new frame."""
        h, w = frame.shape[:2]
        wanted = np.asarray(wanted, np.float64)
        box = MouthLibrary.region_box(wanted, (w, h))
        if self.lib.still or row is None:
            src_lm = np.asarray(own if own is not None else wanted, np.float64)
            sbox = MouthLibrary.region_box(src_lm, (w, h))
            patch = frame[sbox[1]:sbox[3], sbox[0]:sbox[2]]
        else:
            src_lm = self.lib.landmarks[row]
            sbox = tuple(int(v) for v in self.lib.boxes[row])
            patch = self.lib.patch(row)
        dst_pts = control_points(wanted)
        src_pts = control_points(src_lm)
        mx, my, inside = piecewise_affine_maps(dst_pts, src_pts, self.triangles, box)
        warped = cv2.remap(patch, mx - sbox[0], my - sbox[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if self.lib.still:
            synthesise_interior(warped, wanted, box, teeth_colour(frame, src_lm),
                                float(lip_gap(src_lm) * face_width(src_lm)))
        else:
            seal_lips(warped, wanted, src_lm, box)
        dest = frame[box[1]:box[3], box[0]:box[2]]
        fw = float(face_width(wanted))
        outline = blend_outline(wanted, np.asarray(own if own is not None else wanted, np.float64))
        blend = _poly_mask(outline, box).astype(np.float32) / 255.0
        # colour: match the warped skin to this frame on a band just inside the blend edge
        band = (blend > 0.5) & (_poly_mask(_grown(outline, 0.85), box) == 0) & inside
        if band.sum() > 20:
            shift = dest[band].astype(np.float32).mean(0) - warped[band].astype(np.float32).mean(0)
            warped = np.clip(warped.astype(np.float32) + shift, 0, 255)
        alpha = cv2.GaussianBlur(blend, (0, 0), max(1.0, 0.04 * fw))
        alpha = np.where(inside, alpha, 0.0)[..., None]
        out = frame.copy()
        mixed = dest.astype(np.float32) * (1 - alpha) + warped.astype(np.float32) * alpha
        out[box[1]:box[3], box[0]:box[2]] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        return out


def driving_landmarks(aligned, target, model_shapes: bool = True) -> np.ndarray:
    """(T, 68, 2) px the warp is driven by, in the footage tracker's own landmark convention.

    An aligned speech track (``evp-anim align``) is the face model's 3D landmarks posed with the
    footage's head pose; the footage's mouths carry dlib's landmarks, which follow other
    conventions (dlib's inner lip corners sit inside the outer ones, its jaw points slide along
    the silhouette of a turned face, the model's are fixed vertices). Warping one onto the other
    would drag the lips apart and the chin along the cheek. So the wanted shape of output frame i
    over footage frame j is the footage's tracked landmarks plus the *change* the speech asks
    for, projected with frame j's pose: ``tracked_j + project(speech_3d_i - footage_3d_j)`` (the
    footage's own fitted 3D landmarks); where the speech repeats the footage's expression this is
    exactly the tracked shape. ``model_shapes=False`` (or a track without 3D landmarks) takes
    ``aligned.landmarks_2d`` as they are (e.g. the footage's own landmarks in self-reenactment).
    """
    from evp_anim.face.projection import project

    lm = aligned.landmarks_2d.astype(np.float64)
    if not model_shapes or aligned.landmarks_3d is None or target.landmarks_3d is None:
        return lm
    idx = np.asarray(aligned.info.get("target_frames", np.arange(aligned.n_frames)), np.int64)
    change = aligned.landmarks_3d.astype(np.float64) - target.landmarks_3d[idx].astype(np.float64)
    moved = project(change, target.pose_rotation[idx].astype(np.float64), np.zeros((len(idx), 2)),
                    target.pose_scale[idx].astype(np.float64))
    return target.landmarks_2d[idx].astype(np.float64) + moved


def iter_warped(aligned, target, video: str | Path, dubber: WarpDubber, with_source: bool = False,
                model_shapes: bool = True) -> Iterator[tuple]:
    """Yield (i, output frame (H, W, 3) uint8 BGR, footage frame j) for each aligned frame, and
    the footage frame itself as a fourth item when ``with_source``.

    Frames whose footage frame lacks the target's face are yielded untouched. ``model_shapes``:
    see :func:`driving_landmarks`.
    """
    from evp_anim.footage.video import iter_footage

    from .inference import check_pair

    idx = check_pair(aligned, target)
    if aligned.n_frames == 0:
        return
    present = present_frames(target)
    pose = target.pose_rotation[idx][:, [1, 0]].astype(np.float64)
    wanted = driving_landmarks(aligned, target, model_shapes)
    rows = dubber.plan(wanted, pose)
    for i, j, frame in iter_footage(video, target.fps, idx, target.image_size):
        out = dubber.compose(frame, wanted[i], int(rows[i]), own=target.landmarks_2d[j]) if present[j] else frame
        yield (i, out, j, frame) if with_source else (i, out, j)


def render_warped_video(aligned, target, video: str | Path, dubber: WarpDubber, output: str | Path,
                        audio: np.ndarray | None = None, sample_rate: int | None = None,
                        progress: Callable[[int], None] | None = None) -> int:
    """Write the dubbed video (H.264 + AAC, atomically); returns the number of frames."""
    from evp_anim.audio.features import SAMPLE_RATE
    from evp_anim.video_io import open_video_writer

    w, h = target.image_size
    ew, eh = w - w % 2, h - h % 2
    n = 0
    with open_video_writer(output, aligned.fps, (ew, eh), audio=audio, sample_rate=sample_rate or SAMPLE_RATE) as writer:
        for i, frame, _ in iter_warped(aligned, target, video, dubber):
            writer.write(np.ascontiguousarray(frame[:eh, :ew]))
            n += 1
            if progress is not None:
                progress(i + 1)
    return n
