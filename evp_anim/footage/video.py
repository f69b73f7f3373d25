"""Decode target footage with PyAV into frames at the project's 25 fps.

Any container/codec FFmpeg reads works. Frames are resampled by their presentation timestamps,
so variable-frame-rate phone videos come out as a steady 25 fps: output frame ``i`` (time
``i / fps`` after the first frame) is the source frame whose timestamp is nearest. Rotation
metadata (the display matrix phones write instead of rotating pixels) is applied, so frames and
landmarks are upright as a player shows them: PyAV's ``VideoFrame.rotation`` is the
counter-clockwise turn that presents the frame, as FFmpeg's autorotate applies it (a legacy
``rotate=90`` tag, i.e. "turn clockwise", reads as -90). Every problem a user can cause (missing, corrupt or
truncated file, a file with no video stream) is one :class:`~evp_anim.errors.EvpError` line.

:class:`FrameSource` serves frames by index for a known index sequence (a looped or ping-ponged
clip of the footage), streaming: it re-decodes for sequences that only move forward and spools
to a temporary file on disk otherwise, so memory stays flat for any length.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video as it will be decoded.

    width, height: pixels after rotation metadata is applied.
    source_fps: the stream's average frame rate (0 when unknown).
    duration_s: seconds (from the container, else estimated).
    rotation: degrees counter-clockwise applied to every frame (0, 90, 180 or 270).
    has_audio: whether the file also carries an audio stream.
    """

    path: str
    width: int
    height: int
    source_fps: float
    duration_s: float
    rotation: int
    has_audio: bool


