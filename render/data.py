"""Training pairs for the renderer: face crops of the target footage with their guidance maps.

:class:`TargetFrames` decodes the footage once (streaming) and keeps each frame's S x S face
crop PNG-compressed in memory (lossless, ~10x smaller than raw: ~60 KB per 256 crop, 90 MB for
a minute of footage), with the landmarks in crop px. A sample is built on demand: guidance map
(from the crop and the frame's own landmarks, as in self-reenactment), the known surroundings
(crop with the face region blanked), the face mask and its soft blending version.

Frames are at the track's frame rate (25 fps). The last ``holdout`` fraction of the frames is
held out of training (for ``evp-anim eval-video``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from evp_anim.assets import sha256_file
from evp_anim.errors import EvpError
from evp_anim.tracks import MOUTH

from .guidance import crop_frame, crop_transforms, face_mask, frame_coverage, guidance_from_crop


def video_fingerprint(path: str | Path) -> str:
    """Hex sha256 of the video file's bytes (a trained model records the footage it was made for)."""
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"video not found: {path}")
    return sha256_file(path)


def blend_alpha(mask: np.ndarray) -> np.ndarray:
    """(S, S) float32 soft mask from a (S, S) uint8 face mask: exactly 1 on the mask, falling to 0
    over ~S/32 px outside it (where the generator blends its face into the known pixels)."""
    size = mask.shape[0]
    d = max(1, size // 32)
    m = (mask > 0).astype(np.float32)
    grown = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1)))
    soft = cv2.GaussianBlur(grown, (0, 0), d / 2.0)
    return np.maximum(soft, m)


def mouth_mask(mouth_points: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32 1 inside the hull of the (20, 2) crop-px mouth points, dilated by S/16 px."""
    return (face_mask(mouth_points, size, dilate_px=max(1, size // 16)) > 0).astype(np.float32)


def frame_inputs(crop: np.ndarray, aligned_crop: np.ndarray, target_crop: np.ndarray,
                 inside: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Network inputs of one frame, as float32 channels-first arrays.

    crop: (S, S, 3) uint8 BGR face crop of the footage; aligned_crop / target_crop: (68, 2) crop
    px landmarks to render / of the footage's own face; inside: (S, S) bool crop pixels within
    the frame. Returns guidance (10, S, S) in [0, 1], known (3, S, S) in [-1, 1] (0 in the face
    region), mask (1, S, S), alpha (1, S, S).
    """
    size = crop.shape[0]
    g = guidance_from_crop(crop, aligned_crop, target_crop, inside=inside)
    mask = face_mask(np.concatenate([aligned_crop, target_crop]), size)
    m = (mask > 0).astype(np.float32)
    known = (crop.astype(np.float32) / 127.5 - 1.0) * (1.0 - m[..., None])
    return {"guidance": np.ascontiguousarray(g.transpose(2, 0, 1), np.float32) / 255.0,
            "known": np.ascontiguousarray(known.transpose(2, 0, 1)),
            "mask": m[None], "alpha": blend_alpha(mask)[None]}


def to_tensor_image(crop: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 BGR -> (3, S, S) float32 in [-1, 1]."""
    return np.ascontiguousarray(crop.transpose(2, 0, 1), np.float32) / 127.5 - 1.0


def to_uint8_image(x) -> np.ndarray:
    """(3, S, S) in [-1, 1] (numpy or torch) -> (S, S, 3) uint8 BGR."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return np.clip((a.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class TargetFrames:
    """The target footage's face crops and landmarks (crop px), decoded once."""

    crops_png: list[bytes]
    landmarks: np.ndarray        # (T, 68, 2) crop px
    coverage: dict[int, np.ndarray]
    size: int
    n_train: int                 # frames [0, n_train) train, the rest are held out
    frame_size: tuple[int, int]  # (width, height) of the footage

    @classmethod
    def load(cls, video: str | Path, track, size: int = 256, crop_margin: float = 1.9,
             holdout: float = 0.1, progress=None) -> "TargetFrames":
        """Decode ``video`` at the track's fps; the video and the track must match frame for frame."""
        from evp_anim.footage.video import iter_frames, probe

        info = probe(video)
        if (info.width, info.height) != tuple(track.image_size):
            raise EvpError(f"{video} is {info.width}x{info.height} but the track is for "
                           f"{track.image_size[0]}x{track.image_size[1]} images: track this video first")
        if not 0.0 <= holdout < 0.9:
            raise EvpError(f"holdout must be in [0, 0.9), got {holdout}")
        crops = crop_transforms(track.landmarks_2d, size, crop_margin, fps=track.fps, cuts=track.info.get("cuts"))
        pngs: list[bytes] = []
        cover: dict[int, np.ndarray] = {}
        for j, frame in enumerate(iter_frames(video, track.fps, "bgr24")):
            if j >= track.n_frames:
                raise EvpError(f"{video} has more frames than its track ({track.n_frames}): "
                               f"track this video with `evp-anim track`")
            crop = crop_frame(frame, crops, j)
            pngs.append(cv2.imencode(".png", crop, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes())
            inside = frame_coverage(frame.shape, crops, j)
            if not inside.all():
                cover[j] = inside
            if progress is not None:
                progress(j + 1)
        if len(pngs) != track.n_frames:
            raise EvpError(f"{video} has {len(pngs)} frames but its track has {track.n_frames}: "
                           f"they must be the same footage")
        lm = np.stack([crops.to_crop(track.landmarks_2d[i], i) for i in range(track.n_frames)]).astype(np.float32)
        n_train = int(np.floor(track.n_frames * (1.0 - holdout)))
        if n_train < 8:
            raise EvpError(f"the footage has {track.n_frames} frames, too few to train on (need ≥ 8 for training)")
        return cls(pngs, lm, cover, size, n_train, (info.width, info.height))

    def __len__(self) -> int:
        return len(self.crops_png)

    def crop(self, i: int) -> np.ndarray:
        """(S, S, 3) uint8 BGR crop of frame ``i``."""
        return cv2.imdecode(np.frombuffer(self.crops_png[i], np.uint8), cv2.IMREAD_COLOR)

    def sample(self, i: int) -> dict[str, np.ndarray]:
        """Inputs of frame ``i`` driven by its own landmarks, plus ``real`` (3, S, S), ``mouth``
        (1, S, S) mouth-region mask and ``mouth_centre`` (2,) crop px."""
        crop = self.crop(i)
        lm = self.landmarks[i]
        out = frame_inputs(crop, lm, lm, self.coverage.get(i))
        out["real"] = to_tensor_image(crop)
        out["mouth"] = mouth_mask(lm[MOUTH], self.size)[None]
        out["mouth_centre"] = lm[MOUTH].mean(0).astype(np.float32)
        return out
