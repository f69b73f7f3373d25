"""The Surrey Face Model (SFM, 3448 vertices) as plain numpy arrays.

:func:`load_sfm` reads the eos files from a folder (``sfm_shape_3448.bin``,
``expression_blendshapes_3448.bin``, ``ibug_to_sfm.txt``, ``sfm_model_contours.json``,
``sfm_reference_symmetry.txt``) once per folder and returns an :class:`SfmModel`.

Coordinates are the model's own: millimetres, x to the viewer's right (the subject's left),
y up, z toward the viewer; the face is about 150 mm wide and the nose tip sits near z = +3 mm.

Landmarks
---------
``ibug_to_sfm.txt`` maps most of the 68 iBUG points to SFM vertices but leaves out the jawline
(1-8, 10-17, 1-based) and the inner mouth corners (61, 65). This module fills them in, always
with the same vertices, so every frame and every identity uses one definition:

* **Jawline.** ``sfm_model_contours.json`` lists the outline vertices of each side of the face
  from the temple down to under the chin. We take that polyline from the height of the lower
  eyelid (the height where the iBUG contour starts in a frontal photo) down to the chin vertex
  (point 9, vertex 33), resample it at 8 equal arc-length steps in the frontal (x, y) plane
  (point 1 at the top, point 8 one step above the chin) and snap each sample to the nearest mesh
  vertex. The subject's left side (points 17..10) is the mirror image through the symmetry
  table, so the jawline is exactly symmetric. The lower jawline (points 5-13) moves with the
  jaw when it opens, the chin (point 9) most; points 1-2 and 16-17 stay at the temples.
* **Inner mouth corners (61, 65).** The left- and rightmost vertices of the mouth opening's
  boundary loop (the mesh has a hole at the mouth).

Symmetry
--------
``sfm_reference_symmetry.txt`` covers only the 845 vertices of the reference mesh (the first 845
of the 3448). The rest are paired by a minimum-cost one-to-one matching between each vertex's
mirror image (x -> -x) and its nearest vertices on the mean shape; the result is an involution
that maps mesh edges onto mesh edges.
"""

from __future__ import annotations

import functools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EvpError

SHAPE_FILE = "sfm_shape_3448.bin"
BLENDSHAPE_FILE = "expression_blendshapes_3448.bin"
IBUG_FILE = "ibug_to_sfm.txt"
CONTOUR_FILE = "sfm_model_contours.json"
SYMMETRY_FILE = "sfm_reference_symmetry.txt"

_FIX = "run `evp-anim assets download` or pass --sfm-dir"

NUM_LANDMARKS = 68
CHIN = 8  # 0-based iBUG index of the chin (point 9)


def _ibug_mirror() -> tuple[int, ...]:
    pairs = [(i, 16 - i) for i in range(17)]                       # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]                  # brows
    pairs += [(27, 27), (28, 28), (29, 29), (30, 30)]              # nose bridge
    pairs += [(31, 35), (32, 34), (33, 33)]                        # lower nose
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (51, 51), (55, 59), (56, 58), (57, 57)]  # outer lips
    pairs += [(60, 64), (61, 63), (62, 62), (65, 67), (66, 66)]    # inner lips
    perm = [-1] * NUM_LANDMARKS
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


# IBUG_MIRROR[i] is the 0-based iBUG point that point i becomes under a left/right mirror.
IBUG_MIRROR: tuple[int, ...] = _ibug_mirror()


