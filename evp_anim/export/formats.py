"""Writers and readers for the file formats animators and pipelines already use (numpy-only).

Every writer takes a :class:`~evp_anim.tracks.Track` (any fps; timestamps are ``frame / fps``
seconds) and writes through :func:`evp_anim.atomic.atomic_output` (a unique temporary file in the
target folder, fsynced, renamed; an OS error such as a full disk is a one-line EvpError and leaves
nothing behind); every reader returns plain arrays plus the fps, so each format
round-trips (values equal to float precision of the text, 6 decimals). ``evp-anim export`` finds
the writer of each ``--format`` through :data:`evp_anim.export.registry.EXPORT_FORMATS`.

=================  =====================================================================
format             columns / content
=================  =====================================================================
``arkit-csv``      ``frame,time,<52 ARKit names>``; 0-based frames, seconds, weights 0–1 (the
                   ``sfm_*`` emotions folded in, eyeLook* from the track's gaze: see
                   :mod:`evp_anim.export.arkit`)
``livelink-csv``   Live Link Face, as the iOS app writes it: ``Timecode,BlendShapeCount,`` then
                   EyeBlinkLeft, EyeLookDownLeft, … TongueOut in the app's (ARKit enum) order,
                   then HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,…,RightEyeRoll (61 values,
                   BlendShapeCount = 61); timecode ``HH:MM:SS:FF.fff`` at the track's fps;
                   eye angles from the track's gaze (:data:`LIVELINK_EYE_CONVENTION`)
``openface-csv``   OpenFace 2.x ``FeatureExtraction``: all 714 columns, ", "-separated (frame,
                   face_id, timestamp, confidence, success, gaze_*, eye_lmk_*, pose_T* in mm
                   camera space, pose_R*, x_/y_, X_/Y_/Z_, p_scale…p_33, AU*_r, AU*_c); gaze_*
                   from the track's gaze (0 without); what a track cannot supply (eye landmarks,
                   OpenFace's shape modes) is 0
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

from ..atomic import atomic_output
from ..errors import EvpError
from ..face.projection import euler_to_matrix, matrix_to_euler
from ..tracks import NUM_LANDMARKS, Track
from .arkit import ARKIT_52, arkit_name, to_arkit52

_DEC = 6  # decimals written for weights, angles and coordinates


def _fmt(x: float) -> str:
    return f"{float(x):.{_DEC}f}"


def _write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` through the atomic writer (one-line EvpError on OS errors)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return Path(path)


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
    values: (T, len(names)) float32; head_rotation: (T, 3) [pitch, yaw, roll] radians or None;
    gaze: (T, 2) [pitch, yaw] radians of the eyes in the head (a Track's ``gaze``), or None when
    the file has no eye angles.
    """

    fps: float
    times: np.ndarray
    names: list[str]
    values: np.ndarray
    head_rotation: np.ndarray | None = None
    gaze: np.ndarray | None = None


def _arkit(track: Track) -> np.ndarray:
    """(T, 52) ARKit weights of a track: its channels, emotions folded in, eyeLook* from its gaze."""
    return to_arkit52(track.expression, track.expression_names, gaze=track.gaze)


def write_arkit_csv(track: Track, path: str | os.PathLike) -> Path:
    """``frame,time,<ARKIT_52>`` with one row per frame (frame 0-based, time = frame / fps s);
    weights from :func:`~evp_anim.export.arkit.to_arkit52` (``sfm_*`` emotions mapped onto ARKit
    shapes, eyeLook* from the track's gaze, 0 without)."""
    w = _arkit(track)
    rows = ([str(i), f"{i / track.fps:.9f}"] + [_fmt(v) for v in w[i]] for i in range(track.n_frames))
    return _write_text(path, _csv_text(["frame", "time", *ARKIT_52], rows))


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


