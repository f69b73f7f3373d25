"""Tracks: the one contract between stages (numpy-only, so Blender can read it too).

A :class:`Track` holds one clip's facial animation at a fixed frame rate (25 fps by default):

=====================  ===============  ==================================================
field                  shape / dtype    meaning
=====================  ===============  ==================================================
``fps``                float            frames per second (stored in every file)
``landmarks_2d``       (T, 68, 2) f32   iBUG-68 points in pixels, x right, y down, in an
                                        image of ``image_size`` = (width, height)
``landmarks_3d``       (T, 68, 3) f32   optional pose-invariant 3D landmarks, mm (SFM frame)
``gaze``               (T, 2) f32       optional eye rotation in the head (both eyes), radians,
                                        [pitch(x), yaw(y)] about the head's axes (as pose_rotation)
``pose_rotation``      (T, 3) f32       head rotation, radians, [pitch(x), yaw(y), roll(z)],
                                        R = Rz(roll) @ Ry(yaw) @ Rx(pitch)
``pose_translation``   (T, 2) f32       2D translation in pixels (EVP Eq. 8's t)
``pose_scale``         (T,) f32         scaled-orthographic scale, pixels per mm
``identity``           (S,) f32         SFM identity coefficients (std units); S may be 0
``expression``         (T, K) f32       named expression coefficients (K may be 0)
``expression_names``   K strings        unique channel names (see evp_anim.face.channels)
``emotion``            (T, 8) f32       per-frame emotion weights in EMOTIONS order, rows sum to 1
``intensity``          (T,) f32         per-frame emotion intensity in [0, 1]
``phonemes``           list             optional (start_s, end_s, symbol) segments
``provenance``         dict             source audio hash, model name/version, command, ...
``info``               dict             free-form clip facts (speaker, sentence, corpus, ...)
=====================  ===============  ==================================================

On disk a track is one ``.npz`` (no pickles) with a JSON ``meta`` entry carrying the format tag,
``schema_version``, fps, image size, names and the lists/dicts. :func:`load_track` validates
everything and raises :class:`~evp_anim.errors.EvpError` with a one-line message on any problem;
:func:`save_track` writes atomically (temporary file + rename); :class:`TrackWriter` writes the
same file from chunks of frames as they are made (long clips: memory bounded by the chunk).

Track files may come from anyone, so loading is bounded: only the known members are read (an extra
member is never decompressed), each member's ``.npy`` header (shape, dtype) is checked against
:data:`MAX_FRAMES`, :data:`MAX_CHANNELS` and :data:`MAX_META_BYTES` *before* its data is allocated,
and fps / image size must lie in [:data:`MIN_FPS`, :data:`MAX_FPS`] / [1, :data:`MAX_IMAGE_SIDE`] —
a valid-looking track at fps 0.001 would otherwise make every stage that works in seconds or
pixels (alignment, preview, rendering) allocate without bound.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from .atomic import atomic_output, atomic_path, write_error
from .emotions import EMOTIONS, NUM_EMOTIONS
from .errors import EvpError

FORMAT = "evp-anim-track"
SCHEMA_VERSION = 1
DEFAULT_FPS = 25.0               # frames per second of every track the project makes
NUM_LANDMARKS = 68               # iBUG 68-point convention
MOUTH = slice(48, 68)            # iBUG points 49..68 (0-based 48..67): outer and inner lips

# Sane ranges for untrusted files (issue 15). 240 fps covers high-speed footage; a track below
# 1 fps is not animation. 1,000,000 frames is 11 hours at 25 fps (about 1.5 GB of arrays).
MIN_FPS, MAX_FPS = 1.0, 240.0
MAX_IMAGE_SIDE = 32768           # pixels, either side of ``image_size``
MAX_FRAMES = 1_000_000
MAX_CHANNELS = 4096              # expression channels K, identity coefficients S
MAX_META_BYTES = 64 << 20        # the JSON ``meta`` member

# Per-frame arrays and their trailing shapes (None = K, the number of expression channels).
_FRAME_FIELDS: dict[str, tuple] = {
    "landmarks_2d": (NUM_LANDMARKS, 2),
    "landmarks_3d": (NUM_LANDMARKS, 3),
    "pose_rotation": (3,),
    "pose_translation": (2,),
    "pose_scale": (),
    "expression": (None,),
    "emotion": (NUM_EMOTIONS,),
    "intensity": (),
    "gaze": (2,),
}
_OPTIONAL = {"landmarks_3d", "gaze"}


@dataclasses.dataclass
class Track:
    """One clip of facial animation; see the module docstring for fields, shapes and units."""

    fps: float
    landmarks_2d: np.ndarray
    image_size: tuple[int, int]
    pose_rotation: np.ndarray
    pose_translation: np.ndarray
    pose_scale: np.ndarray
    expression: np.ndarray
    expression_names: list[str]
    emotion: np.ndarray
    intensity: np.ndarray
    identity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks_3d: np.ndarray | None = None
    gaze: np.ndarray | None = None
    phonemes: list[tuple[float, float, str]] = dataclasses.field(default_factory=list)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def new(cls, landmarks_2d: np.ndarray, *, fps: float = DEFAULT_FPS,
            image_size: tuple[int, int] = (256, 256), **fields: Any) -> "Track":
        """Build a track from landmarks, filling absent fields with neutral defaults.

        Defaults: identity pose (zero rotation/translation, scale 1), no expression channels,
        neutral emotion with intensity 0. The result is validated.
        """
        lm = np.asarray(landmarks_2d, np.float32)
        t = lm.shape[0] if lm.ndim == 3 else 0
        defaults: dict[str, Any] = {
            "pose_rotation": np.zeros((t, 3), np.float32),
            "pose_translation": np.zeros((t, 2), np.float32),
            "pose_scale": np.ones(t, np.float32),
            "expression": np.zeros((t, 0), np.float32),
            "expression_names": [],
            "emotion": np.tile(np.eye(NUM_EMOTIONS, dtype=np.float32)[0], (t, 1)),
            "intensity": np.zeros(t, np.float32),
        }
        defaults.update(fields)
        track = cls(fps=float(fps), landmarks_2d=lm, image_size=tuple(image_size), **defaults)
        track.validate()
        return track

    # ------------------------------------------------------------------ properties
    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.landmarks_2d.shape[0])

    @property
    def duration(self) -> float:
        """Duration in seconds (T / fps)."""
        return self.n_frames / self.fps

    def channel(self, name: str) -> np.ndarray:
        """(T,) values of expression channel ``name``."""
        try:
            return self.expression[:, self.expression_names.index(name)]
        except ValueError:
            raise EvpError(f"track has no expression channel {name!r}") from None

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-frame arrays by field name (optional ones only when present)."""
        out = {}
        for name in _FRAME_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    # ------------------------------------------------------------------ validation
    def validate(self, source: str = "track") -> "Track":
        """Check shapes, dtypes, finiteness and ranges; coerce float arrays to float32.

        Raises :class:`EvpError` naming ``source`` and the offending field.
        """
        def fail(msg: str) -> None:
            raise EvpError(f"{source}: {msg}")

        fps = _finite(self.fps)
        if fps is None or not MIN_FPS <= fps <= MAX_FPS:
            fail(f"fps must be a number in [{MIN_FPS:g}, {MAX_FPS:g}], got {_short(self.fps)}")
        self.fps = fps
        if not _image_size_ok(self.image_size):
            fail(f"image_size must be two integers (width, height) in 1..{MAX_IMAGE_SIDE}, "
                 f"got {_short(self.image_size)}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

        lm = self.landmarks_2d
        if not isinstance(lm, np.ndarray) or lm.ndim != 3:
            fail("landmarks_2d must be a (T, 68, 2) array")
        t = lm.shape[0]
        if t == 0:
            fail("track has 0 frames")
        if t > MAX_FRAMES:
            fail(f"track has {t} frames, more than the {MAX_FRAMES} a track may hold")
        names = self.expression_names
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
            fail("expression_names must be a list of non-empty strings")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if list(names).count(n) > 1})
            fail(f"expression_names has duplicates: {dup}")
        self.expression_names = list(names)
        k = len(names)

        for name, tail in _FRAME_FIELDS.items():
            arr = getattr(self, name)
            if arr is None:
                if name in _OPTIONAL:
                    continue
                fail(f"missing field {name}")
            if not isinstance(arr, np.ndarray):
                arr = np.asarray(arr)
            if not np.issubdtype(arr.dtype, np.floating):
                fail(f"{name} must be floating point, got dtype {arr.dtype}")
            want = (t,) + tuple(k if d is None else d for d in tail)
            if arr.shape != want:
                fail(f"{name} has shape {arr.shape}, expected {want}")
            arr = arr.astype(np.float32, copy=False)
            bad = ~np.isfinite(arr)
            if bad.any():
                frame = int(np.argwhere(bad)[0][0])
                fail(f"{name} has NaN or infinite values (first at frame {frame})")
            setattr(self, name, arr)

        ident = np.asarray(self.identity)
        if ident.ndim != 1 or (ident.size and not np.issubdtype(ident.dtype, np.floating)):
            fail(f"identity must be a 1-D float array, got shape {ident.shape}")
        if not np.all(np.isfinite(ident)):
            fail("identity has NaN or infinite values")
        self.identity = ident.astype(np.float32, copy=False)

        if (self.emotion < -1e-6).any():
            fail("emotion weights must be non-negative")
        sums = self.emotion.sum(axis=1)
        if np.abs(sums - 1.0).max() > 1e-3:
            frame = int(np.argmax(np.abs(sums - 1.0)))
            fail(f"emotion weights must sum to 1 per frame (frame {frame} sums to {sums[frame]:.4f})")
        if (self.intensity < -1e-6).any() or (self.intensity > 1 + 1e-6).any():
            fail("intensity must lie in [0, 1]")
        if (self.pose_scale <= 0).any():
            fail("pose_scale must be positive")

        phon = []
        for seg in self.phonemes:
            try:
                s, e, sym = float(seg[0]), float(seg[1]), str(seg[2])
            except (TypeError, ValueError, IndexError, KeyError, OverflowError):
                fail(f"phoneme segment {_short(seg)} is not (start_s, end_s, symbol)")
            if not (np.isfinite(s) and np.isfinite(e)) or e < s:
                fail(f"phoneme segment {_short(seg)} has end before start")
            phon.append((s, e, sym))
        self.phonemes = phon
        if not isinstance(self.provenance, dict) or not isinstance(self.info, dict):
            fail("provenance and info must be dicts")
        return self

    # ------------------------------------------------------------------ editing
    def copy(self) -> "Track":
        """Deep copy."""
        return dataclasses.replace(
            self, **{k: v.copy() for k, v in self.arrays().items()},
            identity=self.identity.copy(), expression_names=list(self.expression_names),
            phonemes=list(self.phonemes), provenance=json.loads(json.dumps(self.provenance)),
            info=json.loads(json.dumps(self.info)))

    def slice(self, start: int, stop: int | None = None) -> "Track":
        """Frames [start, stop) as a new track; phonemes are clipped and shifted to the new start."""
        stop = self.n_frames if stop is None else stop
        if not 0 <= start < stop <= self.n_frames:
            raise EvpError(f"slice [{start}, {stop}) is outside the track's 0..{self.n_frames} frames")
        t0, t1 = start / self.fps, stop / self.fps
        phon = [(max(s, t0) - t0, min(e, t1) - t0, p) for s, e, p in self.phonemes if e > t0 and s < t1]
        out = self.copy()
        for name, arr in self.arrays().items():
            setattr(out, name, arr[start:stop].copy())
        out.phonemes = phon
        return out.validate()

    def resample(self, fps: float) -> "Track":
        """The same motion at ``fps`` frames per second (linear interpolation in time).

        Frame i is sampled at time i / fps; the new length is round(duration * fps).
        Emotion weights are renormalised after interpolation; rotations are interpolated per
        Euler angle, which is accurate for the small head rotations of talking faces.
        """
        fps = float(fps)
        if not np.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
            raise EvpError(f"fps must be in [{MIN_FPS:g}, {MAX_FPS:g}], got {fps!r}")
        if fps == self.fps:
            return self.copy()
        n_new = max(1, int(round(self.duration * fps)))
        if n_new > MAX_FRAMES:   # bounds every consumer that resamples (align, exports) before allocating
            raise EvpError(f"resampling {self.n_frames} frames from {self.fps:g} to {fps:g} fps would give "
                           f"{n_new} frames, more than the {MAX_FRAMES} a track may hold")
        src_t = np.arange(self.n_frames) / self.fps
        dst_t = np.clip(np.arange(n_new) / fps, 0.0, src_t[-1])
        idx = np.clip(np.searchsorted(src_t, dst_t, side="right") - 1, 0, self.n_frames - 1)
        nxt = np.minimum(idx + 1, self.n_frames - 1)
        span = np.where(nxt > idx, src_t[nxt] - src_t[idx], 1.0)
        w = ((dst_t - src_t[idx]) / span).astype(np.float32)
        out = self.copy()
        out.fps = fps
        for name, arr in self.arrays().items():
            wb = w.reshape((-1,) + (1,) * (arr.ndim - 1))
            setattr(out, name, (arr[idx] * (1 - wb) + arr[nxt] * wb).astype(np.float32))
        out.emotion = out.emotion / out.emotion.sum(axis=1, keepdims=True)
        return out.validate()

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, Any]:
        """The JSON part of the file (everything that is not a per-frame array)."""
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "fps": self.fps,
            "n_frames": self.n_frames,
            "image_size": list(self.image_size),
            "expression_names": list(self.expression_names),
            "emotion_names": list(EMOTIONS),
            "phonemes": [[s, e, p] for s, e, p in self.phonemes],
            "provenance": self.provenance,
            "info": self.info,
        }


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line errors about untrusted values."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _finite(value: Any) -> float | None:
    """``value`` as a finite float if it is a real number (not a bool); else None. A JSON integer
    too large for a float (``1e400`` written out) is None too, not an OverflowError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        v = float(value)
    except OverflowError:
        return None
    return v if np.isfinite(v) else None


def _image_size_ok(size: Any) -> bool:
    """Whether ``size`` is (width, height): two integers (or integral floats, as JSON may give) in
    1..MAX_IMAGE_SIDE. Strings ("ab"), nested lists and booleans are not."""
    if isinstance(size, (str, bytes)) or not isinstance(size, (tuple, list, np.ndarray)) or len(size) != 2:
        return False
    for v in size:
        f = _finite(v)
        if f is None or int(f) != f or not 1 <= f <= MAX_IMAGE_SIDE:
            return False
    return True


def concat(tracks: Sequence[Track]) -> Track:
    """Concatenate tracks in time. They must share fps, image size, channel names and identity."""
    if not tracks:
        raise EvpError("nothing to concatenate")
    first = tracks[0]
    for i, tr in enumerate(tracks[1:], start=1):
        if tr.fps != first.fps:
            raise EvpError(f"track {i} has fps {tr.fps}, track 0 has {first.fps}: resample first")
        if tr.image_size != first.image_size:
            raise EvpError(f"track {i} has image size {tr.image_size}, track 0 has {first.image_size}")
        if tr.expression_names != first.expression_names:
            raise EvpError(f"track {i} has different expression channels from track 0")
        for name in _OPTIONAL:
            if (getattr(tr, name) is None) != (getattr(first, name) is None):
                raise EvpError(f"track {i} {'lacks' if getattr(tr, name) is None else 'has'} {name}, "
                               f"track 0 {'has' if getattr(tr, name) is None else 'does not'}")
        if tr.identity.shape != first.identity.shape or not np.allclose(tr.identity, first.identity):
            raise EvpError(f"track {i} has a different identity from track 0")
    out = first.copy()
    for name in first.arrays():
        setattr(out, name, np.concatenate([getattr(t, name) for t in tracks], axis=0))
    phon, offset = [], 0.0
    for tr in tracks:
        phon += [(s + offset, e + offset, p) for s, e, p in tr.phonemes]
        offset += tr.duration
    out.phonemes = phon
    return out.validate()


# ---------------------------------------------------------------------- file I/O
def save_track(track: Track, path: str | os.PathLike) -> Path:
    """Validate and write ``track`` to ``path`` (.npz) atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise EvpError(f"track files end in .npz, got {path.name!r}")
    track.validate(str(path))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            _write_npz(track, f)
    return path


