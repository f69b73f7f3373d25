"""Writers and readers for the file formats animators and pipelines already use (numpy-only).

Every writer takes a :class:`~evp_anim.tracks.Track` (any fps; timestamps are ``frame / fps``
seconds) and writes atomically; every reader returns plain arrays plus the fps, so each format
round-trips (values equal to float precision of the text, 6 decimals). ``evp-anim export`` finds
the writer of each ``--format`` through :data:`evp_anim.export.registry.EXPORT_FORMATS`.

=================  =====================================================================
format             columns / content
=================  =====================================================================
``arkit-csv``      ``frame,time,<52 ARKit names>``; 0-based frames, seconds, weights 0–1
``livelink-csv``   Live Link Face: ``Timecode,BlendShapeCount,EyeBlinkLeft,…,TongueOut,
                   HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,…,RightEyeRoll`` (61 values);
                   timecode ``HH:MM:SS:FF.fff`` at the track's fps, head angles in radians
``openface-csv``   OpenFace 2: ``frame, face_id, timestamp, confidence, success,
                   pose_Tx..pose_Rz, x_0..x_67, y_0..y_67[, X_0..Z_67]`` (1-based frames)
``rhubarb-json``   Rhubarb Lip Sync: ``metadata`` (soundFile, duration, frameRate) and
                   ``mouthCues`` [{start, end, value}] with shapes A–H and X
=================  =====================================================================
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..errors import EvpError
from ..tracks import NUM_LANDMARKS, Track
from .arkit import ARKIT_52, to_arkit52

_DEC = 6  # decimals written for weights, angles and coordinates


def _fmt(x: float) -> str:
    return f"{float(x):.{_DEC}f}"


def _csv_text(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _read_csv(path: str | os.PathLike, what: str) -> tuple[list[str], list[list[str]]]:
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"{what} file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f) if r]
    except (UnicodeDecodeError, csv.Error) as e:
        raise EvpError(f"{path}: not a readable {what} ({e})") from None
    if len(rows) < 2:
        raise EvpError(f"{path}: {what} has no data rows")
    return rows[0], rows[1:]


def _columns(path, header: list[str], rows: list[list[str]], names, what: str) -> np.ndarray:
    """(T, len(names)) float64 of the named columns; EvpError naming a missing column / bad cell."""
    index = {h: i for i, h in enumerate(header)}
    missing = [n for n in names if n not in index]
    if missing:
        raise EvpError(f"{path}: {what} lacks the column(s) {missing[:5]}")
    cols = [index[n] for n in names]
    try:
        return np.array([[float(r[c]) for c in cols] for r in rows], np.float64)
    except (ValueError, IndexError) as e:
        raise EvpError(f"{path}: {what} has a bad or short row ({e})") from None


# ---------------------------------------------------------------------- ARKit CSV
@dataclasses.dataclass
class BlendshapeTable:
    """Per-frame blendshape weights read back from a CSV.

    fps: frames per second; times: (T,) seconds; names: column names;
    values: (T, len(names)) float32; head_rotation: (T, 3) [pitch, yaw, roll] radians or None.
    """

    fps: float
    times: np.ndarray
    names: list[str]
    values: np.ndarray
    head_rotation: np.ndarray | None = None


def write_arkit_csv(track: Track, path: str | os.PathLike) -> Path:
    """``frame,time,<ARKIT_52>`` with one row per frame (frame 0-based, time = frame / fps s)."""
    w = to_arkit52(track.expression, track.expression_names)
    rows = ([str(i), f"{i / track.fps:.9f}"] + [_fmt(v) for v in w[i]] for i in range(track.n_frames))
    write_text_atomic(path, _csv_text(["frame", "time", *ARKIT_52], rows))
    return Path(path)


def _fps_from_times(path, times: np.ndarray) -> float:
    if len(times) < 2:
        raise EvpError(f"{path}: need at least two rows to know the frame rate")
    if not np.all(np.diff(times) > 0):
        raise EvpError(f"{path}: time column does not increase")
    fps = (len(times) - 1) / float(times[-1] - times[0])   # the whole span: text rounding averages out
    # snap to the rate the writer meant (integer or NTSC n*1000/1001) when the text rounding hides it
    for nice in (round(fps), round(fps * 1.001) / 1.001):
        if nice > 0 and abs(fps - nice) < 1e-4 * nice:
            return float(nice)
    return fps


def read_arkit_csv(path: str | os.PathLike) -> BlendshapeTable:
    """Read an ARKit CSV (as written by :func:`write_arkit_csv`); fps from the time column."""
    header, rows = _read_csv(path, "ARKit CSV")
    data = _columns(path, header, rows, ["time", *ARKIT_52], "ARKit CSV")
    times = data[:, 0]
    return BlendshapeTable(fps=_fps_from_times(path, times), times=times, names=list(ARKIT_52),
                           values=data[:, 1:].astype(np.float32))


# ---------------------------------------------------------------------- Live Link Face CSV
def _pascal(name: str) -> str:
    return name[0].upper() + name[1:]


LIVELINK_BLENDSHAPES: tuple[str, ...] = tuple(_pascal(n) for n in ARKIT_52)
LIVELINK_POSE: tuple[str, ...] = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch",
                                  "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
LIVELINK_HEADER: tuple[str, ...] = ("Timecode", "BlendShapeCount", *LIVELINK_BLENDSHAPES, *LIVELINK_POSE)
assert len(LIVELINK_BLENDSHAPES) + len(LIVELINK_POSE) == 61


def livelink_timecode(frame: int, fps: float) -> str:
    """SMPTE-style ``HH:MM:SS:FF.fff`` of ``frame`` at ``fps`` (FF = frame within the second,
    with its sub-frame fraction, as Live Link Face writes it); non-integer fps round FF down."""
    t = frame / fps
    secs = int(np.floor(t + 1e-9))
    ff = (t - secs) * fps
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{int(np.floor(ff + 1e-6)):02d}.{int(round((ff - np.floor(ff + 1e-6)) * 1000)) % 1000:03d}"


def _parse_timecode(path, tc: str, fps: float) -> float:
    try:
        h, m, s, f = tc.split(":")
        return int(h) * 3600 + int(m) * 60 + int(s) + float(f) / fps
    except ValueError:
        raise EvpError(f"{path}: bad Live Link timecode {tc!r} (expected HH:MM:SS:FF.fff)") from None


def write_livelink_csv(track: Track, path: str | os.PathLike) -> Path:
    """Live Link Face CSV: timecodes at the track's fps, 52 blendshapes, head yaw/pitch/roll in
    radians (the track's pose), eye angles 0 (the track has no gaze)."""
    w = to_arkit52(track.expression, track.expression_names)
    rot = track.pose_rotation  # [pitch, yaw, roll]
    rows = []
    for i in range(track.n_frames):
        pose = [rot[i, 1], rot[i, 0], rot[i, 2]] + [0.0] * 6
        rows.append([livelink_timecode(i, track.fps), str(len(ARKIT_52))] + [_fmt(v) for v in w[i]]
                    + [_fmt(v) for v in pose])
    write_text_atomic(path, _csv_text(list(LIVELINK_HEADER), rows))
    return Path(path)


def read_livelink_csv(path: str | os.PathLike, fps: float | None = None) -> BlendshapeTable:
    """Read a Live Link Face CSV. The format has no fps field: pass ``fps``, else it is inferred
    from the frame field (highest FF + 1, needs at least one second) — LLF's integer rates."""
    header, rows = _read_csv(path, "Live Link Face CSV")
    if not header or header[0] != "Timecode":
        raise EvpError(f"{path}: not a Live Link Face CSV (first column is {header[:1]}, expected Timecode)")
    codes = [r[0] for r in rows]
    if fps is None:
        try:
            ffs = [int(float(c.split(":")[3])) for c in codes]
            secs = {c.split(":")[2] for c in codes}
        except (IndexError, ValueError):
            raise EvpError(f"{path}: bad Live Link timecodes (expected HH:MM:SS:FF.fff)") from None
        if len(secs) < 2:
            raise EvpError(f"{path}: clip shorter than a second, pass the frame rate explicitly")
        fps = float(max(ffs) + 1)
    times = np.array([_parse_timecode(path, c, fps) for c in codes])
    times -= times[0]
    data = _columns(path, header, rows, list(LIVELINK_BLENDSHAPES) + ["HeadYaw", "HeadPitch", "HeadRoll"],
                    "Live Link Face CSV")
    yaw, pitch, roll = data[:, 52], data[:, 53], data[:, 54]
    return BlendshapeTable(fps=float(fps), times=times, names=list(ARKIT_52),
                           values=data[:, :52].astype(np.float32),
                           head_rotation=np.stack([pitch, yaw, roll], 1).astype(np.float32))


# ---------------------------------------------------------------------- OpenFace 2 CSV
OPENFACE_POSE = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")


def _openface_header(with_3d: bool) -> list[str]:
    h = ["frame", "face_id", "timestamp", "confidence", "success", *OPENFACE_POSE]
    h += [f"x_{i}" for i in range(NUM_LANDMARKS)] + [f"y_{i}" for i in range(NUM_LANDMARKS)]
    if with_3d:
        for ax in "XYZ":
            h += [f"{ax}_{i}" for i in range(NUM_LANDMARKS)]
    h.append("evp_scale")
    return h


def write_openface_csv(track: Track, path: str | os.PathLike) -> Path:
    """OpenFace 2 landmark CSV (1-based frames, timestamp = (frame-1)/fps s, confidence 1).

    ``pose_Tx, pose_Ty`` carry the track's 2D translation (pixels), ``pose_Tz`` is 0 (the track
    is scaled-orthographic), ``pose_Rx/Ry/Rz`` = pitch/yaw/roll radians, ``x_i, y_i`` the 2D
    landmarks (pixels), ``X_i..Z_i`` the pose-invariant 3D landmarks (mm) when the track has
    them; the extra last column ``evp_scale`` (pixels per mm) makes the pose complete.
    """
    with_3d = track.landmarks_3d is not None
    lm = track.landmarks_2d
    rows = []
    for i in range(track.n_frames):
        r = [str(i + 1), "0", f"{i / track.fps:.9f}", "1.00", "1"]
        tx, ty = track.pose_translation[i]
        r += [_fmt(tx), _fmt(ty), _fmt(0.0)] + [_fmt(v) for v in track.pose_rotation[i]]
        r += [_fmt(v) for v in lm[i, :, 0]] + [_fmt(v) for v in lm[i, :, 1]]
        if with_3d:
            for ax in range(3):
                r += [_fmt(v) for v in track.landmarks_3d[i, :, ax]]
        r.append(_fmt(track.pose_scale[i]))
        rows.append(r)
    write_text_atomic(path, _csv_text(_openface_header(with_3d), rows))
    return Path(path)


@dataclasses.dataclass
class OpenFaceTable:
    """An OpenFace CSV read back. times (T,) s; landmarks_2d (T, 68, 2) px; landmarks_3d
    (T, 68, 3) mm or None; pose_rotation (T, 3) [pitch, yaw, roll] rad; pose_translation (T, 2);
    pose_scale (T,) or None (OpenFace's own files lack it); success (T,) bool."""

    fps: float
    times: np.ndarray
    landmarks_2d: np.ndarray
    landmarks_3d: np.ndarray | None
    pose_rotation: np.ndarray
    pose_translation: np.ndarray
    pose_scale: np.ndarray | None
    success: np.ndarray

    def to_track(self, image_size: tuple[int, int] = (256, 256)) -> Track:
        """A Track with these landmarks and pose (no expression channels, neutral emotion)."""
        scale = self.pose_scale if self.pose_scale is not None else np.ones(len(self.times), np.float32)
        return Track.new(self.landmarks_2d, fps=self.fps, image_size=image_size,
                         landmarks_3d=self.landmarks_3d, pose_rotation=self.pose_rotation,
                         pose_translation=self.pose_translation, pose_scale=scale)


def read_openface_csv(path: str | os.PathLike) -> OpenFaceTable:
    """Read an OpenFace 2 CSV (ours or OpenFace's own ``FeatureExtraction`` output); fps from the
    timestamps. OpenFace's headers carry ", " separators, which are stripped."""
    header, rows = _read_csv(path, "OpenFace CSV")
    xs = [f"x_{i}" for i in range(NUM_LANDMARKS)]
    ys = [f"y_{i}" for i in range(NUM_LANDMARKS)]
    base = _columns(path, header, rows, ["timestamp", "success", *OPENFACE_POSE, *xs, *ys], "OpenFace CSV")
    times = base[:, 0]
    lm2 = np.stack([base[:, 8:8 + 68], base[:, 8 + 68:8 + 136]], axis=2).astype(np.float32)
    lm3 = None
    if "X_0" in header:
        d3 = _columns(path, header, rows, [f"{a}_{i}" for a in "XYZ" for i in range(NUM_LANDMARKS)],
                      "OpenFace CSV")
        lm3 = d3.reshape(len(rows), 3, NUM_LANDMARKS).transpose(0, 2, 1).astype(np.float32)
    scale = None
    if "evp_scale" in header:
        scale = _columns(path, header, rows, ["evp_scale"], "OpenFace CSV")[:, 0].astype(np.float32)
    return OpenFaceTable(fps=_fps_from_times(path, times), times=times, landmarks_2d=lm2, landmarks_3d=lm3,
                         pose_rotation=base[:, 5:8].astype(np.float32),
                         pose_translation=base[:, 2:4].astype(np.float32), pose_scale=scale,
                         success=base[:, 1] > 0.5)


# ---------------------------------------------------------------------- Rhubarb JSON
RHUBARB_SHAPES = "ABCDEFGHX"
# espeak phoneme symbols whose mouth shape the articulation channels cannot tell apart.
_PHONEME_SHAPES = {"_": "X", "m": "A", "b": "A", "p": "A", "f": "G", "v": "G", "l": "H", "L": "H"}


def rhubarb_shapes(track: Track) -> list[str]:
    """One Rhubarb mouth shape (A–H, X) per frame.

    From the phonemes when the track has them (silence → X, m/b/p → A, f/v → G, l → H), else and
    for all other sounds from the articulation channels: closed lips → A, pucker → F,
    funnel → E, lower lip rolled in → G, wide jaw → D, open jaw → C, no speech motion → X,
    otherwise B (slightly open, teeth together).
    """
    names = track.expression_names

    def ch(name: str) -> np.ndarray:
        return track.expression[:, names.index(name)] if name in names else np.zeros(track.n_frames, np.float32)

    jaw, pucker, funnel, roll = ch("jawOpen"), ch("mouthPucker"), ch("mouthFunnel"), ch("mouthRollLower")
    close = np.maximum(ch("mouthClose"), 0.5 * (ch("mouthPressLeft") + ch("mouthPressRight")))
    speech = np.maximum.reduce([jaw, pucker, funnel, roll, close, ch("mouthLowerDownLeft"),
                                ch("mouthUpperUpLeft"), ch("mouthStretchLeft")])
    by_phoneme: list[str | None] = [None] * track.n_frames
    for start, end, sym in track.phonemes:
        shape = _PHONEME_SHAPES.get(sym)
        if shape is None:
            continue
        f0, f1 = int(np.ceil(start * track.fps - 1e-9)), int(np.ceil(end * track.fps - 1e-9))
        for i in range(max(f0, 0), min(f1, track.n_frames)):
            by_phoneme[i] = shape
    out = []
    for i in range(track.n_frames):
        if by_phoneme[i] is not None:
            out.append(by_phoneme[i])
        elif close[i] > 0.3 and jaw[i] < 0.15:
            out.append("A")
        elif pucker[i] > 0.35:
            out.append("F")
        elif funnel[i] > 0.3:
            out.append("E")
        elif roll[i] > 0.35 and jaw[i] < 0.2:
            out.append("G")
        elif jaw[i] > 0.45:
            out.append("D")
        elif jaw[i] > 0.2:
            out.append("C")
        elif speech[i] < 0.05:
            out.append("X")
        else:
            out.append("B")
    return out


def rhubarb_cues(track: Track) -> list[dict]:
    """Runs of equal shapes as Rhubarb cues ``{"start": s, "end": s, "value": shape}`` (3 decimals)."""
    shapes = rhubarb_shapes(track)
    cues, start = [], 0
    for i in range(1, len(shapes) + 1):
        if i == len(shapes) or shapes[i] != shapes[start]:
            cues.append({"start": round(start / track.fps, 3), "end": round(i / track.fps, 3),
                         "value": shapes[start]})
            start = i
    return cues


def write_rhubarb_json(track: Track, path: str | os.PathLike, sound_file: str = "") -> Path:
    """Rhubarb Lip Sync JSON (``metadata`` + ``mouthCues``); ``frameRate`` is an evp-anim addition."""
    doc = {"metadata": {"soundFile": sound_file or str(track.info.get("audio", "")),
                        "duration": round(track.duration, 3), "frameRate": track.fps},
           "mouthCues": rhubarb_cues(track)}
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
    return Path(path)


def read_rhubarb_json(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(metadata, cues) of a Rhubarb JSON file; EvpError for a file without valid ``mouthCues``."""
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"Rhubarb JSON file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        cues = [{"start": float(c["start"]), "end": float(c["end"]), "value": str(c["value"])}
                for c in doc["mouthCues"]]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise EvpError(f"{path}: not a Rhubarb JSON file ({type(e).__name__}: {e})") from None
    bad = [c["value"] for c in cues if c["value"] not in RHUBARB_SHAPES]
    if bad:
        raise EvpError(f"{path}: unknown mouth shape(s) {bad[:3]} (expected one of {RHUBARB_SHAPES})")
    return dict(doc.get("metadata", {})), cues

