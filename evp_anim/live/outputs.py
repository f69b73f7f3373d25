"""Where live frames go: Live Link Face UDP packets, VMC-protocol OSC, JSON lines, a recorded take.

Every output takes :class:`OutFrame` s (one per output frame: 25 fps, or 60 fps through
:class:`Resampler`). A network receiver that is not running, or goes away, never stops the live
loop: UDP sends that fail are counted (:attr:`dropped`) and the next frame is tried again.

**Live Link Face packet** (what Epic's Live Link Face iOS app sends, and Unreal's Live Link Face
source reads; UDP, default port 11111), all multi-byte fields big-endian:

====================  ==========================================================
uint8                 packet version, 6
int32 + bytes         device id: byte length, then UTF-8 (no terminator)
int32 + bytes         subject name: byte length, then UTF-8
int32                 frame number (at the rate below)
float32               sub-frame (fraction of a frame, 0 here: frames are whole)
int32, int32          frame rate numerator, denominator (25/1 or 60/1)
uint8                 value count, 61
61 × float32          the 52 blendshapes in the app's order
                      (:data:`~evp_anim.export.formats.LIVELINK_BLENDSHAPES`), then head yaw,
                      pitch, roll and left / right eye yaw, pitch, roll (radians)
====================  ==========================================================

The 61 values are those :func:`~evp_anim.export.formats.write_livelink_csv` writes for the same
frame of the recorded track (the same ARKit mapping, angle convention and order).

**VMC** (Virtual Motion Capture protocol, OSC over UDP, default port 39539): per frame one OSC
bundle with ``/VMC/Ext/Blend/Val <ARKit name> <value>`` for each of the 52 ARKit blendshapes and
then ``/VMC/Ext/Blend/Apply`` — what VSeeFace / Warudo-style receivers take for "perfect sync"
ARKit avatars.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import sys
import uuid
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import EvpError
from ..export.arkit import ARKIT_52, arkit_name, to_arkit52
from ..export.formats import LIVELINK_BLENDSHAPES, LIVELINK_VALUE_COUNT

LIVELINK_VERSION = 6
LIVELINK_DEFAULT_PORT = 11111
VMC_DEFAULT_PORT = 39539
# column k of the Live Link blendshapes = column _FROM_ARKIT[k] of to_arkit52's output
_FROM_ARKIT = np.array([ARKIT_52.index(arkit_name(n)) for n in LIVELINK_BLENDSHAPES])


@dataclasses.dataclass
class OutFrame:
    """One output frame. ``index`` counts frames at ``fps`` from the stream's start (time
    index / fps s); ``arkit`` (52,) ARKit weights in :data:`ARKIT_52` order; ``head`` (3,) radians
    [pitch, yaw, roll]; ``gaze`` (2,) radians [pitch, yaw]; ``emotion`` (8,) weights; ``intensity``."""

    index: int
    fps: float
    arkit: np.ndarray
    head: np.ndarray
    gaze: np.ndarray
    emotion: np.ndarray
    intensity: float

    def livelink_values(self) -> np.ndarray:
        """(61,) float32: what the Live Link Face app sends / writes in its CSV for this frame."""
        eye = [self.gaze[1], self.gaze[0], 0.0]               # yaw, pitch, roll; both eyes alike
        pose = [self.head[1], self.head[0], self.head[2], *eye, *eye]
        return np.concatenate([self.arkit[_FROM_ARKIT], np.asarray(pose, np.float32)]).astype(np.float32)


def frames_of(track, first: int) -> list[OutFrame]:
    """The :class:`OutFrame` s (25 fps) of a live Track chunk whose first frame is ``first``."""
    arkit = to_arkit52(track.expression, track.expression_names, gaze=track.gaze)
    gaze = track.gaze if track.gaze is not None else np.zeros((track.n_frames, 2), np.float32)
    return [OutFrame(first + i, track.fps, arkit[i], track.pose_rotation[i].astype(np.float32),
                     gaze[i].astype(np.float32), track.emotion[i], float(track.intensity[i]))
            for i in range(track.n_frames)]


class Resampler:
    """25 fps frames → frames at ``fps`` by linear interpolation (weights, angles, emotion).

    Output frame j is at time j / fps; it is made once the 25 fps frame after that time exists,
    so 60 fps output waits up to one 25 fps frame (40 ms) more than 25 fps output. At 25 fps it
    passes frames through unchanged."""

    def __init__(self, fps: float, src_fps: float = 25.0):
        if fps <= 0:
            raise EvpError(f"output fps must be positive, got {fps}")
        self.fps, self.src = float(fps), float(src_fps)
        self.prev: OutFrame | None = None
        self.next_out = 0

    def push(self, frame: OutFrame) -> list[OutFrame]:
        if self.fps == self.src:
            return [frame]
        out = []
        p = self.prev
        if p is not None:
            # every output time in [p, frame): interpolated between the two source frames
            while (pos := self.next_out * self.src / self.fps) < frame.index:
                w = float(pos - p.index)
                lerp = lambda a, b: ((1 - w) * a + w * b).astype(np.float32)  # noqa: E731
                out.append(OutFrame(self.next_out, self.fps, lerp(p.arkit, frame.arkit), lerp(p.head, frame.head),
                                    lerp(p.gaze, frame.gaze), lerp(p.emotion, frame.emotion),
                                    float((1 - w) * p.intensity + w * frame.intensity)))
                self.next_out += 1
        self.prev = frame
        return out

    def flush(self) -> list[OutFrame]:
        """The output frames at the last source frame's time (at the stream's end)."""
        if self.fps == self.src or self.prev is None:
            return []
        out = []
        while self.next_out * self.src / self.fps <= self.prev.index + 1e-9:
            p = self.prev
            out.append(dataclasses.replace(p, index=self.next_out, fps=self.fps))
            self.next_out += 1
        return out


def parse_hostport(text: str, default_port: int, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, or ``:PORT``) → (address, port), resolved now: one-line
    EvpError for a bad port or an unknown host."""
    host, sep, port_s = str(text).rpartition(":")
    if not sep:
        host, port_s = str(text), str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_s)
    except ValueError:
        raise EvpError(f"{what}: bad HOST:PORT {text!r} (the port must be a number, e.g. 127.0.0.1:{default_port})") from None
    if not 0 < port < 65536:
        raise EvpError(f"{what}: port {port} is out of range (1-65535)")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as e:
        raise EvpError(f"{what}: cannot resolve host {host!r} ({getattr(e, 'strerror', None) or e})") from None
    return info[0][4][0], port


