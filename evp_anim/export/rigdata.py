"""The face rig as plain arrays in one ``.npz`` (numpy-only), for Blender's Python.

:class:`evp_anim.face.rig.FaceRig` derives its articulation basis from the SFM files with
scipy, which Blender does not ship. ``evp-anim export-rig`` (run once, by the add-on itself
when needed) writes the evaluated rig — mean, identity basis, per-channel deltas (mm),
triangles, landmark vertices, channel names — to a per-user cache keyed by the SFM folder and
the evp-anim version; :class:`RigData` reads it back with numpy alone and offers the parts of
FaceRig's API the Blender builder uses. Derived from the SFM files, so it stays in the user's
cache and is never shipped (the SFM licence is non-commercial).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_output
from ..errors import EvpError

RIG_DATA_FORMAT = "evp-anim-rig"
RIG_DATA_VERSION = 1


@dataclasses.dataclass
class RigData:
    """FaceRig's arrays (N vertices, S identity components, K channels; mm).

    channels: K names; mean (N, 3); identity_basis (S, N, 3) mm per std; deltas (K, N, 3);
    triangles (F, 3) int32; landmark_vertices (68,) int.
    """

    channels: tuple[str, ...]
    mean: np.ndarray
    identity_basis: np.ndarray
    deltas: np.ndarray
    triangles: np.ndarray
    landmark_vertices: np.ndarray

    @classmethod
    def from_rig(cls, rig) -> "RigData":
        return cls(tuple(rig.channels), np.asarray(rig.mean, np.float32), np.asarray(rig.identity_basis, np.float32),
                   np.asarray(rig.deltas, np.float32), np.asarray(rig.triangles, np.int32),
                   np.asarray(rig.landmark_vertices, np.int64))

    @property
    def num_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    def _base(self, identity, rows=None) -> np.ndarray:
        mean = self.mean if rows is None else self.mean[rows]
        if identity is None or np.asarray(identity).size == 0:
            return mean.astype(np.float32)
        basis = self.identity_basis if rows is None else self.identity_basis[:, rows]
        return (mean + np.tensordot(np.asarray(identity, np.float32), basis, axes=1)).astype(np.float32)

    def vertices(self, identity=None, weights=None) -> np.ndarray:
        """(N, 3) mm for (K,) / no weights, (T, N, 3) for (T, K) weights (as FaceRig.vertices)."""
        base = self._base(identity)
        if weights is None:
            return base
        w = np.asarray(weights, np.float32)
        out = base + np.tensordot(np.atleast_2d(w), self.deltas, axes=1)
        return out[0] if w.ndim == 1 else out

    def landmarks_3d(self, identity=None, weights=None) -> np.ndarray:
        """(T, 68, 3) mm landmarks for (T, K) weights (as FaceRig.landmarks_3d)."""
        lv = self.landmark_vertices
        base = self._base(identity, lv)
        if weights is None:
            return base
        w = np.asarray(weights, np.float32)
        out = base + np.tensordot(np.atleast_2d(w), self.deltas[:, lv], axes=1)
        return (out[0] if w.ndim == 1 else out).astype(np.float32)


def _rig_code_hash() -> str:
    """sha256 of the code that derives the rig (a changed articulation must not load an old cache)."""
    face = Path(__file__).resolve().parents[1] / "face"
    h = hashlib.sha256()
    for name in ("rig.py", "articulation.py", "channels.py", "sfm.py"):
        try:
            h.update((face / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()[:16]


def rig_cache_path(sfm_dir: str | os.PathLike) -> Path:
    """Per-user cache file for the rig of ``sfm_dir`` (``$XDG_CACHE_HOME/evp-anim/rig/``), keyed by
    the folder, its files' sizes and times, the evp-anim version and the rig's source code."""
    d = Path(sfm_dir).expanduser().resolve()
    stamp = [str(d), __version__, _rig_code_hash()] + [f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}"
                                                        for p in sorted(d.iterdir()) if p.is_file()]
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base).expanduser() if base.strip() else Path.home() / ".cache"
    return root / "evp-anim" / "rig" / f"rig-{key}.npz"


def save_rig_data(rig, path: str | os.PathLike) -> Path:
    """Write ``rig`` (a FaceRig or RigData) to ``path`` (.npz) atomically (a full disk or an
    unwritable folder is a one-line EvpError and leaves no file)."""
    data = rig if isinstance(rig, RigData) else RigData.from_rig(rig)
    meta = {"format": RIG_DATA_FORMAT, "version": RIG_DATA_VERSION, "channels": list(data.channels),
            "evp_anim": __version__}
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mean=data.mean, identity_basis=data.identity_basis, deltas=data.deltas,
                     triangles=data.triangles, landmark_vertices=data.landmark_vertices,
                     meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return path


def load_rig_data(path: str | os.PathLike) -> RigData:
    """Read a rig file written by :func:`save_rig_data`; EvpError with the reason otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays.pop("meta")).decode())
    except (OSError, ValueError, KeyError) as e:
        raise EvpError(f"{path}: not a readable rig file ({e}); delete it and run `evp-anim export-rig`") from None
    if meta.get("format") != RIG_DATA_FORMAT or meta.get("version") != RIG_DATA_VERSION:
        raise EvpError(f"{path}: rig file format {meta.get('format')} v{meta.get('version')} is not "
                       f"{RIG_DATA_FORMAT} v{RIG_DATA_VERSION}; run `evp-anim export-rig` again")
    return RigData(tuple(meta["channels"]), arrays["mean"], arrays["identity_basis"], arrays["deltas"],
                   arrays["triangles"], arrays["landmark_vertices"])
