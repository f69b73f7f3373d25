"""Lip-sync scores of a track against the recording it was made from and its transcript.

The yardstick for real speech (``evp-anim eval-lipsync``): the transcript is force-aligned to the
audio (:func:`~evp_anim.audio.phones.align_transcript`), which gives what the mouth should do at each
25 fps frame; the track's landmarks give what it does. Mouth measures (iBUG 68, 0-based):

* openness = inner-lip gap / mouth width: the mean signed gap of the inner-lip pairs 61–67, 62–66,
  63–65, measured across the mouth (perpendicular to the corner line 48–54, positive from the
  upper towards the lower lip, so lips pressed together or crossing on a mesh read ≤ 0), divided
  by the corner distance (3D landmarks when the track has them, else 2D; a ratio, so units and
  face size drop out). Closed when below :data:`CLOSED_RATIO`.

Scores (speech frames = frames whose phone is not silence):

* ``openness_corr`` — Pearson correlation, over speech frames, of openness with the aligned
  phone's openness (:data:`PHONE_OPENNESS`: open vowels high, /p b m/ zero); 0 for a constant mouth.
* ``closure`` — share of /p b m/ phones during which the lips close (openness below
  :data:`CLOSED_RATIO` on some frame of the phone, widened by one frame each side, 40 ms);
  ``closure_chance`` — the same test on windows of the same lengths at random speech positions
  (what a mouth that is often shut gets for free); ``closure_margin`` = closure − chance.
* ``shut_frames`` — share of speech frames with closed lips; ``shut_elsewhere`` — the same over
  the speech frames of phones that do not call for lip contact (all but /p b m/, which close the
  lips, and /f v/, whose lower lip meets the upper teeth and reads as nearly shut): a mouth that
  articulates perfectly is shut on a share of frames that depends on the words (on the
  realspeech-dev cards, /f v/ are a fifth of the speech frames), and only the second figure is 0
  for it.
* ``open_vowel_contrast`` — mean openness on open vowels minus mean openness on /p b m/.
* ``lag_ms`` — the shift of the mouth against the phones that maximises their correlation
  (positive: the mouth is late), searched over ±:data:`MAX_LAG_S`, refined between frames.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from ..audio.phones import Segment, normalize_phone, phone_at_frames
from ..errors import EvpError
from ..face.lip_contact import mouth_openness, segment_frames

CLOSED_RATIO = 0.05          # inner gap below 5% of the mouth width (~2.4 mm on a 47 mm mouth)
MAX_LAG_S = 0.4
CHANCE_DRAWS = 200           # random windows per /p b m/ for the chance rate
BILABIALS = ("P", "B", "M")
LABIODENTALS = ("F", "V")
OPEN_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH")

# How open the mouth is for each phone, 0 (lips shut) to 1 (widest): a coarse articulatory
# scale (jaw height and lip aperture) for ARPAbet phones.
PHONE_OPENNESS: dict[str, float] = {
    "SIL": 0.0,
    "AA": 1.0, "AE": 0.9, "AH": 0.75, "AO": 0.85, "AW": 0.9, "AY": 0.9, "EH": 0.7, "ER": 0.4,
    "EY": 0.6, "IH": 0.45, "IY": 0.35, "OW": 0.6, "OY": 0.6, "UH": 0.4, "UW": 0.3,
    "P": 0.0, "B": 0.0, "M": 0.0, "F": 0.1, "V": 0.1, "W": 0.2, "R": 0.3, "Y": 0.3,
    "TH": 0.25, "DH": 0.25, "T": 0.25, "D": 0.25, "N": 0.25, "L": 0.3, "S": 0.2, "Z": 0.2,
    "SH": 0.25, "ZH": 0.25, "CH": 0.25, "JH": 0.25, "K": 0.35, "G": 0.35, "NG": 0.35, "HH": 0.5,
}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _window_closed(closed: np.ndarray, lo: int, hi: int) -> bool:
    lo, hi = max(0, lo - 1), min(closed.size, hi + 1)
    return bool(hi > lo and closed[lo:hi].any())


def best_lag(openness: np.ndarray, target: np.ndarray, mask: np.ndarray, fps: float,
             max_lag_s: float = MAX_LAG_S) -> float:
    """Seconds by which ``openness`` trails ``target`` (the correlation peak over speech frames,
    parabola-refined between frames); positive = the mouth is late."""
    k = int(round(max_lag_s * fps))
    lags = np.arange(-k, k + 1)
    scores = []
    idx = np.nonzero(mask)[0]
    for lag in lags:
        j = idx + lag
        ok = (j >= 0) & (j < openness.size)
        scores.append(_corr(openness[j[ok]], target[idx[ok]]))
    s = np.array(scores)
    i = int(np.argmax(s))
    off = 0.0
    if 0 < i < len(s) - 1:
        den = s[i - 1] - 2 * s[i] + s[i + 1]
        if den < 0:
            off = 0.5 * (s[i - 1] - s[i + 1]) / den
    return float((lags[i] + off) / fps)


@dataclasses.dataclass
class LipsyncScores:
    """Scores of one track (see the module docstring); counts say how much evidence there was."""

    openness_corr: float
    closure: float
    closure_chance: float
    closure_margin: float
    shut_frames: float
    shut_elsewhere: float
    open_vowel_contrast: float
    labiodental_closure: float
    lag_ms: float
    n_bilabials: int
    n_labiodentals: int
    n_speech_frames: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def score_lipsync(landmarks: np.ndarray, phones: Sequence[Segment], fps: float,
                  seed: int = 0) -> LipsyncScores:
    """Scores of (T, 68, 2|3) landmarks at ``fps`` against ARPAbet phone segments (seconds)."""
    op = mouth_openness(landmarks)
    n = op.size
    labels = phone_at_frames(phones, n, fps)
    target = np.array([PHONE_OPENNESS.get(p, 0.3) for p in labels])
    speech = np.array([p != "SIL" for p in labels])
    if speech.sum() < 3:
        raise EvpError("no speech found in the alignment (fewer than 3 speech frames)")
    closed = op < CLOSED_RATIO
    corr = _corr(op[speech], target[speech])

    def closure_of(names: tuple[str, ...]) -> tuple[float, int, list[int]]:
        hits, lengths = [], []
        for start, end, p in phones:
            if normalize_phone(p) in names:
                lo, hi = segment_frames(start, end, n, fps)
                hits.append(_window_closed(closed, lo, hi))
                lengths.append(hi - lo)
        return (float(np.mean(hits)) if hits else float("nan")), len(hits), lengths

    closure, n_bil, lengths = closure_of(BILABIALS)
    labio, n_lab, _ = closure_of(LABIODENTALS)
    rng = np.random.default_rng(seed)
    speech_idx = np.nonzero(speech)[0]
    draws = []
    for length in lengths:
        starts = rng.choice(speech_idx, size=CHANCE_DRAWS)
        draws.extend(_window_closed(closed, int(s), int(s) + length) for s in starts)
    chance = float(np.mean(draws)) if draws else float("nan")
    elsewhere = speech & ~np.isin(labels, BILABIALS + LABIODENTALS)
    is_open = np.array([p in OPEN_VOWELS for p in labels])
    is_bil = np.array([p in BILABIALS for p in labels])
    contrast = (float(op[is_open].mean() - op[is_bil].mean())
                if is_open.any() and is_bil.any() else float("nan"))
    return LipsyncScores(
        openness_corr=corr, closure=closure, closure_chance=chance,
        closure_margin=closure - chance, shut_frames=float(closed[speech].mean()),
        shut_elsewhere=float(closed[elsewhere].mean()) if elsewhere.any() else float("nan"),
        open_vowel_contrast=contrast, labiodental_closure=labio,
        lag_ms=1000.0 * best_lag(op, target, speech, fps),
        n_bilabials=n_bil, n_labiodentals=n_lab, n_speech_frames=int(speech.sum()))


def track_landmarks(track) -> np.ndarray:
    """The landmarks a track's mouth is measured on: 3D (pose-invariant) when present, else 2D."""
    lm3 = getattr(track, "landmarks_3d", None)
    return np.asarray(lm3 if lm3 is not None else track.landmarks, np.float32)


