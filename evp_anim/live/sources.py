"""Live audio sources: each yields ``(samples, t_enter)`` — (n,) float32 mono at 16 kHz and the
``time.monotonic()`` instant the block entered the program (a microphone's callback, a pipe's
read, or the moment a WAV played at real-time pace would have delivered its last sample).

Every source polls with a short timeout (≤ 100 ms) instead of blocking indefinitely, so a stop
request (Ctrl-C sets a flag, see :func:`evp_anim.live.commands.run_live`) is seen promptly.
"""

from __future__ import annotations

import os
import queue
import select
import time
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np

from ..audio.features import SAMPLE_RATE
from ..errors import EvpError

BLOCK = 160                 # samples per block from a WAV (10 ms at 16 kHz: a typical audio callback)
_POLL_S = 0.1


class Source:
    """Base: iterate for blocks; :meth:`close` releases the device or file."""

    name = "source"
    uses_stdin = False

    def blocks(self, stop: Callable[[], bool]) -> Iterator[tuple[np.ndarray, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class WavSource(Source):
    """An audio file decoded to 16 kHz mono, delivered in blocks of :data:`BLOCK` samples at real-time
    pace (block k enters (k + 1) · 10 ms after the start, as a microphone would deliver it), or as
    fast as the consumer takes it with ``realtime=False`` (tests, offline comparisons)."""

    def __init__(self, path: str | Path, realtime: bool = True, block: int = BLOCK, loop: int = 1):
        from ..audio.io import load_audio
        self.path = Path(path)
        self.audio = load_audio(self.path)        # one-line EvpError for a missing / unreadable file
        self.realtime, self.block, self.loop = realtime, int(block), max(1, int(loop))
        self.name = f"{self.path.name} ({'real time' if realtime else 'fast'})"

    def blocks(self, stop):
        # ``loop`` plays the audio that many times over. The looped stream is sliced from the one
        # copy (not np.tile'd up front: an hour of looped audio would hold 230 MB for the whole run).
        a, size = self.audio, self.audio.size
        total = size * self.loop
        t0 = time.monotonic()
        for i in range(0, total, self.block):
            if stop():
                return
            end = min(i + self.block, total)
            if self.realtime:
                due = t0 + end / SAMPLE_RATE
                while (wait := due - time.monotonic()) > 0:
                    time.sleep(min(wait, _POLL_S))
                    if stop():
                        return
            j = i % size
            if j + (end - i) <= size:
                x = a[j:j + (end - i)]
            else:                                   # a block across the loop's seam
                x = a[np.arange(i, end) % size]
            yield x, time.monotonic()


class StdinSource(Source):
    """Raw PCM, signed 16-bit little-endian, 16 kHz mono, read from ``stream`` (default: this
    process's stdin) as it comes; ends at end of file."""

    uses_stdin = True
    name = "stdin (s16le 16 kHz mono)"

    def __init__(self, stream: IO[bytes] | None = None):
        import sys
        self.stream = stream if stream is not None else sys.stdin.buffer
        self._rest = b""

    def blocks(self, stop):
        fd = self.stream.fileno()
        while not stop():
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if not ready:
                continue
            data = os.read(fd, 8192)
            t = time.monotonic()
            if not data:
                return
            data = self._rest + data
            usable = len(data) - len(data) % 2            # an odd byte waits for its partner
            self._rest = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], "<i2").astype(np.float32) / 32768.0, t


class MicSource(Source):
    """A microphone through PortAudio (``sounddevice``): ``device`` a name or index (default: the
    system's default input), ``sample_rate`` the rate to open it at (default 16 kHz, else the
    device's own rate when it refuses 16 kHz); other rates are resampled to 16 kHz (soxr, streaming).
    Every problem (no PortAudio, no device, a refused rate, the device going away) is one line."""

    def __init__(self, device: str | None = None, sample_rate: int | None = None):
        try:
            import sounddevice as sd
        except ImportError:
            raise EvpError("--mic needs the sounddevice package: pip install sounddevice") from None
        except OSError as e:
            raise EvpError(f"no audio input: {e} (install it: apt-get install libportaudio2)") from None
        self.sd = sd
        dev = int(device) if device is not None and str(device).isdigit() else device
        try:
            info = sd.query_devices(dev, "input")
        except (ValueError, sd.PortAudioError) as e:
            which = f"device {device!r}" if device is not None else "default input device"
            raise EvpError(f"no audio input: {which} not found ({str(e).splitlines()[0]}); "
                           "list them with: python -m sounddevice") from None
        self.device = dev
        rates = [sample_rate] if sample_rate is not None else [SAMPLE_RATE, int(info["default_samplerate"])]
        self.rate = None
        for r in rates:
            try:
                sd.check_input_settings(dev, channels=1, samplerate=r, dtype="float32")
                self.rate = int(r)
                break
            except Exception as e:  # noqa: BLE001 - PortAudioError or ValueError for a bad rate
                err = e
        if self.rate is None:
            raise EvpError(f"the audio device {info['name']!r} refuses {rates[0]} Hz mono "
                           f"({str(err).splitlines()[0]}); try --sample-rate {int(info['default_samplerate'])}")
        self.name = f"microphone {info['name']!r} at {self.rate} Hz"
        self._queue: queue.Queue = queue.Queue()
        self._stream = None
        self._resampler = None
        if self.rate != SAMPLE_RATE:
            import soxr
            self._resampler = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def _callback(self, indata, frames, time_info, status) -> None:
        # PortAudio's thread: copy and hand over; nothing slow here.
        self._queue.put((indata[:, 0].copy(), time.monotonic(), bool(status.input_overflow)))

    def blocks(self, stop):
        sd = self.sd
        try:
            self._stream = sd.InputStream(device=self.device, channels=1, samplerate=self.rate,
                                          blocksize=self.rate // 100, dtype="float32", callback=self._callback)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise EvpError(f"cannot open the audio input: {str(e).splitlines()[0]}") from None
        idle = 0.0
        while not stop():
            try:
                x, t, _ = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                idle += _POLL_S
                if not self._stream.active or idle > 2.0:
                    raise EvpError("the audio input stopped delivering sound (was the device unplugged?)")
                continue
            idle = 0.0
            if self._resampler is not None:
                x = self._resampler.resample_chunk(x)
            yield x.astype(np.float32, copy=False), t

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception:  # noqa: BLE001 - a device that is gone cannot be closed twice
                pass
            self._stream = None
