"""Landmarks drawn over footage: the way to check tracking and alignment by eye.

Each output frame shows the footage frame the track refers to (``info["target_frames"]`` for an
aligned track, else frame i) with the track's 68 landmarks as a coloured sketch and dots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import EvpError
from ..face.sketch import overlay_sketch
from ..tracks import Track
from .video import iter_frames


def draw_landmarks(frame_bgr: np.ndarray, landmarks: np.ndarray, label: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 copy of ``frame_bgr`` with (68, 2) px ``landmarks`` drawn on it."""
    h, w = frame_bgr.shape[:2]
    th = max(1, int(round(max(h, w) / 500)))
    img = overlay_sketch(frame_bgr, landmarks, thickness=th, alpha=0.9)
    for x, y in np.asarray(landmarks, np.float64):
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 16 * (th + 1), (0, 255, 255), -1, cv2.LINE_AA, 4)
    if label:
        cv2.putText(img, label, (8, 24 * th), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * th, (255, 255, 255), th, cv2.LINE_AA)
    return img


def write_overlay(track: Track, video: str | Path, output: str | Path, audio_path: str | Path | None = None,
                  progress: Callable[[int], None] | None = None) -> Path:
    """Write ``output`` (.mp4, the track's fps) with the track's landmarks over ``video``'s frames.

    The video's frames are decoded at the track's fps; an aligned track's ``target_frames`` pick
    which footage frame each output frame shows (looped/ping-ponged footage). Audio (any file
    :func:`evp_anim.audio.io.load_audio` reads) is muxed in when given.
    """
    from ..video_io import open_video_writer

    output = Path(output)
    if output.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise EvpError(f"overlay output must end in .mp4, .mov or .mkv, got {output.name!r}")
    idx = track.info.get("target_frames")
    idx = np.asarray(idx, np.int64) if idx is not None else np.arange(track.n_frames)
    need = int(idx.max()) + 1
    # keep the frames JPEG-compressed in memory: the track may revisit them (loop / ping-pong)
    cache: list[bytes] = []
    size = None
    for frame in iter_frames(video, track.fps, "bgr24", max_frames=need):
        if size is None:
            size = (frame.shape[1], frame.shape[0])
        cache.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    if size != tuple(track.image_size):
        raise EvpError(f"{video} is {size[0]}x{size[1]} but the track's landmarks refer to "
                       f"{track.image_size[0]}x{track.image_size[1]}: give the footage the track was made from")
    if len(cache) < need:
        raise EvpError(f"{video} has {len(cache)} frames at {track.fps:g} fps but the track needs {need}")
    audio = None
    if audio_path is not None:
        from ..audio.io import load_audio
        audio = load_audio(audio_path)
    w, h = size
    even = (w - w % 2, h - h % 2)
    with open_video_writer(output, track.fps, even, audio=audio) as writer:
        for i in range(track.n_frames):
            frame = cv2.imdecode(np.frombuffer(cache[idx[i]], np.uint8), cv2.IMREAD_COLOR)
            img = draw_landmarks(frame, track.landmarks_2d[i], f"{i}")
            writer.write(np.ascontiguousarray(img[:even[1], :even[0]]))
            if progress is not None:
                progress(i + 1)
    return output