def _write_npz(track: Track, f) -> None:
    meta = json.dumps(track.meta(), allow_nan=False)
    np.savez_compressed(f, **track.arrays(), identity=track.identity,
                        meta=np.frombuffer(meta.encode("utf-8"), np.uint8))


class TrackWriter:
    """Write a track file chunk by chunk: :meth:`append` takes consecutive frames as a
    :class:`Track` (any number of frames), :meth:`close` writes the ``.npz``. The file loads with
    :func:`load_track` and holds what :func:`save_track` of the concatenated track would.

    Memory does not grow with the track: each per-frame array is spooled to an unnamed temporary
    file in the target's folder as chunks arrive (raw float32 rows), and :meth:`close` streams the
    spools into the zip member by member (the ``.npy`` header gets the final frame count), through
    :func:`~evp_anim.atomic.atomic_output`: a temporary file renamed onto ``path`` at the end. So a
    failure at any point (an exception, :meth:`abort`, leaving a ``with`` block by an exception)
    leaves neither a partial track nor a temporary file; unnamed spools vanish even on SIGKILL.

    The first chunk fixes fps, image size, expression channels, identity and whether
    ``landmarks_3d`` and ``gaze`` are present; later chunks must match. ``provenance`` and ``info`` come from the
    first chunk and may be edited until :meth:`close`; ``phonemes`` of every chunk are shifted to
    the chunk's start, as :func:`concat` does. OS errors (disk full, a read-only folder) become a
    one-line :class:`EvpError`.

        with TrackWriter("out.npz") as w:
            for chunk in chunks:        # Track of frames [a, b)
                w.append(chunk)
    """

    _COPY_BYTES = 1 << 22               # spool → zip copy block (4 MiB)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise EvpError(f"track files end in .npz, got {self.path.name!r}")
        self.n_frames = 0
        self.provenance: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.phonemes: list[tuple[float, float, str]] = []
        self._first: Track | None = None
        self._spools: dict[str, BinaryIO] = {}
        self._closed = False

    def __enter__(self) -> "TrackWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def append(self, chunk: Track) -> None:
        """Add the frames of ``chunk`` (validated) after those written so far."""
        if self._closed:
            raise EvpError(f"{self.path}: the track writer is closed")
        chunk.validate(f"{self.path} (frames from {self.n_frames})")
        first = self._first
        if first is None:
            # A one-frame copy is all the header needs; holding the chunk would hold its arrays.
            first = self._first = dataclasses.replace(chunk, **{k: v[:1].copy() for k, v in chunk.arrays().items()})
            self.provenance = json.loads(json.dumps(chunk.provenance))
            self.info = json.loads(json.dumps(chunk.info))
        elif (chunk.fps != first.fps or chunk.image_size != first.image_size
              or chunk.expression_names != first.expression_names
              or any((getattr(chunk, k) is None) != (getattr(first, k) is None) for k in _OPTIONAL)
              or not np.array_equal(chunk.identity, first.identity)):
            raise EvpError(f"{self.path}: frames from {self.n_frames} differ from the first chunk in fps, "
                           "image size, expression channels, identity, landmarks_3d or gaze")
        if self.n_frames + chunk.n_frames > MAX_FRAMES:
            raise EvpError(f"{self.path}: more than the {MAX_FRAMES} frames a track may hold")
        offset = self.n_frames / first.fps
        self.phonemes += [(s + offset, e + offset, p) for s, e, p in chunk.phonemes]
        try:
            for name, arr in chunk.arrays().items():
                spool = self._spools.get(name)
                if spool is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    # Unnamed (O_TMPFILE where the filesystem has it) beside the target: on the
                    # output's disk, not in a RAM-backed /tmp, and gone whatever ends the process.
                    spool = self._spools[name] = tempfile.TemporaryFile(
                        prefix=f".{self.path.name}.{name}.", dir=self.path.parent)
                spool.write(np.ascontiguousarray(arr, np.float32).data)
        except OSError as e:
            self.abort()
            raise write_error(self.path, e) from None
        self.n_frames += chunk.n_frames

    def meta(self) -> dict[str, Any]:
        """The JSON ``meta`` of the file as it stands (the frames appended so far)."""
        if self._first is None:
            raise EvpError(f"{self.path}: track has 0 frames")
        meta = self._first.meta()
        meta.update(n_frames=self.n_frames, phonemes=[[s, e, p] for s, e, p in self.phonemes],
                    provenance=self.provenance, info=self.info)
        return meta

    def close(self) -> Path:
        """Write the file atomically, drop the spools; returns the path."""
        if self._closed:
            raise EvpError(f"{self.path}: the track writer is closed")
        try:
            meta = json.dumps(self.meta(), allow_nan=False).encode("utf-8")
            first = self._first
            members = []
            for name, tail in _FRAME_FIELDS.items():
                if name in self._spools:
                    shape = (self.n_frames,) + tuple(len(first.expression_names) if d is None else d for d in tail)
                    members.append((name, np.dtype(np.float32), shape, self._spool_bytes(self._spools[name])))
            members.append(("identity", np.dtype(np.float32), first.identity.shape, [first.identity.tobytes()]))
            members.append(("meta", np.dtype(np.uint8), (len(meta),), [meta]))
            with atomic_output(self.path) as tmp:
                with open(tmp, "wb") as f:
                    _write_npz_members(f, members)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far (nothing was ever under the target's name)."""
        self._closed = True
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()

    def _spool_bytes(self, spool: BinaryIO):
        spool.flush()
        spool.seek(0)
        while True:
            block = spool.read(self._COPY_BYTES)
            if not block:
                return
            yield block


def _write_npz_members(f, members) -> None:
    """Write an ``.npz`` to the open binary file ``f`` as :func:`numpy.savez_compressed` does
    (deflated zip, zip64 entries, one ``<name>.npy`` per member, header version 1.0), from
    ``(name, dtype, shape, byte blocks)`` rows: the data arrive block by block, C order."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, dtype, shape, blocks in members:
            with zf.open(name + ".npy", "w", force_zip64=True) as fid:
                np.lib.format.write_array_header_1_0(fid, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                    "shape": tuple(int(d) for d in shape)})
                for block in blocks:
                    fid.write(block)


def _member_header(z, name: str, src: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data stored) of member ``name`` of the open NpzFile ``z``, read from
    its ``.npy`` header alone (a few hundred bytes), so that a member can be refused before its data
    is allocated."""
    info = z.zip.getinfo(name + ".npy")
    with z.zip.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise EvpError(f"{src}: array {name} has unsupported .npy version {version}")
        header_len = fp.tell()
    return tuple(int(d) for d in shape), dtype, info.file_size - header_len


def _check_member(name: str, header: tuple[tuple[int, ...], np.dtype, int], n_channels: int, src: str) -> None:
    """Refuse a known member whose declared size no sane track reaches: more than MAX_FRAMES frames
    of the field's row size (K = ``n_channels`` for ``expression``), an identity longer than
    MAX_CHANNELS, a meta longer than MAX_META_BYTES, Python objects or items wider than 8 bytes; and
    one whose zip entry holds less data than its header declares (truncated). Shape mistakes within
    those bounds are left to :meth:`Track.validate`, which names them precisely."""
    shape, dtype, stored = header
    if dtype.hasobject:
        raise EvpError(f"{src}: array {name} holds Python objects; refused")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if name == "meta":
        limit, unit = MAX_META_BYTES, 1          # UTF-8 bytes
    elif name == "identity":
        limit, unit = MAX_CHANNELS, 8            # at most float64
    else:
        tail = _FRAME_FIELDS[name]
        row = int(np.prod([n_channels if d is None else d for d in tail], dtype=np.int64)) if tail else 1
        limit, unit = MAX_FRAMES * max(row, 1), 8
    if (dtype.itemsize != unit) if name == "meta" else (dtype.itemsize > unit):
        raise EvpError(f"{src}: array {name} has dtype {dtype}; refused")
    if count > limit:
        raise EvpError(f"{src}: array {name} declares shape {shape} ({count * dtype.itemsize / 2**20:.0f} MiB), "
                       f"more than a track may hold; refused")
    if stored < count * dtype.itemsize:
        raise EvpError(f"{src}: array {name} is truncated ({stored} bytes stored, its header declares "
                       f"{count * dtype.itemsize})")


def _read_members(path: Path, src: str) -> tuple[dict[str, np.ndarray], dict]:
    """The known members of the track file at ``path`` (``meta`` parsed), each size-checked from its
    header before it is read; members with other names are never touched."""
    with np.load(path, allow_pickle=False) as z:          # lazy NpzFile: nothing is read yet
        present = set(z.files)
        if "meta" not in present:
            raise EvpError(f"{src}: not an evp-anim track (no meta entry)")
        _check_member("meta", _member_header(z, "meta", src), 0, src)
        try:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise EvpError(f"{src}: track meta is not valid JSON ({str(e).splitlines()[0][:100]})") from None
        if not isinstance(meta, dict):
            raise EvpError(f"{src}: not an evp-anim track (meta is a {type(meta).__name__})")
        names = meta.get("expression_names")
        k = len(names) if isinstance(names, list) else 0
        if k > MAX_CHANNELS:
            raise EvpError(f"{src}: track declares {k} expression channels, more than {MAX_CHANNELS}")
        data = {}
        for name in (*_FRAME_FIELDS, "identity"):
            if name in present:
                _check_member(name, _member_header(z, name, src), k, src)
                data[name] = z[name]
    return data, meta


def load_track(path: str | os.PathLike) -> Track:
    """Read and validate a track file; raises :class:`EvpError` with a one-line reason.

    Only the known members are read, each after a size check of its header (see the module
    docstring), so a small hostile file cannot make this allocate more than a sane track needs."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise EvpError(f"track file not found: {src}")
    try:
        data, meta = _read_members(path, src)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, NotImplementedError,
            RuntimeError, KeyError) as e:
        msg = str(e).splitlines()[0][:120] if str(e) else ""
        raise EvpError(f"{src}: not a readable track file ({type(e).__name__}{': ' + msg if msg else ''})") from None
    if meta.get("format") != FORMAT:
        raise EvpError(f"{src}: not an evp-anim track (format tag is {_short(meta.get('format'))})")
    version = meta.get("schema_version")
    if not isinstance(version, int):
        raise EvpError(f"{src}: track has no integer schema_version")
    if version > SCHEMA_VERSION:
        raise EvpError(f"{src}: track schema version {_short(version)} is newer than this evp-anim supports "
                       f"({SCHEMA_VERSION}); upgrade evp-anim")
    if meta.get("emotion_names", list(EMOTIONS)) != list(EMOTIONS):
        raise EvpError(f"{src}: emotion columns {meta.get('emotion_names')} differ from {list(EMOTIONS)}")
    for name in _FRAME_FIELDS:
        if name not in data and name not in _OPTIONAL:
            raise EvpError(f"{src}: track lacks the array {name!r}")
    try:
        track = Track(
            fps=meta["fps"],
            landmarks_2d=data["landmarks_2d"],
            image_size=meta["image_size"],           # validate() checks it, then makes it a tuple
            pose_rotation=data["pose_rotation"],
            pose_translation=data["pose_translation"],
            pose_scale=data["pose_scale"],
            expression=data["expression"],
            expression_names=meta["expression_names"],
            emotion=data["emotion"],
            intensity=data["intensity"],
            identity=data.get("identity", np.zeros(0, np.float32)),
            landmarks_3d=data.get("landmarks_3d"),
            gaze=data.get("gaze"),
            phonemes=[tuple(p) if isinstance(p, list) else p for p in meta.get("phonemes", [])],
            provenance=meta.get("provenance", {}),
            info=meta.get("info", {}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise EvpError(f"{src}: track meta lacks or mangles {_short(str(e))}") from None
    track.validate(src)
    if meta.get("n_frames", track.n_frames) != track.n_frames:
        raise EvpError(f"{src}: meta says {_short(meta['n_frames'])} frames but arrays hold {track.n_frames}")
    return track
