"""Video writing with PyAV: stream BGR frames into an H.264 mp4, with AAC audio muxed in.

Frames are encoded as they arrive, so memory stays flat for any length. The file appears under
its final name only when it is complete (written to a temporary file, then renamed).
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from .atomic import atomic_path
from .audio.features import SAMPLE_RATE
from .errors import EvpError


class VideoWriter:
    """Write (H, W, 3) uint8 BGR frames at ``fps``; optional mono float32 ``audio`` at ``sample_rate``.

    Audio is interleaved with the video as frames are written (each video frame pulls the audio up
    to its end time), and whatever audio remains is flushed on close.
    """

    def __init__(self, container: av.container.OutputContainer, fps: float, size: tuple[int, int],
                 audio: np.ndarray | None, sample_rate: int, crf: int = 20, preset: str = "veryfast"):
        width, height = size
        if width % 2 or height % 2:
            raise EvpError(f"video size must be even for H.264, got {width}x{height}")
        self._c = container
        self._fps = Fraction(fps).limit_denominator(1001)
        self._v = container.add_stream("libx264", rate=self._fps)
        self._v.width, self._v.height = width, height
        self._v.pix_fmt = "yuv420p"
        self._v.options = {"crf": str(crf), "preset": preset}
        self._n = 0
        self._audio = None
        if audio is not None:
            self._audio = np.ascontiguousarray(np.clip(audio, -1, 1), np.float32)
            self._sr = int(sample_rate)
            self._a = container.add_stream("aac", rate=self._sr)
            self._a.layout = "mono"
            self._a.bit_rate = 96_000
            self._apos = 0
            self._apts = 0

    def _push_audio(self, until_sample: int) -> None:
        chunk = 1024
        while self._apos < min(until_sample, len(self._audio)):
            piece = self._audio[self._apos:self._apos + chunk]
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="flt", layout="mono")
            frame.sample_rate = self._sr
            frame.pts = self._apts
            frame.time_base = Fraction(1, self._sr)
            for pkt in self._a.encode(frame):
                self._c.mux(pkt)
            self._apos += len(piece)
            self._apts += len(piece)

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame."""
        if frame_bgr.shape != (self._v.height, self._v.width, 3) or frame_bgr.dtype != np.uint8:
            raise EvpError(f"frame has shape {frame_bgr.shape} {frame_bgr.dtype}, "
                           f"expected ({self._v.height}, {self._v.width}, 3) uint8")
        # OpenCV's BGR → I420 is ~6× faster than PyAV's own conversion (0.24 vs 1.5 ms a frame at
        # 768×384); the planes go to the encoder as they are.
        vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        vf.pts = self._n
        vf.time_base = 1 / self._fps
        for pkt in self._v.encode(vf):
            self._c.mux(pkt)
        self._n += 1
        if self._audio is not None:
            self._push_audio(int(self._n / float(self._fps) * self._sr))

    def close(self) -> None:
        """Flush the encoders."""
        for pkt in self._v.encode():
            self._c.mux(pkt)
        if self._audio is not None:
            self._push_audio(len(self._audio))
            for pkt in self._a.encode():
                self._c.mux(pkt)

    @property
    def frames_written(self) -> int:
        return self._n


@contextlib.contextmanager
def open_video_writer(path: str | Path, fps: float, size: tuple[int, int], audio: np.ndarray | None = None,
                      sample_rate: int = SAMPLE_RATE, crf: int = 20, preset: str = "veryfast") -> Iterator[VideoWriter]:
    """Context manager yielding a :class:`VideoWriter` for ``path`` (.mp4), written atomically.
    ``preset``: libx264's speed/size trade-off (``superfast`` encodes ~1.3× faster than
    ``veryfast`` for files ~2× larger)."""
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise EvpError(f"video output must end in .mp4, .mov or .mkv, got {path.name!r}")
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w")
        try:
            writer = VideoWriter(container, fps, size, audio, sample_rate, crf, preset)
            yield writer
            writer.close()
        finally:
            container.close()


def probe_video(path: str | Path) -> dict:
    """Basic facts of a video file: frames, fps, width, height, has_audio, duration_s (for tests)."""
    try:
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            frames = sum(1 for _ in c.decode(vs))
            info = {"frames": frames, "fps": float(vs.average_rate or 0), "width": vs.width,
                    "height": vs.height, "has_audio": bool(c.streams.audio)}
        return info
    except (av.error.FFmpegError, IndexError) as e:
        raise EvpError(f"{path}: cannot read video ({e})") from None