class _Udp:
    """A UDP sender that never raises on send: a receiver that is down (ICMP port unreachable
    comes back as ECONNREFUSED on the next send on Linux) or a full buffer only counts a drop."""

    def __init__(self, host: str, port: int):
        self.addr = (host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sent = 0
        self.dropped = 0

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.addr)
            self.sent += 1
        except OSError:
            self.dropped += 1

    def close(self) -> None:
        self.sock.close()


def encode_livelink(values: np.ndarray, frame_number: int, fps: int, subject: str, device_id: str,
                    sub_frame: float = 0.0, fps_den: int = 1) -> bytes:
    """One Live Link Face packet (the layout in the module docstring) for ``values`` (61,)."""
    v = np.asarray(values, np.float32).reshape(-1)
    if v.size != LIVELINK_VALUE_COUNT:
        raise EvpError(f"a Live Link Face packet carries {LIVELINK_VALUE_COUNT} values, got {v.size}")
    dev, subj = device_id.encode("utf-8"), subject.encode("utf-8")
    return b"".join([
        struct.pack(">B", LIVELINK_VERSION),
        struct.pack(">i", len(dev)), dev,
        struct.pack(">i", len(subj)), subj,
        struct.pack(">ifii", int(frame_number), float(sub_frame), int(fps), int(fps_den)),
        struct.pack(">B", v.size),
        v.astype(">f4").tobytes(),
    ])


class _UdpOutput:
    """An output that sends datagrams through ``self.udp`` (a :class:`_Udp`)."""

    udp: "_Udp"

    @property
    def dropped(self) -> int:
        """Datagrams the receiver was not there for (the loop keeps running)."""
        return self.udp.dropped

    def close(self) -> None:
        self.udp.close()


class LiveLinkOutput(_UdpOutput):
    """Live Link Face packets to ``host:port`` (UDP), one per frame."""

    def __init__(self, host: str, port: int, subject: str = "evp-anim", device_id: str | None = None):
        self.udp = _Udp(host, port)
        self.subject = subject
        # The app sends its device's UUID; a fixed one per run keeps Unreal's source list stable.
        self.device_id = device_id or str(uuid.uuid4()).upper()
        self.name = f"livelink {host}:{port}"

    def send(self, frame: OutFrame, on_sent=None) -> None:
        self.udp.send(encode_livelink(frame.livelink_values(), frame.index, int(round(frame.fps)),
                                      self.subject, self.device_id))
        if on_sent is not None:
            on_sent(frame)