# The 52 blendshape columns in the order Epic's Live Link Face app writes them (its ARKit
# blendshape enum order, not alphabetical; note JawRight before JawLeft and MouthRight before
# MouthLeft). Readers that go by position (many do) depend on this order.
LIVELINK_BLENDSHAPES: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight",
    "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight",
    "JawLeft", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft",
    "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft",
    "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight", "MouthRollLower", "MouthRollUpper",
    "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft",
    "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight",
    "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
)
LIVELINK_POSE: tuple[str, ...] = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch",
                                  "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
LIVELINK_HEADER: tuple[str, ...] = ("Timecode", "BlendShapeCount", *LIVELINK_BLENDSHAPES, *LIVELINK_POSE)
LIVELINK_VALUE_COUNT = 61  # what the app writes in BlendShapeCount: 52 blendshapes + 9 angles
# The angle columns' convention. Epic does not document the signs of the app's angles, so the eyes
# follow the convention this writer already uses for the head (the track's own): radians, yaw
# positive toward the subject's left, pitch positive looking down; a consumer that must flip the
# head's signs flips the eyes' the same way. Both eyes get the track's one gaze; eye roll is 0
# (eyes do not roll about their line of sight in a track).
LIVELINK_EYE_CONVENTION = "radians; yaw + = toward the subject's left, pitch + = down; roll 0"
assert len(LIVELINK_BLENDSHAPES) + len(LIVELINK_POSE) == LIVELINK_VALUE_COUNT
assert sorted(n.lower() for n in LIVELINK_BLENDSHAPES) == sorted(n.lower() for n in ARKIT_52)
# column k of the Live Link blendshapes = column _LIVELINK_FROM_ARKIT[k] of to_arkit52's output
_LIVELINK_FROM_ARKIT = np.array([ARKIT_52.index(arkit_name(n)) for n in LIVELINK_BLENDSHAPES])


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
    """Live Link Face CSV as the app writes it: ``Timecode,BlendShapeCount,`` then the 52
    blendshapes in the app's order (:data:`LIVELINK_BLENDSHAPES`), then HeadYaw, HeadPitch,
    HeadRoll and each eye's yaw, pitch, roll; BlendShapeCount is 61 on every row.

    Timecodes at the track's fps (:func:`livelink_timecode`); weights 0–1 (:func:`to_arkit52`);
    head angles in radians from the track's pose (0 when it has none); each eye's yaw and pitch
    from the track's gaze, roll 0 (:data:`LIVELINK_EYE_CONVENTION`; all 0 without gaze).
    """
    w = _arkit(track)[:, _LIVELINK_FROM_ARKIT]
    rot = track.pose_rotation  # [pitch, yaw, roll]
    gaze = track.gaze if track.gaze is not None else np.zeros((track.n_frames, 2), np.float32)
    rows = []
    for i in range(track.n_frames):
        eye = [gaze[i, 1], gaze[i, 0], 0.0]    # yaw, pitch, roll; both eyes alike
        pose = [rot[i, 1], rot[i, 0], rot[i, 2]] + eye + eye
        rows.append([livelink_timecode(i, track.fps), str(LIVELINK_VALUE_COUNT)] + [_fmt(v) for v in w[i]]
                    + [_fmt(v) for v in pose])
    return _write_text(path, _csv_text(list(LIVELINK_HEADER), rows))


