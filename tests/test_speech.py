"""Speech synthesis: espeak-ng binding, speakers, emotional prosody (measured), phoneme timing."""

from __future__ import annotations

import ctypes

import librosa
import numpy as np
import pytest

from evp_anim.audio.features import SAMPLE_RATE
from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError
from evp_anim.synth import espeak
from evp_anim.synth.prosody import Prosody, emotion_prosody
from evp_anim.synth.sentences import SENTENCES, sentence_id, sentence_text
from evp_anim.synth.speakers import ACCENTS, FEMALE_VARIANTS, MALE_VARIANTS, make_speakers
from evp_anim.synth.speak import speak
from evp_anim.synth.speech import Utterance, synthesize_utterance


@pytest.fixture(scope="module")
def speakers():
    return make_speakers(6, seed=0)


@pytest.fixture(scope="module")
def pair(speakers):
    """One female and one male speaker."""
    f = next(s for s in speakers if s.sex == "F")
    m = next(s for s in speakers if s.sex == "M")
    return f, m


# ---- measurement helpers (what a listener/classifier would hear, not what we asked for) ----

def _speech_mask(u: Utterance) -> np.ndarray:
    """(N,) bool: samples inside non-silence phoneme segments."""
    m = np.zeros(len(u.audio), bool)
    for s, e, sym in u.phonemes:
        if sym != "_":
            m[int(s * u.sample_rate):int(e * u.sample_rate)] = True
    return m


def _median_f0(u: Utterance) -> float:
    """Median F0 (Hz) over loud frames (within 20 dB of the loudest), YIN, 10 ms hop."""
    f0 = librosa.yin(u.audio, fmin=60, fmax=500, sr=u.sample_rate, frame_length=1024, hop_length=160)
    rms = librosa.feature.rms(y=u.audio, frame_length=1024, hop_length=160)[0]
    n = min(len(f0), len(rms))
    loud = rms[:n] > 0.1 * rms[:n].max()
    return float(np.median(f0[:n][loud]))


def _speech_rms_db(u: Utterance) -> float:
    x = u.audio[_speech_mask(u)].astype(np.float64)
    return 10 * np.log10(np.mean(x ** 2))


def _speech_span(u: Utterance) -> float:
    """Seconds from the first to the last non-silence phoneme (excludes the padding)."""
    voiced = [(s, e) for s, e, sym in u.phonemes if sym != "_"]
    return voiced[-1][1] - voiced[0][0]


# ---- binding --------------------------------------------------------------------------------

def test_event_struct_matches_header():
    # speak_lib.h (API revision 12) on x86_64.
    ev = espeak._Event
    assert ctypes.sizeof(ev) == 40
    offsets = {name: getattr(ev, name).offset for name, _ in ev._fields_}
    assert offsets == {"type": 0, "unique_identifier": 4, "text_position": 8, "length": 12,
                       "audio_position": 16, "sample": 20, "user_data": 24, "id": 32}
    assert ctypes.sizeof(espeak._EventId) == 8


def test_engine_events_are_sample_positions():
    eng = espeak.engine()
    assert eng.sample_rate == 22050
    res = eng.synth("Bob paid the man.", "en-us+m3")
    ph = res.phoneme_events()
    assert [e.phoneme for e in ph if not e.phoneme.startswith("_")][:3] == ["b", "0", "b"]
    samples = [e.sample for e in ph]
    assert samples == sorted(samples) and samples[-1] <= len(res.samples)
    # espeak's ms stamp is the same count, truncated
    for e in ph:
        assert abs(e.ms - e.sample * 1000 / 22050) <= 1.0
    assert len(res.word_events()) == 4


def test_voices_in_speaker_pool_exist():
    eng = espeak.engine()
    for acc in ACCENTS:
        assert eng.has_voice(acc), acc
    for var in MALE_VARIANTS + FEMALE_VARIANTS:
        assert eng.has_voice(f"en-us+{var}"), var
    assert not eng.has_voice("no-such-voice")
    assert isinstance(espeak.mbrola_voices(), list)    # usually empty: databases not installed


def test_missing_library_raises(monkeypatch, speakers):
    monkeypatch.delenv("EVP_ANIM_ESPEAK_LIB", raising=False)
    monkeypatch.setattr(espeak, "LIBRARY_PATHS", ("/nonexistent/libespeak-ng.so.1",))
    monkeypatch.setattr(espeak, "_ENGINE", None)
    with pytest.raises(EvpError, match="espeak-ng not found"):
        synthesize_utterance(SENTENCES[0], speakers[0], "neutral", 0.0)


