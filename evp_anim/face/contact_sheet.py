"""Contact sheet of the face rig: every channel and every MEAD emotion, rendered and sketched.

One tile per entry: the shaded render (:class:`~evp_anim.face.raster.FaceRenderer`) with the
projected 68-point sketch drawn thinly on top and the entry's name written in the corner. The
sheet shows, in order: the neutral face, each rig channel at weight 1, each MEAD emotion at
intensity 1, then two turned heads (yaw 25 degrees, neutral and jawOpen) to check occlusion.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..atomic import write_bytes_atomic
from ..emotions import EMOTIONS
from ..errors import EvpError
from .projection import aligned_crop_transform, project
from .raster import FaceRenderer
from .sketch import overlay_sketch

TURN_YAW_DEG = 25.0


def _label(img: np.ndarray, text: str) -> None:
    scale = max(0.3, img.shape[1] / 500.0)
    org = (4, int(6 + 22 * scale))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def sheet_entries(rig) -> list[tuple[str, np.ndarray, float]]:
    """(label, (K,) weights, yaw radians) for every tile, in sheet order."""
    k = rig.num_channels
    entries: list[tuple[str, np.ndarray, float]] = [("neutral", np.zeros(k, np.float32), 0.0)]
    for i, name in enumerate(rig.channels):
        w = np.zeros(k, np.float32)
        w[i] = 1.0
        entries.append((name, w, 0.0))
    for emo in EMOTIONS:
        entries.append((f"MEAD {emo}", rig.emotion_weights(emo, 1.0), 0.0))
    yaw = float(np.radians(TURN_YAW_DEG))
    entries.append((f"yaw {TURN_YAW_DEG:g}", np.zeros(k, np.float32), yaw))
    jaw = np.zeros(k, np.float32)
    jaw[rig.channel_index("jawOpen")] = 1.0
    entries.append((f"jawOpen yaw {TURN_YAW_DEG:g}", jaw, yaw))
    return entries


def render_tile(rig, renderer: FaceRenderer, weights: np.ndarray, yaw: float, tile: int,
                identity=None, label: str | None = None) -> np.ndarray:
    """One (tile, tile, 3) uint8 BGR tile: render + thin landmark sketch + label."""
    rot = np.array([0.0, yaw, 0.0])
    img = renderer.render(identity, weights, rot, tile)
    scale, trans = aligned_crop_transform(tile)
    lm = project(rig.landmarks_3d(identity, weights), rot, trans, scale)
    img = overlay_sketch(img, lm, thickness=1, alpha=0.55)
    if label:
        _label(img, label)
    return img


def contact_sheet(rig, out_png: str | Path, tile: int = 192, columns: int = 8, identity=None) -> Path:
    """Render the rig's contact sheet to ``out_png`` (written atomically) and return its path.

    Args:
        rig: a :class:`~evp_anim.face.rig.FaceRig`.
        out_png: output PNG path.
        tile: tile side in pixels.
        columns: tiles per row.
        identity: (63,) identity in std units, or None for the mean face.
    """
    tile = int(tile)
    if tile < 64:
        raise EvpError(f"tile must be at least 64 pixels, got {tile}")
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise EvpError(f"contact sheet must be a .png file, got {out}")
    renderer = FaceRenderer(rig, backend="auto")   # OpenGL when available, else numpy
    tiles = [render_tile(rig, renderer, w, yaw, tile, identity, name) for name, w, yaw in sheet_entries(rig)]
    cols = max(1, int(columns))
    filler = np.empty_like(tiles[0])
    filler[:] = np.round(renderer.background * 255.0).astype(np.uint8)
    while len(tiles) % cols:
        tiles.append(filler)
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    sheet = np.vstack(rows)
    ok, buf = cv2.imencode(".png", sheet)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise EvpError(f"could not encode the contact sheet for {out}")
    write_bytes_atomic(out, buf.tobytes())
    return out
