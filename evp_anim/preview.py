"""Preview videos of a Track: the landmark sketch beside a shaded SFM head, audio muxed in.

Left panel: the track's 2D landmarks (iBUG polylines), framed by their bounding box over the
whole clip so the framing does not jitter. Right panel: the SFM head with the track's identity,
expression channels (matched to the rig by name) and head rotation, with the Blender head's
parts (eyeballs turned by the track's gaze, teeth, tongue and a dark mouth interior that follow
jawOpen; :mod:`evp_anim.face.head_parts`), rendered on the CPU (OpenGL through Mesa's llvmpipe
when available, else numpy; see :class:`~evp_anim.face.raster.FaceRenderer`).
Frames are rendered on the calling thread and H.264-encoded on a second one (the encoder releases
the GIL), a few frames apart, so memory does not grow with clip length.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .audio.io import audio_sha256
from .emotions import EMOTIONS
from .errors import EvpError
from .threads import one_blas_thread
from .tracks import Track


def _warn_cli(message: str) -> None:
    from .cli_common import reporter
    reporter().info(f"warning: {message}")


def _shown(name: str, limit: int = 80) -> str:
    r = repr(name)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def find_track_audio(track: Track, track_path: Path | None,
                     warn: Callable[[str], None] | None = None) -> Path | None:
    """The track's source audio, if a file at ``info["audio"]`` (absolute, or relative to a folder
    above the track, as the synthetic corpus records it) has the sha256 the track's provenance
    recorded (``source_audio_sha256``); else None.

    A track file may come from anyone, and ``info["audio"]`` may name any file on disk: without
    the sum check a preview would mux (and so disclose) whatever file it names. So a track without
    a recorded sum, or whose named file differs, gets no audio; ``warn`` (default: the CLI's
    ``warning:`` line) says why and that ``--audio`` gives it explicitly.
    """
    warn = warn or _warn_cli
    rel = track.info.get("audio")
    if not rel or not isinstance(rel, str) or track_path is None:
        return None
    want = track.provenance.get("source_audio_sha256")
    if not isinstance(want, str) or not want:
        warn(f"the track names its audio {_shown(rel)} but records no source_audio_sha256 to check it "
             "against, so it is not used; give the audio explicitly (--audio)")
        return None
    found = False
    for parent in Path(track_path).resolve().parents[:6]:
        try:
            cand = parent / rel
            if not cand.is_file():
                continue
        except (OSError, ValueError):    # a name too long, or with a NUL byte
            return None
        found = True
        if audio_sha256(cand) == want:
            return cand
    if found:
        warn(f"the track's audio {_shown(rel)} differs from the source_audio_sha256 it records (a "
             "different file), so it is not used; give the audio explicitly (--audio)")
    return None


def _sketch_transform(track: Track, size: int) -> tuple[float, np.ndarray]:
    """Scale and offset mapping the clip's landmark bounding box (plus margin) into a square panel."""
    lm = track.landmarks_2d.reshape(-1, 2)
    lo, hi = lm.min(0), lm.max(0)
    centre = (lo + hi) / 2
    extent = float((hi - lo).max()) * 1.3 + 1e-6
    scale = size / extent
    offset = size / 2 - centre * scale
    return scale, offset


def _rig_weights(track: Track, channels: tuple[str, ...]) -> np.ndarray:
    """(T, K_rig) weights: the track's channels that the rig has, zeros for the rest."""
    out = np.zeros((track.n_frames, len(channels)), np.float32)
    lookup = {n: i for i, n in enumerate(track.expression_names)}
    for j, name in enumerate(channels):
        if name in lookup:
            out[:, j] = track.expression[:, lookup[name]]
    return out


def _label(img: np.ndarray, text: str, y: int) -> None:
    cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA)


class _EncoderThread:
    """Feeds frames to ``writer.write`` on a background thread, at most ``depth`` frames behind.

    Encoding (~6 ms a 768 x 384 frame with libx264 ``veryfast``) then overlaps the rendering of
    the next frames. An error in the thread is raised on the next :meth:`write` or on exit.
    """

    def __init__(self, writer, depth: int = 4):
        self._writer = writer
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="evp-preview-encode", daemon=True)

    def _run(self) -> None:
        while True:
            frame = self._q.get()
            if frame is None:
                return
            if self._error is None:      # after an error keep draining, so write() never blocks
                try:
                    self._writer.write(frame)
                except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                    self._error = e

    def write(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(frame)

    def __enter__(self) -> "_EncoderThread":
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._q.put(None)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error


def write_preview(track: Track, output: str | Path, audio_path: str | Path | None = None,
                  sfm_dir: Path | None = None, size: int = 384,
                  progress: Callable[[int], None] | None = None, track_path: Path | None = None,
                  warn: Callable[[str], None] | None = None) -> Path:
    """Write a side-by-side preview mp4 (2·size × size pixels, the track's fps) of ``track``.

    ``audio_path`` (any format :func:`evp_anim.audio.io.load_audio` reads) is muxed in; when
    absent, the track's own source audio is used if it can be found next to ``track_path`` and
    has the sha256 the track records (:func:`find_track_audio`; otherwise ``warn`` is told and the
    preview is silent). ``progress(frames_done)`` is called per frame.
    """
    from .audio.io import load_audio
    from .face.raster import FaceRenderer
    from .face.rig import FaceRig
    from .face.sketch import draw_sketch
    from .video_io import open_video_writer

    size = int(size) // 2 * 2
    audio = None
    if audio_path is None:
        audio_path = find_track_audio(track, track_path, warn=warn)
    if audio_path is not None:
        audio = load_audio(audio_path)
    if sfm_dir is None:
        raise EvpError("preview needs the SFM files: pass --sfm-dir or run `evp-anim assets download`")
    rig = FaceRig.cached(sfm_dir)
    renderer = FaceRenderer(rig, backend="auto", parts=True)
    weights = _rig_weights(track, tuple(rig.channels))
    identity = track.identity if track.identity.size == rig.num_identity else None
    scale, offset = _sketch_transform(track, size)
    emo_names = [EMOTIONS[i] for i in track.emotion.argmax(1)]
    gaze = track.gaze   # (T, 2) radians [pitch, yaw] of the eyes, or None: they look ahead

    sketch_px = track.landmarks_2d * scale + offset
    # superfast: a preview is for looking at, not keeping; it halves x264's share of each frame.
    with open_video_writer(output, track.fps, (2 * size, size), audio, preset="superfast") as writer, \
            _EncoderThread(writer) as enc, one_blas_thread():
        for t in range(track.n_frames):
            frame = np.empty((size, 2 * size, 3), np.uint8)
            frame[:, :size] = draw_sketch(sketch_px[t], (size, size), thickness=max(1, size // 256))
            frame[:, size:] = renderer.render(identity, weights[t], track.pose_rotation[t], size=size,
                                              gaze=None if gaze is None else gaze[t])
            _label(frame, f"{t / track.fps:6.2f} s  frame {t}", 18)
            _label(frame, f"{emo_names[t]} {track.intensity[t]:.2f}", 36)
            enc.write(frame)
            if progress:
                progress(t + 1)
    return Path(output)