# ---- speakers and sentences -------------------------------------------------------------------

def test_make_speakers_deterministic_and_distinct():
    a, b = make_speakers(64, seed=3), make_speakers(64, seed=3)
    assert a == b
    assert make_speakers(10, seed=3) == a[:10]                   # prefix-stable
    assert make_speakers(8, seed=4) != a[:8]
    assert len({s.speaker_id for s in a}) == 64 and a[0].speaker_id == "S001"
    assert len({(s.voice, s.variant) for s in a}) == 64          # every speaker sounds different
    assert {s.sex for s in a} == {"F", "M"} and sum(s.sex == "F" for s in a) == 32
    assert len({s.voice for s in a[:8]}) >= 6                    # accents spread early
    assert len({s.seed for s in a}) == 64
    big = make_speakers(300, seed=3)
    assert big[:64] == a and len({s.speaker_id for s in big}) == 300
    assert len({(s.voice, s.variant) for s in big[:160]}) == 160    # then pairs are reused
    with pytest.raises(EvpError):
        make_speakers(0)


def test_sentences():
    assert len(SENTENCES) >= 48
    assert len(set(SENTENCES)) == len(SENTENCES)
    for s in SENTENCES:
        assert 6 <= len(s.split()) <= 12, s
    assert sentence_id(7) == "007" and sentence_text("007") == SENTENCES[7]
    with pytest.raises(EvpError):
        sentence_id(len(SENTENCES))


# ---- utterances -----------------------------------------------------------------------------

@pytest.mark.parametrize("emotion,intensity", [("neutral", 0.0), ("sad", 1.0), ("fear", 2 / 3), ("angry", 1.0)])
def test_utterance_format_and_timing(speakers, emotion, intensity):
    u = synthesize_utterance(SENTENCES[5], speakers[1], emotion, intensity, seed=1)
    assert u.sample_rate == SAMPLE_RATE == 16000
    assert u.audio.dtype == np.float32 and u.audio.ndim == 1
    assert np.all(np.isfinite(u.audio)) and np.abs(u.audio).max() <= 0.99
    ph = u.phonemes
    assert ph[0][0] == 0.0
    assert abs(ph[-1][1] - u.duration) <= 0.03
    for (s0, e0, _), (s1, _, _) in zip(ph, ph[1:]):
        assert s1 == e0                                    # contiguous
    assert all(e > s for s, e, _ in ph)                    # non-empty
    assert all(sym for _, _, sym in ph)
    assert ph[0][2] == "_" and ph[-1][2] == "_"            # leading/trailing silence
    assert 0.15 - 0.02 <= ph[0][1] <= 0.3 + 0.02
    assert all(not (a[2] == b[2] == "_") for a, b in zip(ph, ph[1:]))
    # words: ordered, inside the clip, together the words of the text
    assert " ".join(w for _, _, w in u.words).split() == SENTENCES[5].rstrip(".").split()
    assert all(0 < s < e <= u.duration for s, e, _ in u.words)


def test_deterministic_whatever_came_before(speakers):
    args = (SENTENCES[3], speakers[2], "fear", 0.5)
    a = synthesize_utterance(*args, seed=11)
    # Unrelated calls in between (other voices, rates, a long multi-clause text) must not matter.
    synthesize_utterance(SENTENCES[30], speakers[3], "angry", 1.0, seed=5)
    synthesize_utterance(" ".join(SENTENCES[:5]), speakers[0], "sad", 1.0, seed=2)
    b = synthesize_utterance(*args, seed=11)
    assert np.array_equal(a.audio, b.audio)
    assert a.phonemes == b.phonemes and a.words == b.words
    c = synthesize_utterance(*args, seed=12)
    assert not (len(c.audio) == len(a.audio) and np.array_equal(c.audio, a.audio))


def test_neutral_ignores_intensity(speakers):
    a = synthesize_utterance(SENTENCES[2], speakers[0], "neutral", 0.2, seed=0)
    b = synthesize_utterance(SENTENCES[2], speakers[0], "neutral", 1.0, seed=0)
    assert np.array_equal(a.audio, b.audio)


def test_speech_energy_far_above_leading_silence(speakers):
    u = synthesize_utterance(SENTENCES[9], speakers[4], "sad", 1.0, seed=0)
    lead_end = u.phonemes[0][1]
    lead = u.audio[: int(lead_end * u.sample_rate)].astype(np.float64)
    lead_db = 10 * np.log10(np.mean(lead ** 2) + 1e-20)
    assert _speech_rms_db(u) - lead_db > 40