def plot_lipsync(landmarks: np.ndarray, phones: Sequence[Segment], fps: float, path: str | Path,
                 title: str = "") -> Path:
    """PNG of the mouth opening over time with the aligned phones under it (/p b m/ shaded red)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..atomic import atomic_path
    op = mouth_openness(landmarks)
    t = np.arange(op.size) / fps
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * t[-1] if t.size else 6.0), 3.2), dpi=110)
    ax.plot(t, op, color="#1f4e9c", lw=1.6, label="track: inner-lip gap / mouth width")
    target = np.array([PHONE_OPENNESS.get(p, 0.3) for p in phone_at_frames(phones, op.size, fps)])
    scale = max(float(op.max()), 1e-3)
    ax.step(t, target * scale, where="mid", color="#999999", lw=1.0, label="phone openness (scaled)")
    ax.axhline(CLOSED_RATIO, color="#c03030", lw=0.8, ls=":", label="closed below")
    for start, end, p in phones:
        p = normalize_phone(p)
        if p == "SIL":
            continue
        if p in BILABIALS:
            ax.axvspan(start, end, color="#f3b0b0", alpha=0.6, lw=0)
        ax.text((start + end) / 2, -0.06 * scale, p, ha="center", va="top", fontsize=7)
    ax.set_ylim(-0.16 * scale, 1.15 * scale)
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
