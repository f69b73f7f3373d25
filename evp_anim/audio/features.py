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

import functools
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
_ENERGY_BLOCK = 1500         # video frames per block of energy(): 60 s at 25 fps


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


def check_rate(sr: float, what: str = "sample rate") -> None:
    """One-line EvpError unless ``sr`` is a positive finite number."""
    if not (isinstance(sr, (int, float, np.integer, np.floating)) and sr > 0 and math.isfinite(sr)):
        raise EvpError(f"{what} must be a positive number, got {sr!r}")


def n_frames(n_samples: int, sr: int = SAMPLE_RATE, fps: float = DEFAULT_FPS) -> int:
    """Number of video frames for ``n_samples`` of audio: ``ceil(n_samples / sr * fps)``.

    Rounding up means a trailing partial frame counts as a frame (1.01 s → 26 frames at 25 fps),
    so every sample belongs to some frame; 0 samples → 0 frames. Exact for integer ``sr``/``fps``.
    """
    check_rate(sr)
    check_rate(fps, "fps")
    n = int(n_samples)
    if n < 0:
        raise EvpError(f"n_samples must be >= 0, got {n_samples}")
    if float(sr).is_integer() and float(fps).is_integer():
        return -(-n * int(fps) // int(sr))
    return int(math.ceil(n * fps / sr - 1e-9))


def to_16k(audio: np.ndarray, sr: float) -> np.ndarray:
    """(N,) float32 samples at 16 kHz from ``audio`` at ``sr`` Hz (soxr, high quality)."""
    if sr == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio.astype(np.float32), sr, SAMPLE_RATE, quality="HQ")


# MFCC frames per STFT block: bounds the transient arrays (frames, spectrum, mel power) to a few
# MB whatever the clip length (41 s of audio per block), so long clips need no more memory than
# their (M, 12) result.
_MFCC_BLOCK = 4096
# The same for the inference paths (mfcc_window_span, frame_mfcc_rows): 256 frames keep every
# float64 transient under ~0.8 MB, below the 1 MB mmap threshold animate's malloc settings fix
# (limit_heap_growth), so blocks reuse heap memory instead of faulting in fresh pages. Measured on
# 60 s of speech: windows 12.4 ms with those settings, 11.4 ms without (512 frames: 19.3 / 11.1 ms).
_SPAN_BLOCK = 256
_DB_AMIN = 1e-10             # power floor of the dB conversion (-100 dB)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (the Auditory Toolbox's, librosa's ``htk=False``): linear at 200/3 Hz per
    mel below 1 kHz, logarithmic above (27 mels per factor 6.4)."""
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mel = f / f_sp
    high = f >= min_log_hz
    mel[high] = min_log_mel + np.log(f[high] / min_log_hz) / logstep
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    f = f_sp * m
    high = m >= min_log_mel
    f[high] = min_log_hz * np.exp(logstep * (m[high] - min_log_mel))
    return f


@functools.lru_cache(maxsize=None)
def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = _N_FFT, n_mels: int = N_MELS,
                fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangular mel filters with Slaney area normalisation.

    Band edges are ``n_mels + 2`` points evenly spaced on Slaney's mel scale from ``fmin`` to
    ``fmax`` (default sr / 2); filter i rises linearly from edge i to edge i+1 and falls to edge
    i+2, scaled by 2 / (edge i+2 − edge i) in Hz so every filter has the same area. These are the
    filters the shipped models were trained with (librosa's ``filters.mel(htk=False,
    norm='slaney')``); stored as float32 as those were. Read-only (cached).
    """
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0],
                                   n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    w = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    w = w.astype(np.float32)
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=None)
def _dct_ortho(n_in: int, n_out: int) -> np.ndarray:
    """(n_in, n_out) float64 matrix of the orthonormal DCT-II: ``x @ D`` gives coefficients 0..n_out-1."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    d.setflags(write=False)
    return d


@functools.lru_cache(maxsize=None)
def _hann(n: int) -> np.ndarray:
    """Periodic ("DFT-even") Hann window of n samples, float64: the window of librosa's ``"hann"``."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