def _open(path: Path):
    import av

    if not path.is_file():
        raise EvpError(f"video not found: {path}")
    if path.stat().st_size == 0:
        raise EvpError(f"{path} is empty (0 bytes): give a video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        msg = getattr(e, "strerror", None) or str(e)
        raise EvpError(f"{path}: cannot read video ({msg}); the file is corrupt, truncated or not a video") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        raise EvpError(f"{path} has no video stream (it holds {', '.join(kinds) or 'nothing'}); give a video of the target face")
    return container


def _norm_rotation(deg: float) -> int:
    r = int(round(float(deg) / 90.0)) * 90 % 360
    return r


def probe(path: str | Path) -> VideoInfo:
    """Read a video's header (and its first frame, for the rotation) without decoding the rest."""
    path = Path(path)
    container = _open(path)
    import av
    with container:
        vs = container.streams.video[0]
        rate = float(vs.average_rate or vs.guessed_rate or 0)
        dur = 0.0
        if vs.duration is not None and vs.time_base is not None:
            dur = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            dur = container.duration / 1e6
        rotation = 0
        try:
            for frame in container.decode(vs):
                rotation = _norm_rotation(getattr(frame, "rotation", 0) or 0)
                break
        except (av.FFmpegError, ValueError) as e:
            raise EvpError(f"{path}: cannot decode video ({getattr(e, 'strerror', None) or e})") from None
        w, h = int(vs.codec_context.width), int(vs.codec_context.height)
        if w <= 0 or h <= 0:
            raise EvpError(f"{path}: video stream has no picture size; the file is corrupt")
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(str(path), w, h, rate, dur, rotation, bool(container.streams.audio))


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    import cv2

    if rotation == 90:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if rotation == 180:
        return cv2.rotate(img, cv2.ROTATE_180)
    if rotation == 270:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    return img


def iter_frames(path: str | Path, fps: float = DEFAULT_FPS, fmt: str = "bgr24",
                max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield upright frames of ``path`` resampled to ``fps`` by timestamp.

    Args:
        fmt: ``"bgr24"`` -> (H, W, 3) uint8 BGR, ``"gray"`` -> (H, W) uint8.
        max_frames: stop after this many output frames.
    Yields:
        frames in order; frame ``i`` shows the source at ``i / fps`` s after the first frame.
    Raises:
        EvpError: missing/corrupt/truncated file, no video stream, no decodable frame.
    """
    import av

    if fmt not in ("bgr24", "gray"):
        raise EvpError(f"frame format must be 'bgr24' or 'gray', got {fmt!r}")
    path = Path(path)
    container = _open(path)
    step = 1.0 / float(fps)
    n_out = 0
    with container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        tb = float(vs.time_base) if vs.time_base else 0.0
        src_rate = float(vs.average_rate or vs.guessed_rate or fps)
        prev_img = None
        prev_t = None
        t0 = None
        n_src = 0
        try:
            for frame in container.decode(vs):
                if frame.pts is not None and tb:
                    t = frame.pts * tb
                else:  # no timestamps: assume a constant rate
                    t = n_src / src_rate
                n_src += 1
                if t0 is None:
                    t0 = t
                t -= t0
                if prev_t is not None and t <= prev_t:  # out-of-order or duplicate stamp
                    continue
                img = _rotate(frame.to_ndarray(format=fmt), _norm_rotation(getattr(frame, "rotation", 0) or 0))
                if prev_img is not None:
                    # output times nearer to the previous source frame than to this one
                    mid = 0.5 * (prev_t + t)
                    while n_out * step < mid - 1e-9:
                        yield prev_img
                        n_out += 1
                        if max_frames is not None and n_out >= max_frames:
                            return
                prev_img, prev_t = img, t
        except (av.FFmpegError, ValueError) as e:
            if prev_img is None:
                raise EvpError(f"{path}: cannot decode video ({getattr(e, 'strerror', None) or e}); "
                               "the file is corrupt") from None
            # a file cut after its index (moov first): FFmpeg errors at the cut
            raise EvpError(_truncated_message(path, vs, tb, t0 + prev_t, src_rate, container)) from None
        if prev_img is None:
            raise EvpError(f"{path}: no video frame could be decoded; the file is truncated or corrupt")
        # a file cut after its index may also just end early without an error: compare what
        # decoded with what the index declares (duration and frame count)
        declared = _declared_duration(vs, tb, container)
        decoded = _decoded_duration(vs, tb, t0 + prev_t, src_rate)
        period = 1.0 / src_rate if src_rate > 0 else 0.04
        short_time = declared > 0 and decoded < declared - max(2.5 * period, 0.05 * declared)
        short_count = bool(vs.frames) and n_src < 0.95 * vs.frames - 2
        if short_time or short_count:
            raise EvpError(_truncated_message(path, vs, tb, t0 + prev_t, src_rate, container))
        # the last source frame lasts one source-frame period
        end = prev_t + 1.0 / src_rate
        while n_out * step < end - 0.5 * step - 1e-9 or n_out == 0:
            yield prev_img
            n_out += 1
            if max_frames is not None and n_out >= max_frames:
                return


def _declared_duration(vs, tb: float, container) -> float:
    """Seconds of video the file's index declares (0 when it declares none)."""
    if vs.duration is not None and tb:
        return float(vs.duration) * tb
    if container.duration is not None:
        return container.duration / 1e6
    return 0.0


def _decoded_duration(vs, tb: float, last_t: float, src_rate: float) -> float:
    """Seconds from the stream start to the end of the last decoded frame (source time)."""
    start = float(vs.start_time) * tb if (vs.start_time is not None and tb) else 0.0
    return last_t - start + (1.0 / src_rate if src_rate > 0 else 0.0)


def _truncated_message(path: Path, vs, tb: float, last_t: float, src_rate: float, container) -> str:
    decoded = _decoded_duration(vs, tb, last_t, src_rate)
    declared = _declared_duration(vs, tb, container)
    of = f" of {declared:.1f} s" if declared > 0 else ""
    return f"{path}: truncated or corrupt video (decoded {decoded:.1f} s{of})"


def read_frames(path: str | Path, fps: float = DEFAULT_FPS, fmt: str = "bgr24",
                max_frames: int | None = None) -> np.ndarray:
    """All frames of :func:`iter_frames` stacked: (T, H, W, 3) or (T, H, W) uint8 (small clips only)."""
    return np.stack(list(iter_frames(path, fps, fmt, max_frames)))


class FrameSource:
    """Footage frames by index for a known index sequence, streaming.

    Sequences that only move forward (or restart at 0, as a loop does) are served by decoding
    (re-opening the video at each restart); any other order spools frames ``0..max`` to a raw
    temporary file on disk first (memory stays flat either way).
    """

    def __init__(self, video: str | Path, fps: float, indices: np.ndarray):
        self.video, self.fps = Path(video), fps
        self.idx = np.asarray(indices, np.int64)
        d = np.diff(self.idx)
        self.sequential = bool(np.all((d >= 0) | (self.idx[1:] == 0)))
        self._it: Iterator[np.ndarray] | None = None
        self._pos = -1
        self._cur: np.ndarray | None = None
        self._spool = None

    def _open(self) -> None:
        self._it = iter(iter_frames(self.video, self.fps, "bgr24"))
        self._pos = -1

    def _next(self) -> np.ndarray:
        try:
            self._cur = next(self._it)
        except StopIteration:
            raise EvpError(f"{self.video} ends at frame {self._pos + 1}, but the aligned track uses "
                           f"footage frame {int(self.idx.max())}: align against this footage's track") from None
        self._pos += 1
        return self._cur

    def get(self, j: int) -> np.ndarray:
        if not self.sequential:
            if self._spool is None:
                self._make_spool()
            return np.array(self._spool[j])
        if self._it is None or j < self._pos:
            self._open()
        while self._pos < j:
            self._next()
        return self._cur

    def _make_spool(self) -> None:
        self._open()
        first = self._next()
        n = int(self.idx.max()) + 1
        self._tmp = tempfile.TemporaryFile(suffix=".raw")
        self._tmp.truncate(n * first.nbytes)
        self._spool = np.memmap(self._tmp, np.uint8, "w+", shape=(n,) + first.shape)
        self._spool[0] = first
        for j in range(1, n):
            self._spool[j] = self._next()
        self._spool.flush()
        self._it = None

    def close(self) -> None:
        self._it = None
        if self._spool is not None:
            del self._spool
            self._spool = None
            self._tmp.close()


def iter_footage(video: str | Path, fps: float, indices, image_size: tuple[int, int]) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (i, j, frame (H, W, 3) uint8 BGR) for footage frames ``j = indices[i]`` of ``video``
    (streamed by :class:`FrameSource`), refusing with one line a video whose frames are not
    ``image_size`` (width, height): the footage of another track."""
    src = FrameSource(video, fps, np.asarray(indices, np.int64))
    try:
        for i, j in enumerate(src.idx):
            frame = src.get(int(j))
            if i == 0 and frame.shape[1::-1] != tuple(image_size):
                raise EvpError(f"{video} is {frame.shape[1]}x{frame.shape[0]} but the target track is for "
                               f"{image_size[0]}x{image_size[1]}: it is not this track's footage")
            yield i, int(j), frame
    finally:
        src.close()