@dataclass(frozen=True)
class SfmModel:
    """The SFM shape model, expression blendshapes, mesh and landmark definition.

    Attributes (N = 3448 vertices, F = 6736 triangles; all lengths in mm):
        mean: (N, 3) float32 mean face.
        identity_basis: (63, N, 3) float32, mm per unit standard deviation of each component.
        expression_names: the 6 blendshape names (anger, disgust, fear, happiness, sadness, surprise).
        expression_basis: (6, N, 3) float32 blendshape deltas at weight 1.
        triangles: (F, 3) int32, counter-clockwise seen from +z (normals face the viewer).
        landmark_vertices: (68,) int64 vertex of each iBUG point, 0-based iBUG order.
        symmetry: (N,) int64 mirror vertex (symmetry[symmetry[i]] == i).
        mouth_loop: (M,) int64 boundary loop of the mouth opening, ordered around the hole.
        source_dir: the folder the files were read from.
    """

    mean: np.ndarray
    identity_basis: np.ndarray
    expression_names: tuple[str, ...]
    expression_basis: np.ndarray
    triangles: np.ndarray
    landmark_vertices: np.ndarray
    symmetry: np.ndarray
    mouth_loop: np.ndarray
    source_dir: Path

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def edges(self) -> np.ndarray:
        """(E, 2) int64 unique undirected mesh edges (i < j)."""
        return mesh_edges(self.triangles)


def _missing(path: Path, what: str) -> EvpError:
    return EvpError(f"SFM file {path} {what}: {_FIX}")


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise _missing(path, "not found")
    return path


def mesh_edges(triangles: np.ndarray) -> np.ndarray:
    """(E, 2) unique undirected edges of a triangle list, each row sorted."""
    t = np.asarray(triangles)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0).astype(np.int64)


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops of a triangle mesh (edges used by one triangle), each ordered."""
    t = np.asarray(triangles)
    e = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    border = uniq[counts == 1]
    nbrs: dict[int, list[int]] = {}
    for a, b in border:
        nbrs.setdefault(int(a), []).append(int(b))
        nbrs.setdefault(int(b), []).append(int(a))
    seen: set[int] = set()
    loops = []
    for start in sorted(nbrs):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [n for n in nbrs[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(np.array(loop, np.int64))
    return loops


def split_mouth_loop(mean: np.ndarray, loop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the mouth opening's boundary loop at its left/right extremes.

    Returns (upper, lower, corners): the upper lip's inner edge and the lower lip's inner edge
    (vertex indices, corners excluded) and the two corner vertices (subject's right, left).
    """
    xs = mean[loop, 0]
    a, b = int(np.argmin(xs)), int(np.argmax(xs))
    corners = np.array([loop[a], loop[b]], np.int64)
    i, j = sorted((a, b))
    arc1 = loop[i + 1:j]
    arc2 = np.r_[loop[j + 1:], loop[:i]]
    if mean[arc1, 1].mean() < mean[arc2, 1].mean():
        arc1, arc2 = arc2, arc1
    return np.asarray(arc1, np.int64), np.asarray(arc2, np.int64), corners


def _read_ibug(path: Path) -> dict[int, int]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        table = data["landmark_mappings"]
        return {int(k): int(v) for k, v in table.items()}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, ValueError, TypeError) as exc:
        raise _missing(path, f"is unreadable ({type(exc).__name__})") from None