def mfcc_block(y: np.ndarray, m0: int, m1: int, offset: int = 0) -> np.ndarray:
    """MFCC c1…c12 of frames ``m0 … m1-1`` of the 16 kHz signal ``y``: (m1 - m0, 12) float32.

    Frame m covers samples ``[m*160 - 200, m*160 + 200)``; samples outside the clip are zeros (the
    ``center=True, pad_mode="constant"`` framing). Precision follows the reference pipeline the
    models were trained on: windowed frames and the FFT in float64, the spectrum rounded to
    complex64, power, mel power and dB in float32; the DCT runs in float64 on those dB values.
    ``y`` may be a stretch of a longer clip starting at sample ``offset`` (streaming,
    :func:`mfcc_window_span`): it must then hold every clip sample these frames cover.
    """
    half = _N_FFT // 2
    start = m0 * _HOP - half
    stop = (m1 - 1) * _HOP + half
    seg = np.zeros(stop - start, np.float32)
    lo, hi = max(start, offset), min(stop, offset + y.size)
    if hi > lo:
        seg[lo - start: hi - start] = y[lo - offset:hi - offset]
    frames = np.lib.stride_tricks.sliding_window_view(seg, _N_FFT)[::_HOP]       # (m1-m0, 400) view
    return _mfcc_of_frames(frames)


def _mfcc_of_frames(frames: np.ndarray) -> np.ndarray:
    """MFCC c1…c12 (n, 12) float32 of n analysis frames (n, 400) float32 samples (the precision
    :func:`mfcc_block` documents)."""
    spec = np.fft.rfft(frames * _hann(_N_FFT), axis=-1).astype(np.complex64)     # (n, 201)
    power = np.abs(spec) ** 2                                                     # float32
    mel = power @ mel_filters().T                                                 # (n, 40) float32
    log_mel = 10.0 * np.log10(np.maximum(np.float32(_DB_AMIN), mel))             # dB re 1.0, float32
    coeffs = log_mel.astype(np.float64) @ _dct_ortho(N_MELS, N_MFCC + 1)
    return coeffs[:, 1:].astype(np.float32)