def read_livelink_csv(path: str | os.PathLike, fps: float | None = None) -> BlendshapeTable:
    """Read a Live Link Face CSV; columns are found by name (any case, any order). The format has
    no fps field: pass ``fps``, else it is inferred from the frame field (highest FF + 1, needs
    at least one second) — LLF's integer rates. Values come back in :data:`ARKIT_52` order; the
    eye angles (when the file has them) come back as ``gaze`` [pitch, yaw], the mean of both eyes."""
    header, rows = _read_csv(path, "Live Link Face CSV")
    if not header or header[0].lower() != "timecode":
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
    names = [_pascal(n) for n in ARKIT_52] + ["HeadYaw", "HeadPitch", "HeadRoll"]
    data = _columns(path, [h.lower() for h in header], rows, [n.lower() for n in names], "Live Link Face CSV")
    yaw, pitch, roll = data[:, 52], data[:, 53], data[:, 54]
    gaze = None
    eyes = ["lefteyeyaw", "lefteyepitch", "righteyeyaw", "righteyepitch"]
    if all(e in (h.lower() for h in header) for e in eyes):
        e = _columns(path, [h.lower() for h in header], rows, eyes, "Live Link Face CSV")
        gaze = np.stack([(e[:, 1] + e[:, 3]) / 2, (e[:, 0] + e[:, 2]) / 2], 1).astype(np.float32)
    return BlendshapeTable(fps=float(fps), times=times, names=list(ARKIT_52),
                           values=data[:, :52].astype(np.float32),
                           head_rotation=np.stack([pitch, yaw, roll], 1).astype(np.float32), gaze=gaze)


# ---------------------------------------------------------------------- OpenFace 2 CSV
OPENFACE_SEP = ", "            # OpenFace 2.x separates header names and values with ", "
OPENFACE_EYE_LANDMARKS = 56    # eye_lmk_* points (28 per eye)
OPENFACE_PDM_MODES = 34        # p_0 .. p_33: non-rigid parameters of OpenFace's own shape model
OPENFACE_POSE = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
OPENFACE_RIGID = ("p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty")
OPENFACE_AU_INTENSITY = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14",
                         "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")
OPENFACE_AU_PRESENCE = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14",
                        "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU28", "AU45")

# Each action unit estimated from ARKit weights (the mean of the listed channels; AU25 "lips part"
# is jawOpen less mouthClose, the lips held shut over an open jaw). A FACS reading of ARKit's
# shape descriptions, not a fit to OpenFace's detectors.
OPENFACE_AU_FROM_ARKIT: dict[str, tuple[str, ...]] = {
    "AU01": ("browInnerUp",), "AU02": ("browOuterUpLeft", "browOuterUpRight"),
    "AU04": ("browDownLeft", "browDownRight"), "AU05": ("eyeWideLeft", "eyeWideRight"),
    "AU06": ("cheekSquintLeft", "cheekSquintRight"), "AU07": ("eyeSquintLeft", "eyeSquintRight"),
    "AU09": ("noseSneerLeft", "noseSneerRight"), "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU12": ("mouthSmileLeft", "mouthSmileRight"), "AU14": ("mouthDimpleLeft", "mouthDimpleRight"),
    "AU15": ("mouthFrownLeft", "mouthFrownRight"), "AU17": ("mouthShrugLower",),
    "AU20": ("mouthStretchLeft", "mouthStretchRight"), "AU23": ("mouthPressLeft", "mouthPressRight"),
    "AU25": ("jawOpen",), "AU26": ("jawOpen",), "AU28": ("mouthRollLower", "mouthRollUpper"),
    "AU45": ("eyeBlinkLeft", "eyeBlinkRight"),
}
AU_PRESENT_AT = 1.0  # intensity (0–5) from which an AU counts as present (our threshold)

# Model space (x right, y up, z toward the viewer) <-> OpenFace's camera space (x right, y down,
# z away from the camera): flip y and z.
_FLIP = np.diag([1.0, -1.0, -1.0])


def openface_columns() -> list[str]:
    """The 714 column names of OpenFace 2.x ``FeatureExtraction`` (all outputs on), in its order."""
    h = ["frame", "face_id", "timestamp", "confidence", "success",
         "gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z", "gaze_angle_x", "gaze_angle_y"]
    for ax in ("x", "y", "X", "Y", "Z"):
        h += [f"eye_lmk_{ax}_{i}" for i in range(OPENFACE_EYE_LANDMARKS)]
    h += list(OPENFACE_POSE)
    for ax in ("x", "y", "X", "Y", "Z"):
        h += [f"{ax}_{i}" for i in range(NUM_LANDMARKS)]
    h += list(OPENFACE_RIGID) + [f"p_{i}" for i in range(OPENFACE_PDM_MODES)]
    h += [f"{au}_r" for au in OPENFACE_AU_INTENSITY] + [f"{au}_c" for au in OPENFACE_AU_PRESENCE]
    return h


