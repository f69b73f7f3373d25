"""Reading and writing audio: any common file → 16 kHz mono float32, PCM16 WAV out, and the
EVP audio-features file (:func:`write_features`).

WAV/FLAC/OGG are read with soundfile (libsndfile); MP3, M4A/AAC and every container PyAV's
FFmpeg can open (including the audio track of a video) go through PyAV. Channels are averaged and
the sample rate is converted with soxr, so every stage sees the same signal whatever the source.
Files are decoded block by block (:func:`iter_audio_blocks`, soxr's streaming resampler), so a long
recording can be processed without holding it; :func:`load_audio` joins the same blocks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..atomic import atomic_path
from ..errors import EvpError
from .features import SAMPLE_RATE, audio_features, check_waveform

# Formats libsndfile reads natively and reliably; anything else goes to PyAV.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".w64", ".caf"})


class _DecodeFailed(Exception):
    """Internal: the decoder could not read the file (turned into one EvpError by the caller)."""


# Source frames per decoded block: about 3 s at 44.1 kHz, 1 MB of stereo float32.
_DECODE_BLOCK = 1 << 17


def _soundfile_blocks(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(rate, (n,) float32 mono block at that rate) from libsndfile; _DecodeFailed if it cannot open
    the file (the caller then tries PyAV), EvpError if the data break off later."""
    import soundfile as sf

    errors = (RuntimeError, sf.LibsndfileError, TypeError, ValueError)
    try:
        f = sf.SoundFile(str(path))
    except errors as e:
        raise _DecodeFailed(str(e)) from None
    with f:
        rate = int(f.samplerate)
        while True:
            try:
                data = f.read(_DECODE_BLOCK, dtype="float32", always_2d=True)
            except errors as e:
                raise EvpError(f"cannot decode {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                               "the file is corrupt: re-export or re-download it") from None
            if not len(data):
                return
            yield rate, data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def _pyav_blocks(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(rate, (n,) float32 mono block) from PyAV, as :func:`_soundfile_blocks`."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise _DecodeFailed(getattr(e, "strerror", None) or str(e)) from None
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams})
            raise EvpError(f"{path} has no audio stream (it holds {', '.join(kinds) or 'nothing'}); "
                           "give a file with sound, or extract the audio track first")
        stream = container.streams.audio[0]
        # Convert every frame to planar float at the stream's own rate and layout: we average the
        # channels ourselves (FFmpeg's downmix matrix is not a plain mean) and resample with soxr.
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        held = 0
        rate = 0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames, None)
                outs = resampler.resample(frame)      # None flushes the resampler
            except (av.FFmpegError, ValueError) as e:
                raise _DecodeFailed(getattr(e, "strerror", None) or str(e)) from None
            if frame is not None:
                rate = rate or int(frame.sample_rate)
            for out in outs:
                chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
                held += chunks[-1].size
            # Decoded frames are small (about a thousand samples): hand them on in blocks.
            if chunks and (held >= _DECODE_BLOCK or frame is None):
                yield rate or int(stream.codec_context.sample_rate or 0), np.concatenate(chunks)
                chunks, held = [], 0
            if frame is None:
                return


