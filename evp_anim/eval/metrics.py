"""EVP's landmark metrics (§4, Table 1): Landmark Distance and Landmark Velocity Difference.

Both compare a generated sequence with the ground truth, (T, 68, 2) landmarks in the 256×256
aligned crop (pixels):

* **LD**  — mean Euclidean distance between generated and ground-truth landmarks;
* **LVD** — mean Euclidean distance between their velocities (frame-to-frame differences).

``M-`` restricts to the mouth (iBUG points 49–68, 0-based 48–67), ``F-`` uses all 68 points.
Per clip the distances are averaged over frames and points; a data set's figure is the mean of
the per-clip figures (every clip weighs the same, whatever its length).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from ..errors import EvpError
from ..tracks import MOUTH, NUM_LANDMARKS

FACE = np.arange(NUM_LANDMARKS)
METRIC_NAMES: tuple[str, ...] = ("M-LD", "M-LVD", "F-LD", "F-LVD")


def _pair(generated, ground_truth) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(generated, dtype=np.float64)
    t = np.asarray(ground_truth, dtype=np.float64)
    if g.ndim != 3 or g.shape[1:] != (68, 2):
        raise EvpError(f"generated landmarks must have shape (T, 68, 2), got {g.shape}")
    if t.shape != g.shape:
        raise EvpError(f"generated landmarks {g.shape} and ground truth {t.shape} differ in shape")
    if g.shape[0] == 0:
        raise EvpError("cannot compare empty landmark sequences (0 frames)")
    return g, t


def _points(points) -> slice | np.ndarray:
    """Landmark index for ``points``: all 68 when None, a slice (e.g. :data:`MOUTH`) as is."""
    if points is None:
        return FACE
    return points if isinstance(points, slice) else np.asarray(points)


def landmark_distance(generated, ground_truth, points=None) -> float:
    """LD of one clip: mean over frames and ``points`` (default all 68) of ||gen - gt||, px."""
    g, t = _pair(generated, ground_truth)
    idx = _points(points)
    return float(np.linalg.norm(g[:, idx] - t[:, idx], axis=-1).mean())


def landmark_velocity_difference(generated, ground_truth, points=None) -> float:
    """LVD of one clip: mean over frame pairs and ``points`` of ||Δgen - Δgt||, px/frame.

    NaN for a one-frame clip (it has no velocity).
    """
    g, t = _pair(generated, ground_truth)
    if g.shape[0] < 2:
        return float("nan")
    idx = _points(points)
    vg = np.diff(g[:, idx], axis=0)
    vt = np.diff(t[:, idx], axis=0)
    return float(np.linalg.norm(vg - vt, axis=-1).mean())


def clip_metrics(generated, ground_truth) -> dict[str, float]:
    """{"M-LD", "M-LVD", "F-LD", "F-LVD"} of one clip."""
    return {
        "M-LD": landmark_distance(generated, ground_truth, MOUTH),
        "M-LVD": landmark_velocity_difference(generated, ground_truth, MOUTH),
        "F-LD": landmark_distance(generated, ground_truth, FACE),
        "F-LVD": landmark_velocity_difference(generated, ground_truth, FACE),
    }


def mean_metrics(per_clip: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean over clips of each metric (NaNs — one-frame clips' LVD — are skipped)."""
    rows = list(per_clip)
    out = {}
    for name in METRIC_NAMES:
        vals = np.array([r[name] for r in rows if name in r], np.float64)
        vals = vals[np.isfinite(vals)]
        out[name] = float(vals.mean()) if vals.size else float("nan")
    return out


def dataset_metrics(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Mean per-clip metrics over ``(generated, ground_truth)`` pairs."""
    return mean_metrics(clip_metrics(g, t) for g, t in pairs)


def lip_vertex_error(generated_vertices, ground_truth_vertices) -> float:
    """LVE of one clip (MeshTalk / FaceFormer / EMOTE): per frame the maximum over the lip vertices
    of the L2 distance between generated and ground-truth positions, averaged over frames.

    Args: (T, L, 3) lip vertices each, mm (the SFM mesh). Returns mm.
    """
    g = np.asarray(generated_vertices, dtype=np.float64)
    t = np.asarray(ground_truth_vertices, dtype=np.float64)
    if g.ndim != 3 or g.shape[-1] != 3:
        raise EvpError(f"lip vertices must have shape (T, L, 3), got {g.shape}")
    if t.shape != g.shape:
        raise EvpError(f"generated lip vertices {g.shape} and ground truth {t.shape} differ in shape")
    if g.shape[0] == 0 or g.shape[1] == 0:
        raise EvpError("cannot compare empty lip-vertex sequences")
    return float(np.linalg.norm(g - t, axis=-1).max(axis=1).mean())
