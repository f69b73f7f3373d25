"""Synthetic speakers: an espeak-ng accent + voice variant + personal prosody and voice quality.

:func:`make_speakers` is pure (numpy only, no espeak call), so a corpus's speaker list is the same
on every machine for the same ``(n, seed)``. It only uses English voices and variants that
espeak-ng 1.51 ships in ``espeak-ng-data`` (checked by the tests against the installed library).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import EvpError

# English accent voices shipped with espeak-ng ("en" is British English; "en-gb" is not a
# loadable voice name). Order is fixed: it defines the corpus.
ACCENTS: tuple[str, ...] = (
    "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-us-nyc",
)

# Voice variants (files in espeak-ng-data/voices/!v) that sound like ordinary adult voices.
# Excluded on purpose: robotic/whisper/klatt-6 voices, children's and elderly voices with heavy
# flutter (their built-in tremor would blur the fear cue), and variants with echo.
MALE_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "Gene", "gustave", "Jacky", "Michael", "robert",
    "Andy", "travis", "norbert",
)
FEMALE_VARIANTS: tuple[str, ...] = (
    "f1", "f2", "f3", "f4", "f5", "steph", "linda", "belinda", "aunty", "Annie",
)

# Distinct (accent, variant) pairs: 80 female + 120 male. With alternating sexes the first 160
# speakers all have different pairs; after that a sex's pairs are reused (a new round) and
# speakers differ by pitch, range, rate, loudness and voice quality only.
MAX_SPEAKERS = len(ACCENTS) * (len(MALE_VARIANTS) + len(FEMALE_VARIANTS))
DISTINCT_SPEAKERS = 2 * len(ACCENTS) * min(len(MALE_VARIANTS), len(FEMALE_VARIANTS))
MAX_SPEAKERS_LIMIT = 10000


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker.

    ``pitch`` and ``pitch_range`` are espeak-ng parameters (0–100, 50 = the variant's own base
    pitch and range; roughly 0 → ×0.6 and 100 → ×1.6 in F0); ``rate`` is in words per minute;
    ``loudness_db`` is the target active speech level in dBFS (RMS over voiced 20 ms frames);
    ``tilt_db`` is a high-shelf gain above ~1.5 kHz (positive = brighter voice); ``breathiness``
    is the aspiration-noise level relative to the speech RMS (0–0.1); ``expressiveness`` scales
    how strongly this speaker acts emotions (~0.85–1.15). ``seed`` is this speaker's own random
    seed (independent of any face-model identity) for per-clip variation.
    """

    speaker_id: str
    voice: str
    variant: str
    sex: str
    pitch: float
    pitch_range: float
    rate: float
    loudness_db: float
    tilt_db: float
    breathiness: float
    expressiveness: float
    seed: int

    @property
    def id(self) -> str:
        return self.speaker_id

    @property
    def espeak_voice(self) -> str:
        """Name for espeak_SetVoiceByName, e.g. ``"en-us+f3"``."""
        return f"{self.voice}+{self.variant}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Speaker":
        names = {f.name for f in fields(cls)}
        missing = names - set(d)
        if missing:
            raise EvpError(f"speaker record lacks {', '.join(sorted(missing))}: regenerate the speaker list")
        return cls(**{k: d[k] for k in names})


def make_speakers(n: int, seed: int = 0) -> list[Speaker]:
    """``n`` distinct speakers ``S001``… deterministic in ``(n, seed)``; sexes alternate.

    Up to :data:`DISTINCT_SPEAKERS` (160) every speaker has a different (accent, variant) pair
    — accents and variants are dealt round-robin from seeded permutations so that any prefix of
    the list is spread over accents and voices — and all have individually drawn pitch, range,
    rate, loudness and voice quality. Larger ``n`` (up to 10000) reuses pairs.
    The first ``k`` speakers of ``make_speakers(n, s)`` do not depend on ``n``.
    """
    n = int(n)
    if n < 1 or n > MAX_SPEAKERS_LIMIT:
        raise EvpError(f"number of speakers {n} is out of range: expected 1 to {MAX_SPEAKERS_LIMIT}")
    rng = np.random.default_rng([int(seed) % (1 << 64), 0x5EA4E5])
    first_female = bool(rng.integers(2))
    perms = {
        "F": (rng.permutation(len(ACCENTS)), rng.permutation(len(FEMALE_VARIANTS)), FEMALE_VARIANTS),
        "M": (rng.permutation(len(ACCENTS)), rng.permutation(len(MALE_VARIANTS)), MALE_VARIANTS),
    }
    counts = {"F": 0, "M": 0}
    used: set[tuple[str, str]] = set()
    out: list[Speaker] = []
    for i in range(n):
        sex = "F" if (i % 2 == 0) == first_female else "M"
        acc_perm, var_perm, variants = perms[sex]
        k = counts[sex]
        counts[sex] += 1
        # Round-robin over accents and variants; lcm(8, 10 or 15) pairs before a repeat, after
        # which the variant index is shifted until the pair is new.
        accent = ACCENTS[acc_perm[k % len(ACCENTS)]]
        shift = 0
        while True:
            variant = variants[var_perm[(k + shift) % len(variants)]]
            if (accent, variant) not in used or shift >= len(variants):
                break           # (each accent comes up exactly len(variants) times per round)
            shift += 1
        used.add((accent, variant))
        if sum(1 for a, v in used if v in variants) == len(ACCENTS) * len(variants):
            used = {(a, v) for a, v in used if v not in variants}   # all pairs taken: new round
        # Per-speaker draws in a fixed order (one child generator per speaker keeps speaker i
        # independent of how many draws other speakers make).
        r = np.random.default_rng([int(seed) % (1 << 64), 0x5EA4E5, i])
        out.append(Speaker(
            speaker_id=f"S{i + 1:03d}",    # "S1000" and up past 999
            voice=accent,
            variant=variant,
            sex=sex,
            pitch=float(np.round(r.uniform(36.0, 62.0), 1)),
            pitch_range=float(np.round(r.uniform(38.0, 66.0), 1)),
            rate=float(np.round(r.uniform(150.0, 185.0), 1)),
            loudness_db=float(np.round(r.uniform(-26.0, -22.0), 2)),
            tilt_db=float(np.round(r.uniform(-2.5, 2.5), 2)),
            breathiness=float(np.round(r.uniform(0.0, 0.03), 4)),
            expressiveness=float(np.round(r.uniform(0.85, 1.15), 3)),
            seed=int(r.integers(0, 2**31 - 1)),
        ))
    return out


def default_speaker() -> Speaker:
    """A fixed mid-range speaker (``make_speakers(1, 0)[0]``) for demos and tests."""
    return make_speakers(1, 0)[0]