def test_invalid_arguments_raise(speakers):
    with pytest.raises(EvpError, match="unknown emotion"):
        synthesize_utterance(SENTENCES[0], speakers[0], "bored", 1.0)
    with pytest.raises(EvpError, match="intensity"):
        synthesize_utterance(SENTENCES[0], speakers[0], "happy", 1.5)
    with pytest.raises(EvpError):
        synthesize_utterance("   ", speakers[0], "happy", 1.0)
    with pytest.raises(EvpError):
        emotion_prosody(speakers[0], "happy", -0.1, np.random.default_rng(0))


def test_prosody_fields(speakers):
    p = emotion_prosody(speakers[0], "Sadness", 1.0, np.random.default_rng(0))
    assert isinstance(p, Prosody) and p.emotion == "sad"
    n = emotion_prosody(speakers[0], "neutral", 1.0, np.random.default_rng(0))
    assert p.rate < n.rate and p.pitch < n.pitch and p.loudness_db < n.loudness_db
    assert p.lowpass_hz > 0 and p.word_gap > n.word_gap


# ---- prosody is measured on the audio ---------------------------------------------------------

_PROSODY_SENTENCES = (0, 13, 27)


@pytest.fixture(scope="module")
def measured(pair):
    """{(emotion, intensity): (F0 ratio to neutral, span ratio, RMS dB difference)} medians over
    two speakers × three sentences, plus the absolute values for reporting."""
    conds = [("neutral", 0.0), ("happy", 1 / 3), ("happy", 1.0), ("surprised", 1.0), ("sad", 1 / 3),
             ("sad", 1.0), ("angry", 1.0), ("fear", 1.0)]
    rows: dict = {c: [] for c in conds}
    for spk in pair:
        for k in _PROSODY_SENTENCES:
            base = None
            for emo, inten in conds:
                u = synthesize_utterance(SENTENCES[k], spk, emo, inten, seed=k)
                v = np.array([_median_f0(u), _speech_span(u), _speech_rms_db(u)])
                if base is None:
                    base = v
                rows[(emo, inten)].append((v[0] / base[0], v[1] / base[1], v[2] - base[2]))
    return {c: np.median(np.array(r), axis=0) for c, r in rows.items()}


def test_pitch_order_happy_surprised_neutral_sad(measured):
    f0 = {c: v[0] for c, v in measured.items()}
    assert f0[("happy", 1.0)] > 1.08
    assert f0[("surprised", 1.0)] > 1.08
    assert f0[("fear", 1.0)] > 1.05
    assert f0[("sad", 1.0)] < 0.93


def test_intensity_third_lies_between(measured):
    f0 = {c: v[0] for c, v in measured.items()}
    assert 1.0 < f0[("happy", 1 / 3)] < f0[("happy", 1.0)]
    assert f0[("sad", 1.0)] < f0[("sad", 1 / 3)] < 1.0


def test_sad_slower_angry_louder(measured):
    span = {c: v[1] for c, v in measured.items()}
    rms = {c: v[2] for c, v in measured.items()}
    assert span[("sad", 1.0)] > 1.15
    assert span[("angry", 1.0)] < 1.0
    assert rms[("angry", 1.0)] - rms[("sad", 1.0)] > 6.0
    assert rms[("angry", 1.0)] > 2.0 and rms[("sad", 1.0)] < -2.0


def test_every_emotion_renders(speakers):
    durs = {}
    for emo in EMOTIONS:
        u = synthesize_utterance(SENTENCES[20], speakers[5], emo, 1.0, seed=3)
        assert np.abs(u.audio).max() <= 0.99 and u.duration > 1.0
        durs[emo] = _speech_span(u)
    assert durs["sad"] > durs["neutral"] and durs["disgusted"] > durs["neutral"]


@pytest.mark.parametrize("kwargs, message", [
    ({"text": "  "}, "TEXT is empty"),
    ({"output": "a.wav"}, "must end in .npz"),
    ({"emotion": "joyful"}, "joyful"),
    ({"intensity": 1.5}, "intensity"),
])
def test_speak_checks_its_arguments_before_any_work(tmp_path, kwargs, message):
    args = {"text": "hello there", "output": "a.npz", **kwargs}
    with pytest.raises(EvpError, match=message):
        speak(args.pop("text"), tmp_path / args.pop("output"), sfm_dir=tmp_path / "no-sfm-here", **args)
    assert list(tmp_path.iterdir()) == []