OPENFACE_COLUMNS: tuple[str, ...] = tuple(openface_columns())
assert len(OPENFACE_COLUMNS) == 714


def openface_camera(image_size: tuple[int, int]) -> tuple[float, float, float]:
    """(f, cx, cy) pixels: OpenFace's default intrinsics for a ``(width, height)`` image when none
    are given (fx = fy = the mean of 500·w/640 and 500·h/480, principal point at the centre)."""
    w, h = float(image_size[0]), float(image_size[1])
    return (500.0 * w / 640.0 + 500.0 * h / 480.0) / 2.0, w / 2.0, h / 2.0


def openface_euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """(..., 3) OpenFace angles [Rx, Ry, Rz] rad -> (..., 3, 3) ``Rx @ Ry @ Rz`` (its XYZ convention)."""
    e = np.asarray(euler, np.float64)
    c, s = np.cos(e), np.sin(e)
    one, zero = np.ones(e.shape[:-1]), np.zeros(e.shape[:-1])

    def mat(rows):
        return np.stack([np.stack(r, -1) for r in rows], -2)

    rx = mat([[one, zero, zero], [zero, c[..., 0], -s[..., 0]], [zero, s[..., 0], c[..., 0]]])
    ry = mat([[c[..., 1], zero, s[..., 1]], [zero, one, zero], [-s[..., 1], zero, c[..., 1]]])
    rz = mat([[c[..., 2], -s[..., 2], zero], [s[..., 2], c[..., 2], zero], [zero, zero, one]])
    return rx @ ry @ rz


