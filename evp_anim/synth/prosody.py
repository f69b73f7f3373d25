"""Emotional prosody: how each emotion shifts a speaker's pitch, range, rate, pauses, loudness and
voice quality, and the post-filters that realise the voice-quality part.

espeak-ng controls pitch level/range (0–100 parameters), rate (wpm) and inter-word gaps; the
rest is done on the waveform by :func:`apply_voice_quality`:

* spectral tilt — an RBJ high-shelf biquad at 1.5 kHz (tense/angry voices are brighter, sad
  voices darker);
* low-pass — a 2nd-order Butterworth (sad: muffled, low-energy voice);
* drive — soft tanh saturation, which adds upper harmonics like pressed phonation (anger);
* breathiness — high-passed noise following the speech envelope (sad, fear);
* tremor — a slow (5–8 Hz) irregular pitch wobble made by a modulated fractional delay, plus
  amplitude tremolo (fear's shaky voice);
* flutter — for every voice, a small random pitch drift (the natural micro-variation that
  espeak's own flutter would give; it is switched off there because it is not repeatable).

Effects are linear in ``intensity × speaker.expressiveness`` so intensity 1/3 lies between
neutral and intensity 1 on every axis. Neutral ignores intensity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import interpolate, signal

from ..emotions import EMOTIONS, canonical_emotion, check_intensity
from .speakers import Speaker

# Full-intensity changes relative to the speaker's neutral voice.
#   pitch, range: espeak 0–100 units; rate: factor; gap: +10 ms units between words;
#   loud: dB; tilt: dB high shelf; lowpass: cutoff Hz at full intensity (0 = none);
#   drive: 0–1 saturation; breath: + noise ratio; tremolo: AM depth; vibrato: cents; tremor_hz.
# Directions follow the acoustic-correlates literature on vocal emotion (e.g. Scherer's and
# Banse & Scherer's summaries): high arousal (anger, fear, happiness, surprise) raises F0 level
# and variability, rate and intensity; sadness lowers and flattens F0, slows, softens and darkens;
# disgust and contempt are low, slow and flat.
_PROFILE: dict[str, dict[str, float]] = {
    "neutral":   dict(pitch=0, range=0, rate=1.00, gap=0, loud=0, tilt=0, lowpass=0, drive=0.0,
                      breath=0.0, tremolo=0.0, vibrato=0, tremor_hz=0),
    "angry":     dict(pitch=10, range=22, rate=1.10, gap=0, loud=6.0, tilt=5.0, lowpass=0, drive=0.6,
                      breath=0.0, tremolo=0.0, vibrato=0, tremor_hz=0),
    "contempt":  dict(pitch=-4, range=-26, rate=0.94, gap=1.5, loud=-2.0, tilt=1.5, lowpass=0,
                      drive=0.0, breath=0.015, tremolo=0.0, vibrato=0, tremor_hz=0),
    "disgusted": dict(pitch=-9, range=-10, rate=0.82, gap=3.0, loud=0.5, tilt=-3.0, lowpass=4500,
                      drive=0.3, breath=0.02, tremolo=0.06, vibrato=15, tremor_hz=4.0),
    "fear":      dict(pitch=18, range=8, rate=1.14, gap=0.5, loud=-2.0, tilt=1.0, lowpass=0, drive=0.0,
                      breath=0.06, tremolo=0.22, vibrato=45, tremor_hz=7.0),
    "happy":     dict(pitch=14, range=30, rate=1.06, gap=0, loud=3.0, tilt=3.0, lowpass=0, drive=0.1,
                      breath=0.0, tremolo=0.0, vibrato=0, tremor_hz=0),
    "sad":       dict(pitch=-12, range=-30, rate=0.78, gap=4.0, loud=-7.0, tilt=-6.0, lowpass=3000,
                      drive=0.0, breath=0.07, tremolo=0.05, vibrato=10, tremor_hz=5.0),
    "surprised": dict(pitch=22, range=40, rate=1.00, gap=1.0, loud=4.0, tilt=2.0, lowpass=0, drive=0.0,
                      breath=0.01, tremolo=0.0, vibrato=0, tremor_hz=0),
}
assert tuple(_PROFILE) == EMOTIONS

_NO_LOWPASS_HZ = 8000.0
FLUTTER_CENTS = 12.0      # ≈ espeak's default flutter (±2 Hz at 100 Hz, slow)
_FLUTTER_HZ = 3.0   # the cutoff that means "off" at 16 kHz (interpolation start)


@dataclass(frozen=True)
class Prosody:
    """Everything needed to render one clip of one speaker in one emotion.

    ``voice`` is the espeak name (``"en-us+f3"``) or the Festival voice's; ``pitch``/``pitch_range`` espeak 0–100;
    ``rate`` wpm; ``word_gap`` extra inter-word pause in 10 ms units; ``loudness_db`` target
    active level (dBFS); ``tilt_db`` high-shelf gain at 1.5 kHz; ``lowpass_hz`` cutoff (0 = off);
    ``drive`` saturation 0–1; ``breathiness`` noise/speech RMS ratio; ``tremolo`` amplitude
    modulation depth (0–1); ``vibrato_cents`` pitch tremor depth; ``tremor_hz`` its rate;
    ``flutter_cents`` the everyday random pitch drift; ``lead_s``/``trail_s`` silence before the
    first and after the last phoneme (s).
    """

    emotion: str
    intensity: float
    voice: str
    pitch: float
    pitch_range: float
    rate: float
    word_gap: float
    loudness_db: float
    tilt_db: float
    lowpass_hz: float
    drive: float
    breathiness: float
    tremolo: float
    vibrato_cents: float
    tremor_hz: float
    flutter_cents: float
    lead_s: float
    trail_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def emotion_prosody(speaker: Speaker, emotion: str, intensity: float,
                    rng: np.random.Generator) -> Prosody:
    """Prosody of ``speaker`` acting ``emotion`` at ``intensity`` in [0, 1] (ignored for neutral).

    ``rng`` supplies the small per-clip variation. It is always consumed identically (the same
    number of draws whatever the emotion), so clips rendered with equally seeded generators
    differ *only* by the emotion effect — which keeps orderings such as
    neutral < happy@1/3 < happy@1 in F0 exact. Raises :class:`EvpError` for an unknown emotion
    or an intensity outside [0, 1].
    """
    emotion = canonical_emotion(emotion)
    intensity = check_intensity(intensity)
    if emotion == "neutral":
        intensity = 0.0
    p = _PROFILE[emotion]
    s = intensity * float(speaker.expressiveness)

    # Per-clip jitter (fixed draw order). Small next to emotion effects: ±1 pitch unit ≈ ±1 %
    # F0, ±2 % rate, ±0.5 dB loudness.
    j_pitch, j_range, j_rate, j_loud = rng.normal(0.0, 1.0, 4)
    lead_s, trail_s = rng.uniform(0.15, 0.3, 2)
    tremor_jitter = rng.uniform(0.9, 1.1)

    lowpass = 0.0
    if p["lowpass"] > 0 and s > 0:
        # Interpolate the cutoff geometrically from "off" (8 kHz) to the full-intensity value.
        lowpass = float(math.exp((1 - min(s, 1.2)) * math.log(_NO_LOWPASS_HZ) + min(s, 1.2) * math.log(p["lowpass"])))
        lowpass = min(lowpass, _NO_LOWPASS_HZ)
    return Prosody(
        emotion=emotion,
        intensity=intensity,
        voice=speaker.espeak_voice if speaker.engine == "espeak" else speaker.voice,
        pitch=float(np.clip(speaker.pitch + s * p["pitch"] + 1.0 * j_pitch, 0, 100)),
        pitch_range=float(np.clip(speaker.pitch_range + s * p["range"] + 1.5 * j_range, 0, 100)),
        rate=float(np.clip(speaker.rate * (1.0 + s * (p["rate"] - 1.0)) * (1.0 + 0.02 * j_rate), 80, 450)),
        word_gap=float(max(0.0, s * p["gap"])),
        loudness_db=float(speaker.loudness_db + s * p["loud"] + 0.5 * j_loud),
        tilt_db=float(speaker.tilt_db + s * p["tilt"]),
        lowpass_hz=lowpass,
        drive=float(np.clip(s * p["drive"], 0, 1)),
        breathiness=float(speaker.breathiness + s * p["breath"]),
        tremolo=float(np.clip(s * p["tremolo"], 0, 0.9)),
        vibrato_cents=float(s * p["vibrato"]),
        tremor_hz=float(p["tremor_hz"] * tremor_jitter),
        flutter_cents=FLUTTER_CENTS,
        lead_s=float(lead_s),
        trail_s=float(trail_s),
    )


# ---- post-filters ----------------------------------------------------------------------------

def _high_shelf(gain_db: float, f0: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ-cookbook high-shelf biquad (shelf slope 1): (b, a), normalised so a[0] = 1."""
    A = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * f0 / sr
    cw, sw = math.cos(w0), math.sin(w0)
    alpha = sw / 2.0 * math.sqrt(2.0)          # S = 1
    sqA = 2.0 * math.sqrt(A) * alpha
    b = np.array([A * ((A + 1) + (A - 1) * cw + sqA),
                  -2 * A * ((A - 1) + (A + 1) * cw),
                  A * ((A + 1) + (A - 1) * cw - sqA)])
    a = np.array([(A + 1) - (A - 1) * cw + sqA,
                  2 * ((A - 1) - (A + 1) * cw),
                  (A + 1) - (A - 1) * cw - sqA])
    return b / a[0], a / a[0]