def mfcc(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """MFCC c1…c12 at 100 Hz: (M, 12) float32 with ``M = 1 + N16 // 160`` (N16 = samples at 16 kHz).

    Row ``m`` describes the 25 ms Hann window centred at ``m * 10 ms`` (the signal is zero-padded
    by half a window at both ends). Mel spectrogram: n_fft 400, hop 160, 40 Slaney mel bands over
    0–8 kHz (:func:`mel_filters`), power → dB with a fixed floor of -100 dB (``amin=1e-10``, no
    per-clip ``top_db`` so a frame's features do not depend on the loudest part of its clip), then
    an orthonormal DCT-II. These are librosa's ``feature.mfcc`` features for those parameters (the
    models were trained on them; tests/test_mfcc_compat.py checks the match), computed with numpy
    alone so that no numba JIT runs at start-up, in blocks of 4096 frames so that memory beyond
    the result does not grow with the clip. Audio at another rate is first resampled to 16 kHz.
    """
    a = check_waveform(audio)
    check_rate(sr)
    y = to_16k(a, sr)
    m_total = 1 + y.size // _HOP
    out = np.empty((m_total, N_MFCC), np.float32)
    for m0 in range(0, m_total, _MFCC_BLOCK):
        m1 = min(m0 + _MFCC_BLOCK, m_total)
        out[m0:m1] = mfcc_block(y, m0, m1)
    return out


def mfcc_window_view(feats: np.ndarray, n_frames: int) -> np.ndarray:
    """EVP's per-video-frame windows (n_frames, 28, 12) float32 as a strided view over the MFCC
    rows ``feats`` (M, 12) (:func:`mfcc`), edge rows repeated as in :func:`mfcc_windows`.

    The view shares memory between overlapping windows (7× less than the copy :func:`mfcc_windows`
    returns: 48 bytes per MFCC row instead of 1,344 per video frame), which is what inference over
    long clips uses; do not write to it. Empty (0, 28, 12) for ``n_frames == 0``.
    """
    T = int(n_frames)
    if T == 0:
        return np.zeros((0, MFCC_WINDOW, N_MFCC), np.float32)
    M = feats.shape[0]
    rows_needed = MFCC_PER_FRAME * (T - 1) + MFCC_WINDOW          # padded rows the last window reaches
    back = max(0, rows_needed - _WIN_BEFORE - M)
    padded = np.concatenate([
        np.repeat(feats[:1], _WIN_BEFORE, axis=0), feats, np.repeat(feats[-1:], back, axis=0)]
    ).astype(np.float32, copy=False)
    s_row, s_col = padded.strides
    # Left writeable (torch.from_numpy warns on read-only arrays); nothing writes through it.
    return np.lib.stride_tricks.as_strided(
        padded, shape=(T, MFCC_WINDOW, N_MFCC), strides=(MFCC_PER_FRAME * s_row, s_row, s_col))


def _span_rows(f0: int, f1: int, n_samples: int) -> tuple[int, int, int]:
    """(first row, end row, M): the MFCC rows that the windows of video frames ``f0 … f1-1`` of a
    clip of ``n_samples`` (16 kHz) read, edge rows standing in for the rows beyond the clip."""
    m_total = 1 + int(n_samples) // _HOP
    r0 = min(max(MFCC_PER_FRAME * f0 - _WIN_BEFORE, 0), m_total - 1)
    r1 = min(max(MFCC_PER_FRAME * (f1 - 1) - _WIN_BEFORE + MFCC_WINDOW - 1, 0), m_total - 1) + 1
    return r0, r1, m_total


def window_span_samples(f0: int, f1: int, n_samples: int) -> tuple[int, int]:
    """Samples ``[s0, s1)`` of a clip of ``n_samples`` (16 kHz) that the MFCC windows of video frames
    ``f0 … f1-1`` depend on: what a stream must hold to call :func:`mfcc_window_span` (about 0.13 s
    either side of the frames: 14 MFCC rows of context plus half an analysis window)."""
    if not 0 <= f0 < f1 <= n_frames(n_samples):
        raise EvpError(f"frames [{f0}, {f1}) are outside the clip's {n_frames(n_samples)}")
    r0, r1, _ = _span_rows(f0, f1, n_samples)
    half = _N_FFT // 2
    return max(r0 * _HOP - half, 0), min((r1 - 1) * _HOP + half, int(n_samples))


def mfcc_window_span(samples: np.ndarray, offset: int, n_samples: int, f0: int, f1: int) -> np.ndarray:
    """Frames ``f0 … f1-1`` of :func:`mfcc_windows` of a 16 kHz clip of ``n_samples`` samples, from a
    stretch of it: ``samples`` = clip[offset : offset + len(samples)], which must cover
    :func:`window_span_samples` ``(f0, f1, n_samples)``. → (f1 - f0, 28, 12) float32, equal to the
    whole clip's windows (the same rows, framing and edge repeats), so a long clip can be
    featurised in chunks with only a chunk of samples in memory. The MFCC rows are computed in
    blocks of 256 (:func:`mfcc` uses 4096: a stream keeps its transient arrays small, ~2 MB rather
    than 27, at the cost of float rounding: rows agree with :func:`mfcc`'s to ~1e-6)."""
    s0, s1 = window_span_samples(f0, f1, n_samples)
    y = np.asarray(samples, np.float32)
    if offset > s0 or offset + y.size < s1:
        raise EvpError(f"samples [{offset}, {offset + y.size}) do not cover [{s0}, {s1}) that frames "
                       f"[{f0}, {f1}) need")
    r0, r1, m_total = _span_rows(f0, f1, n_samples)
    rows = np.empty((r1 - r0, N_MFCC), np.float32)
    for m0 in range(r0, r1, _SPAN_BLOCK):
        m1 = min(m0 + _SPAN_BLOCK, r1)
        rows[m0 - r0:m1 - r0] = mfcc_block(y, m0, m1, offset)
    # windows[t, r] is MFCC row 4t - 12 + r, clamped to the clip's rows (mfcc_window_view's edge copies)
    t = np.arange(f0, f1)[:, None]
    idx = np.clip(MFCC_PER_FRAME * t - _WIN_BEFORE + np.arange(MFCC_WINDOW)[None, :], 0, m_total - 1) - r0
    return rows[idx]


def mfcc_windows(audio: np.ndarray, sr: int = SAMPLE_RATE, n_frames: int | None = None) -> np.ndarray:
    """EVP's per-video-frame MFCC windows: (T, 28, 12) float32.

    ``windows[t, r]`` is MFCC row ``4t - 12 + r`` (so row 14 is frame t's centre, MFCC ``4t + 2``).
    ``T`` defaults to :func:`n_frames` of the audio (at 25 fps). Rows before the first or after the
    last MFCC frame repeat that edge frame: clip edges are usually the clip's own room tone, which
    an edge copy reproduces, whereas the MFCC of digital silence never occurs inside real speech.
    Built with a strided view (:func:`mfcc_window_view`, no Python loop), then copied once.
    """
    a = check_waveform(audio)
    check_rate(sr)
    T = _frames_for(a, sr, DEFAULT_FPS, n_frames)
    return np.ascontiguousarray(mfcc_window_view(mfcc(a, sr), T))


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
    check_rate(sr)
    check_rate(fps, "fps")
    T = _frames_for(a, sr, fps, n_frames)
    bounds = np.minimum(np.floor(np.arange(T + 1) * (sr / fps) + 1e-9).astype(np.int64), a.size)
    counts = np.diff(bounds)
    sums = np.zeros(T)
    # Each frame's sum of squares in float64, summed directly (np.add.reduceat over the frames that
    # hold samples: they tile the clip, so each runs to the next one's start), whatever sr/fps is;
    # over blocks of frames so the float64 temporaries stay a few MB however long the clip is.
    for f0 in range(0, T, _ENERGY_BLOCK):
        f1 = min(f0 + _ENERGY_BLOCK, T)
        s0, s1 = bounds[f0], bounds[f1]
        held = f0 + np.flatnonzero(counts[f0:f1])
        if held.size:
            sums[held] = np.add.reduceat(np.square(a[s0:s1], dtype=np.float64), bounds[held] - s0)
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
    return voice_activity_from_energy(energy(audio, sr, fps, n_frames))


def voice_activity_from_energy(energy_db: np.ndarray) -> np.ndarray:
    """:func:`voice_activity` from the clip's per-frame levels (T,) dBFS (:func:`energy`): (T,) bool.

    The thresholds are percentiles over the whole clip, so a stream computes the levels chunk by
    chunk (4 bytes a frame) and decides voice activity once they are all known."""
    e = np.asarray(energy_db, np.float32).astype(np.float64)
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


MIN_SPEECH_FRAMES = 10       # voiced frames (0.4 s) below which a clip's speech mean is not trusted


def frame_mfcc_rows(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(T, 12) float32: the MFCC row at each 25 fps video frame's centre (row 4t + 2 of
    :func:`mfcc`, the last row for a trailing frame without one), T = :func:`n_frames`.

    Only those rows are computed (a quarter of :func:`mfcc`'s: this runs on every clip before it
    is animated), in blocks of :data:`_SPAN_BLOCK`; they agree with :func:`mfcc`'s rows to float
    rounding (~1e-6: the mel product's summation can differ with the number of rows)."""
    y = to_16k(check_waveform(audio), sr)
    m_total = 1 + y.size // _HOP
    T = n_frames(y.size)
    rows = np.minimum(MFCC_PER_FRAME * np.arange(T) + MFCC_PER_FRAME // 2, m_total - 1)
    # Row m's frame is samples [m*160 - 200, m*160 + 200) of the clip zero-padded by 200 each side.
    half = _N_FFT // 2
    padded = np.zeros(y.size + 2 * half, np.float32)
    padded[half:half + y.size] = y
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]    # (m_total, 400) view
    out = np.empty((T, N_MFCC), np.float32)
    for i in range(0, T, _SPAN_BLOCK):
        out[i:i + _SPAN_BLOCK] = _mfcc_of_frames(frames[rows[i:i + _SPAN_BLOCK]])
    return out


def speech_mfcc_mean(rows: np.ndarray, voiced: np.ndarray) -> np.ndarray | None:
    """(12,) float32: the mean of a clip's frame MFCC rows (T, 12) (:func:`frame_mfcc_rows`) over
    its voiced frames (T,) bool — the clip's channel and voice colour (a brighter microphone or
    voice raises the spectral slope c1 in every row); None with fewer than
    :data:`MIN_SPEECH_FRAMES` voiced frames."""
    v = np.asarray(voiced, bool)[: len(rows)]
    if int(v.sum()) < MIN_SPEECH_FRAMES:
        return None
    return np.asarray(rows, np.float64)[: len(v)][v].mean(0).astype(np.float32)


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
