"""Audio features on EVP's clock: MFCC at 100 Hz, grouped into one 28×12 window per 25 fps video frame.

Timing conventions (all stages rely on them):

* Audio is 16 kHz mono float in [-1, 1].
* MFCC frame ``m`` is centred at ``m * 10 ms`` (librosa's ``center=True``), uses a 25 ms Hann
  window, and keeps coefficients c1…c12 (c0, the frame's overall level, is dropped as in EVP).
* Video frame ``t`` covers ``[t/25, (t+1)/25)`` s; its centre ``t*40 ms + 20 ms`` is MFCC frame
  ``4t + 2``. Its window is MFCC rows ``4t+2-14 … 4t+2+13`` (28 rows = 280 ms).
* A clip of N samples has ``ceil(N / sr * 25)`` video frames (:func:`n_frames`).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS

SAMPLE_RATE = 16000          # Hz: the project's one audio rate (every stage imports it from here)
MFCC_HOP_S = 0.010           # s between MFCC frames (100 Hz)
MFCC_WIN_S = 0.025           # s, analysis window length
N_MFCC = 12                  # coefficients kept (c1..c12)
MFCC_WINDOW = 28             # MFCC frames per video frame (280 ms)
N_MELS = 40                  # mel bands over 0–8 kHz
MFCC_PER_FRAME = int(round(1.0 / (DEFAULT_FPS * MFCC_HOP_S)))  # 4 MFCC frames per video frame (40 ms / 10 ms)

_HOP = int(round(SAMPLE_RATE * MFCC_HOP_S))      # 160 samples
_N_FFT = int(round(SAMPLE_RATE * MFCC_WIN_S))    # 400 samples
# Row offset of a video frame's window start relative to 4t: centre row 4t+2 sits at window row 14.
_WIN_BEFORE = MFCC_WINDOW // 2 - 2               # 12

ENERGY_FLOOR_DB = -120.0     # dBFS reported for digital silence (log of zero)
VAD_ABS_FLOOR_DB = -55.0     # dBFS below which a frame is never voice
VAD_MIN_RANGE_DB = 6.0       # dB between quiet and loud frames below which a clip is "stationary"
VAD_STATIONARY_DB = -40.0    # dBFS a stationary clip must reach to count as voice throughout
VAD_REL_THRESHOLD = 0.35     # threshold at this fraction of the way from noise floor to loudness
VAD_HANGOVER = 2             # frames (80 ms) kept active after the last loud frame


def check_waveform(audio: np.ndarray, what: str = "audio", allow_empty: bool = False) -> np.ndarray:
    """Return ``audio`` as an array after checking it is a 1-D float waveform (else :class:`EvpError`)."""
    a = np.asarray(audio)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating):
        raise EvpError(f"{what} must be a 1-D float array of samples, got shape {a.shape} dtype {a.dtype}; "
                       "load files with evp_anim.audio.io.load_audio")
    if a.size == 0 and not allow_empty:
        raise EvpError(f"{what} has no samples; give at least one sample of audio")
    if not np.isfinite(a).all():
        raise EvpError(f"{what} contains NaN or infinite samples; clean the signal before computing features")
    return a


def _check_rate(sr: float, what: str = "sample rate") -> None:
    if not (isinstance(sr, (int, float, np.integer, np.floating)) and sr > 0 and math.isfinite(sr)):
        raise EvpError(f"{what} must be a positive number, got {sr!r}")


def n_frames(n_samples: int, sr: int = SAMPLE_RATE, fps: float = DEFAULT_FPS) -> int:
    """Number of video frames for ``n_samples`` of audio: ``ceil(n_samples / sr * fps)``.

    Rounding up means a trailing partial frame counts as a frame (1.01 s → 26 frames at 25 fps),
    so every sample belongs to some frame; 0 samples → 0 frames. Exact for integer ``sr``/``fps``.
    """
    _check_rate(sr)
    _check_rate(fps, "fps")
    n = int(n_samples)
    if n < 0:
        raise EvpError(f"n_samples must be >= 0, got {n_samples}")
    if float(sr).is_integer() and float(fps).is_integer():
        return -(-n * int(fps) // int(sr))
    return int(math.ceil(n * fps / sr - 1e-9))


def _to_16k(audio: np.ndarray, sr: float) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio.astype(np.float32), sr, SAMPLE_RATE, quality="HQ")


def mfcc(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """MFCC c1…c12 at 100 Hz: (M, 12) float32 with ``M = 1 + N16 // 160`` (N16 = samples at 16 kHz).

    Row ``m`` describes the 25 ms Hann window centred at ``m * 10 ms`` (the signal is zero-padded
    by half a window at both ends). Mel spectrogram: n_fft 400, hop 160, 40 Slaney mel bands over
    0–8 kHz, power → dB with a fixed floor of -100 dB (``amin=1e-10``, no per-clip ``top_db`` so a
    frame's features do not depend on the loudest part of its clip), then an orthonormal DCT-II.
    Audio at another rate is first resampled to 16 kHz.
    """
    import librosa

    a = check_waveform(audio)
    _check_rate(sr)
    y = _to_16k(a, sr)
    mel = librosa.feature.melspectrogram(
        y=y, sr=SAMPLE_RATE, n_fft=_N_FFT, hop_length=_HOP, win_length=_N_FFT, window="hann",
        center=True, pad_mode="constant", power=2.0, n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2)
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    c = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC + 1, dct_type=2, norm="ortho")
    return np.ascontiguousarray(c[1:].T, dtype=np.float32)


def mfcc_windows(audio: np.ndarray, sr: int = SAMPLE_RATE, n_frames: int | None = None) -> np.ndarray:
    """EVP's per-video-frame MFCC windows: (T, 28, 12) float32.

    ``windows[t, r]`` is MFCC row ``4t - 12 + r`` (so row 14 is frame t's centre, MFCC ``4t + 2``).
    ``T`` defaults to :func:`n_frames` of the audio (at 25 fps). Rows before the first or after the
    last MFCC frame repeat that edge frame: clip edges are usually the clip's own room tone, which
    an edge copy reproduces, whereas the MFCC of digital silence never occurs inside real speech.
    Built with a strided view (no Python loop), then copied once.
    """
    a = check_waveform(audio)
    _check_rate(sr)
    T = _frames_for(a, sr, DEFAULT_FPS, n_frames)
    feats = mfcc(a, sr)
    if T == 0:
        return np.zeros((0, MFCC_WINDOW, N_MFCC), np.float32)
    M = feats.shape[0]
    rows_needed = MFCC_PER_FRAME * (T - 1) + MFCC_WINDOW          # padded rows the last window reaches
    back = max(0, rows_needed - _WIN_BEFORE - M)
    padded = np.concatenate([
        np.repeat(feats[:1], _WIN_BEFORE, axis=0), feats, np.repeat(feats[-1:], back, axis=0)])
    s_row, s_col = padded.strides
    view = np.lib.stride_tricks.as_strided(
        padded, shape=(T, MFCC_WINDOW, N_MFCC), strides=(MFCC_PER_FRAME * s_row, s_row, s_col),
        writeable=False)
    return np.ascontiguousarray(view)


def _frames_for(a: np.ndarray, sr: float, fps: float, n: int | None) -> int:
    if n is None:
        return n_frames(a.size, sr, fps)
    if int(n) != n or n < 0:
        raise EvpError(f"n_frames must be a non-negative integer, got {n!r}")
    return int(n)


def energy(audio: np.ndarray, sr: int = SAMPLE_RATE, fps: float = DEFAULT_FPS,
           n_frames: int | None = None) -> np.ndarray:
    """RMS level per video frame in dBFS: (T,) float32.

    Frame ``t`` uses samples ``[floor(t*sr/fps), floor((t+1)*sr/fps))`` clipped to the clip; the
    reference is 1.0, so a full-scale square wave is 0 dBFS and a full-scale sine -3 dBFS. Digital
    silence, and frames past the end of the audio, read :data:`ENERGY_FLOOR_DB` (-120 dBFS).
    """
    a = check_waveform(audio, allow_empty=True)
    _check_rate(sr)
    _check_rate(fps, "fps")
    T = _frames_for(a, sr, fps, n_frames)
    # Cumulative sums give every frame's sum of squares in one pass whatever sr/fps is.
    csum = np.concatenate([[0.0], np.cumsum(np.square(a, dtype=np.float64))])
    bounds = np.minimum(np.floor(np.arange(T + 1) * (sr / fps) + 1e-9).astype(np.int64), a.size)
    counts = np.diff(bounds)
    sums = np.maximum(csum[bounds[1:]] - csum[bounds[:-1]], 0.0)
    mean_sq = np.divide(sums, counts, out=np.zeros(T), where=counts > 0)
    floor_power = 10.0 ** (ENERGY_FLOOR_DB / 10.0)
    return (10.0 * np.log10(np.maximum(mean_sq, floor_power))).astype(np.float32)


def voice_activity(audio: np.ndarray, sr: int = SAMPLE_RATE, fps: float = DEFAULT_FPS,
                   n_frames: int | None = None) -> np.ndarray:
    """Voice (or any foreground sound) per video frame: (T,) bool.

    The threshold adapts to the clip: noise floor = 5th percentile of :func:`energy`, loudness =
    95th percentile, threshold = 35 % of the way from floor to loudness (in dB), never below
    -55 dBFS. A clip whose quiet and loud frames are within 6 dB of each other has no pauses to
    learn a floor from; it counts as voiced throughout if louder than -40 dBFS, else as silent.
    Each active frame keeps the next 2 frames (80 ms) active (hangover), so trailing weak
    consonants are not cut. Digital silence and low-level noise give all False.
    """
    e = energy(audio, sr, fps, n_frames).astype(np.float64)
    if e.size == 0:
        return np.zeros(0, bool)
    floor_db, loud_db = np.percentile(e, [5.0, 95.0])
    if loud_db < VAD_ABS_FLOOR_DB:
        return np.zeros(e.size, bool)
    if loud_db - floor_db < VAD_MIN_RANGE_DB:
        return np.full(e.size, loud_db >= VAD_STATIONARY_DB)
    threshold = max(VAD_ABS_FLOOR_DB, floor_db + VAD_REL_THRESHOLD * (loud_db - floor_db))
    active = e > threshold
    held = active.copy()
    for k in range(1, VAD_HANGOVER + 1):
        held[k:] |= active[:-k]
    return held


def audio_features(audio: np.ndarray, sr: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """All of EVP's per-frame audio features of one waveform, on one clock (T frames at 25 fps).

    ``mfcc_windows`` (T, 28, 12) float32 (:func:`mfcc_windows`), ``energy_db`` (T,) float32
    (:func:`energy`), ``voice_activity`` (T,) bool (:func:`voice_activity`) and ``fps`` (float32):
    the arrays of an ``evp-anim features`` file (:func:`evp_anim.audio.io.write_features`).
    """
    win = mfcc_windows(audio, sr)
    n = win.shape[0]
    return {"mfcc_windows": win, "energy_db": energy(audio, sr, n_frames=n),
            "voice_activity": voice_activity(audio, sr, n_frames=n), "fps": np.float32(DEFAULT_FPS)}
