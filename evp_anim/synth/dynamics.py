"""Non-speech facial dynamics of the synthetic corpus: emotion envelopes, blinks, head motion.

All curves are sampled at video frame centres, ``(t + 0.5) / fps`` seconds, for ``n_frames``
frames (25 fps by default), and drawn from a caller's ``numpy.random.Generator`` so a clip is
reproducible from its seed. Head motion is drawn independently of the audio, as in MEAD, where
head movement is not predictable from speech.
"""

from __future__ import annotations

import numpy as np


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """(T,) float64 seconds at the centre of each frame."""
    return (np.arange(n_frames) + 0.5) / fps


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def emotion_envelope(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) float32 in [0, 1]: how strongly the clip's emotion shows at each frame.

    Onset / apex / offset: the expression starts partly formed (actors emote before speaking),
    rises smoothly to the apex (1.0) within 0.35–0.9 s, holds, and relaxes a little over the
    last 15–30 % of the clip.
    """
    t = frame_times(n_frames, fps)
    dur = n_frames / fps
    base = rng.uniform(0.35, 0.6)
    onset_start = rng.uniform(0.0, 0.25)
    onset_len = rng.uniform(0.35, 0.9)
    release_start = dur * rng.uniform(0.7, 0.85)
    release_level = rng.uniform(0.7, 0.9)
    rise = base + (1.0 - base) * _smoothstep((t - onset_start) / onset_len)
    fall = 1.0 - (1.0 - release_level) * _smoothstep((t - release_start) / max(dur - release_start, 1e-3))
    return (rise * fall).astype(np.float32)


# Blinks per minute; people blink more when aroused (anger, fear) and less when sad or attentive.
BLINK_RATE_PER_MIN = {
    "neutral": 17.0, "angry": 22.0, "contempt": 15.0, "disgusted": 18.0,
    "fear": 26.0, "happy": 18.0, "sad": 12.0, "surprised": 10.0,
}


def blink_curve(n_frames: int, fps: float, rng: np.random.Generator, rate_per_min: float = 17.0,
                ) -> np.ndarray:
    """(T,) float32 eyelid closure in [0, 1] (1 = fully closed).

    Blink onsets form a Poisson process with a 0.8 s refractory gap. Each blink closes fast
    (70–110 ms), stays shut briefly (0–40 ms) and reopens more slowly (120–200 ms), the
    asymmetric profile of real blinks.
    """
    t = frame_times(n_frames, fps)
    dur = n_frames / fps
    out = np.zeros(n_frames, np.float64)
    mean_gap = 60.0 / max(rate_per_min, 1e-3)
    onset = rng.uniform(0.0, mean_gap)
    while onset < dur:
        close = rng.uniform(0.07, 0.11)
        hold = rng.uniform(0.0, 0.04)
        reopen = rng.uniform(0.12, 0.2)
        depth = rng.uniform(0.85, 1.0)
        x = t - onset
        shape = np.where(
            x < close, _smoothstep(x / close),
            np.where(x < close + hold, 1.0, 1.0 - _smoothstep((x - close - hold) / reopen)))
        shape[x < 0] = 0.0
        out = np.maximum(out, depth * shape)
        onset += 0.8 + rng.exponential(max(mean_gap - 0.8, 0.2))
    return out.astype(np.float32)


def head_motion(n_frames: int, fps: float, rng: np.random.Generator, amplitude_deg: float = 4.0,
                ) -> np.ndarray:
    """(T, 3) float32 head rotation in radians, [pitch, yaw, roll].

    A sum of a few slow sinusoids (0.08–0.7 Hz) per axis with random phases, plus a per-clip
    offset: smooth, natural-looking sway of a few degrees that is independent of the audio.
    Yaw swings most, roll least.
    """
    t = frame_times(n_frames, fps)
    axis_scale = np.array([0.8, 1.0, 0.5]) * np.deg2rad(amplitude_deg)
    rot = np.zeros((n_frames, 3))
    for axis in range(3):
        n_waves = 3
        freqs = rng.uniform(0.08, 0.7, n_waves)
        amps = rng.uniform(0.2, 1.0, n_waves)
        amps /= amps.sum()
        phases = rng.uniform(0, 2 * np.pi, n_waves)
        wave = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
        rot[:, axis] = axis_scale[axis] * (wave + rng.uniform(-0.5, 0.5))
    return rot.astype(np.float32)


def translation_jitter(n_frames: int, fps: float, rng: np.random.Generator, amplitude_px: float = 2.0,
                       ) -> np.ndarray:
    """(T, 2) float32 slow drift in pixels around the aligned-crop centre (residual alignment error)."""
    t = frame_times(n_frames, fps)
    out = np.zeros((n_frames, 2))
    for axis in range(2):
        f = rng.uniform(0.05, 0.4)
        out[:, axis] = amplitude_px * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out.astype(np.float32)