def _source_blocks(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """The decoded blocks of ``path``: libsndfile for its formats, else (or when libsndfile cannot
    open the file, e.g. a .wav holding MP3 data) PyAV. One EvpError if neither can read it."""
    errors = []
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            yield from _soundfile_blocks(path)
            return
        except _DecodeFailed as e:
            errors.append(str(e))
    started = False
    try:
        for item in _pyav_blocks(path):
            started = True
            yield item
    except _DecodeFailed as e:
        errors.append(str(e))
        detail = errors[-1].splitlines()[0] if errors and errors[-1] else "unknown format"
        if started:
            raise EvpError(f"cannot decode {path} ({detail}); the file is corrupt: "
                           "re-export or re-download it") from None
        raise EvpError(f"cannot decode {path} ({detail}); the file is corrupt or not audio: "
                       "re-export or re-download it (WAV and FLAC always work)") from None


# Source sample rates accepted. Below 1 kHz a file is not speech audio, and resampling it to 16 kHz
# would multiply its size (a 100 kB file "at 1 Hz" would become 3 GB of samples).
MIN_SOURCE_RATE, MAX_SOURCE_RATE = 1000, 1_000_000


def wav_shortfall(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(declared, held)`` byte counts of a RIFF/WAVE file's ``data`` chunk when its header
    declares more data than the file holds (a truncated copy or download); None otherwise,
    including for files that are not WAV and for the open sizes (0 or 0xFFFFFFFF) that streaming
    writers leave. Reads only the chunk headers."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            for _ in range(256):            # fmt, fact, LIST, ... come before data
                f.seek(pos)
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                declared = int.from_bytes(hdr[4:], "little")
                if hdr[:4] == b"data":
                    held = size - (pos + 8)
                    if declared in (0, 0xFFFFFFFF):
                        return None
                    return (declared, held) if declared > held else None
                pos += 8 + declared + (declared & 1)
                if pos >= size:
                    return None
    except OSError:
        return None
    return None


def _warn_cli(message: str) -> None:
    from ..cli_common import reporter
    reporter().info(f"warning: {message}")


def check_audio_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it names a non-empty file; else the one-line EvpError that
    :func:`load_audio` gives (checked before any decoding)."""
    path = Path(path)
    if not path.exists():
        raise EvpError(f"audio file not found: {path}; check the path")
    if not path.is_file():
        raise EvpError(f"{path} is not a file; give the path of an audio or video file")
    if path.stat().st_size == 0:
        raise EvpError(f"{path} is empty (0 bytes); re-export or re-download it")
    return path


def iter_audio_blocks(path: str | os.PathLike, sr: int = SAMPLE_RATE,
                      warn: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """Decode an audio (or video) file block by block: (n,) float32 mono blocks in [-1, 1] at ``sr``
    Hz, which joined are :func:`load_audio`'s samples exactly (channels averaged per block, the
    rate converted by soxr's streaming resampler, which gives the one-shot result bit for bit).

    Blocks hold a few seconds each, so memory does not grow with the recording. The checks and
    errors are :func:`load_audio`'s; those that need the whole file (no samples, the truncated-WAV
    warning) come when the last block has been read, and the file is opened only when iteration
    starts.
    """
    path = check_audio_file(path)
    if sr <= 0:
        raise EvpError(f"sample rate must be positive, got {sr}")

    rate = 0
    n_in = n_out = 0
    stream = None
    for block_rate, block in _source_blocks(path):
        if not block.size:
            continue
        if not rate:
            rate = block_rate
            if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
                raise EvpError(f"{path} has a sample rate of {rate} Hz, outside {MIN_SOURCE_RATE}.."
                               f"{MAX_SOURCE_RATE} Hz; the file is corrupt or not speech audio: re-export "
                               "it (16 or 48 kHz)")
            if rate != sr:
                import soxr
                stream = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
        n_in += block.size
        out = np.ascontiguousarray(block, np.float32) if stream is None else stream.resample_chunk(block)
        if out.size:
            n_out += out.size
            # Resampling can overshoot a full-scale signal slightly; keep the [-1, 1] promise.
            yield np.clip(out, -1.0, 1.0, out=out)     # a fresh buffer of ours: clip in place
    if not n_in or not rate:
        raise EvpError(f"{path} contains no audio samples; give a file with sound in it")
    short = wav_shortfall(path)
    if short is not None:
        declared, held = short
        (warn or _warn_cli)(f"{path} is truncated: its header declares {declared} bytes of audio but the file "
                            f"holds {max(held, 0)}; using the {n_in / rate:.2f} s present (re-export or "
                            "re-download it for the whole clip)")
    if stream is not None:
        out = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if out.size:
            n_out += out.size
            yield np.clip(out, -1.0, 1.0, out=out)
    if not n_out:    # shorter than one sample at ``sr``
        raise EvpError(f"{path} holds less than one sample at {sr} Hz; give a longer recording")


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE,
               warn: Callable[[str], None] | None = None) -> np.ndarray:
    """Load an audio (or video) file as (N,) float32 mono samples in [-1, 1] at ``sr`` Hz.

    Any bit depth (8-bit unsigned, 16/24/32-bit, float) and any rate (8, 44.1, 48 kHz, …) is
    accepted; channels are averaged; resampling uses soxr's high-quality filter, so N is
    ``duration_s * sr`` to within a sample. Compressed formats lose their encoder priming where
    the file records it (MP3 LAME header, MP4 edit list). The samples are those of
    :func:`iter_audio_blocks`, joined.

    Raises :class:`EvpError` for a missing file, an empty or sample-less file, a file no decoder
    can read, a sample rate outside [:data:`MIN_SOURCE_RATE`, :data:`MAX_SOURCE_RATE`] Hz, and a
    video without an audio stream. A WAV whose header declares more data than the file holds
    (:func:`wav_shortfall`) is read as far as it goes, and ``warn`` (default: the CLI's
    ``warning:`` line) is told, since the clip is shorter than it should be.
    """
    blocks = list(iter_audio_blocks(path, sr, warn))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def save_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write (N,) float samples in [-1, 1] as a mono PCM16 WAV at ``sr`` Hz, atomically.

    Values outside [-1, 1] are clipped (rather than wrapping around in 16-bit).
    """
    import soundfile as sf

    a = check_waveform(audio, allow_empty=True)
    if sr <= 0:
        raise EvpError(f"sample rate must be positive, got {sr}")
    a = np.clip(np.nan_to_num(a.astype(np.float32), nan=0.0), -1.0, 1.0)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), a, int(sr), subtype="PCM_16", format="WAV")


def write_features(audio_path: str | os.PathLike, output: str | os.PathLike) -> int:
    """Load ``audio_path`` (:func:`load_audio`) and write its EVP features
    (:func:`~evp_anim.audio.features.audio_features`) to ``output`` (.npz), atomically.

    Returns the number of frames. Raises :class:`EvpError` for an output not ending in .npz
    (before reading anything) and for audio :func:`load_audio` cannot read.
    """
    output = Path(output)
    if output.suffix != ".npz":
        raise EvpError(f"features output must end in .npz, got {output.name!r}")
    arrays = audio_features(load_audio(audio_path))
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return int(arrays["mfcc_windows"].shape[0])


def audio_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's bytes (a track's provenance records which audio it came from)."""
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"audio file not found: {path}; check the path")
    from ..assets import sha256_file
    return sha256_file(path)