def _read_contours(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["model_contour"]
        return (np.asarray(data["right_contour"], np.int64), np.asarray(data["left_contour"], np.int64))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _missing(path, f"is unreadable ({type(exc).__name__})") from None


def _read_reference_symmetry(path: Path) -> np.ndarray:
    try:
        rows = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        sym = np.asarray([int(r) for r in rows], np.int64) - 1  # file is 1-based
    except (OSError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise _missing(path, f"is unreadable ({type(exc).__name__})") from None
    n = len(sym)
    if n == 0 or sym.min() < 0 or sym.max() >= n or not np.array_equal(sym[sym], np.arange(n)):
        raise _missing(path, "is not a valid symmetry table")
    return sym


def _full_symmetry(mean: np.ndarray, ref_sym: np.ndarray) -> np.ndarray:
    """Extend the reference-mesh symmetry to all vertices by a min-cost mirror matching."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching
    from scipy.spatial import cKDTree

    n = len(mean)
    n_ref = len(ref_sym)
    rest = np.arange(n_ref, n)
    pts = mean[rest].astype(np.float64)
    mirrored = pts * np.array([-1.0, 1.0, 1.0])
    k = min(12, len(rest))
    dist, idx = cKDTree(pts).query(mirrored, k=k)
    # +1e-3 keeps exact zero distances (points on the midline) as stored entries
    graph = csr_matrix(((dist + 1e-3).ravel(), (np.repeat(np.arange(len(rest)), k), idx.ravel())),
                       shape=(len(rest), len(rest)))
    _, match = min_weight_full_bipartite_matching(graph)
    sym = np.empty(n, np.int64)
    sym[:n_ref] = ref_sym
    sym[rest] = rest[match]
    return sym


def _fill_jawline(mean: np.ndarray, sym: np.ndarray, right_contour: np.ndarray, lmk: dict[int, int],
                  ) -> dict[int, int]:
    """Jawline points 1-8 (subject's right, -x) resampled along the contour, 10-17 mirrored."""
    chin = lmk[9]
    start_y = mean[[lmk[42], lmk[41]], 1].mean()  # lower eyelid height (points 41, 42)
    poly = mean[right_contour]
    # keep the part of the outline below start_y, starting at the exact crossing height
    below = np.nonzero(poly[:, 1] <= start_y)[0]
    if len(below) == 0 or below[0] == 0:
        first = poly[below[0]] if len(below) else poly[-1]
    else:
        a, b = poly[below[0] - 1], poly[below[0]]
        t = (a[1] - start_y) / max(a[1] - b[1], 1e-9)
        first = a + t * (b - a)
    path = np.vstack([first[None], poly[below], mean[chin][None]])
    seg = np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, arc[-1], 9)[:8]  # 8 points, the 9th would be the chin
    out = dict(lmk)
    used = {chin}
    for i, s in enumerate(targets):
        j = min(np.searchsorted(arc, s, side="right") - 1, len(seg) - 1)
        t = (s - arc[j]) / max(seg[j], 1e-9)
        p = path[j] + t * (path[j + 1] - path[j])
        order = np.argsort(np.linalg.norm(mean - p, axis=1))
        v = next(int(o) for o in order if int(o) not in used)
        used.add(v)
        out[i + 1] = v                 # points 1..8
        out[17 - i] = int(sym[v])      # mirror: 17..10
    return out


def _mouth_loop(triangles: np.ndarray, mean: np.ndarray) -> np.ndarray:
    loops = boundary_loops(triangles)
    if len(loops) < 2:
        raise EvpError("SFM mesh has no mouth opening: the shape file is not sfm_shape_3448.bin; " + _FIX)
    # the outer border is the longest loop; the mouth is the other one nearest the mouth area
    loops.sort(key=len, reverse=True)
    return loops[1]


def _fix_winding(triangles: np.ndarray, mean: np.ndarray) -> np.ndarray:
    v0, v1, v2 = (mean[triangles[:, k]] for k in range(3))
    nz = np.cross(v1 - v0, v2 - v0)[:, 2]
    if np.sum(nz > 0) < np.sum(nz < 0):
        triangles = triangles[:, [0, 2, 1]]
    return np.ascontiguousarray(triangles, dtype=np.int32)


@functools.lru_cache(maxsize=4)
def _load_cached(folder_str: str) -> SfmModel:
    folder = Path(folder_str)
    if not folder.is_dir():
        raise EvpError(f"SFM folder {folder} not found: {_FIX}")
    shape_path = _require(folder, SHAPE_FILE)
    blend_path = _require(folder, BLENDSHAPE_FILE)
    ibug_path = _require(folder, IBUG_FILE)
    contour_path = _require(folder, CONTOUR_FILE)
    sym_path = _require(folder, SYMMETRY_FILE)

    try:
        import eos  # noqa: PLC0415 - optional heavy import kept local
    except ImportError:  # pragma: no cover - eos-py is a hard dependency
        raise EvpError("eos-py is not installed: run `pip install eos-py==1.5.0`") from None

    try:
        model = eos.morphablemodel.load_model(str(shape_path))
        shape = model.get_shape_model()
        mean = np.asarray(shape.get_mean(), np.float64)
        if hasattr(shape, "get_rescaled_pca_basis"):
            basis = np.asarray(shape.get_rescaled_pca_basis(), np.float64)
        else:  # older eos: orthonormal basis times sqrt(eigenvalue)
            basis = (np.asarray(shape.get_orthonormal_pca_basis(), np.float64)
                     * np.sqrt(np.asarray(shape.get_eigenvalues(), np.float64))[None, :])
        triangles = np.asarray(shape.get_triangle_list(), np.int64)
    except Exception as exc:  # eos raises RuntimeError / cereal errors on bad files
        raise _missing(shape_path, f"is unreadable ({type(exc).__name__})") from None
    n = mean.size // 3
    if mean.size != 3 * n or n < 100 or basis.shape[0] != mean.size or triangles.max() >= n:
        raise _missing(shape_path, "has unexpected array sizes")

    try:
        blends = eos.morphablemodel.load_blendshapes(str(blend_path))
        names = tuple(str(b.name) for b in blends)
        expr = np.stack([np.asarray(b.deformation, np.float64) for b in blends])
    except Exception as exc:
        raise _missing(blend_path, f"is unreadable ({type(exc).__name__})") from None
    if expr.ndim != 2 or expr.shape[1] != mean.size:
        raise _missing(blend_path, f"does not match {SHAPE_FILE} ({expr.shape[-1]} values, expected {mean.size})")

    mean3 = mean.reshape(n, 3)
    ibug = _read_ibug(ibug_path)
    right_c, _left_c = _read_contours(contour_path)
    ref_sym = _read_reference_symmetry(sym_path)
    if len(ref_sym) > n or right_c.max() >= n or max(ibug.values()) >= n:
        raise _missing(ibug_path, f"does not match {SHAPE_FILE}")
    sym = _full_symmetry(mean3, ref_sym)

    triangles = _fix_winding(triangles, mean3)
    loop = _mouth_loop(triangles, mean3)
    lmk = _fill_jawline(mean3, sym, right_c, ibug)
    xs = mean3[loop, 0]
    lmk[61] = int(loop[np.argmin(xs)])  # inner mouth corner, subject's right (-x)
    lmk[65] = int(sym[lmk[61]])
    missing = [k for k in range(1, NUM_LANDMARKS + 1) if k not in lmk]
    if missing:
        raise _missing(ibug_path, f"lacks iBUG points {missing}")
    landmark_vertices = np.array([lmk[k] for k in range(1, NUM_LANDMARKS + 1)], np.int64)

    model_out = SfmModel(
        mean=mean3.astype(np.float32),
        identity_basis=np.ascontiguousarray(basis.T.reshape(-1, n, 3), dtype=np.float32),
        expression_names=names,
        expression_basis=np.ascontiguousarray(expr.reshape(-1, n, 3), dtype=np.float32),
        triangles=triangles,
        landmark_vertices=landmark_vertices,
        symmetry=sym,
        mouth_loop=loop,
        source_dir=folder,
    )
    # the model is cached and shared: make its arrays read-only so no caller edits it in place
    for name in ("mean", "identity_basis", "expression_basis", "triangles", "landmark_vertices",
                 "symmetry", "mouth_loop"):
        getattr(model_out, name).setflags(write=False)
    return model_out


def load_sfm(sfm_dir: str | Path) -> SfmModel:
    """Load the SFM from ``sfm_dir`` (cached per resolved folder; arrays are shared, don't modify).

    Raises :class:`EvpError` naming the file and the fix when a file is missing or corrupt.
    """
    folder = Path(sfm_dir).expanduser()
    try:
        key = str(folder.resolve())
    except OSError:
        key = str(folder.absolute())
    return _load_cached(key)