def _envelope(x: np.ndarray, sr: int, win_s: float = 0.015) -> np.ndarray:
    """Smoothed magnitude envelope (moving average of |x| over ``win_s``)."""
    n = max(1, int(win_s * sr))
    c = np.cumsum(np.abs(x), dtype=np.float64)
    c = np.concatenate(([0.0], c))
    env = (c[n:] - c[:-n]) / n
    pad = n // 2
    return np.pad(env, (pad, len(x) - len(env) - pad), mode="edge")


def _smooth_noise(n: int, sr: int, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) smooth random curve with unit-variance knots every 1/``rate_hz`` s (cubic spline)."""
    knots = max(4, int(n / sr * rate_hz) + 4)
    pts = rng.standard_normal(knots)
    return interpolate.CubicSpline(np.arange(knots), pts)(np.linspace(0, knots - 3, n))


def apply_voice_quality(audio: np.ndarray, sr: int, prosody: Prosody,
                        rng: np.random.Generator) -> np.ndarray:
    """Apply the prosody's voice-quality filters to (N,) float audio at ``sr`` Hz; returns (N,)
    float32 of the same length (level not normalised — the caller sets loudness afterwards).

    Length and timing are preserved (the pitch-modulation delay stays below ~2 ms), so phoneme
    times stay valid.
    ``rng`` drives the noise and the tremor's irregularity (deterministic for a seeded generator;
    always consumed the same way).
    """
    x = np.asarray(audio, dtype=np.float64)
    n = len(x)
    # Fixed rng consumption whatever the settings (so other draws don't shift with them).
    noise = rng.standard_normal(n)
    wobble = _smooth_noise(n, sr, 3.0, rng)
    drift = _smooth_noise(n, sr, _FLUTTER_HZ, rng)
    phase0 = rng.uniform(0, 2 * math.pi)
    if n == 0:
        return x.astype(np.float32)
    peak = float(np.max(np.abs(x))) or 1.0
    t = np.arange(n) / sr

    # Pitch modulation first (it acts on the glottal source, before any "recording" colour):
    # y(t) = x(t - d(t)) has instantaneous pitch ratio 1 - d'(t). A delay curve of amplitude D
    # varying at f Hz therefore moves pitch by about ±2πfD.
    d = np.zeros(n)
    if prosody.flutter_cents > 0:
        ratio = 2.0 ** (prosody.flutter_cents / 1200.0) - 1.0
        d += ratio / (2 * math.pi * _FLUTTER_HZ) * drift
    if prosody.vibrato_cents > 0 and prosody.tremor_hz > 0:
        f = prosody.tremor_hz * (1.0 + 0.15 * wobble)          # irregular rate: jitter, not a siren
        phase = phase0 + 2 * math.pi * np.cumsum(f) / sr
        ratio = 2.0 ** (prosody.vibrato_cents / 1200.0) - 1.0
        d += ratio / (2 * math.pi * prosody.tremor_hz) * np.sin(phase)
    if np.any(d):
        d -= d.min()                                          # delay only, never look-ahead
        x = np.interp(t - d, t, x, left=0.0)

    if prosody.drive > 0:
        g = 1.0 + 4.0 * prosody.drive
        x = np.tanh(g * x / peak) / math.tanh(g) * peak

    if abs(prosody.tilt_db) > 0.05:
        b, a = _high_shelf(prosody.tilt_db, 1500.0, sr)
        x = signal.lfilter(b, a, x)

    if prosody.lowpass_hz and prosody.lowpass_hz < min(_NO_LOWPASS_HZ, 0.49 * sr):
        sos = signal.butter(2, prosody.lowpass_hz, btype="low", fs=sr, output="sos")
        x = signal.sosfilt(sos, x)

    if prosody.breathiness > 0:
        # Aspiration: noise above ~1.2 kHz, gated by the speech envelope so pauses stay silent.
        sos = signal.butter(2, 1200.0, btype="high", fs=sr, output="sos")
        nz = signal.sosfilt(sos, noise)
        env = _envelope(x, sr)
        nz *= env
        speech_rms = math.sqrt(float(np.mean(x ** 2))) + 1e-12
        nz_rms = math.sqrt(float(np.mean(nz ** 2))) + 1e-12
        x = x + nz * (prosody.breathiness * speech_rms / nz_rms)

    if prosody.tremolo > 0 and prosody.tremor_hz > 0:
        f = prosody.tremor_hz * (1.0 + 0.15 * wobble)
        phase = phase0 + 2 * math.pi * np.cumsum(f) / sr
        x = x * (1.0 + prosody.tremolo * np.sin(phase)) / (1.0 + prosody.tremolo)

    return x.astype(np.float32)
