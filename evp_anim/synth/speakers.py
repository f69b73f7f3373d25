"""Synthetic speakers: an espeak-ng accent + voice variant (or a Festival voice) + personal
prosody and voice quality.

:func:`make_speakers` is pure (numpy only, no espeak or festival call), so a corpus's speaker list
is the same on every machine for the same ``(n, seed, voices)``. It only uses English voices and
variants that espeak-ng 1.51 ships in ``espeak-ng-data`` (checked by the tests against the
installed library) and the three Debian Festival voices of :mod:`evp_anim.synth.festival`.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
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

ENGINES: tuple[str, ...] = ("espeak", "festival")
# Festival voices by sex (names of evp_anim.synth.festival.VOICES; listed here so this module stays
# free of the festival import). Only one female voice ships in Debian: female Festival speakers
# all use slt and differ by pitch, rate, warp and voice quality.
FESTIVAL_MALE: tuple[str, ...] = ("kal_diphone", "ked_diphone")
FESTIVAL_FEMALE: tuple[str, ...] = ("cmu_us_slt_arctic_hts",)
WARP_RANGE = (0.92, 1.08)     # Festival speakers' formant/pitch warp (a ±8 % vocal-tract length)


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

    ``engine`` is ``"espeak"`` (``voice`` an espeak accent, ``variant`` a voice variant) or
    ``"festival"`` (``voice`` a Festival voice name, ``variant`` empty); ``warp`` scales a
    Festival voice's formants and pitch (resampling; 1.0 for espeak speakers).
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
    engine: str = "espeak"
    warp: float = 1.0

    @property
    def id(self) -> str:
        return self.speaker_id

    @property
    def voice_label(self) -> str:
        """The voice as recorded in a track's info: the espeak accent (``"en-us"``), or
        ``"festival:<voice>"``."""
        return self.voice if self.engine == "espeak" else f"{self.engine}:{self.voice}"

    @property
    def espeak_voice(self) -> str:
        """Name for espeak_SetVoiceByName, e.g. ``"en-us+f3"``."""
        return f"{self.voice}+{self.variant}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Speaker":
        names = {f.name for f in fields(cls)}
        # Fields with defaults (engine, warp) were added later: records without them are espeak speakers.
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = required - set(d)
        if missing:
            raise EvpError(f"speaker record lacks {', '.join(sorted(missing))}: regenerate the speaker list")
        return cls(**{k: d[k] for k in names if k in d})


def make_speakers(n: int, seed: int = 0, voices: tuple[str, ...] = ("espeak",)) -> list[Speaker]:
    """``n`` distinct speakers ``S001``… deterministic in ``(n, seed, voices)``; sexes alternate.

    ``voices`` lists the engines to use, from :data:`ENGINES`. With both, speakers take them in
    the pattern espeak, festival, festival, espeak, … (every pair of neighbours has one of each,
    and each engine gets both sexes); a Festival speaker gets a Festival voice of its sex (males
    alternate kal/ked from a seeded start), a ``warp`` in :data:`WARP_RANGE`, and the same
    individually drawn pitch, range, rate, loudness and voice quality an espeak speaker would.
    The espeak speakers are the ones ``make_speakers(n, seed)`` makes at the same positions.

    Up to :data:`DISTINCT_SPEAKERS` (160) every speaker has a different (accent, variant) pair
    — accents and variants are dealt round-robin from seeded permutations so that any prefix of
    the list is spread over accents and voices — and all have individually drawn pitch, range,
    rate, loudness and voice quality. Larger ``n`` (up to 10000) reuses pairs.
    The first ``k`` speakers of ``make_speakers(n, s)`` do not depend on ``n``.
    """
    n = int(n)
    if n < 1 or n > MAX_SPEAKERS_LIMIT:
        raise EvpError(f"number of speakers {n} is out of range: expected 1 to {MAX_SPEAKERS_LIMIT}")
    voices = check_voices(voices)
    rng = np.random.default_rng([int(seed) % (1 << 64), 0x5EA4E5])
    first_female = bool(rng.integers(2))
    perms = {
        "F": (rng.permutation(len(ACCENTS)), rng.permutation(len(FEMALE_VARIANTS)), FEMALE_VARIANTS),
        "M": (rng.permutation(len(ACCENTS)), rng.permutation(len(MALE_VARIANTS)), MALE_VARIANTS),
    }
    counts = {"F": 0, "M": 0}
    festival_counts = {"F": 0, "M": 0}
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
        engine = voices[(i + i // 2) % len(voices)]
        if engine == "festival":
            # A separate stream, so the shared draws below are the same as for an espeak speaker.
            rf = np.random.default_rng([int(seed) % (1 << 64), 0xFE57, i])
            pool = FESTIVAL_FEMALE if sex == "F" else FESTIVAL_MALE
            accent = pool[(festival_counts[sex] + int(seed)) % len(pool)]
            festival_counts[sex] += 1
            variant = ""
            warp = float(np.round(rf.uniform(*WARP_RANGE), 3))
        else:
            warp = 1.0
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
            engine=engine,
            warp=warp,
        ))
    return out


def check_voices(voices) -> tuple[str, ...]:
    """``voices`` (a tuple or a comma-separated string) as a tuple of distinct engine names in
    :data:`ENGINES` order; raises :class:`EvpError` for an empty list or an unknown name."""
    names = [v.strip().lower() for v in (voices.split(",") if isinstance(voices, str) else voices)]
    names = [v for v in names if v]
    bad = [v for v in names if v not in ENGINES]
    if bad or not names:
        raise EvpError(f"unknown voices {', '.join(bad) or '(none given)'}: expected a comma-separated "
                       f"list of {', '.join(ENGINES)}")
    return tuple(e for e in ENGINES if e in names)


def default_speaker() -> Speaker:
    """A fixed mid-range speaker (``make_speakers(1, 0)[0]``) for demos and tests."""
    return make_speakers(1, 0)[0]
