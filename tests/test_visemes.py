"""Phoneme → viseme mapping and coarticulated mouth curves."""

from __future__ import annotations

import numpy as np
import pytest

from evp_anim.errors import EvpError
from evp_anim.face.channels import SPEECH_CHANNELS
from evp_anim.synth import espeak
from evp_anim.synth.sentences import SENTENCES
from evp_anim.synth.speakers import make_speakers
from evp_anim.synth.speech import synthesize_utterance
from evp_anim.synth.visemes import (
    PHONEME_VISEMES, TARGETS, VISEMES, articulation_curves, frames_for, is_mapped, viseme_of,
    viseme_sequence,
)

FPS = 25.0
JAW = SPEECH_CHANNELS.index("jawOpen")
CLOSE = SPEECH_CHANNELS.index("mouthClose")
PUCKER = SPEECH_CHANNELS.index("mouthPucker")
STRETCH = SPEECH_CHANNELS.index("mouthStretchLeft")


def _frame_at(t: float, n: int) -> int:
    """The frame whose centre (i + 0.5) / FPS is nearest to ``t``."""
    return int(np.clip(round(t * FPS - 0.5), 0, n - 1))


@pytest.fixture(scope="module")
def bilabial_utt():
    spk = make_speakers(2, seed=0)[1]
    return synthesize_utterance("Bob bought a big map from my mother.", spk, "neutral", 0.0, seed=0)


def test_tables_are_consistent():
    assert len(VISEMES) == len(set(VISEMES)) and 12 <= len(VISEMES) <= 16
    for v in VISEMES:
        t = TARGETS[v]
        assert t.shape == (len(SPEECH_CHANNELS),) and t.min() >= 0 and t.max() <= 1
    assert not TARGETS["sil"].any()
    for sym, v in PHONEME_VISEMES.items():
        for cls in (v,) if isinstance(v, str) else v:
            assert cls in VISEMES, (sym, cls)
    assert viseme_of("aI") == ("AA", "IY") and viseme_of("p") == ("PP",) and viseme_of("_:") == ("sil",)


def test_every_emitted_phoneme_is_mapped():
    """All mnemonics espeak-ng emits for the corpus sentences, in several accents, map explicitly."""
    eng = espeak.engine()
    seen: set[str] = set()
    for voice in ("en-us+m3", "en+f2", "en-gb-scotland+m1", "en-029+f4", "en-gb-x-rp+m5", "en-us-nyc+f1"):
        for text in SENTENCES:
            seen.update(e.phoneme for e in eng.synth(text, voice).phoneme_events())
    unmapped = sorted(s for s in seen if not is_mapped(s))
    assert unmapped == [], unmapped
    # the corpus exercises every viseme class
    classes = {c for s in seen for c in viseme_of(s)}
    assert classes == set(VISEMES)


def test_unknown_symbol_falls_back_with_warning():
    assert not is_mapped("@@@")
    with pytest.raises(EvpError):
        viseme_of("@@@", strict=True)
    with pytest.warns(UserWarning, match="without a viseme"):
        c = articulation_curves([(0.0, 0.2, "@@@")], 5)
    assert c.shape == (5, len(SPEECH_CHANNELS))


def test_shape_range_and_strength(bilabial_utt):
    n = frames_for(bilabial_utt.duration, FPS)
    c = articulation_curves(bilabial_utt.phonemes, n, fps=FPS)
    assert c.shape == (n, len(SPEECH_CHANNELS)) and c.dtype == np.float32
    assert c.min() >= 0.0 and c.max() <= 1.0
    half = articulation_curves(bilabial_utt.phonemes, n, fps=FPS, strength=0.5)
    np.testing.assert_allclose(half, 0.5 * c, atol=1e-6)
    assert articulation_curves(bilabial_utt.phonemes, 0).shape == (0, len(SPEECH_CHANNELS))


def test_lips_close_on_bilabials(bilabial_utt):
    ph = bilabial_utt.phonemes
    n = frames_for(bilabial_utt.duration, FPS)
    c = articulation_curves(ph, n, fps=FPS)
    bil = [_frame_at(0.5 * (s + e), n) for s, e, sym in ph if sym in ("p", "b", "m")]
    vow = [_frame_at(0.5 * (s + e), n) for s, e, sym in ph if viseme_of(sym)[0] in ("AA", "OW")]
    assert len(bil) >= 6 and len(vow) >= 3
    assert np.all(c[bil, CLOSE] > 0.35), c[bil, CLOSE]
    assert np.all(c[bil, JAW] < 0.3), c[bil, JAW]
    assert c[bil, CLOSE].mean() > 2.5 * c[vow, CLOSE].mean()


