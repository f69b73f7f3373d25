"""Festival voices (exact phone timing from voices built on real recordings), mixed speaker lists,
the recording-condition augmentation chain, and `evp-anim synth --voices ... --augment ...`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from evp_anim.errors import EvpError
from evp_anim.synth import festival
from evp_anim.synth.augment import (AugmentConfig, NOISE_KINDS, add_noise, add_reverb, augment, band_limit,
                                    lossy_codec, room_impulse_response)
from evp_anim.synth.corpus import CorpusConfig
from evp_anim.synth.sentences import SENTENCES
from evp_anim.synth.speakers import Speaker, check_voices, make_speakers
from evp_anim.synth.speech import active_level_db, synthesize_utterance
from evp_anim.synth.visemes import is_mapped

SR = 16000
VOWELS = set("a A: V O: aU aI E 3: eI I i: oU OI U u:".split())


def _rms(x):
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def _inside(audio, start, end, margin):
    return audio[int((start + margin) * SR): int((end - margin) * SR)]


def _festival_speaker(voice):
    """The first festival-only speaker using ``voice``."""
    return next(s for s in make_speakers(8, 0, voices=("festival",)) if s.voice == voice)


@pytest.fixture(scope="module")
def festival_clips():
    """One neutral clip per Festival voice."""
    return {v: synthesize_utterance(SENTENCES[3], _festival_speaker(v), "neutral", 0.0, seed=2)
            for v in festival.VOICES}


def test_festival_phones_map_to_espeak_mnemonics():
    assert festival.festival_phone("pau") == "_" and festival.festival_phone("h#") == "_"
    assert festival.festival_phone("ax") == "V"           # schwa → AH
    assert festival.festival_phone("axr") == "3:"         # → ER
    assert festival.festival_phone("dh") == "D" and festival.festival_phone("ng") == "N"
    assert festival.festival_phone("em") == "m"           # syllabic m keeps its closed lips
    radio = ("aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t th uh "
             "uw v w y z zh ax axr dx el em en hv nx").split()
    assert all(is_mapped(festival.festival_phone(p)) and festival.festival_phone(p) != "_" for p in radio)


@pytest.mark.parametrize("voice", sorted(festival.VOICES))
def test_festival_clip_tiles_its_audio_with_mapped_phones(festival_clips, voice):
    u = festival_clips[voice]
    assert u.sample_rate == SR and u.audio.dtype == np.float32
    assert 2.0 < u.duration < 6.0 and np.max(np.abs(u.audio)) <= 0.99
    ph = u.phonemes
    assert ph[0][0] == 0.0 and ph[-1][1] == pytest.approx(len(u.audio) / SR, abs=1e-9)
    assert all(b > a for a, b, _ in ph)
    assert all(ph[i][1] == ph[i + 1][0] for i in range(len(ph) - 1))     # contiguous, no gaps
    assert ph[0][2] == "_" and ph[-1][2] == "_"                          # silence at both ends
    assert ph[0][1] > 0.1 and ph[-1][1] - ph[-1][0] > 0.1
    assert all(is_mapped(sym) for _, _, sym in ph)
    spoken = [sym for _, _, sym in ph if sym != "_"]
    # "The birch canoe slid..." style sentences: ~20-40 phones, several bilabials and vowels.
    assert len(spoken) >= 15 and sum(s in VOWELS for s in spoken) >= 6
    assert u.words and all(0 < s < e <= u.duration for s, e, _ in u.words)


@pytest.mark.parametrize("voice", sorted(festival.VOICES))
def test_festival_energy_lies_inside_the_phones(festival_clips, voice):
    """The timing is real: pauses are near-silent, vowels loud, and speech starts and ends
    where the first and last phones do."""
    u = festival_clips[voice]
    a = u.audio.astype(np.float64)
    pauses = np.concatenate([_inside(a, s, e, 0.02) for s, e, p in u.phonemes if p == "_" and e - s > 0.06])
    vowels = np.concatenate([_inside(a, s, e, 0.01) for s, e, p in u.phonemes if p in VOWELS and e - s > 0.04])
    assert 20 * np.log10(_rms(vowels) / _rms(pauses)) > 30.0
    frames = np.sqrt(np.mean(a[: len(a) // 160 * 160].reshape(-1, 160) ** 2, axis=1))   # 10 ms
    loud = np.nonzero(frames > frames.max() * 10 ** (-30 / 20))[0]
    first = next(s for s, _, p in u.phonemes if p != "_")
    last = next(e for _, e, p in reversed(u.phonemes) if p != "_")
    assert abs(loud[0] * 0.01 - first) < 0.04
    assert abs((loud[-1] + 1) * 0.01 - last) < 0.04


@pytest.mark.parametrize("voice", ["kal_diphone", "cmu_us_slt_arctic_hts"])
def test_festival_follows_the_emotion_prosody(voice):
    import librosa

    spk = _festival_speaker(voice)
    clips = {e: synthesize_utterance(SENTENCES[5], spk, e, 1.0, seed=4) for e in ("neutral", "happy", "sad")}

    def f0(u):
        f = librosa.yin(u.audio.astype(np.float64), fmin=60, fmax=450, sr=SR, frame_length=1024)
        voiced = np.zeros(len(f), bool)
        for s, e, p in u.phonemes:
            if p in VOWELS:
                voiced[int(s * SR / 256) + 1: int(e * SR / 256)] = True
        return float(np.median(f[voiced[: len(f)]]))

    assert clips["sad"].duration > 1.1 * clips["neutral"].duration      # rate 0.78 at full sadness
    assert f0(clips["happy"]) > 1.05 * f0(clips["neutral"])             # happy raises F0
    assert f0(clips["sad"]) < f0(clips["neutral"])


def test_festival_render_is_deterministic():
    spk = _festival_speaker("ked_diphone")
    a = synthesize_utterance(SENTENCES[7], spk, "angry", 0.6, seed=3)
    b = synthesize_utterance(SENTENCES[7], spk, "angry", 0.6, seed=3)
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes


def test_unknown_festival_voice_is_an_error():
    spk = Speaker(**{**_festival_speaker("kal_diphone").to_dict(), "voice": "nobody_diphone"})
    with pytest.raises(EvpError, match="unknown festival voice"):
        synthesize_utterance("hello", spk)


def test_mixed_speaker_lists():
    mixed = make_speakers(8, 3, voices=("espeak", "festival"))
    plain = make_speakers(8, 3)
    assert [s.engine for s in mixed] == ["espeak", "festival", "festival", "espeak"] * 2
    for s, p in zip(mixed, plain):
        if s.engine == "espeak":
            assert s == p                                   # same speaker as the espeak-only list
        else:
            assert s.voice in festival.VOICES and festival.VOICES[s.voice].sex == s.sex
            assert s.variant == "" and 0.92 <= s.warp <= 1.08 and s.voice_label == f"festival:{s.voice}"
            assert (s.pitch, s.rate, s.seed) == (p.pitch, p.rate, p.seed)
    assert {s.sex for s in mixed if s.engine == "festival"} == {"F", "M"}
    assert {s.voice for s in mixed if s.engine == "festival"} == set(festival.VOICES)   # all three used
    assert make_speakers(8, 3, voices=("espeak", "festival")) == mixed
    assert make_speakers(8, 3, voices=("festival", "espeak")) == mixed       # order-free
    assert Speaker.from_dict({k: v for k, v in plain[0].to_dict().items() if k not in ("engine", "warp")}) == plain[0]
    assert check_voices("festival, espeak") == ("espeak", "festival")
    with pytest.raises(EvpError, match="unknown voices"):
        make_speakers(2, 0, voices=("espeak", "flite"))
    with pytest.raises(EvpError, match="augment"):
        CorpusConfig(augment=1.5).validate()
    assert "voices" not in CorpusConfig().to_json() and "augment" not in CorpusConfig().to_json()


# ---------------------------------------------------------------------------------- augmentation
@pytest.fixture(scope="module")
def speech():
    u = synthesize_utterance(SENTENCES[1], make_speakers(1, 0)[0], "neutral", 0.0, seed=0)
    return u.audio.astype(np.float64)


def _only(**on):
    off = dict(p_reverb=0.0, p_noise=0.0, p_band=0.0, p_codec=0.0, p_gain=0.0)
    return AugmentConfig(**{**off, **on})


def _lag(ref, y, max_lag=200):
    """Lag in samples (−max_lag…max_lag) of the cross-correlation peak of y against ref."""
    c = [float(np.dot(ref[max_lag:-max_lag], np.roll(y, -d)[max_lag:-max_lag])) for d in range(-max_lag, max_lag + 1)]
    return int(np.argmax(c)) - max_lag


def test_augment_keeps_length_changes_audio_and_is_seeded(speech):
    y1, rec1 = augment(speech, SR, np.random.default_rng(5))
    y2, rec2 = augment(speech, SR, np.random.default_rng(5))
    y3, _ = augment(speech, SR, np.random.default_rng(6))
    assert len(y1) == len(speech) and y1.dtype == np.float32 and np.max(np.abs(y1)) <= 0.99
    assert rec1 and rec1 == rec2 and np.array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    assert _rms(y1 - speech) > 0.05 * _rms(speech)
    full, rec = augment(speech, SR, np.random.default_rng(0),
                        AugmentConfig(p_reverb=1, p_noise=1, p_band=1, p_codec=1, p_gain=1))
    assert set(rec) == {"reverb", "noise", "band", "codec", "gain_db"} and len(full) == len(speech)


@pytest.mark.parametrize("seed", range(4))
def test_noise_step_hits_the_requested_snr(speech, seed):
    y, rec = augment(speech, SR, np.random.default_rng(seed), _only(p_noise=1.0))
    snr = active_level_db(speech, SR) - 10 * np.log10(np.mean((y.astype(np.float64) - speech) ** 2))
    assert 5.0 <= rec["noise"]["snr_db"] <= 30.0
    assert abs(snr - rec["noise"]["snr_db"]) < 1.0


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_kinds_have_their_spectra(speech, kind):
    noise = add_noise(speech, SR, 10.0, kind, np.random.default_rng(1)) - speech
    assert abs(active_level_db(speech, SR) - 10 * np.log10(np.mean(noise ** 2)) - 10.0) < 0.1
    spec = np.abs(np.fft.rfft(noise)) ** 2
    f = np.fft.rfftfreq(len(noise), 1 / SR)
    low, high = spec[(f > 100) & (f < 1000)].mean(), spec[(f > 4000) & (f < 7000)].mean()
    ratio_db = 10 * np.log10(low / high)
    expected = {"white": (-2, 2), "pink": (5, 15), "brown": (20, 40), "babble": (10, 80)}[kind]
    assert expected[0] < ratio_db < expected[1]


def test_reverb_band_and_codec_keep_the_timing(speech):
    rng = np.random.default_rng(2)
    for y in (add_reverb(speech, SR, 0.6, 0.5, rng), band_limit(speech, SR, 300.0, 3400.0),
              band_limit(speech, SR, None, 4000.0), lossy_codec(speech, SR, "mp3", 16),
              lossy_codec(speech, SR, "aac", 24)):
        assert len(y) == len(speech)
        assert _lag(speech, y) == 0


def test_room_impulse_response_decays_at_its_rt60():
    ir = room_impulse_response(SR, 0.5, np.random.default_rng(0))
    assert ir[0] == 1.0 and len(ir) == int(0.5 * SR)
    e = ir[1:] ** 2
    n = len(e) // 10
    early, late = e[n: 2 * n].sum(), e[5 * n: 6 * n].sum()     # 10-20 % vs 50-60 % of RT60
    assert 15.0 < 10 * np.log10(early / late) < 40.0           # 60 dB/RT60 → 24 dB over 40 %


def test_band_limits_remove_their_bands(speech):
    noise = np.random.default_rng(0).standard_normal(SR * 2)
    tel = band_limit(noise, SR, 300.0, 3400.0)
    spec_in, spec_out = np.abs(np.fft.rfft(noise)) ** 2, np.abs(np.fft.rfft(tel)) ** 2
    f = np.fft.rfftfreq(len(noise), 1 / SR)
    band = lambda s, lo, hi: s[(f > lo) & (f < hi)].mean()      # noqa: E731
    assert 10 * np.log10(band(spec_in, 5000, 7000) / band(spec_out, 5000, 7000)) > 40
    assert 10 * np.log10(band(spec_in, 20, 120) / band(spec_out, 20, 120)) > 20
    assert abs(10 * np.log10(band(spec_in, 800, 2500) / band(spec_out, 800, 2500))) < 1


# ------------------------------------------------------------------------------- the corpus / CLI
def test_synth_cli_with_festival_voices_and_augmentation(tmp_path, sfm_dir):
    out = tmp_path / "c"
    env = {**os.environ, "EVP_ANIM_SFM_DIR": str(sfm_dir), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "evp_anim.cli", "synth", str(out), "--speakers", "2",
                        "--sentences", "2", "--emotions", "neutral,happy", "--test-speakers", "1",
                        "--test-sentences", "1", "--no-pairs", "--workers", "2",
                        "--voices", "espeak,festival", "--augment", "0.5"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    settings = json.loads((out / "corpus.json").read_text())
    assert settings["voices"] == ["espeak", "festival"] and settings["augment"] == 0.5

    from evp_anim.data.manifest import read_manifest
    from evp_anim.tracks import load_track
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 2 * 2 * (1 + 3)
    voices, augmented = set(), 0
    for r in rows:
        track = load_track(out / r.track)
        audio, sr = sf.read(out / r.audio, dtype="float32")
        assert sr == SR
        voices.add(track.info["voice"].split(":")[0])
        ph = track.phonemes
        # The track's phones tile its wav exactly, and the face covers the same span.
        assert ph[0][0] == 0.0 and ph[-1][1] == pytest.approx(len(audio) / SR, abs=1.5 / SR)
        assert all(ph[i][1] == ph[i + 1][0] for i in range(len(ph) - 1))
        assert all(is_mapped(sym) for _, _, sym in ph)
        assert abs(track.n_frames / track.fps - len(audio) / SR) < 1.0 / track.fps
        assert isinstance(track.info["augment"], dict)
        if track.info["augment"]:
            augmented += 1
        else:   # clean clips: the speech sits inside the phones
            a = audio.astype(np.float64)
            pauses = np.concatenate([_inside(a, s, e, 0.02) for s, e, q in ph if q == "_" and e - s > 0.06])
            vowels = np.concatenate([_inside(a, s, e, 0.01) for s, e, q in ph if q in VOWELS and e - s > 0.04])
            assert _rms(vowels) > 30 * _rms(pauses)
    assert len(voices) == 2 and "festival" in voices          # one espeak accent, one festival voice
    assert 0 < augmented < len(rows)
