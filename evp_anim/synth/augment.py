"""Recording-condition augmentation for synthetic speech: room, noise, channel, codec, level.

:func:`augment` runs a seeded chain on a clip's 16 kHz audio after synthesis, in the order a real
recording meets them: room reverb → background noise → band-limiting (telephone or a low-pass
microphone/channel) → lossy codec (MP3/AAC through PyAV) → level change → peak limit. Each step
runs with its own probability (:class:`AugmentConfig`, defaults documented there). Every step
keeps the length and the timing — no sample moves (reverb is causal with its direct path at lag
0, the filters run forward and backward, the codec's delay is measured and removed) — so the
clip's phone times and face track stay valid unchanged. Speed or pitch perturbation is
deliberately not offered: it would move the phone times.

Deterministic: the same audio, generator state and config give bit-identical output.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import signal

from .speech import PEAK_LIMIT, active_level_db, soft_limit

NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown", "babble")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentation chain (ranges are sampled uniformly).

    * reverb (``p_reverb`` 0.5): an exponentially decaying noise impulse response with
      RT60 ``rt60_s`` 0.2–0.8 s and its high frequencies decaying faster, mixed wet/dry with a
      wet share ``wet`` 0.2–0.7;
    * noise (``p_noise`` 0.6): white, pink, brown or babble-like noise at ``snr_db`` 5–30 dB
      below the speech's active level (:func:`~evp_anim.synth.speech.active_level_db`);
    * band-limit (``p_band`` 0.4): telephone band 300–3400 Hz with probability ``p_telephone``
      0.4, else a low-pass at ``lowpass_hz`` 3.4–7 kHz;
    * codec (``p_codec`` 0.3): MP3 or AAC at ``codec_kbps`` 16–32 kbit/s (skipped without PyAV);
    * level (``p_gain`` 0.5): ``gain_db`` −10…+10 dB, then the peak limiter (always).
    """

    p_reverb: float = 0.5
    rt60_s: tuple[float, float] = (0.2, 0.8)
    wet: tuple[float, float] = (0.2, 0.7)
    p_noise: float = 0.6
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_band: float = 0.4
    p_telephone: float = 0.4
    lowpass_hz: tuple[float, float] = (3400.0, 7000.0)
    p_codec: float = 0.3
    codec_kbps: tuple[int, int] = (16, 32)
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-10.0, 10.0)

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_AUGMENT = AugmentConfig()


# ---- the steps (each (N,) float64 in → (N,) float64 out, same length) -------------------------

def room_impulse_response(sr: int, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """(L,) synthetic room impulse response, L = RT60 samples: a unit direct path at lag 0 followed
    (after a 1–5 ms gap) by Gaussian noise whose energy falls 60 dB over ``rt60_s`` seconds, split
    in a low and a high band with the high band decaying twice as fast (air and wall absorption).
    The tail's energy equals the direct path's, so the wet share alone sets the mix."""
    n = max(2, int(rt60_s * sr))
    t = np.arange(n) / sr
    # Amplitude envelope: energy −60 dB at rt60 → amplitude exp(−6.91 t / rt60).
    low = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)
    high = rng.standard_normal(n) * np.exp(-2 * 6.91 * t / rt60_s)
    sos = signal.butter(2, 2000.0, btype="low", fs=sr, output="sos")
    tail = signal.sosfilt(sos, low) + signal.sosfilt(signal.butter(2, 2000.0, btype="high", fs=sr,
                                                                   output="sos"), high)
    gap = max(1, int(rng.uniform(0.001, 0.005) * sr))
    tail[:gap] = 0.0
    tail /= math.sqrt(float(np.sum(tail ** 2))) + 1e-12
    tail[0] = 1.0
    return tail