class VmcOutput(_UdpOutput):
    """VMC-protocol blendshapes (ARKit names) as one OSC bundle per frame to ``host:port``."""

    def __init__(self, host: str, port: int):
        try:
            from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
            from pythonosc.osc_message_builder import OscMessageBuilder
        except ImportError:
            raise EvpError("--osc needs python-osc: pip install python-osc") from None
        self._bundle, self._now, self._msg = OscBundleBuilder, IMMEDIATELY, OscMessageBuilder
        self.udp = _Udp(host, port)
        self.name = f"osc {host}:{port}"
        # the 52 value messages differ only in their float: build each frame's from the builder
        self._names = list(ARKIT_52)

    def send(self, frame: OutFrame, on_sent=None) -> None:
        bundle = self._bundle(self._now)
        for name, value in zip(self._names, frame.arkit):
            m = self._msg("/VMC/Ext/Blend/Val")
            m.add_arg(name)
            m.add_arg(float(value), "f")
            bundle.add_content(m.build())
        bundle.add_content(self._msg("/VMC/Ext/Blend/Apply").build())
        self.udp.send(bundle.build().dgram)
        if on_sent is not None:
            on_sent(frame)



class JsonlOutput:
    """One JSON object per frame on ``stream`` (default stdout): frame, time (s), fps, arkit
    {name: weight}, head [pitch, yaw, roll] and gaze [pitch, yaw] (radians), emotion {name:
    weight}, intensity. A closed pipe stops this output only."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self.name = "jsonl"
        self.dropped = 0
        self._dead = False

    def send(self, frame: OutFrame, on_sent=None) -> None:
        if self._dead:
            self.dropped += 1
            return
        from ..emotions import EMOTIONS
        obj = {"frame": frame.index, "time": round(frame.index / frame.fps, 4), "fps": frame.fps,
               "arkit": {n: round(float(v), 6) for n, v in zip(ARKIT_52, frame.arkit)},
               "head": [round(float(v), 6) for v in frame.head],
               "gaze": [round(float(v), 6) for v in frame.gaze],
               "emotion": {n: round(float(v), 4) for n, v in zip(EMOTIONS, frame.emotion) if v > 0},
               "intensity": round(frame.intensity, 4)}
        try:
            self.stream.write(json.dumps(obj) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self._dead = True            # the reader went away: the live loop carries on
        if on_sent is not None:
            on_sent(frame)

    def close(self) -> None:
        pass


class Recorder:
    """The live take: the 25 fps Track (``path``, .npz, through a
    :class:`~evp_anim.tracks.TrackWriter`) and the 16 kHz audio beside it (``path`` with .wav,
    float samples, so re-animating it offline reads exactly what live heard). Both appear only
    when :meth:`close` completes (atomic renames); :meth:`abort` leaves nothing."""

    def __init__(self, path: str | Path):
        import contextlib

        import soundfile as sf

        from ..atomic import atomic_output, check_writable
        from ..tracks import TrackWriter
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise EvpError(f"--record writes a track: the name must end in .npz, got {self.path.name!r}")
        self.wav_path = self.path.with_suffix(".wav")
        check_writable(self.path)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_output(self.wav_path))
        self._wav = sf.SoundFile(str(tmp), "w", samplerate=16000, channels=1, subtype="FLOAT", format="WAV")
        self.writer = TrackWriter(self.path)
        self.n_samples = 0

    def audio(self, samples: np.ndarray) -> None:
        if samples.size:
            self._wav.write(np.asarray(samples, np.float32))
            self.n_samples += samples.size

    def frames(self, track) -> None:
        self.writer.append(track)

    def close(self) -> int:
        """Write both files; returns the frames recorded (0: nothing heard, no track written)."""
        from ..audio.io import audio_sha256
        self._wav.close()
        self._stack.close()                     # the WAV is renamed into place
        if self.writer.n_frames == 0:
            self.writer.abort()
            return 0
        self.writer.provenance["source_audio_sha256"] = audio_sha256(self.wav_path)
        self.writer.info["audio"] = str(self.wav_path.resolve())
        self.writer.close()
        return self.writer.n_frames

    def abort(self) -> None:
        import contextlib
        with contextlib.suppress(Exception):
            self._wav.close()
        with contextlib.suppress(BaseException):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self.writer.abort()