def openface_matrix_to_euler(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) [Rx, Ry, Rz] rad, the inverse of :func:`openface_euler_to_matrix`
    (Ry in [-pi/2, pi/2])."""
    r = np.asarray(r, np.float64)
    return np.stack([np.arctan2(-r[..., 1, 2], r[..., 2, 2]), np.arcsin(np.clip(r[..., 0, 2], -1.0, 1.0)),
                     np.arctan2(-r[..., 0, 1], r[..., 0, 0])], -1)


def gaze_directions(gaze: np.ndarray, pose_rotation: np.ndarray) -> np.ndarray:
    """(T, 2) gaze [pitch, yaw] in the head + (T, 3) head pose (both radians, a Track's) →
    (T, 3) unit gaze vectors in OpenFace's camera space (x right, y down, z away from the camera;
    looking into the camera is (0, 0, -1)).

    The eye at rest looks along the head's +z (toward the viewer); the eye turns by
    ``Ry(yaw) @ Rx(pitch)`` (the pose's convention, no roll), then the head by its pose.
    """
    g = np.asarray(gaze, np.float64)
    p, y = g[:, 0], g[:, 1]
    # Ry(yaw) @ Rx(pitch) @ (0, 0, 1): pitch + looks down (-y), yaw + looks toward +x
    d_head = np.stack([np.cos(p) * np.sin(y), -np.sin(p), np.cos(p) * np.cos(y)], 1)
    d_model = np.einsum("tij,tj->ti", euler_to_matrix(pose_rotation), d_head)
    return d_model @ _FLIP.T


def gaze_from_directions(directions: np.ndarray, pose_rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`gaze_directions`: (T, 3) camera-space gaze vectors (any length > 0) and
    (T, 3) head pose → (T, 2) [pitch, yaw] radians in the head."""
    d = np.asarray(directions, np.float64) @ _FLIP                       # camera → model space
    d = np.einsum("tji,tj->ti", euler_to_matrix(pose_rotation), d)      # R^T d: into the head
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.stack([-np.arcsin(np.clip(d[:, 1], -1.0, 1.0)), np.arctan2(d[:, 0], d[:, 2])], 1)


def openface_gaze(track: Track) -> np.ndarray:
    """(T, 8) OpenFace gaze columns ``gaze_0_x..z, gaze_1_x..z, gaze_angle_x, gaze_angle_y`` of a
    track: both eyes' unit vectors (:func:`gaze_directions`; eye 0, the leftmost in the image, is
    the subject's right eye; a track has one gaze for both, so they are equal) and OpenFace's
    angles of their mean, ``atan2(x, -z)`` and ``atan2(y, -z)`` radians. All 0 without gaze (as
    OpenFace writes for an untracked eye)."""
    if track.gaze is None:
        return np.zeros((track.n_frames, 8))
    d = gaze_directions(track.gaze, track.pose_rotation)
    angles = np.stack([np.arctan2(d[:, 0], -d[:, 2]), np.arctan2(d[:, 1], -d[:, 2])], 1)
    return np.concatenate([d, d, angles], 1)


def openface_action_units(track: Track) -> tuple[np.ndarray, np.ndarray]:
    """(T, 17) AU intensities 0–5 in :data:`OPENFACE_AU_INTENSITY` order and (T, 18) presences 0/1
    in :data:`OPENFACE_AU_PRESENCE` order, estimated from the track's ARKit weights
    (:data:`OPENFACE_AU_FROM_ARKIT`, intensity = 5 × weight, present from :data:`AU_PRESENT_AT`);
    all 0 for a track without expression channels."""
    w = _arkit(track).astype(np.float64)
    col = {n: i for i, n in enumerate(ARKIT_52)}

    def level(au: str) -> np.ndarray:
        v = w[:, [col[n] for n in OPENFACE_AU_FROM_ARKIT[au]]].mean(axis=1)
        if au == "AU25":
            v = np.clip(v - w[:, col["mouthClose"]], 0.0, 1.0)
        return 5.0 * v

    r = np.stack([level(au) for au in OPENFACE_AU_INTENSITY], 1)
    c = np.stack([level(au) >= AU_PRESENT_AT for au in OPENFACE_AU_PRESENCE], 1).astype(np.float64)
    return r, c


def write_openface_csv(track: Track, path: str | os.PathLike) -> Path:
    """OpenFace 2.x ``FeatureExtraction`` CSV: all 714 of its columns (:data:`OPENFACE_COLUMNS`) in
    its order, separated by ", " as OpenFace writes them.

    What each column carries (units as OpenFace's):

    * ``frame`` 1-based, ``face_id`` 0, ``timestamp`` = (frame-1)/fps s, ``confidence`` 1, ``success`` 1.
    * ``pose_Tx, pose_Ty, pose_Tz``: head position in camera space, mm, for OpenFace's default
      camera of the track's image size (:func:`openface_camera`): the track's scaled-orthographic
      pose seen at depth Tz = f / pose_scale; ``pose_Rx, Ry, Rz``: the head rotation in camera
      space (x right, y down, z forward), radians, OpenFace's R = Rx·Ry·Rz.
    * ``x_i, y_i``: the 2D landmarks, pixels.
    * ``X_i, Y_i, Z_i``: the 3D landmarks in camera space, mm (pose applied), when the track has
      3D landmarks; otherwise 0.
    * ``p_scale`` (pixels per mm), ``p_rx..p_rz`` (as pose_R*), ``p_tx, p_ty`` (pixels): the
      track's scaled-orthographic pose, which OpenFace's rigid shape parameters also are.
    * ``AU*_r`` (0–5) and ``AU*_c`` (0/1): estimated from the ARKit weights
      (:func:`openface_action_units`).
    * ``gaze_0_*``, ``gaze_1_*``: unit gaze vectors in camera space (x right, y down, z away from
      the camera), ``gaze_angle_x/y`` radians, from the track's gaze and head pose
      (:func:`openface_gaze`); 0 when the track has no gaze.
    * Filled with 0 because the track has no such data: ``eye_lmk_*`` (no eye landmarks),
      ``p_0..p_33`` (OpenFace's own shape-model coefficients).
    """
    n = track.n_frames
    f, cx, cy = openface_camera(track.image_size)
    rc = _FLIP @ euler_to_matrix(track.pose_rotation) @ _FLIP           # (T, 3, 3) camera frame
    angles = openface_matrix_to_euler(rc)
    s = track.pose_scale.astype(np.float64)
    tz = np.where(s > 0, f / np.maximum(s, 1e-12), 0.0)                   # mm: pixels per mm = f / depth
    tcam = np.stack([(track.pose_translation[:, 0] - cx) * tz / f, (track.pose_translation[:, 1] - cy) * tz / f,
                     tz], 1)
    if track.landmarks_3d is not None:
        lm3 = np.einsum("tij,tkj->tki", rc, track.landmarks_3d.astype(np.float64) @ _FLIP) + tcam[:, None, :]
    else:
        lm3 = np.zeros((n, NUM_LANDMARKS, 3))
    au_r, au_c = openface_action_units(track)
    gaze = openface_gaze(track)
    unknown_eyes = ["0"] * (5 * OPENFACE_EYE_LANDMARKS)
    unknown_modes = ["0"] * OPENFACE_PDM_MODES
    lines = [OPENFACE_SEP.join(OPENFACE_COLUMNS)]
    for i in range(n):
        r = [str(i + 1), "0", f"{i / track.fps:.6f}", "1.00", "1", *(_fmt(v) for v in gaze[i]), *unknown_eyes]
        r += [_fmt(v) for v in tcam[i]] + [_fmt(v) for v in angles[i]]
        r += [_fmt(v) for v in track.landmarks_2d[i, :, 0]] + [_fmt(v) for v in track.landmarks_2d[i, :, 1]]
        for ax in range(3):
            r += [_fmt(v) for v in lm3[i, :, ax]]
        r += [_fmt(s[i])] + [_fmt(v) for v in angles[i]] + [_fmt(v) for v in track.pose_translation[i]]
        r += unknown_modes + [f"{v:.2f}" for v in au_r[i]] + [f"{v:.1f}" for v in au_c[i]]
        lines.append(OPENFACE_SEP.join(r))
    return _write_text(path, "\n".join(lines) + "\n")


@dataclasses.dataclass
class OpenFaceTable:
    """An OpenFace CSV read back. times (T,) s; landmarks_2d (T, 68, 2) px; landmarks_3d
    (T, 68, 3) mm, pose-invariant (model frame, like a Track's) or None; pose_rotation (T, 3)
    [pitch, yaw, roll] rad in the Track convention; pose_translation (T, 2) px; pose_scale (T,)
    px per mm or None (a file without ``p_scale``); success (T,) bool; gaze (T, 2) [pitch, yaw]
    rad of the eyes in the head (a Track's), the mean of both eyes' vectors brought into the head
    with the pose, or None (a file without gaze columns or with all-zero vectors)."""

    fps: float
    times: np.ndarray
    landmarks_2d: np.ndarray
    landmarks_3d: np.ndarray | None
    pose_rotation: np.ndarray
    pose_translation: np.ndarray
    pose_scale: np.ndarray | None
    success: np.ndarray
    gaze: np.ndarray | None = None

    def to_track(self, image_size: tuple[int, int] = (256, 256)) -> Track:
        """A Track with these landmarks and pose (no expression channels, neutral emotion)."""
        scale = self.pose_scale if self.pose_scale is not None else np.ones(len(self.times), np.float32)
        return Track.new(self.landmarks_2d, fps=self.fps, image_size=image_size,
                         landmarks_3d=self.landmarks_3d, pose_rotation=self.pose_rotation,
                         pose_translation=self.pose_translation, pose_scale=scale, gaze=self.gaze)


def read_openface_csv(path: str | os.PathLike) -> OpenFaceTable:
    """Read an OpenFace 2 CSV (ours or ``FeatureExtraction``'s own; ", " or "," separated); fps
    from the timestamps.

    The pose comes from the rigid shape parameters (``p_scale, p_rx..p_rz, p_tx, p_ty``: a
    scaled-orthographic pose, exactly a Track's); a file without them gets its rotation from
    ``pose_R*``, its translation from the landmarks' mean and no scale. The 3D landmarks
    (camera space) are brought back to the head's own frame with ``pose_T*`` and ``pose_R*``;
    all-zero 3D columns (our writer's fill for a track without them) read as None.
    """
    header, rows = _read_csv(path, "OpenFace CSV")
    index = set(header)
    xs = [f"x_{i}" for i in range(NUM_LANDMARKS)]
    ys = [f"y_{i}" for i in range(NUM_LANDMARKS)]
    base = _columns(path, header, rows, ["timestamp", "success", *xs, *ys], "OpenFace CSV")
    times = base[:, 0]
    lm2 = np.stack([base[:, 2:2 + NUM_LANDMARKS], base[:, 2 + NUM_LANDMARKS:]], axis=2)
    if all(c in index for c in OPENFACE_RIGID):
        rigid = _columns(path, header, rows, OPENFACE_RIGID, "OpenFace CSV")
        scale, rc, trans = rigid[:, 0], openface_euler_to_matrix(rigid[:, 1:4]), rigid[:, 4:6]
    else:
        rot = _columns(path, header, rows, OPENFACE_POSE[3:], "OpenFace CSV")
        scale, rc, trans = None, openface_euler_to_matrix(rot), lm2.mean(axis=1)
    lm3 = None
    if "X_0" in index:
        d3 = _columns(path, header, rows, [f"{a}_{i}" for a in "XYZ" for i in range(NUM_LANDMARKS)], "OpenFace CSV")
        if np.any(d3 != 0):
            pose = _columns(path, header, rows, OPENFACE_POSE, "OpenFace CSV")
            cam = d3.reshape(len(rows), 3, NUM_LANDMARKS).transpose(0, 2, 1) - pose[:, None, :3]
            head = np.einsum("tji,tkj->tki", openface_euler_to_matrix(pose[:, 3:]), cam)   # R^T (X - T)
            lm3 = (head @ _FLIP).astype(np.float32)
    rotation = matrix_to_euler(_FLIP @ rc @ _FLIP)
    gaze = None
    gaze_cols = [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"]
    if all(c in index for c in gaze_cols):
        g = _columns(path, header, rows, gaze_cols, "OpenFace CSV")
        mean = g[:, :3] + g[:, 3:]
        tracked = np.linalg.norm(mean, axis=1) > 1e-6
        if tracked.any():   # OpenFace writes 0 vectors where it lost the eyes: read those as looking ahead
            mean[~tracked] = np.einsum("tij,j->ti", _FLIP @ euler_to_matrix(rotation[~tracked]), [0.0, 0.0, 1.0])
            gaze = gaze_from_directions(mean, rotation).astype(np.float32)
    return OpenFaceTable(fps=_fps_from_times(path, times), times=times, landmarks_2d=lm2.astype(np.float32),
                         landmarks_3d=lm3,
                         pose_rotation=rotation.astype(np.float32),
                         pose_translation=trans.astype(np.float32),
                         pose_scale=None if scale is None else scale.astype(np.float32),
                         success=base[:, 1] > 0.5, gaze=gaze)


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
    return _write_text(path, json.dumps(doc, indent=2) + "\n")


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