def add_reverb(x: np.ndarray, sr: int, rt60_s: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` in a room: (1 − wet)·x + wet·(x ∗ ir) = x + wet·(x ∗ tail), with ``ir`` from
    :func:`room_impulse_response`; the convolution is causal and cut to len(x) (the direct path
    stays at lag 0, so timing is unchanged; the reverb past the end falls in the trailing silence)."""
    tail = room_impulse_response(sr, rt60_s, rng)
    tail[0] = 0.0                       # the direct path is x itself
    return x + wet * signal.fftconvolve(x, tail)[: len(x)]


def _shaped_noise(n: int, sr: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) Gaussian noise with power spectrum ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    f[0] = f[1] if n > 1 else 1.0
    spec *= f ** (-exponent / 2.0)
    y = np.fft.irfft(spec, n)
    return y / (math.sqrt(float(np.mean(y ** 2))) + 1e-12)


def _babble(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) babble-like noise, unit RMS: 4–7 "talkers", each pink noise through a random
    formant-like band-pass (300–3000 Hz) and gated by a 3–6 Hz syllable-rate envelope."""
    out = np.zeros(n)
    t = np.arange(n) / sr
    for _ in range(int(rng.integers(4, 8))):
        v = _shaped_noise(n, sr, 1.0, rng)
        lo = rng.uniform(300.0, 900.0)
        hi = min(lo * rng.uniform(2.0, 4.0), 0.45 * sr)
        v = signal.sosfilt(signal.butter(2, [lo, hi], btype="band", fs=sr, output="sos"), v)
        rate = rng.uniform(3.0, 6.0)
        env = np.clip(np.sin(2 * math.pi * rate * t + rng.uniform(0, 2 * math.pi))
                      + 0.3 * rng.standard_normal(), 0.0, None) ** 1.5
        out += v * env * rng.uniform(0.5, 1.0)
    return out / (math.sqrt(float(np.mean(out ** 2))) + 1e-12)


def make_noise(n: int, sr: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(n,) unit-RMS noise of ``kind`` in :data:`NOISE_KINDS`."""
    if kind == "babble":
        return _babble(n, sr, rng)
    return _shaped_noise(n, sr, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)


def add_noise(x: np.ndarray, sr: int, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``x`` plus ``kind`` noise whose mean power is ``snr_db`` below the speech's active level
    (mean power of the 20 ms frames within 35 dB of the loudest, as for loudness)."""
    noise = make_noise(len(x), sr, kind, rng)
    level = 10.0 ** ((active_level_db(x, sr) - snr_db) / 20.0)      # noise RMS
    return x + level * noise


def band_limit(x: np.ndarray, sr: int, low_hz: float | None, high_hz: float) -> np.ndarray:
    """Zero-phase (forward-backward) 4th-order Butterworth band-pass ``low_hz``–``high_hz``, or
    low-pass when ``low_hz`` is None: the channel of a telephone or a cheap microphone."""
    if low_hz:
        sos = signal.butter(4, [low_hz, high_hz], btype="band", fs=sr, output="sos")
    else:
        sos = signal.butter(4, high_hz, btype="low", fs=sr, output="sos")
    return signal.sosfiltfilt(sos, x)


def codec_available() -> bool:
    """True when PyAV (``import av``) is installed, which the codec step needs."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _encode_decode(x: np.ndarray, sr: int, codec: str, kbps: int) -> np.ndarray:
    """``x`` through ``codec`` ("mp3" or "aac") at ``kbps`` kbit/s, in memory → decoded samples at
    ``sr`` (length and delay not yet corrected)."""
    import av

    fmt, enc = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac")}[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        st = out.add_stream(enc, rate=sr, layout="mono")
        st.bit_rate = int(kbps) * 1000
        pcm = np.clip(x, -1.0, 1.0).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in st.encode(frame):
            out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
    buf.seek(0)
    chunks = []
    with av.open(buf, "r") as inp:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        for frame in inp.decode(audio=0):
            for f in resampler.resample(frame):
                chunks.append(f.to_ndarray().reshape(-1))
        for f in resampler.resample(None):
            chunks.append(f.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)


def _delay(ref: np.ndarray, y: np.ndarray, max_lag: int) -> int:
    """Lag d ∈ [0, max_lag] maximising the correlation of y[d:] with ``ref`` (codec start-up delay)."""
    n = min(len(ref), max(0, len(y) - max_lag))
    if n <= 0:
        return 0
    c = signal.correlate(y[: n + max_lag], ref[:n], mode="valid", method="fft")
    return int(np.argmax(c[: max_lag + 1]))


def lossy_codec(x: np.ndarray, sr: int, codec: str, kbps: int) -> np.ndarray:
    """``x`` through a lossy codec, re-aligned and cut to len(x): encoder/decoder priming delay
    (MP3 ~1100 samples, AAC 1024 + resampling) is found by cross-correlation and removed, and
    the end is padded with zeros if the decoder returned fewer samples."""
    y = _encode_decode(x, sr, codec, kbps)
    d = _delay(x, y, max_lag=min(4096, len(y)))
    y = y[d: d + len(x)]
    if len(y) < len(x):
        y = np.concatenate([y, np.zeros(len(x) - len(y))])
    return y


# ---- the chain --------------------------------------------------------------------------------

def augment(audio: np.ndarray, sr: int, rng: np.random.Generator,
            config: AugmentConfig = DEFAULT_AUGMENT) -> tuple[np.ndarray, dict]:
    """Run the chain on (N,) float audio at ``sr`` Hz → ((N,) float32 peak ≤ 0.985, record).

    ``record`` says which steps ran and with which drawn settings (JSON-ready, e.g.
    ``{"noise": {"kind": "pink", "snr_db": 12.3}}``). ``rng`` is consumed the same way whatever
    is drawn, so one step's settings do not shift another's.
    """
    x = np.asarray(audio, dtype=np.float64).copy()
    c = config
    # Every draw up front, in a fixed order.
    u = rng.random(5)
    rt60, wet = rng.uniform(*c.rt60_s), rng.uniform(*c.wet)
    kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
    snr = rng.uniform(*c.snr_db)
    tele, cutoff = rng.random() < c.p_telephone, rng.uniform(*c.lowpass_hz)
    codec, kbps = ("mp3", "aac")[int(rng.integers(2))], int(rng.integers(c.codec_kbps[0], c.codec_kbps[1] + 1))
    gain = rng.uniform(*c.gain_db)
    # The impulse response and the noise samples come from their own generators.
    ir_rng, noise_rng = (np.random.default_rng(int(s)) for s in rng.integers(0, 2**63 - 1, 2))

    rec: dict = {}
    if u[0] < c.p_reverb:
        x = add_reverb(x, sr, rt60, wet, ir_rng)
        rec["reverb"] = {"rt60_s": round(float(rt60), 3), "wet": round(float(wet), 3)}
    if u[1] < c.p_noise:
        x = add_noise(x, sr, snr, kind, noise_rng)
        rec["noise"] = {"kind": kind, "snr_db": round(float(snr), 2)}
    if u[2] < c.p_band:
        if tele:
            x = band_limit(x, sr, 300.0, 3400.0)
            rec["band"] = {"low_hz": 300.0, "high_hz": 3400.0}
        else:
            x = band_limit(x, sr, None, float(cutoff))
            rec["band"] = {"low_hz": 0.0, "high_hz": round(float(cutoff), 1)}
    if u[3] < c.p_codec and codec_available():
        # The codec clips at full scale: bring a hot signal under it first (level is reset below).
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        if peak > PEAK_LIMIT:
            x *= PEAK_LIMIT / peak
        x = lossy_codec(x, sr, codec, kbps)
        rec["codec"] = {"codec": codec, "kbps": kbps}
    if u[4] < c.p_gain:
        x *= 10.0 ** (gain / 20.0)
        rec["gain_db"] = round(float(gain), 2)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 2.0:          # far over (noise + gain): scale down first so the limiter stays gentle
        x *= 1.2 / peak
    return soft_limit(x).astype(np.float32), rec