def test_jaw_peaks_on_open_vowels(bilabial_utt):
    ph = bilabial_utt.phonemes
    n = frames_for(bilabial_utt.duration, FPS)
    c = articulation_curves(ph, n, fps=FPS)
    seq = viseme_sequence(ph)
    peak_t = (int(np.argmax(c[:, JAW])) + 0.5) / FPS
    cls_at_peak = next(v for s, e, v in seq if s <= peak_t < e)
    assert cls_at_peak in ("AA", "OW"), cls_at_peak
    open_v = [_frame_at(0.5 * (s + e), n) for s, e, v in seq if v == "AA"]
    cons = [_frame_at(0.5 * (s + e), n) for s, e, v in seq if v in ("PP", "FF", "SS")]
    assert c[open_v, JAW].mean() > 0.4      # short vowels undershoot their 0.75 target
    assert c[open_v, JAW].mean() > 2 * c[cons, JAW].mean()


def test_curves_are_smooth_not_steps(bilabial_utt):
    n = frames_for(bilabial_utt.duration, FPS)
    c = articulation_curves(bilabial_utt.phonemes, n, fps=FPS)
    step = np.abs(np.diff(c, axis=0))
    # 0.6 of jawOpen's range in a 40 ms frame is the fastest a vowel opens after a consonant
    # (over the synthetic corpus the inner-lip gap moves at ≤ 220 mm/s for 95% of frames, ~360
    # mm/s at the 99th percentile: fast speech, not a cut).
    assert step.max() < 0.6
    assert step.mean() < 0.07      # consonants hold the jaw high: more motion, still no steps
    # an isolated long vowel ramps in and out over several frames (anticipation + carry-over)
    c2 = articulation_curves([(0.0, 0.5, "_"), (0.5, 0.8, "aa"), (0.8, 1.5, "_")], 38)
    jaw = c2[:, JAW]
    rising = jaw[10:16]
    assert np.all(np.diff(rising) > 0)
    assert len(np.unique(np.round(jaw, 3))) > 12               # not a step function
    assert 0.05 < jaw[_frame_at(0.46, 38)] < jaw[_frame_at(0.65, 38)]   # mouth opens before the vowel


def test_neighbours_overlap():
    # The rounding of "u:" is anticipated during the preceding /s/; a following "i:" spreads it.
    su = articulation_curves([(0, 0.3, "_"), (0.3, 0.42, "s"), (0.42, 0.62, "u:"), (0.62, 1.0, "_")], 25)
    si = articulation_curves([(0, 0.3, "_"), (0.3, 0.42, "s"), (0.42, 0.62, "i:"), (0.62, 1.0, "_")], 25)
    f = _frame_at(0.36, 25)
    assert su[f, PUCKER] > si[f, PUCKER] + 0.1
    assert si[f, STRETCH] > su[f, STRETCH]


def test_long_silence_closes_mouth():
    ph = [(0.0, 0.3, "_"), (0.3, 0.45, "aa"), (0.45, 0.55, "m"), (0.55, 2.6, "_"), (2.6, 2.8, "i:"),
          (2.8, 3.2, "_")]
    n = 80
    c = articulation_curves(ph, n)
    t = (np.arange(n) + 0.5) / FPS
    quiet = (t > 0.85) & (t < 2.3)
    assert np.all(c[quiet] < 0.05)
    assert np.all(c[t < 0.1] < 0.05)
    assert c[_frame_at(0.38, n), JAW] > 0.4                     # but it does open for speech


def test_diphthong_moves_between_targets():
    c = articulation_curves([(0, 0.3, "_"), (0.3, 0.7, "aI"), (0.7, 1.0, "_")], 25)
    early, late = c[_frame_at(0.38, 25)], c[_frame_at(0.62, 25)]
    assert early[JAW] > late[JAW] + 0.15
    assert late[STRETCH] > early[STRETCH] + 0.1
